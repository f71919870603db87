"""Email notifications over SMTP, rendered from templates, each sent once per idempotency key."""

from __future__ import annotations

import hashlib
import html
import re
from email.message import EmailMessage
from email.utils import formatdate
from importlib import resources
from string import Template

import aiosmtplib
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from temporalio import activity

from core.db import AsyncSession, NotificationSent
from core.metrics import EMAILS_SENT, activity_meter
from core.payloads import Email
from core.settings import Settings


def render(email: Email, sender: str, action_url: str = "") -> EmailMessage:
    """The message for an email: subject from the template's first line, the rest as body.

    `action_url` is the link where the workflow gave none (runs older than the setting);
    the customer's name is put on one line, so it cannot add lines of its own (a fake link).
    """
    text = resources.files("activities").joinpath(f"templates/{email.kind.value}.txt").read_text()
    context = {
        **email.context,
        "name": " ".join((email.context.get("name") or "there").split()),
        "reason": email.context.get("reason") or "The payment was declined.",
        "action_url": email.context.get("action_url") or action_url,
    }
    subject_line, _, body = Template(text).safe_substitute(context).partition("\n\n")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = email.to
    message["Subject"] = subject_line.removeprefix("Subject: ").strip()
    message["Date"] = formatdate(localtime=False)
    # A stable Message-ID lets mail systems drop a copy sent twice after a crash mid-send.
    digest = hashlib.sha256(email.idempotency_key.encode()).hexdigest()[:32]
    # (make_msgid would add the time, the pid and randomness: not stable.)
    message["Message-ID"] = f"<{digest}@billing.salesflow>"
    message["X-SalesFlow-Kind"] = email.kind.value
    message.set_content(body)
    message.add_alternative(
        as_html(message["Subject"], body, context["action_url"]), subtype="html"
    )
    return message


# A line that is only a web address: the link the customer needs, shown as a button.
_LINK = re.compile(r"^https?://\S+$")
_LINK_TEXT = "Open the page"


def as_html(subject: str, body: str, link: str) -> str:
    """The HTML part: the text's paragraphs, escaped; the line that is the email's own link
    (`link`, http or https) is a button, and nothing else is a link."""
    paragraphs = []
    for paragraph in body.strip().split("\n\n"):
        lines = []
        for line in paragraph.splitlines():
            text = html.escape(line.strip())
            if link and line.strip() == link and _LINK.match(link):
                text = (
                    f'<a href="{text}" style="display:inline-block;padding:10px 16px;'
                    f'background:#2b59c3;color:#fff;border-radius:4px;text-decoration:none">'
                    f"{html.escape(_LINK_TEXT)}</a><br><small>{text}</small>"
                )
            lines.append(text)
        paragraphs.append(f"<p>{'<br>'.join(lines)}</p>")
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(subject)}'
        f'</title></head><body style="font-family:sans-serif;line-height:1.5">'
        f"{''.join(paragraphs)}</body></html>"
    )


class NotifyActivities:
    """Sends the lifecycle's emails."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessions = sessions

    @activity.defn(name="notify.send_email")
    async def send_email(self, email: Email) -> bool:
        """Send once: True if sent now, False if this key was sent before."""
        async with self._sessions() as session:
            sent = await session.exec(
                select(NotificationSent).where(
                    NotificationSent.idempotency_key == email.idempotency_key
                )
            )
            if sent.first() is not None:
                return False
        settings = self._settings
        await aiosmtplib.send(
            render(email, settings.email_from, settings.app_update_payment_method_url),
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            start_tls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
        )
        async with self._sessions() as session:
            session.add(
                NotificationSent(
                    idempotency_key=email.idempotency_key, kind=email.kind, recipient=email.to
                )
            )
            try:
                await session.commit()
            except IntegrityError:  # a concurrent attempt recorded it first
                await session.rollback()
        EMAILS_SENT.add(activity_meter(), kind=email.kind.value)
        return True
