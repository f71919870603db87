"""Settings from the environment (and an optional .env file), read once per process."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.payloads import Interval, Plan

# The emulator's default address and key: the embedded development default.
EMULATOR_API_BASE = "http://127.0.0.1:12111"
EMULATOR_API_KEY = "sk_test_salesflow_local"
# Good for local development only; production sets JWT_SECRET.
DEV_JWT_SECRET = "salesflow-local-development-only"
# HS256 wants a key as long as its hash (RFC 7518 3.2).
MIN_JWT_SECRET_BYTES = 32


class Settings(BaseSettings):
    """Everything the services read from the environment; `.env.example` documents each one."""

    # A refused value is never echoed (it may be a secret); an empty variable is an unset one.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", hide_input_in_errors=True, env_ignore_empty=True
    )

    # `development` (the default) runs on the embedded defaults; anywhere else the services
    # refuse to start with a development secret (see `_refuse_development_secrets`).
    environment: Literal["development", "staging", "production"] = "development"

    # Stripe
    stripe_api_key: SecretStr = SecretStr(EMULATOR_API_KEY)
    stripe_api_base: str = EMULATOR_API_BASE
    stripe_webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    stripe_timeout_seconds: float = 20.0
    # Temporal's retry policy owns retries; the SDK's own retries stay off by default.
    stripe_max_network_retries: int = 0
    stripe_price_starter_monthly: str = ""
    stripe_price_starter_yearly: str = ""
    stripe_price_pro_monthly: str = ""
    stripe_price_pro_yearly: str = ""
    stripe_price_enterprise_monthly: str = ""
    stripe_price_enterprise_yearly: str = ""
    # Usage metric (as the API names it) -> billing meter event name.
    stripe_meter_events: dict[str, str] = Field(
        default_factory=lambda: {"leads_generated": "leads_generated", "api_calls": "api_calls"}
    )

    # Dunning: delays between payment retries, failures before cancelling, trial reminder lead.
    # Durations are `<number><s|m|h|d>`; a demo can run the whole policy in seconds.
    # The default spreads three failures over two weeks; enterprise customers get three.
    dunning_retry_delays: Annotated[list[timedelta], NoDecode] = Field(
        default_factory=lambda: [timedelta(days=7), timedelta(days=7)]
    )
    # Per plan, other delays: JSON, e.g. `{"enterprise": "10d,11d"}`; `{}` for none.
    dunning_plan_retry_delays: dict[Plan, list[timedelta]] = Field(
        default_factory=lambda: {Plan.ENTERPRISE: [timedelta(days=10), timedelta(days=11)]}
    )
    dunning_max_failures: int = Field(default=3, ge=1)
    dunning_trial_reminder_before: timedelta = timedelta(days=3)
    dunning_renewal_reminder_before: timedelta = timedelta(days=7)
    dunning_card_expiry_reminder_before: timedelta = timedelta(days=14)
    # The SalesFlow app's page where a customer adds a card (linked from dunning emails).
    app_update_payment_method_url: str = "http://localhost:3000/billing/payment-method"

    # Email (SMTP). The embedded default is the local sink the dev stack runs.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = 10.0
    email_from: str = "SalesFlow Billing <billing@salesflow.local>"

    # Database: SQLite file by default, PostgreSQL in production (postgresql+psycopg://...).
    database_url: str = "sqlite+aiosqlite:///./.data/billing.sqlite3"

    # How often the usage-reporting schedule sends recorded usage to Stripe.
    usage_report_every: timedelta = timedelta(minutes=5)
    # How often the reconciliation schedule compares every Stripe subscription with the
    # customers' workflows, and how many subscriptions of a page it checks at once.
    reconcile_every: timedelta = timedelta(hours=6)
    reconcile_concurrency: int = Field(default=8, ge=1, le=64)

    # Temporal: named as Temporal's own environment configuration names them (the `temporal`
    # CLI reads the same variables). An API key or any certificate turns TLS on; TEMPORAL_TLS
    # forces it either way. Temporal Cloud: the namespace's gRPC endpoint and either an API key
    # or a client certificate and key (mTLS); a private CA needs the server CA certificate.
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "billing"
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool | None = None
    temporal_tls_server_ca_cert_path: FilePath | None = None
    temporal_tls_client_cert_path: FilePath | None = None
    temporal_tls_client_key_path: FilePath | None = None
    temporal_tls_server_name: str | None = None
    # How long an API request waits on Temporal before answering 503.
    temporal_rpc_timeout_seconds: float = 5.0
    # Where the worker serves its Prometheus metrics (the Temporal SDK's and the billing
    # counters), `host:port`; empty: not served. The API serves its own at GET /metrics.
    worker_metrics_address: str = ""

    # HTTP API: where it listens, its JWT (HS256) secret, how long a call waits for the
    # customer's workflow to answer, and the accepted age of a webhook's signature.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    api_wait_seconds: float = 30.0
    webhook_tolerance_seconds: int = 300

    # Logging
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"

    @field_validator("stripe_webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        # Several secrets may be live at once while an endpoint's secret is rolled.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("dunning_retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            return [parse_duration(part) for part in value.split(",") if part.strip()]
        return value

    @field_validator("dunning_plan_retry_delays", mode="before")
    @classmethod
    def _split_plan_delays(cls, value: object) -> object:
        if isinstance(value, dict):
            return {plan: cls._split_delays(delays) for plan, delays in value.items()}
        return value

    @field_validator(
        "dunning_trial_reminder_before",
        "dunning_renewal_reminder_before",
        "dunning_card_expiry_reminder_before",
        "usage_report_every",
        "reconcile_every",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _refuse_development_secrets(self) -> Self:
        if self.environment != "development" and (problems := self.insecurities()):
            raise ValueError(
                f"ENVIRONMENT={self.environment} refuses "
                + "".join(f"\n    - {problem}" for problem in problems)
            )
        if bool(self.temporal_tls_client_cert_path) != bool(self.temporal_tls_client_key_path):
            raise ValueError(
                "TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH go together"
            )
        return self

    def insecurities(self) -> list[str]:
        """What is only acceptable in development, named by setting, never by value."""
        problems = []
        jwt_secret = self.jwt_secret.get_secret_value()
        if jwt_secret == DEV_JWT_SECRET:
            problems.append("JWT_SECRET is the development secret")
        elif len(jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            problems.append(f"JWT_SECRET is shorter than {MIN_JWT_SECRET_BYTES} bytes")
        key = self.stripe_api_key.get_secret_value()
        real_stripe = (urlsplit(self.stripe_api_base).hostname or "").endswith("stripe.com")
        if key == EMULATOR_API_KEY and real_stripe:
            problems.append("STRIPE_API_KEY is the emulator's key, against Stripe itself")
        if key != EMULATOR_API_KEY and not real_stripe:
            problems.append("STRIPE_API_KEY is a real key, sent to a STRIPE_API_BASE not Stripe's")
        if not self.stripe_webhook_secrets:
            problems.append("STRIPE_WEBHOOK_SECRETS is empty (webhooks could not be verified)")
        return problems

    def price_id(self, plan: Plan, interval: Interval) -> str:
        """The Stripe price id configured for a plan and billing interval."""
        price: str = getattr(self, f"stripe_price_{plan.value}_{interval.value}")
        if not price:
            raise LookupError(
                f"no price configured for {plan.value}/{interval.value}: "
                f"set STRIPE_PRICE_{plan.value.upper()}_{interval.value.upper()}"
            )
        return price

    def plan_for_price(self, price_id: str) -> tuple[Plan, Interval] | None:
        """The plan and interval a configured price id stands for, if any."""
        for plan in Plan:
            for interval in Interval:
                if getattr(self, f"stripe_price_{plan.value}_{interval.value}") == price_id:
                    return plan, interval
        return None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str) -> timedelta:
    """`90`, `30s`, `15m`, `12h`, `3d` -> timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 12h, 3d)")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings."""
    return Settings()


def settings_or_exit() -> Settings:
    """The settings for a service's `main`: a refused value stops it with one message per
    problem (which setting and why, never the value), not a traceback."""
    try:
        return get_settings()
    except ValidationError as err:
        problems = "\n".join(
            f"  {'.'.join(map(str, e['loc'])).upper() or 'settings'}: "
            + str(e.get("ctx", {}).get("error", e["msg"]))
            for e in err.errors()
        )
        raise SystemExit(
            f"refusing to start, the settings are not safe to run:\n{problems}"
        ) from None
