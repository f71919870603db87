"""Card numbers never reach this service: a request that carries one is refused, unlogged."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import PROBLEM_JSON, problem_body

# 13 to 19 digits, optionally grouped by spaces or dashes.
_CANDIDATE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def has_card_number(text: str) -> bool:
    """True if `text` holds something shaped like a payment card number (Luhn-valid)."""
    return any(luhn_ok(re.sub(r"[ -]", "", m.group())) for m in _CANDIDATE.finditer(text))


class RefuseCardNumbers:
    """ASGI middleware: 422 for a card number in the path, query or body (webhooks excepted:
    they are signed by Stripe and carry no card numbers)."""

    def __init__(self, app: ASGIApp, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        text = " ".join(
            [
                unquote_plus(scope["path"]),
                unquote_plus(scope["query_string"].decode("latin-1")),
                body.decode("utf-8", "replace"),
            ]
        )
        if has_card_number(text):
            await _refuse(send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send) -> None:
    payload = problem_body(
        422,
        "Card numbers must not be sent to this service: collect the card with Stripe "
        "(Elements or Checkout) and send the payment method id (pm_...).",
        code="card_number_refused",
    )
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
