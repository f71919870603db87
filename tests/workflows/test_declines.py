"""Decline-aware dunning, access levels and pre-dunning, on the time-skipping server with fakes.

Soft declines are retried on the policy's schedule; a hard decline asks for a new card and never
charges the declined one again; a payment the bank wants authenticated waits for the customer on
Stripe's invoice page. In both cases the customer's window counts as the next failure when it
runs out, so the policy's limit still ends a dunning nobody answers.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from core.payloads import (
    Access,
    ActionReason,
    ActionRequired,
    ChargeRefunds,
    Interval,
    PayInvoice,
    Plan,
    Refund,
    SetDefaultPaymentMethod,
    SetPaymentMethod,
    Status,
)
from tests.helpers import eventually
from tests.workflows.fakes import FakeMailbox, FakeStore, FakeStripe
from tests.workflows.helpers import POLICY, Handle, lifecycle, on_fakes, order, ref, view_when
from workflows.subscription import SubscriptionWorkflow
from workflows.visibility import ACCESS, LAST_DECLINE_CODE

HOUR = timedelta(hours=1)


async def renewal_declined(
    handle: Handle, stripe: FakeStripe, card: str, event: str = "invoice.payment_failed"
) -> str:
    """A renewal charged to `card` fails that card's way, and Stripe says so; the invoice."""
    invoice = stripe.renew(paid=False, card=card)
    await handle.signal(SubscriptionWorkflow.stripe_event, ref(event, invoice))
    return invoice


async def test_a_soft_decline_is_retried_on_schedule_and_recovers_at_retry_2(
    env: WorkflowEnvironment,
) -> None:
    async with on_fakes(env, order()) as (handle, stripe, mail):
        await renewal_declined(handle, stripe, "pm_InsufficientFunds")
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 1)
        assert (view.status, view.access, view.action_required) == (
            Status.PAST_DUE,
            Access.GRACE,
            None,
        )
        assert view.last_payment_error is not None
        assert view.last_payment_error.decline_code == "insufficient_funds"
        assert view.last_payment_error.at is not None
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(ACCESS) == "grace"
        assert attributes.get(LAST_DECLINE_CODE) == "insufficient_funds"
        details = (await handle.query("__temporal_workflow_metadata")).current_details
        assert "insufficient_funds" in details
        assert "Your card has insufficient funds." in details
        assert "access **grace**" in details

        await env.sleep(POLICY.retry_delays[0] + HOUR)  # retry 1: declined again
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 2)
        assert view.access == Access.RESTRICTED
        stripe.default_pm = "pm_card_visa_attached"  # the money is back on the card
        await env.sleep(POLICY.retry_delays[1] + HOUR)  # retry 2 succeeds
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        assert (view.access, view.failed_payment_attempts, view.last_payment_error) == (
            Access.FULL,
            0,
            None,
        )
        assert len(stripe.requests(PayInvoice)) == 2
        await eventually(lambda: len(mail.sent) == 4)
        assert mail.kinds() == ["receipt", "payment_failed", "payment_failed", "receipt"]
        for sent in mail.sent[1:3]:
            assert sent.email.context["action_url"] == POLICY.update_payment_method_url
            assert sent.email.context["reason"] == "Your card has insufficient funds."
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(ACCESS) == "full"
        assert attributes.get(LAST_DECLINE_CODE) is None


async def test_a_hard_decline_asks_for_a_new_card_and_never_charges_the_old_one(
    env: WorkflowEnvironment,
) -> None:
    async with on_fakes(env, order()) as (handle, stripe, mail):
        await renewal_declined(handle, stripe, "pm_LostCard")
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 1)
        assert view.action_required == ActionRequired(
            reason=ActionReason.NEW_PAYMENT_METHOD, url=POLICY.update_payment_method_url
        )
        await eventually(lambda: mail.kinds()[-1:] == ["new_card_needed"])
        assert mail.sent[-1].email.context["action_url"] == POLICY.update_payment_method_url
        details = (await handle.query("__temporal_workflow_metadata")).current_details
        assert "end of the customer's window to add a new card" in details

        # No new card within the window: it counts as failure 2, the lost card is not charged.
        await env.sleep(POLICY.retry_delays[0] + HOUR)
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 2)
        assert view.access == Access.RESTRICTED
        assert view.action_required is not None
        assert stripe.requests(PayInvoice) == []
        assert "get_customer" in stripe.names()  # it looked for a new default card first
        await eventually(lambda: mail.kinds().count("new_card_needed") == 2)

        # The customer adds a card through the app: paid with it at once.
        await handle.execute_update(
            SubscriptionWorkflow.set_payment_method,
            SetPaymentMethod(payment_method_id="pm_card_visa"),
        )
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        assert (view.access, view.action_required) == (Access.FULL, None)
        assert len(stripe.requests(PayInvoice)) == 1


async def test_a_new_default_card_set_in_stripe_is_tried_at_once_after_a_hard_decline(
    env: WorkflowEnvironment,
) -> None:
    async with on_fakes(env, order()) as (handle, stripe, _):
        await renewal_declined(handle, stripe, "pm_LostCard")
        await view_when(handle, lambda v: v.action_required is not None)
        stripe.default_pm = "pm_from_the_portal"  # the customer portal sets a new default
        customer = stripe.sub["customer"]
        await handle.signal(SubscriptionWorkflow.stripe_event, ref("customer.updated", customer))
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        assert view.action_required is None
        [default] = [
            d
            for d in stripe.requests(SetDefaultPaymentMethod)
            if d.payment_method_id == "pm_from_the_portal"
        ]
        assert default.subscription_id == stripe.sub["id"]  # the subscription charges it too
        assert len(stripe.requests(PayInvoice)) == 1


async def test_a_payment_needing_authentication_waits_for_the_customer_and_recovers(
    env: WorkflowEnvironment,
) -> None:
    async with on_fakes(env, order()) as (handle, stripe, mail):
        invoice = await renewal_declined(
            handle, stripe, "pm_authenticationRequired", "invoice.payment_action_required"
        )
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 1)
        hosted = f"https://invoice.stripe.test/i/{invoice}"
        assert view.action_required == ActionRequired(
            reason=ActionReason.AUTHENTICATION_REQUIRED, url=hosted
        )
        await eventually(lambda: mail.kinds()[-1:] == ["authentication_required"])
        assert mail.sent[-1].email.context["action_url"] == hosted
        # Stripe's invoice.payment_failed for the same attempt changes nothing.
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("invoice.payment_failed", invoice)
        )

        stripe.authenticate(invoice)  # on Stripe's page
        await handle.signal(SubscriptionWorkflow.stripe_event, ref("invoice.paid", invoice))
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        assert (view.access, view.action_required, view.failed_payment_attempts) == (
            Access.FULL,
            None,
            0,
        )
        assert stripe.requests(PayInvoice) == []
        await eventually(lambda: mail.kinds()[-1:] == ["receipt"])
        assert mail.kinds().count("authentication_required") == 1


async def test_authentication_never_done_cancels_at_the_end_of_the_window(
    env: WorkflowEnvironment,
) -> None:
    async with on_fakes(env, order()) as (handle, stripe, mail):
        await renewal_declined(
            handle, stripe, "pm_authenticationRequired", "invoice.payment_action_required"
        )
        levels = [(await view_when(handle, lambda v: v.failed_payment_attempts == 1)).access]
        await env.sleep(POLICY.retry_delays[0] + HOUR)
        levels.append((await view_when(handle, lambda v: v.failed_payment_attempts == 2)).access)
        await env.sleep(POLICY.retry_delays[1] + HOUR)
        result = await handle.result()
        assert (result.status, result.failed_payment_attempts, result.access) == (
            Status.CANCELED,
            3,
            Access.NONE,
        )
        assert levels == [Access.GRACE, Access.RESTRICTED]
        assert stripe.requests(PayInvoice) == []  # the bank wanted the customer, not a retry
        assert stripe.sub["status"] == "canceled"
        await eventually(lambda: mail.kinds()[-1:] == ["final_notice"])
        assert mail.kinds() == [
            "receipt",
            "authentication_required",
            "authentication_required",
            "final_notice",
        ]


async def test_a_yearly_renewal_is_announced_at_the_policys_time_once(
    env: WorkflowEnvironment,
) -> None:
    async with on_fakes(env, order(interval=Interval.YEARLY)) as (handle, stripe, mail):
        renewal = stripe.sub["period_end"]
        before = renewal - POLICY.renewal_reminder_before
        await env.sleep(before - await env.get_current_time() - HOUR)
        assert mail.kinds() == ["receipt"]
        await env.sleep(2 * HOUR)
        await eventually(lambda: mail.kinds() == ["receipt", "renewal_reminder"])
        sent = mail.sent[-1]
        assert abs(sent.at - before) < timedelta(minutes=5)
        assert sent.email.context["amount"] == "290.00 USD"
        # Stripe's invoice.upcoming (named by its subscription) after it: no second email.
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("invoice.upcoming", stripe.sub["id"])
        )
        await view_when(handle, lambda v: v.status == Status.ACTIVE)
        await env.sleep(HOUR)
        assert mail.kinds() == ["receipt", "renewal_reminder"]


async def test_invoice_upcoming_announces_a_yearly_renewal_at_once(
    env: WorkflowEnvironment,
) -> None:
    async with on_fakes(env, order(interval=Interval.YEARLY)) as (handle, stripe, mail):
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("invoice.upcoming", stripe.sub["id"])
        )
        await eventually(lambda: mail.kinds() == ["receipt", "renewal_reminder"])
    async with on_fakes(env, order()) as (handle, stripe, mail):  # monthly: no reminder
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("invoice.upcoming", stripe.sub["id"])
        )
        await env.sleep(HOUR)
        assert mail.kinds() == ["receipt"]


async def test_a_card_expiring_before_the_renewal_is_announced_at_the_policys_time(
    env: WorkflowEnvironment,
) -> None:
    start = await env.get_current_time()
    month0 = start.month + 2  # the card works to the end of the month after next
    stripe, mail = FakeStripe(clock=env.get_current_time), FakeMailbox()
    stripe.expiry["pm_card_expiring"] = ((month0 - 1) % 12 + 1, start.year + (month0 - 1) // 12)
    start_order = order(interval=Interval.YEARLY, payment_method_id="pm_card_expiring")
    async with lifecycle(env, start_order, [*stripe.activities(), mail.send_email]) as handle:
        renewal = stripe.sub["period_end"]
        before = renewal - POLICY.card_expiry_reminder_before
        await env.sleep(before - await env.get_current_time() + HOUR)
        await eventually(lambda: mail.kinds() == ["receipt", "card_expiring"])
        sent = mail.sent[-1]
        assert abs(sent.at - before) < timedelta(minutes=5)
        assert sent.email.context["action_url"] == POLICY.update_payment_method_url
        month, year = stripe.expiry["pm_card_expiring"]
        assert sent.email.context["expires"] == f"{month:02d}/{year}"
        await env.sleep(POLICY.card_expiry_reminder_before)  # then the renewal reminder only
        await eventually(lambda: mail.kinds()[-1:] == ["renewal_reminder"])
        assert mail.kinds().count("card_expiring") == 1
        await handle.query(SubscriptionWorkflow.view)


async def test_a_refund_lands_in_the_ledger_once_per_refund(env: WorkflowEnvironment) -> None:
    stripe, mail, store = FakeStripe(clock=env.get_current_time), FakeMailbox(), FakeStore()
    activities = [*stripe.activities(), mail.send_email, store.record]
    async with lifecycle(env, order(), activities) as handle:
        now = await env.get_current_time()
        stripe.refunds["ch_1"] = ChargeRefunds(
            charge_id="ch_1",
            customer_id=stripe.sub["customer"],
            invoice_id="in_1",
            currency="usd",
            refunds=[
                Refund(id="re_1", amount=900, created=now, status="succeeded"),
                Refund(id="re_2", amount=500, created=now, status="failed"),
            ],
        )
        for _ in range(2):  # a second delivery (another event id) writes the same row, or is
            # folded into the first
            await handle.signal(SubscriptionWorkflow.stripe_event, ref("charge.refunded", "ch_1"))
        # Another customer's charge is none of this workflow's business.
        stripe.refunds["ch_other"] = stripe.refunds["ch_1"].model_copy(
            update={"charge_id": "ch_other", "customer_id": "cus_other"}
        )
        await handle.signal(SubscriptionWorkflow.stripe_event, ref("charge.refunded", "ch_other"))

        def refunds() -> list[tuple[str, int, int]]:
            return [
                (r.payment.invoice_id, r.payment.attempt, r.payment.amount_minor)
                for r in store.records
                if r.payment and r.payment.kind == "refunded"
            ]

        await eventually(lambda: len(refunds()) >= 1)
        await env.sleep(HOUR)
        # The same row however often it is written (the ledger is unique on it); the failed
        # refund and the other customer's charge write nothing.
        assert set(refunds()) == {("in_1", 1, 900)}


async def test_a_plan_may_have_its_own_policy(env: WorkflowEnvironment) -> None:
    longer = POLICY.model_copy(update={"retry_delays": [timedelta(days=10), timedelta(days=11)]})
    policy = POLICY.model_copy(update={"plans": {Plan.ENTERPRISE: longer}})
    start = order(plan=Plan.ENTERPRISE, policy=policy, payment_method_id="pm_card_chargeFail")
    async with on_fakes(env, start) as (handle, _, _):
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 1)
        assert view.next_payment_retry_at is not None
        waited = view.next_payment_retry_at - await env.get_current_time()
        assert timedelta(days=9) < waited <= timedelta(days=10)


async def test_the_declined_card_is_never_charged_again_whoever_asks(
    env: WorkflowEnvironment,
) -> None:
    async with on_fakes(env, order(payment_method_id="pm_LostCard")) as (handle, stripe, _):
        # Its first payment is declined: lost card.
        view = await view_when(handle, lambda v: v.action_required is not None)
        assert view.action_required is not None
        assert view.action_required.reason == ActionReason.NEW_PAYMENT_METHOD
        # Stripe's customer.updated (say, the customer marked delinquent) with the same card.
        customer = stripe.sub["customer"]
        await handle.signal(SubscriptionWorkflow.stripe_event, ref("customer.updated", customer))
        # An operator's "retry now", and the same card added again through the API.
        await handle.execute_update(SubscriptionWorkflow.retry_payment_now)
        await handle.execute_update(
            SubscriptionWorkflow.set_payment_method,
            SetPaymentMethod(payment_method_id="pm_LostCard"),
        )
        view = await view_when(handle, lambda v: v.next_payment_retry_at is not None)
        assert stripe.requests(PayInvoice) == []
        assert (view.failed_payment_attempts, view.status) == (1, Status.PAST_DUE)
        assert view.action_required is not None


async def test_a_failing_lookup_at_the_end_of_the_window_never_leaves_the_customer_without_a_timer(
    env: WorkflowEnvironment,
) -> None:
    async with on_fakes(env, order()) as (handle, stripe, _):
        await renewal_declined(handle, stripe, "pm_LostCard")
        await view_when(handle, lambda v: v.action_required is not None)
        stripe.customer_gone = True  # every re-read of the customer fails (a 4xx)
        await env.sleep(POLICY.retry_delays[0] + HOUR)
        view = await view_when(handle, lambda v: v.next_payment_retry_at is not None)
        assert view.failed_payment_attempts == 1  # nothing counted on a failed lookup...
        stripe.customer_gone = False
        await env.sleep(POLICY.retry_delays[0] + HOUR)  # ...and the next window goes on
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 2)
        assert view.next_payment_retry_at is not None


async def test_a_new_card_set_in_stripe_during_an_authentication_wait_is_tried(
    env: WorkflowEnvironment,
) -> None:
    async with on_fakes(env, order()) as (handle, stripe, _):
        await renewal_declined(
            handle, stripe, "pm_authenticationRequired", "invoice.payment_action_required"
        )
        await view_when(handle, lambda v: v.action_required is not None)
        stripe.default_pm = "pm_portal_visa"
        customer = stripe.sub["customer"]
        await handle.signal(SubscriptionWorkflow.stripe_event, ref("customer.updated", customer))
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        assert view.action_required is None
        assert len(stripe.requests(PayInvoice)) == 1
