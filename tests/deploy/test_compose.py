"""docker-compose.yml cannot run here (no Docker engine): check its structure instead."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from temporalio.common import SearchAttributeIndexedValueType

from devtools.stack import SEARCH_ATTRIBUTES as STACK_SEARCH_ATTRIBUTES
from workflows.visibility import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_services_are_all_there_with_restart_policies() -> None:
    services = compose()["services"]
    assert set(services) == {
        "postgres",
        "temporal",
        "temporal-setup",
        "temporal-ui",
        "migrate",
        "api",
        "worker",
    }
    for name, service in services.items():
        assert "restart" in service, name
        assert "image" in service or service.get("build") == ".", name
    for name in ("postgres", "temporal", "temporal-ui", "api", "worker"):
        assert services[name]["healthcheck"]["test"], name


def test_dependencies_wait_for_health_and_migrations() -> None:
    services = compose()["services"]
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["temporal"]["condition"] == "service_healthy"
    assert services["temporal"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["temporal"]["environment"]["DB"] == "postgres12"


def test_configuration_comes_from_the_environment() -> None:
    services = compose()["services"]
    env = services["worker"]["environment"]
    assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
    for key in (
        "STRIPE_API_KEY",
        "STRIPE_WEBHOOK_SECRETS",
        "JWT_SECRET",
        "APP_UPDATE_PAYMENT_METHOD_URL",
    ):
        assert env[key].startswith("${"), key
        assert ":?" in env[key], key  # required, never defaulted
    assert services["api"]["environment"]["API_HOST"] == "0.0.0.0"
    for name in ("api", "worker", "migrate"):
        assert services[name]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    registered = services["temporal-setup"]["command"][0]
    for attribute in SEARCH_ATTRIBUTES:  # every one the workflow sets, with its type
        assert f"{attribute.name}={STACK_SEARCH_ATTRIBUTES[attribute.name]}" in re.split(
            r"[\s;]+", registered
        )


def test_the_image_holds_what_the_commands_run() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for needed in (
        "COPY core",
        "COPY activities",
        "COPY workflows",
        "COPY api",
        "COPY migrations",
        "worker.py",
        "alembic.ini",
    ):
        assert needed in dockerfile
    # Only the product: the development tools stay in the repository.
    for dev_only in ("emulator", "devtools", "devstack", "scenario", "bench", "tests"):
        assert dev_only not in dockerfile, dev_only


def test_the_dev_stack_registers_every_search_attribute_with_its_type() -> None:
    kinds = {
        SearchAttributeIndexedValueType.KEYWORD: "Keyword",
        SearchAttributeIndexedValueType.INT: "Int",
        SearchAttributeIndexedValueType.DATETIME: "Datetime",
    }
    wanted = {key.name: kinds[key.indexed_value_type] for key in SEARCH_ATTRIBUTES}
    assert wanted == STACK_SEARCH_ATTRIBUTES
