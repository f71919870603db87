"""Settings and logging: every documented setting parses; secrets never reach a log line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from core.logging import configure_logging
from core.payloads import Interval, Plan
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_documents_every_setting_and_parses() -> None:
    documented = {
        line.split("=", 1)[0].lower()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert documented == set(Settings.model_fields)
    settings = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]  # pydantic hides BaseSettings' _env_file from mypy
    assert settings.stripe_meter_events == {
        "leads_generated": "leads_generated",
        "api_calls": "api_calls",
    }
    assert settings.stripe_webhook_secrets == []


def test_webhook_secrets_split_for_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRETS", "whsec_old, whsec_new")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # pydantic hides BaseSettings' _env_file from mypy
    assert [s.get_secret_value() for s in settings.stripe_webhook_secrets] == [
        "whsec_old",
        "whsec_new",
    ]


def test_price_ids_by_plan_and_interval() -> None:
    settings = Settings(_env_file=None, stripe_price_pro_yearly="price_123")  # type: ignore[call-arg]  # pydantic hides BaseSettings' _env_file from mypy
    assert settings.price_id(Plan.PRO, Interval.YEARLY) == "price_123"
    assert settings.plan_for_price("price_123") == (Plan.PRO, Interval.YEARLY)
    with pytest.raises(LookupError, match="STRIPE_PRICE_STARTER_MONTHLY"):
        settings.price_id(Plan.STARTER, Interval.MONTHLY)


def test_json_logs_redact_secrets_and_card_numbers(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    import structlog

    configure_logging(Settings(_env_file=None, log_format="json"))  # type: ignore[call-arg]  # pydantic hides BaseSettings' _env_file from mypy
    structlog.get_logger("test").info(
        "calling stripe with sk_test_abcdef123456", card="4242 4242 4242 4242", api_key="x"
    )
    logging.getLogger("stdlib").warning("secret whsec_abc123 in a stdlib record")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    text = json.dumps(lines)
    assert "sk_test_abcdef" not in text
    assert "4242 4242" not in text
    assert "whsec_abc" not in text
    assert lines[0]["event"] == "calling stripe with [redacted]"
    assert lines[0]["api_key"] == "[redacted]"
    assert lines[0]["level"] == "info"
    assert lines[1]["event"] == "secret [redacted] in a stdlib record"


def test_the_dunning_count_keeps_its_old_name_across_continue_as_new() -> None:
    from core.state import BillingState

    old = {"user_id": "u1", "email": "u1@example.com", "plan": "pro", "interval": "monthly"}
    carried = BillingState.model_validate({**old, "failures": 2})
    assert carried.failed_payment_attempts == 2
    # Written under both names: a worker still on the old code reads `failures`.
    written = carried.model_dump(mode="json")
    assert written["failed_payment_attempts"] == 2
    assert written["failures"] == 2
    assert BillingState.model_validate(written).failed_payment_attempts == 2
    renamed = BillingState.model_validate({**old, "failed_payment_attempts": 1})
    assert renamed.failed_payment_attempts == 1
