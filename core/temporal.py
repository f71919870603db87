"""Connecting to Temporal: one client per process, with the pydantic data converter."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS, ClientConnectConfig
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from core.settings import Settings


async def connect(
    settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None
) -> Client:
    """The process's Temporal client (`lazy` connects on first use; `runtime` carries the
    worker's metrics exporter)."""
    return await Client.connect(
        **connect_config(settings),
        data_converter=pydantic_data_converter,
        lazy=lazy,
        runtime=runtime,
    )


def connect_config(settings: Settings) -> ClientConnectConfig:
    """Address, namespace, API key and TLS for `Client.connect`, built by the SDK's own
    environment configuration from the settings (the certificates read from their files)."""
    cert_settings = (
        settings.temporal_tls_server_ca_cert_path,
        settings.temporal_tls_client_cert_path,
        settings.temporal_tls_server_name,
    )
    tls = None
    if settings.temporal_tls is not None or any(cert_settings):
        tls = ClientConfigTLS(
            disabled=settings.temporal_tls is False,
            server_name=settings.temporal_tls_server_name,
            server_root_ca_cert=settings.temporal_tls_server_ca_cert_path,
            client_cert=settings.temporal_tls_client_cert_path,
            client_private_key=settings.temporal_tls_client_key_path,
        )
    api_key = settings.temporal_api_key
    return ClientConfigProfile(
        address=settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=api_key.get_secret_value() if api_key else None,
        tls=tls,
    ).to_client_connect_config()


async def ensure_schedule(
    client: Client, schedule_id: str, action: ScheduleActionStartWorkflow, every: timedelta
) -> None:
    """Create a schedule running `action` every `every` if it does not exist yet (every worker
    may call this; an existing one is kept as it is). A run that outlasts the interval is never
    joined by a second one."""
    schedule = Schedule(
        action=action,
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    with suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(schedule_id, schedule)


async def ensure_search_attributes(client: Client, keys: Iterable[SearchAttributeKey[Any]]) -> None:
    """Register the custom search attributes the workflows set; existing ones are kept."""
    for key in keys:
        request = AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={key.name: IndexedValueType.ValueType(int(key.indexed_value_type))},
        )
        try:
            await client.operator_service.add_search_attributes(request)
        except RPCError as err:
            if err.status != RPCStatusCode.ALREADY_EXISTS:
                raise
