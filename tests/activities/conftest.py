"""Fixtures of the Stripe activity tests."""

from __future__ import annotations

import pytest
import stripe
from temporalio.testing import ActivityEnvironment

from activities.stripe import StripeActivities
from core.settings import Settings
from tests.activities.helpers import Run


@pytest.fixture
def acts(settings: Settings, stripe_sdk: stripe.StripeClient) -> StripeActivities:
    return StripeActivities(stripe_sdk, settings)


@pytest.fixture
def run() -> Run:
    return ActivityEnvironment().run
