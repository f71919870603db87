"""Webhook endpoints (docs.stripe.com/api/webhook_endpoints)."""

from __future__ import annotations

import secrets

from emulator.errors import invalid
from emulator.store import Obj, Store


class WebhookEndpointsMixin(Store):
    def create_webhook_endpoint(self, p: Obj, secret: str | None = None) -> Obj:
        if "url" not in p:
            raise invalid("Missing required param: url.", param="url", code="parameter_missing")
        events = p.get("enabled_events") or []
        if not events:
            raise invalid(
                "Missing required param: enabled_events.",
                param="enabled_events",
                code="parameter_missing",
            )
        endpoint = self._create(
            "webhook_endpoint",
            {
                "url": p["url"],
                "enabled_events": events,
                "status": "enabled",
                "description": p.get("description"),
                "metadata": p.get("metadata") or {},
                "api_version": p.get("api_version"),
                "application": None,
                "_secret": secret or f"whsec_{secrets.token_hex(24)}",
            },
        )
        return endpoint

    def endpoints_for(self, event_type: str) -> list[Obj]:
        return [
            o
            for o in self.all("webhook_endpoint")
            if not o.get("deleted")
            and o["status"] == "enabled"
            and ("*" in o["enabled_events"] or event_type in o["enabled_events"])
        ]
