"""Temporal anywhere: namespace, TLS (server CA, client certificate and key) and an API key come
from the settings, built into the client by the SDK's own environment configuration, and a real
mutual-TLS handshake succeeds with them (and fails without the client certificate)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from core.temporal import connect, connect_config


def settings(**values: Any) -> Settings:
    """Settings with these values (and no .env file)."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]  # pydantic hides BaseSettings' _env_file from mypy


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pem_files(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    """The CA, and a client certificate and key it signed, as the PEM files a deployment mounts."""
    client = ca.issue_cert("billing-worker@salesflow.example")
    files = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "client.pem",
        "key": tmp_path / "client.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    return files


def test_the_embedded_default_is_plain_grpc_on_the_default_namespace() -> None:
    config = connect_config(settings())
    assert config == {"target_host": "127.0.0.1:7233", "namespace": "default"}


def test_an_api_key_turns_tls_on_as_temporal_cloud_needs() -> None:
    config = connect_config(
        settings(
            temporal_address="us-east-1.aws.api.temporal.io:7233",
            temporal_namespace="billing.a1b2c",
            temporal_api_key="eyJhbGciOi.key.value",
        )
    )
    assert config == {
        "target_host": "us-east-1.aws.api.temporal.io:7233",
        "namespace": "billing.a1b2c",
        "api_key": "eyJhbGciOi.key.value",
        "tls": True,
    }


def test_certificates_are_read_from_their_files(pem_files: dict[str, Path]) -> None:
    config = connect_config(
        settings(
            temporal_address="billing.a1b2c.tmprl.cloud:7233",
            temporal_namespace="billing.a1b2c",
            temporal_tls_server_ca_cert_path=pem_files["ca"],
            temporal_tls_client_cert_path=pem_files["cert"],
            temporal_tls_client_key_path=pem_files["key"],
            temporal_tls_server_name="billing.internal",
        )
    )
    assert config["tls"] == TLSConfig(
        server_root_ca_cert=pem_files["ca"].read_bytes(),
        client_cert=pem_files["cert"].read_bytes(),
        client_private_key=pem_files["key"].read_bytes(),
        domain="billing.internal",
    )


def test_tls_can_be_forced_off_or_on() -> None:
    assert connect_config(settings(temporal_tls=False, temporal_api_key="k"))["tls"] is False
    assert connect_config(settings(temporal_tls=True))["tls"] == TLSConfig()


def test_a_certificate_without_its_key_or_a_missing_file_is_refused(
    pem_files: dict[str, Path],
) -> None:
    with pytest.raises(ValidationError, match="go together"):
        settings(temporal_tls_client_cert_path=pem_files["cert"])
    with pytest.raises(ValidationError, match="temporal_tls_server_ca_cert_path"):
        settings(temporal_tls_server_ca_cert_path=pem_files["ca"].with_name("missing.pem"))


@contextlib.asynccontextmanager
async def mtls_front(ca: trustme.CA, upstream: str) -> AsyncIterator[tuple[int, list[str]]]:
    """A TLS front for the Temporal server, as a TLS cluster or Temporal Cloud presents one: it
    speaks HTTP/2 over TLS (ALPN h2), shows a certificate for `localhost` signed by `ca`, and
    accepts only clients with a certificate `ca` signed. Yields its port and the list of the
    client certificates it accepted (their subject alternative names)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    ca.configure_trust(context)
    ca.issue_cert("localhost").configure_cert(context)
    host, port = upstream.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        accepted.extend(value for _, value in peer["subjectAltName"])
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    accepted: list[str] = []
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1], accepted


async def test_mutual_tls_reaches_temporal_with_the_settings_and_only_with_them(
    env: WorkflowEnvironment, ca: trustme.CA, pem_files: dict[str, Path]
) -> None:
    upstream = env.client.service_client.config.target_host
    async with mtls_front(ca, upstream) as (port, accepted):
        tls = {
            "temporal_address": f"localhost:{port}",
            "temporal_tls_server_ca_cert_path": pem_files["ca"],
        }
        client = await connect(
            settings(
                **tls,
                temporal_tls_client_cert_path=pem_files["cert"],
                temporal_tls_client_key_path=pem_files["key"],
                temporal_api_key="eyJhbGciOi.key.value",
            )
        )
        info = await client.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=timedelta(seconds=10)
        )
        assert info.capabilities.signal_and_query_header  # Temporal answered, through the front
        assert accepted == ["billing-worker@salesflow.example"]  # with our client certificate
        assert client.api_key == "eyJhbGciOi.key.value"

        # The same front, no client certificate: the handshake is refused.
        with pytest.raises(RuntimeError, match="connect"):
            anonymous = await connect(settings(**tls))
            await anonymous.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=timedelta(seconds=5)
            )
        assert accepted == ["billing-worker@salesflow.example"]  # nothing else got through
