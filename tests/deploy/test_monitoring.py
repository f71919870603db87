"""The monitoring in deploy/: the alert rules and the Grafana dashboard parse, their PromQL
parses, and they name only metrics that exist: the API's (its prometheus-client registry), and
the worker's, scraped from a real worker runtime (the SDK's Prometheus exporter) after it ran
activities that failed, retried and counted every billing counter, and workflow tasks that
failed. The README explains every alert and metric."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import yaml
from prometheus_client import REGISTRY
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

import api.metrics
from core.metrics import COUNTERS, CountRetries, prometheus_runtime
from core.settings import Settings
from tests.deploy.monitoring import (
    DASHBOARD,
    PROMETHEUS_OWN,
    SCRAPE_CONFIG,
    Sample,
    dashboard,
    metric_names,
    queries,
    rules,
    scrape,
    total,
)
from tests.helpers import BIN, ROOT, free_port

_failed_tasks: set[str] = set()


@activity.defn(name="monitoring.count_everything")
async def count_everything() -> None:
    """Counts every billing counter, then fails its first attempt (a retry)."""
    for counter in COUNTERS:
        if counter.labels:
            counter.add(activity.metric_meter(), 1, **dict.fromkeys(counter.labels, "probe"))
    if activity.info().attempt == 1:
        raise RuntimeError("first attempt fails")


@workflow.defn(name="MonitoringProbe")
class MonitoringProbe:
    @workflow.run
    async def run(self) -> None:
        if workflow.info().workflow_id not in _failed_tasks:  # the first task fails
            _failed_tasks.add(workflow.info().workflow_id)
            raise RuntimeError("a workflow task failure")
        # As the billing workflow runs them: emails as activities, Stripe calls and database
        # writes as local activities.
        retry = RetryPolicy(initial_interval=timedelta(milliseconds=10))
        await workflow.execute_activity(
            count_everything, start_to_close_timeout=timedelta(seconds=10), retry_policy=retry
        )
        await workflow.execute_local_activity(
            count_everything, start_to_close_timeout=timedelta(seconds=10), retry_policy=retry
        )


@pytest.fixture(scope="module")
async def worker_samples() -> AsyncIterator[list[Sample]]:
    """What a worker's exporter serves after the probe: the runtime the worker builds from
    WORKER_METRICS_ADDRESS, its interceptor, on the time-skipping server."""
    address = f"127.0.0.1:{free_port()}"
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
        runtime=prometheus_runtime(address),
    )
    client: Client = env.client
    queue = f"monitoring-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[MonitoringProbe],
        activities=[count_everything],
        interceptors=[CountRetries()],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        # By name: mypy (1.x) given a no-argument workflow's `run` here then mis-infers every
        # get_workflow_handle_for(SubscriptionWorkflow.run, ...) of the project (checked with a
        # fresh cache; a warm one hid it).
        await client.execute_workflow(
            "MonitoringProbe", id=f"probe-{uuid.uuid4()}", task_queue=queue
        )
        yield scrape(f"http://{address}/metrics")
    await env.shutdown()


def exported(worker: list[Sample]) -> set[str]:
    """Every series name the API and the worker serve (a histogram's _bucket, _sum, _count)."""
    api_names = {sample.name for family in REGISTRY.collect() for sample in family.samples}
    # A labelled family shows no sample before its first use: named by its own suffixes.
    for metric in (api.metrics.WEBHOOKS, api.metrics.REQUEST_SECONDS):
        for family in metric.describe():
            suffixes = ("_bucket", "_sum", "_count") if family.type == "histogram" else ("_total",)
            api_names |= {family.name + suffix for suffix in suffixes}
    return api_names | {sample.name for sample in worker}


def test_every_alert_rule_is_complete() -> None:
    for rule in rules():
        assert rule["alert"].startswith("Billing"), rule
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_the_scrape_configuration_loads_the_rules_and_names_both_jobs() -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    for rule_file in config["rule_files"]:
        assert (SCRAPE_CONFIG.parent / rule_file).is_file()
    assert {job["job_name"] for job in config["scrape_configs"]} == {
        "billing-api",
        "billing-worker",
    }


def test_the_dashboard_is_a_grafana_dashboard_on_a_prometheus_datasource() -> None:
    board = dashboard()
    assert board["uid"] == "salesflow-billing"
    assert [v["type"] for v in board["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


def test_every_query_parses_as_promql() -> None:
    for query in queries():
        assert metric_names(query.expr), query  # parses, and selects something


def test_the_worker_exports_every_billing_counter_and_the_sdk_metrics(
    worker_samples: list[Sample],
) -> None:
    for counter in COUNTERS:
        assert total(worker_samples, counter.exported) >= 1, counter.name
    assert total(worker_samples, "billing_activity_retries_total") == 2
    assert total(worker_samples, "temporal_workflow_task_execution_failed_total") >= 1
    assert total(worker_samples, "temporal_activity_execution_failed_total") == 1
    assert total(worker_samples, "temporal_local_activity_execution_failed_total") == 1


async def test_alerts_and_the_dashboard_name_only_metrics_that_exist(
    worker_samples: list[Sample],
) -> None:
    known = exported(worker_samples) | PROMETHEUS_OWN
    for query in queries():
        missing = metric_names(query.expr) - known
        assert not missing, f"{query.where} names {missing}"


def test_the_dashboard_shows_every_billing_metric() -> None:
    shown = set().union(*(metric_names(query.expr) for query in queries()))
    for counter in COUNTERS:
        assert counter.exported in shown, counter.name
    assert "billing_webhooks_total" in shown
    assert "billing_api_request_duration_seconds_bucket" in shown


def test_the_readme_explains_every_alert_metric_setting_and_file() -> None:
    readme = (ROOT / "README.md").read_text()
    production = readme[readme.index("## Going to production") :]
    for rule in rules():
        assert rule["alert"] in production, rule["alert"]
    for name in [c.exported for c in COUNTERS] + ["billing_webhooks_total"]:
        assert name in production, name
    assert "billing_api_request_duration_seconds" in production
    assert str(DASHBOARD.relative_to(ROOT)) in production
    for setting in Settings.model_fields:
        assert f"`{setting.upper()}`" in production, setting
