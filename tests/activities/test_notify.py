"""Emails go over real SMTP to a local sink, rendered from templates, once per key."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.testing import ActivityEnvironment

import activities
from activities.notify import NotifyActivities, render
from core.db import AsyncSession
from core.payloads import Email, EmailKind
from core.settings import Settings
from tests.helpers import Inbox, free_port


@pytest.fixture
def notify(
    smtp_sink: tuple[Inbox, int], db_sessions: async_sessionmaker[AsyncSession]
) -> NotifyActivities:
    _, port = smtp_sink
    settings = Settings(_env_file=None, smtp_port=port)  # type: ignore[call-arg]  # pydantic hides BaseSettings' _env_file from mypy
    return NotifyActivities(settings, db_sessions)


@pytest.mark.parametrize("kind", list(EmailKind))
async def test_each_email_renders_and_arrives(
    notify: NotifyActivities, smtp_sink: tuple[Inbox, int], kind: EmailKind
) -> None:
    inbox, _ = smtp_sink
    context = {
        "name": "Ada",
        "plan": "pro",
        "interval": "monthly",
        "amount": "99.00 USD",
        "invoice_id": "in_123",
        "attempt": "2",
        "max_attempts": "3",
        "retry_at": "2026-12-01 10:00 UTC",
        "trial_end": "2026-12-01 10:00 UTC",
        "when": "Your subscription has ended today.",
        "reason": "Your card has insufficient funds.",
        "action_url": "https://billing.example.com/card?user=ada&x=1",
        "renews_at": "2027-01-01 10:00 UTC",
        "expires": "12/2026",
        "charge_at": "2027-01-01 10:00 UTC",
    }
    email = Email(
        kind=kind, to="ada@example.com", idempotency_key=f"k-{kind.value}", context=context
    )
    assert await ActivityEnvironment().run(notify.send_email, email) is True
    [message] = inbox.of_kind(kind.value)
    assert message["To"] == "ada@example.com"
    assert message["From"] == "SalesFlow Billing <billing@salesflow.local>"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None  # both parts
    body = text.get_content()
    assert "Hello Ada" in body
    assert "$" not in body + message["Subject"]  # every placeholder filled
    assert "Hello Ada" in html.get_content()
    template = (Path(activities.__file__).parent / "templates" / f"{kind.value}.txt").read_text()
    if "$action_url" in template:  # the link the customer needs, in both parts
        assert context["action_url"] in body
        assert 'href="https://billing.example.com/card?user=ada&amp;x=1"' in html.get_content()


async def test_a_retried_send_does_not_mail_twice(
    notify: NotifyActivities, smtp_sink: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp_sink
    email = Email(
        kind=EmailKind.RECEIPT,
        to="b@example.com",
        idempotency_key="wf/run/receipt/in_1",
        context={"amount": "29.00 USD", "invoice_id": "in_1"},
    )
    env = ActivityEnvironment()
    assert await env.run(notify.send_email, email) is True
    assert await env.run(notify.send_email, email) is False
    assert len(inbox.of_kind("receipt")) == 1
    assert "29.00 USD" in inbox.of_kind("receipt")[0]["Subject"]


async def test_smtp_down_fails_retryably(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = Settings(  # type: ignore[call-arg]  # pydantic hides BaseSettings' _env_file from mypy
        _env_file=None, smtp_port=free_port(), smtp_timeout_seconds=2
    )
    notify = NotifyActivities(settings, db_sessions)
    email = Email(
        kind=EmailKind.CANCELED,
        to="c@example.com",
        idempotency_key="k-down",
        context={"when": "now"},
    )
    with pytest.raises(OSError):  # aiosmtplib's connection errors; Temporal retries the activity
        await ActivityEnvironment().run(notify.send_email, email)
    # Nothing was recorded, so the retry sends it.
    async with db_sessions() as session:
        from sqlmodel import select

        from core.db import NotificationSent

        assert (await session.exec(select(NotificationSent))).all() == []


def test_the_message_id_is_the_same_for_the_same_key() -> None:
    # A copy sent again after a crash between sending and recording carries the same
    # Message-ID, so mail systems can drop it.
    email = Email(kind=EmailKind.RECEIPT, to="c@example.com", idempotency_key="wf/run/receipt/x")
    first, again = render(email, "billing@x.test"), render(email, "billing@x.test")
    assert first["Message-ID"] == again["Message-ID"]
    other = render(email.model_copy(update={"idempotency_key": "wf/run/receipt/y"}), "b@x.test")
    assert other["Message-ID"] != first["Message-ID"]


def test_a_name_cannot_add_lines_or_links_of_its_own() -> None:
    forged = "Ada,\n\nyour account is locked. Verify now:\nhttps://evil.example/login\n\nBob"
    email = Email(
        kind=EmailKind.NEW_CARD_NEEDED,
        to="ada@example.com",
        idempotency_key="wf/run/new_card_needed/x",
        context={"name": forged, "action_url": "https://app.example/card", "invoice_id": "in_1"},
    )
    message = render(email, "billing@x.test")
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    body = text.get_content()
    assert "\nhttps://evil.example/login\n" not in body  # on the greeting's line, not a line
    assert 'href="https://evil.example' not in html.get_content()
    assert 'href="https://app.example/card"' in html.get_content()  # the email's own link
    # The workflow's link is the only button; without one, the deployment's page.
    bare = email.model_copy(update={"context": {"name": "Ada", "invoice_id": "in_1"}})
    fallback = render(bare, "billing@x.test", "https://salesflow.example/billing/card")
    part = fallback.get_body(("html",))
    assert part is not None
    assert 'href="https://salesflow.example/billing/card"' in part.get_content()
