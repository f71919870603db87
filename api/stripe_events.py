"""A Stripe webhook's body: read within a size cap, signature checked, parsed into `StripeEvent`.

Everything here is pure (no database, no Temporal) and raises `WebhookRefused` with the HTTP
status to answer. What a validly signed event of any type, API version or shape carries is
read leniently (a field we do not understand is "not there"); only the envelope we rely on
(event id, type, created, the object and its id) must have Stripe's types, else 400.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe

from core.payloads import is_user_id

MAX_BODY_BYTES = 1 << 20  # API.md: 413 over 1 MiB

# Stripe's ids and type names are short runs of visible ASCII. Anything else (an empty string,
# control characters, a NUL PostgreSQL cannot store, kilobytes of text) is not a Stripe event,
# and the database columns hold 255 (ids) and 100 (type) characters.
_ID = re.compile(r"[\x21-\x7e]{1,255}")
_TYPE = re.compile(r"[\x21-\x7e]{1,100}")
# `created`, in seconds: 2001-09-09 to 2100-01-01; Stripe's oldest fixtures date from 2009.
CREATED_MIN = 1_000_000_000
CREATED_MAX = 4_102_444_800

V1_EVENT = "event"
V2_THIN_EVENT = "v2.core.event"


class WebhookRefused(Exception):
    """The request is refused with `status` (400 or 413) and `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class EventObject:
    """What the event is about, as far as billing cares."""

    kind: str | None  # Stripe's `object`: invoice, subscription, customer, ...
    id: str | None  # None for objects without one (invoice.upcoming, balance, ...)
    customer_id: str | None
    subscription_id: str | None
    user_id: str | None  # from metadata, only when it is a valid user id
    refused_user_id: str | None = None  # a metadata user id that is not one, shortened, to log


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    created: int  # seconds since the epoch
    object: EventObject
    thin: bool = False  # a v2 thin event: a reference only, no data.object

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created, UTC)


async def read_body(
    content_length: str | None, stream: AsyncIterable[bytes], limit: int = MAX_BODY_BYTES
) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit`."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            declared = 0  # the server frames the body; the streamed count below still holds
        if declared > limit:
            raise WebhookRefused(413, f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > limit:
            raise WebhookRefused(413, f"the body is over {limit} bytes")
    return bytes(body)


def verify_signature(
    body: bytes, header: str | None, secrets: list[str], tolerance: int, now: float | None = None
) -> str:
    """The body as text, if `header` signs it with one of `secrets` within `tolerance` seconds
    either side of now (the SDK checks the HMAC and the past; the future is checked here)."""
    if not header:
        raise WebhookRefused(400, "missing Stripe-Signature header")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRefused(400, "the body is not UTF-8, so it is not a Stripe event") from None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
            break
        except stripe.SignatureVerificationError:
            continue
    else:
        raise WebhookRefused(400, "invalid signature or timestamp outside the tolerance")
    if _signed_at(header) > (time.time() if now is None else now) + tolerance:
        raise WebhookRefused(400, "signature timestamp outside the tolerance (in the future)")
    return text


def _signed_at(header: str) -> int:
    # The header's first `t=`, read as the SDK reads it (it has just accepted this header).
    items = [item.split("=", 2) for item in header.split(",")]
    return int(next(item[1] for item in items if item[0] == "t"))


def parse_event(text: str) -> StripeEvent:
    """The event in a verified body; 400 if it is not JSON of a Stripe event."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise _not_an_event("not JSON") from None
    if not isinstance(raw, dict):
        raise _not_an_event("not a JSON object")
    kind = raw.get("object")
    if kind == V2_THIN_EVENT:
        return _thin_event(raw)
    if kind != V1_EVENT:
        raise _not_an_event("`object` is neither `event` nor `v2.core.event`")
    data = raw.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise _not_an_event("`data.object` is not an object")
    return StripeEvent(
        id=_identifier(raw.get("id"), "id"),
        type=_type(raw.get("type")),
        created=_created(raw.get("created")),
        object=_object(data["object"]),
    )


def _thin_event(raw: dict[str, Any]) -> StripeEvent:
    """A v2 thin event: id, type, `created` as an ISO 8601 string, `related_object` by id."""
    related = raw.get("related_object")
    if related is not None and not isinstance(related, dict):
        raise _not_an_event("`related_object` is not an object")
    related = related or {}
    related_id = related.get("id")
    return StripeEvent(
        id=_identifier(raw.get("id"), "id"),
        type=_type(raw.get("type")),
        created=_iso_created(raw.get("created")),
        object=EventObject(
            kind=_text(related.get("type")),
            id=None if related_id is None else _identifier(related_id, "related_object.id"),
            customer_id=None,
            subscription_id=None,
            user_id=None,
        ),
        thin=True,
    )


def _object(obj: dict[str, Any]) -> EventObject:
    kind = obj.get("object")
    if kind is not None and not isinstance(kind, str):
        raise _not_an_event("`data.object.object` is not a string")
    object_id = obj.get("id")
    object_id = None if object_id is None else _identifier(object_id, "data.object.id")
    user_id, refused = _user(obj)
    return EventObject(
        kind=kind,
        id=object_id,
        customer_id=object_id if kind == "customer" else _ref(obj.get("customer")),
        subscription_id=object_id if kind == "subscription" else _subscription_of(obj),
        user_id=user_id,
        refused_user_id=refused,
    )


def _user(obj: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The user id from metadata, wherever the object's API version puts it: the invoice's
    `parent.subscription_details` (2025 on), its top-level `subscription_details` (2024 and
    earlier), the object's own `metadata` (subscription, customer). The first place that
    names one decides; a value that is not a user id is no user (and is reported)."""
    places = (
        _get(obj, "parent", "subscription_details", "metadata"),
        _get(obj, "subscription_details", "metadata"),
        _get(obj, "metadata"),
    )
    for metadata in places:
        if isinstance(metadata, dict) and "user_id" in metadata:
            value = metadata["user_id"]
            return (value, None) if is_user_id(value) else (None, repr(value)[:80])
    return None, None


def _subscription_of(obj: Mapping[str, Any]) -> str | None:
    return _ref(_get(obj, "parent", "subscription_details", "subscription")) or _ref(
        obj.get("subscription")
    )


def _get(obj: Mapping[str, Any], *path: str) -> object:
    value: object = obj
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _ref(value: object) -> str | None:
    """An id, whether Stripe sent it as a string or expanded into its object; None otherwise."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and _ID.fullmatch(value) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and _TYPE.fullmatch(value) else None


def _identifier(value: object, field: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise _not_an_event(f"`{field}` is not a Stripe id")
    return value


def _type(value: object) -> str:
    if not isinstance(value, str) or not _TYPE.fullmatch(value):
        raise _not_an_event("`type` is not an event type")
    return value


def _created(value: object) -> int:
    # bool is an int in Python, and JSON's 1e9 is a float: neither is Stripe's timestamp.
    if type(value) is not int or not CREATED_MIN <= value < CREATED_MAX:
        raise _not_an_event("`created` is not a timestamp in seconds")
    return value


def _iso_created(value: object) -> int:
    if not isinstance(value, str):
        raise _not_an_event("`created` is not an ISO 8601 time")
    try:
        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = int(when.timestamp())
    except (ValueError, OverflowError):
        raise _not_an_event("`created` is not an ISO 8601 time") from None
    return _created(seconds)


def _not_an_event(why: str) -> WebhookRefused:
    return WebhookRefused(400, f"the body is not a Stripe event: {why}")
