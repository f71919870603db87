"""Idempotency keys: derived from the workflow and the step, ASCII whatever the ids."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

# Stripe accepts keys of up to 255 characters; HTTP headers and Message-IDs want ASCII.
MAX_LENGTH = 255


def idempotency_key(*parts: str) -> str:
    """`parts` joined by `/`, percent-encoded to ASCII, hashed at the tail if too long.

    The same parts give the same key on every retry, so Stripe (or the mailer) answers a
    retried write with the first result. No input can make a key an HTTP client refuses.
    """
    key = "/".join(quote(part, safe="-_.:@+=#") for part in parts)
    if len(key) <= MAX_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: MAX_LENGTH - len(digest) - 1]}~{digest}"
