"""structlog set up once: JSON lines in production, readable lines in a terminal."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

import structlog

from core.settings import Settings

# Stripe secret/restricted keys, webhook secrets, bearer tokens, JWTs (our tokens, Temporal
# Cloud API keys) and card-like digit runs.
_SECRET = re.compile(
    r"(sk|rk)_(test|live)_[A-Za-z0-9]+|whsec_[A-Za-z0-9]+|Bearer\s+[A-Za-z0-9._\-]+"
    r"|\beyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*|\b(?:\d[ -]?){13,19}\b"
)
# A field whose name holds one of these is dropped whatever its value (jwt_secret, api_key,
# smtp_password, temporal_api_key, ...).
_SECRET_KEYS = ("api_key", "authorization", "secret", "password", "token")


def redact(value: str) -> str:
    """Replace anything that looks like a secret or a card number."""
    return _SECRET.sub("[redacted]", value)


def _redact_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if any(part in key.lower() for part in _SECRET_KEYS):
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = redact(value)
    return event


def configure_logging(settings: Settings) -> None:
    """Route stdlib and structlog output through one renderer, secrets removed."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_event,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # The SDK logs request lines at INFO; keep them at WARNING unless asked.
    logging.getLogger("stripe").setLevel(max(logging.WARNING, root.level))
