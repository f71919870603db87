"""Fixtures for the lifecycle with real activities; the builders are in helpers.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import stripe
from sqlalchemy.ext.asyncio import async_sessionmaker

from activities import activities_of
from activities.notify import NotifyActivities
from activities.store import StoreActivities
from activities.stripe import StripeActivities
from core.db import AsyncSession
from core.settings import Settings
from tests.helpers import Inbox


@pytest.fixture
def real_activities(
    settings: Settings,
    stripe_sdk: stripe.StripeClient,
    smtp_sink: tuple[Inbox, int],
    db_sessions: async_sessionmaker[AsyncSession],
) -> list[Callable[..., Any]]:
    """Every activity for real: Stripe's SDK against the emulator, SMTP, the database."""
    notify = NotifyActivities(settings.model_copy(update={"smtp_port": smtp_sink[1]}), db_sessions)
    return activities_of(
        StripeActivities(stripe_sdk, settings), notify, StoreActivities(db_sessions)
    )
