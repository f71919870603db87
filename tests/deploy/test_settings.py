"""Outside development the services refuse the development secrets, naming the setting and never
its value; refused values are never echoed and logs stay scrubbed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import structlog
from pydantic import ValidationError

from core.logging import configure_logging
from core.settings import DEV_JWT_SECRET, EMULATOR_API_BASE, EMULATOR_API_KEY, Settings
from tests.helpers import ROOT

# What a production deployment sets: every refusal below changes one of these.
SAFE = {
    "environment": "production",
    "jwt_secret": "a" * 32,
    "stripe_api_key": "sk_live_51Hsecretsecretsecret",
    "stripe_api_base": "https://api.stripe.com",
    "stripe_webhook_secrets": "whsec_live_secret",
}


def settings(**changes: Any) -> Settings:
    """SAFE with `changes` (and no .env file)."""
    return Settings(_env_file=None, **{**SAFE, **changes})  # type: ignore[call-arg]  # pydantic hides BaseSettings' _env_file from mypy


def test_a_production_configuration_starts() -> None:
    assert settings().insecurities() == []


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"jwt_secret": DEV_JWT_SECRET}, "JWT_SECRET is the development secret"),
        ({"jwt_secret": "short-secret"}, "JWT_SECRET is shorter than 32 bytes"),
        ({"stripe_api_key": EMULATOR_API_KEY}, "STRIPE_API_KEY is the emulator's key"),
        ({"stripe_api_base": EMULATOR_API_BASE}, "STRIPE_API_KEY is a real key, sent to"),
        ({"stripe_webhook_secrets": ""}, "STRIPE_WEBHOOK_SECRETS is empty"),
    ],
)
@pytest.mark.parametrize("environment", ["staging", "production"])
def test_outside_development_each_development_secret_is_refused(
    changes: dict[str, str], named: str, environment: str
) -> None:
    with pytest.raises(ValidationError, match=named) as refused:
        settings(environment=environment, **changes)
    message = str(refused.value)
    for value in (*SAFE.values(), *changes.values()):
        if value not in {"", "production", "https://api.stripe.com", EMULATOR_API_BASE}:
            assert value not in message  # named by setting, never by value


def test_development_runs_on_the_embedded_defaults() -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]  # pydantic hides BaseSettings' _env_file from mypy
    assert defaults.environment == "development"
    assert len(defaults.insecurities()) == 2  # the development JWT secret, no webhook secret


def test_a_refused_value_is_never_echoed() -> None:
    with pytest.raises(ValidationError) as refused:
        settings(dunning_max_failures="sk_live_leaked")
    assert "sk_live_leaked" not in str(refused.value)


@pytest.mark.parametrize("command", [["worker.py"], ["-m", "api"]])
def test_the_worker_and_the_api_refuse_to_start_naming_the_settings_only(
    command: list[str],
) -> None:
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "JWT_SECRET": DEV_JWT_SECRET,
        "STRIPE_API_KEY": "sk_live_51Hleakedleakedleaked",
        "STRIPE_API_BASE": "http://stripe.attacker.example",
        "STRIPE_WEBHOOK_SECRETS": "",
    }
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("refusing to start, the settings are not safe to run:")
    for problem in (
        "JWT_SECRET is the development secret",
        "STRIPE_API_KEY is a real key, sent to a STRIPE_API_BASE not Stripe's",
        "STRIPE_WEBHOOK_SECRETS is empty",
    ):
        assert problem in done.stderr
    assert "sk_live_51H" not in done.stderr + done.stdout
    assert DEV_JWT_SECRET not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_logs_scrub_temporal_api_keys_and_secret_settings(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(Settings(_env_file=None, log_format="json"))  # type: ignore[call-arg]  # pydantic hides BaseSettings' _env_file from mypy
    api_key = "eyJhbGciOiJFUzI1NiJ9.eyJhY2NvdW50X2lkIjoiYWJjIn0.c2lnbmF0dXJlLXBhcnQ"
    structlog.get_logger("test").warning(
        f"temporal refused key {api_key}",
        temporal_api_key=api_key,
        jwt_secret="plain-secret-value",
        smtp_password="hunter2-password",
    )
    line = json.loads(capsys.readouterr().err.splitlines()[0])
    text = json.dumps(line)
    assert api_key not in text
    assert "plain-secret-value" not in text
    assert "hunter2" not in text
    assert line["event"] == "temporal refused key [redacted]"
