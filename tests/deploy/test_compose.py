"""docker-compose.yml, checked by Docker Compose itself.

No Docker engine runs here, but `docker compose config` needs none: it validates the file against
the Compose schema, interpolates the variables and prints the model it would run. Compose v2
(what `docker compose` is today) and v1 1.29.2 (the last Python one, still Debian 12's package)
each validate the file, render it with sample values for the required variables, and must refuse
it when one of them is missing or empty. The tests then check the rendered model, not the YAML
text: what each service is given, what it waits for, which images it runs. No container is
started and no image is pulled (tests/deploy/compose_cli.py installs the two tools).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url
from temporalio.common import SearchAttributeIndexedValueType

from api.routes import health
from core.payloads import Interval, Plan
from core.settings import Settings
from devtools.stack import SEARCH_ATTRIBUTES as STACK_SEARCH_ATTRIBUTES
from tests.deploy.compose_cli import V2_VERSION, Compose, install_v1, install_v2
from tests.deploy.monitoring import SCRAPE_CONFIG
from tests.helpers import ROOT
from workflows.visibility import SEARCH_ATTRIBUTES

COMPOSE_FILE = ROOT / "docker-compose.yml"

# The first test to need a tool installs it (tens of seconds on a fresh machine; cached after).
pytestmark = pytest.mark.timeout(600)

# A value for every variable the file requires (`${VAR:?...}`), as an operator would set them.
REQUIRED = {
    "STRIPE_API_KEY": "sk_live_compose_sample",
    "STRIPE_WEBHOOK_SECRETS": "whsec_compose_old,whsec_compose_new",
    "STRIPE_PRICE_STARTER_MONTHLY": "price_starter_monthly",
    "STRIPE_PRICE_STARTER_YEARLY": "price_starter_yearly",
    "STRIPE_PRICE_PRO_MONTHLY": "price_pro_monthly",
    "STRIPE_PRICE_PRO_YEARLY": "price_pro_yearly",
    "STRIPE_PRICE_ENTERPRISE_MONTHLY": "price_enterprise_monthly",
    "STRIPE_PRICE_ENTERPRISE_YEARLY": "price_enterprise_yearly",
    "JWT_SECRET": "compose-sample-jwt-secret-0123456789abcdef",
    "SMTP_HOST": "smtp.salesflow.example",
    "APP_UPDATE_PAYMENT_METHOD_URL": "https://app.salesflow.example/billing/payment-method",
}
# Plus the optional variables that two services must agree on.
OPERATOR_ENV = {
    **REQUIRED,
    "POSTGRES_PASSWORD": "compose-sample-db-password",
    "TEMPORAL_DB_PASSWORD": "compose-sample-temporal-password",
}

# The custom message of each `${VAR:?message}` in the file ("" for a bare `${VAR:?}`).
DECLARED_MESSAGES = dict(
    re.findall(r"^[^#]*?\$\{(\w+):\?([^}]*)\}", COMPOSE_FILE.read_text(), re.MULTILINE)
)

SERVICES = {"postgres", "temporal", "temporal-setup", "temporal-ui", "migrate", "api", "worker"}
# One-shot jobs: they exit when done, and whatever waits for them waits for their success.
JOBS = {"temporal-setup", "migrate"}
DEPENDS_ON = {
    "postgres": {},
    "temporal": {"postgres": "service_healthy"},
    "temporal-setup": {"temporal": "service_healthy"},
    "temporal-ui": {"temporal": "service_healthy"},
    "migrate": {"postgres": "service_healthy"},
    "api": {"migrate": "service_completed_successfully", "temporal": "service_healthy"},
    "worker": {"migrate": "service_completed_successfully", "temporal": "service_healthy"},
}
PROJECT_SERVICES = ("migrate", "api", "worker")  # built from this repository


@pytest.fixture(scope="session")
def compose_v2(request: pytest.FixtureRequest) -> Compose:
    return install_v2(request.config.cache.mkdir(f"compose-v{V2_VERSION}"))


@pytest.fixture(scope="session")
def compose_v1(request: pytest.FixtureRequest) -> Compose:
    return install_v1(request.config.cache.mkdir("compose-v1"))


@pytest.fixture(scope="session", params=["v2", "v1"])
def compose(request: pytest.FixtureRequest) -> Compose:
    """Each implementation in turn."""
    tool: Compose = request.getfixturevalue(f"compose_{request.param}")
    return tool


@pytest.fixture(scope="session")
def rendered(compose: Compose) -> dict[str, Any]:
    """The model `config` prints for the operator's environment."""
    return compose.render(COMPOSE_FILE, OPERATOR_ENV)


def test_compose_accepts_the_file_without_a_warning(compose: Compose) -> None:
    """`config --quiet` passes, and says nothing: no obsolete or ignored key."""
    result = compose.run(COMPOSE_FILE, "config", "--quiet", env=REQUIRED)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_required_variables_are_those_the_tests_set(compose_v2: Compose) -> None:
    """Compose's own list of required variables is the sample's: none added or lost unseen."""
    result = compose_v2.run(COMPOSE_FILE, "config", "--variables", "--format", "json", env=REQUIRED)
    assert result.returncode == 0, result.stderr
    variables: dict[str, dict[str, Any]] = json.loads(result.stdout)
    assert {name for name, spec in variables.items() if spec["Required"]} == set(REQUIRED)
    assert set(DECLARED_MESSAGES) == set(REQUIRED)


# v2 for every required variable; v1 for one with a message and one without (the same code).
REFUSALS = [
    pytest.param(tool, variable, blank, id=f"{tool}-{variable}-{'empty' if blank else 'unset'}")
    for tool, variables in (("v2", list(REQUIRED)), ("v1", ["STRIPE_API_KEY", "SMTP_HOST"]))
    for variable in variables
    for blank in (False, True)
]


@pytest.mark.parametrize(("tool", "variable", "blank"), REFUSALS)
def test_a_required_variable_left_unset_or_empty_stops_compose(
    request: pytest.FixtureRequest, tool: str, variable: str, blank: bool
) -> None:
    """`${VAR:?message}` works: unset or empty (`:?`, not `?`), Compose refuses the file and
    names the variable or says its message, before any container would be created."""
    compose: Compose = request.getfixturevalue(f"compose_{tool}")
    env = {name: value for name, value in REQUIRED.items() if name != variable}
    if blank:
        env[variable] = ""
    result = compose.run(COMPOSE_FILE, "config", "--quiet", env=env)
    assert result.returncode != 0
    message = DECLARED_MESSAGES[variable]
    if tool == "v2":
        expected = f"required variable {variable} is missing a value"
        assert (expected + (f": {message}" if message else "")) in result.stderr
    else:  # v1 prints the whole mapping it interpolated, then the message (or the name)
        assert result.stderr.rstrip().endswith(f": {message or variable}"), result.stderr


def test_services_wait_for_what_they_need(rendered: dict[str, Any]) -> None:
    """The depends_on conditions survive rendering, what they wait on can satisfy them (a
    healthcheck for `service_healthy`, a job that is not restarted for a completion), and the
    long-running services restart."""
    services = rendered["services"]
    assert set(services) == SERVICES
    depends = {
        name: {dep: spec["condition"] for dep, spec in service.get("depends_on", {}).items()}
        for name, service in services.items()
    }
    assert depends == DEPENDS_ON
    for name, deps in depends.items():
        for dep, condition in deps.items():
            if condition == "service_healthy":
                assert services[dep]["healthcheck"]["test"], f"{name} waits on {dep}'s health"
            else:
                assert dep in JOBS, f"{name} waits for {dep} to complete"
    for name, service in services.items():
        assert service["restart"] == ("no" if name in JOBS else "unless-stopped"), name


def test_the_project_services_get_production_settings(
    rendered: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API, the worker and the migration read their Settings from exactly the environment
    Compose gives them: every variable is one Settings knows (a typo would be ignored silently),
    every development default is replaced (the emulator, SQLite, the dev JWT secret, 127.0.0.1),
    and the addresses name the services that serve them."""
    services = rendered["services"]
    postgres_env = services["postgres"]["environment"]
    known = {name.upper() for name in Settings.model_fields}
    for name in PROJECT_SERVICES:
        service = services[name]
        assert service["build"]["context"] == str(ROOT), name
        env: dict[str, str] = service["environment"]
        assert set(env) <= known, f"{name}: not Settings fields: {set(env) - known}"
        settings = settings_from(env, monkeypatch)

        assert settings.stripe_api_key.get_secret_value() == REQUIRED["STRIPE_API_KEY"]
        assert settings.stripe_api_base == "https://api.stripe.com"
        assert [secret.get_secret_value() for secret in settings.stripe_webhook_secrets] == (
            REQUIRED["STRIPE_WEBHOOK_SECRETS"].split(",")
        )
        for plan in Plan:
            for interval in Interval:
                key = f"STRIPE_PRICE_{plan.value}_{interval.value}".upper()
                assert settings.price_id(plan, interval) == REQUIRED[key]
        assert settings.jwt_secret.get_secret_value() == REQUIRED["JWT_SECRET"]
        assert settings.app_update_payment_method_url == REQUIRED["APP_UPDATE_PAYMENT_METHOD_URL"]
        assert (settings.smtp_host, settings.smtp_port, settings.smtp_starttls) == (
            REQUIRED["SMTP_HOST"],
            587,
            True,
        )
        assert settings.dunning_retry_delays == [timedelta(days=7), timedelta(days=7)]
        assert settings.dunning_max_failures == 3
        assert settings.log_format == "json"
        assert settings.environment == "production"  # development secrets refused

        database = make_url(settings.database_url)
        assert database.drivername == "postgresql+psycopg"
        assert (database.host, database.port, database.database) == ("postgres", 5432, "billing")
        assert (database.username, database.password) == (
            postgres_env["POSTGRES_USER"],
            postgres_env["POSTGRES_PASSWORD"],
        )
        assert database.password == OPERATOR_ENV["POSTGRES_PASSWORD"]
        assert database.database == postgres_env["POSTGRES_DB"]
        assert settings.temporal_address == "temporal:7233"
        assert (settings.temporal_namespace, settings.temporal_task_queue) == ("default", "billing")


def test_the_api_listens_where_it_is_published_and_checked(
    rendered: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API binds every interface on the port Compose publishes, and its healthcheck asks
    that port's /readyz (a route the API has); the worker serves its metrics on every
    interface, on the port it exposes and Prometheus scrapes, and its healthcheck asks it."""
    api = rendered["services"]["api"]
    settings = settings_from(api["environment"], monkeypatch)
    assert settings.api_host == "0.0.0.0"
    assert [(int(port["target"]), int(port["published"])) for port in api["ports"]] == [
        (settings.api_port, 8000)
    ]
    check = " ".join(api["healthcheck"]["test"])
    assert f"http://127.0.0.1:{settings.api_port}/readyz" in check
    assert "/readyz" in {getattr(route, "path", None) for route in health.router.routes}
    worker = rendered["services"]["worker"]
    worker_settings = settings_from(worker["environment"], monkeypatch)
    host, port = worker_settings.worker_metrics_address.rsplit(":", 1)
    assert host == "0.0.0.0"
    assert worker["expose"] == [port]
    assert f"http://127.0.0.1:{port}/metrics" in " ".join(worker["healthcheck"]["test"])
    scrape = yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in scrape}
    assert targets == {
        "billing-api": [f"api:{settings.api_port}"],
        "billing-worker": [f"worker:{port}"],
    }


def test_temporal_setup_registers_every_search_attribute(
    rendered: dict[str, Any], tmp_path: Path
) -> None:
    """The rendered entrypoint runs in a real shell with a stand-in `temporal` that records its
    arguments: one create per search attribute the workflows set, with its type. This also
    proves the `$${...}` escapes reach the shell as parameter expansions, not as Compose's."""
    setup = rendered["services"]["temporal-setup"]
    # The rendered model is itself a compose file, so `$` is still escaped there as `$$`;
    # the container gets one.
    argv = [part.replace("$$", "$") for part in setup["entrypoint"] + setup["command"]]
    calls = tmp_path / "calls"
    stub = tmp_path / "bin" / "temporal"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    stub.chmod(0o755)
    subprocess.run(argv, env={"PATH": f"{stub.parent}:/usr/bin:/bin"}, check=True, timeout=30)
    registered = {}
    for line in calls.read_text().splitlines():
        match = re.fullmatch(
            r"operator search-attribute create --namespace default --name (\w+) --type (\w+)",
            line,
        )
        assert match, line
        registered[match[1]] = match[2]
    assert registered == {key.name: STACK_SEARCH_ATTRIBUTES[key.name] for key in SEARCH_ATTRIBUTES}
    assert setup["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


def pinned(image: str) -> bool:
    """An exact release: `name:1.29.1`, `name:1.29.1-suffix`; not `latest`, nor a bare major or
    minor that moves (`1.29`). PostgreSQL numbers its releases major.minor, so `16.15` is one."""
    name, _, tag = image.rpartition(":")
    version = re.match(r"\d+(\.\d+)*", tag)
    numbers = version[0].count(".") + 1 if version else 0
    return bool(name) and numbers >= (2 if name == "postgres" else 3)


def test_every_image_is_pinned_to_an_exact_version(rendered: dict[str, Any]) -> None:
    """Every image Compose would pull, and the Dockerfile's base, names one exact release: the
    same file deploys the same software tomorrow."""
    assert not any(map(pinned, ("postgres:16", "temporalio/auto-setup:1.27", "x:latest", "x")))
    images = [
        service["image"]
        for name, service in rendered["services"].items()
        if name not in PROJECT_SERVICES
    ]
    bases = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert len(images) == 4 and len(bases) == 1
    for image in images + bases:
        assert pinned(image), image


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


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the service's process builds them, from exactly `env` (no .env file)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.skipif(
    "TEST_DATABASE_URL" not in os.environ, reason="needs PostgreSQL (CI always sets it)"
)
def test_temporal_logs_in_with_the_role_postgres_makes_for_it(rendered: dict[str, Any]) -> None:
    """The postgres image runs deploy/postgres-init.sh with its service's environment; the role
    it makes must be the one the temporal service logs in as, with the password the operator
    set (once a fixed 'temporal' whatever TEMPORAL_DB_PASSWORD said). Run here with `sh` and
    `psql` against a real PostgreSQL, under a role name of its own; the stored SCRAM verifier is
    checked against the password."""
    import psycopg

    services = rendered["services"]
    postgres, temporal = services["postgres"], services["temporal"]
    # v2 renders a volume as a mapping, v1 as `source:target:mode`.
    mounts = [
        (v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2])
        for v in postgres["volumes"]
    ]
    script = Path(next(source for source, target in mounts if "initdb.d" in target))
    assert script == ROOT / "deploy" / "postgres-init.sh"
    role = postgres["environment"]["TEMPORAL_DB_USER"]
    password = postgres["environment"]["TEMPORAL_DB_PASSWORD"]
    assert (temporal["environment"]["POSTGRES_USER"], temporal["environment"]["POSTGRES_PWD"]) == (
        role,
        password,
    )
    assert password == OPERATOR_ENV["TEMPORAL_DB_PASSWORD"]

    server = make_url(os.environ["TEST_DATABASE_URL"])
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    test_role = f"temporal_{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        **postgres["environment"],
        "TEMPORAL_DB_USER": test_role,
        "POSTGRES_USER": server.username or "postgres",
        "POSTGRES_DB": server.database or "postgres",
        "PGHOST": server.host or "127.0.0.1",
        "PGPORT": str(server.port or 5432),
    }
    try:
        subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True, timeout=60)
        with psycopg.connect(admin) as conn:
            row = conn.execute(
                "SELECT rolcanlogin, rolcreatedb, rolpassword FROM pg_authid WHERE rolname = %s",
                (test_role,),
            ).fetchone()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{test_role}"')
    assert row is not None
    can_login, can_create_databases, verifier = row
    assert (can_login, can_create_databases) == (True, True)
    assert scram_matches(verifier, password)


def scram_matches(verifier: str, password: str) -> bool:
    """Whether PostgreSQL's stored SCRAM-SHA-256 verifier (RFC 5803's form) is `password`'s."""
    method, _, rest = verifier.partition("$")
    iterations, _, rest = rest.partition(":")
    salt, _, keys = rest.partition("$")
    stored_key, _, _ = keys.partition(":")
    assert method == "SCRAM-SHA-256"
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hashlib.sha256(client_key).digest() == base64.b64decode(stored_key)
