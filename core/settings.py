"""Settings from the environment (and an optional .env file), read once per process."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.payloads import Interval, Plan

# The emulator's default address and key: the embedded development default.
EMULATOR_API_BASE = "http://127.0.0.1:12111"
EMULATOR_API_KEY = "sk_test_salesflow_local"


class Settings(BaseSettings):
    """Everything the services read from the environment; `.env.example` documents each one."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

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

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "billing"

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


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings."""
    return Settings()
