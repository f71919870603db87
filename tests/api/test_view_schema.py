"""The subscription view's HTTP schema is mapped field by field from the workflow's view."""

from __future__ import annotations

from datetime import UTC, datetime

from api.schemas import ActionRequiredOut, PaymentErrorOut, SubscriptionOut, WorkflowStatus
from core.payloads import (
    Access,
    ActionReason,
    ActionRequired,
    Interval,
    PaymentError,
    Plan,
    Status,
    SubscriptionView,
)

AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_every_field_of_the_view_is_answered() -> None:
    view = SubscriptionView(
        user_id="u1",
        status=Status.PAST_DUE,
        plan=Plan.PRO,
        interval=Interval.YEARLY,
        current_period_end=AT,
        failed_payment_attempts=2,
        next_payment_retry_at=AT,
        stripe_customer_id="cus_u1",
        stripe_subscription_id="sub_u1",
        workflow_id="subscription-u1",
        access=Access.RESTRICTED,
        last_payment_error=PaymentError(
            code="card_declined",
            decline_code="lost_card",
            advice_code="do_not_try_again",
            message="Your card was declined.",
            payment_method="pm_lost",
            at=AT,
        ),
        action_required=ActionRequired(
            reason=ActionReason.NEW_PAYMENT_METHOD, url="https://app.test/billing/card"
        ),
    )
    answered = SubscriptionOut.of(view, WorkflowStatus.RUNNING).model_dump(mode="json")
    assert answered == {
        "user_id": "u1",
        "status": "past_due",
        "plan": "pro",
        "interval": "yearly",
        "trial_end": None,
        "current_period_end": "2026-03-04T05:06:07Z",
        "cancel_at_period_end": False,
        "failed_payment_attempts": 2,
        "next_payment_retry_at": "2026-03-04T05:06:07Z",
        "stripe_customer_id": "cus_u1",
        "stripe_subscription_id": "sub_u1",
        "workflow_id": "subscription-u1",
        "access": "restricted",
        "last_payment_error": {
            "code": "card_declined",
            "decline_code": "lost_card",
            "advice_code": "do_not_try_again",
            "message": "Your card was declined.",
            "payment_method": "pm_lost",
            "at": "2026-03-04T05:06:07Z",
        },
        "action_required": {
            "reason": "new_payment_method",
            "url": "https://app.test/billing/card",
        },
        "workflow_status": "running",
    }


def test_a_view_with_nothing_wrong_answers_nulls() -> None:
    view = SubscriptionView(user_id="u2", status=Status.ACTIVE, workflow_id="subscription-u2")
    answered = SubscriptionOut.of(view, WorkflowStatus.COMPLETED)
    assert answered.access == Access.FULL
    assert answered.last_payment_error is None
    assert answered.action_required is None
    assert answered.workflow_status == WorkflowStatus.COMPLETED


def test_no_field_of_the_wire_models_is_forgotten() -> None:
    # A field added to the workflow's view must be added to the HTTP schema (and mapped).
    assert set(SubscriptionView.model_fields) <= set(SubscriptionOut.model_fields)
    assert set(PaymentError.model_fields) <= set(PaymentErrorOut.model_fields)
    assert set(ActionRequired.model_fields) <= set(ActionRequiredOut.model_fields)


def test_the_new_fields_are_described_in_the_schema() -> None:
    schema = SubscriptionOut.model_json_schema()
    for field in ("access", "last_payment_error", "action_required", "workflow_status"):
        assert schema["properties"][field].get("description"), field
    assert schema["$defs"]["Access"]["enum"] == ["full", "grace", "restricted", "none"]
