"""Billing meters, meter events and their summaries (docs.stripe.com/api/billing/meter)."""

from __future__ import annotations

import time

from emulator.errors import invalid
from emulator.store import Obj, Store, _int, new_id


class MetersMixin(Store):
    def create_meter(self, p: Obj) -> Obj:
        for key in ("display_name", "event_name", "default_aggregation"):
            if key not in p:
                raise invalid(
                    f"Missing required param: {key}.", param=key, code="parameter_missing"
                )
        if any(
            o["event_name"] == p["event_name"] and o["status"] == "active"
            for o in self.all("billing.meter")
        ):
            raise invalid(
                f"An active meter with event_name `{p['event_name']}` already exists.",
                param="event_name",
            )
        return self._create(
            "billing.meter",
            {
                "display_name": p["display_name"],
                "event_name": p["event_name"],
                "status": "active",
                "default_aggregation": {"formula": p["default_aggregation"]["formula"]},
                "customer_mapping": p.get("customer_mapping")
                or {"event_payload_key": "stripe_customer_id", "type": "by_id"},
                "value_settings": p.get("value_settings") or {"event_payload_key": "value"},
                "event_time_window": p.get("event_time_window"),
                "status_transitions": {"deactivated_at": None},
                "updated": int(time.time()),
            },
        )

    def create_meter_event(self, p: Obj) -> Obj:
        for key in ("event_name", "payload"):
            if key not in p:
                raise invalid(
                    f"Missing required param: {key}.", param=key, code="parameter_missing"
                )
        meter = next(
            (
                o
                for o in self.all("billing.meter")
                if o["event_name"] == p["event_name"] and o["status"] == "active"
            ),
            None,
        )
        if meter is None:
            raise invalid(
                f"No active meter found for event_name `{p['event_name']}`.", param="event_name"
            )
        payload = p["payload"]
        customer_key = meter["customer_mapping"]["event_payload_key"]
        value_key = meter["value_settings"]["event_payload_key"]
        if customer_key not in payload:
            raise invalid(
                f"Missing required field `{customer_key}` in payload.",
                param=f"payload[{customer_key}]",
            )
        customer = self.get("customer", payload[customer_key], f"payload[{customer_key}]")
        now = self.now_for(customer)
        identifier = p.get("identifier") or new_id("billing.meter_event")
        value = _int(payload.get(value_key, 1), f"payload[{value_key}]")
        event = {
            "object": "billing.meter_event",
            "event_name": p["event_name"],
            "identifier": identifier,
            "payload": payload,
            "timestamp": _int(p.get("timestamp", now), "timestamp"),
            "created": now,
            "livemode": False,
        }
        # Stripe enforces identifier uniqueness (at least 24 hours): a repeat is not counted.
        if identifier not in self.meter_usage:
            self.meter_usage[identifier] = value
            self._create(
                "billing.meter_event",
                {**event, "_meter": meter["id"], "_customer": customer["id"], "_value": value},
                now,
            )
        return event

    def meter_event_summaries(self, meter_id: str, p: Obj) -> Obj:
        meter = self.get("billing.meter", meter_id)
        for key in ("customer", "start_time", "end_time"):
            if key not in p:
                raise invalid(
                    f"Missing required param: {key}.", param=key, code="parameter_missing"
                )
        start, end = _int(p["start_time"], "start_time"), _int(p["end_time"], "end_time")
        values = [
            o["_value"]
            for o in self.all("billing.meter_event")
            if o["_meter"] == meter["id"]
            and o["_customer"] == p["customer"]
            and start <= o["timestamp"] < end
        ]
        formula = meter["default_aggregation"]["formula"]
        total = (
            len(values)
            if formula == "count"
            else (values[-1] if formula == "last" and values else sum(values))
        )
        summary = {
            "id": f"mtrusg_{meter['id'][4:]}{start}",
            "object": "billing.meter_event_summary",
            "aggregated_value": total,
            "start_time": start,
            "end_time": end,
            "meter": meter["id"],
            "livemode": False,
        }
        return {
            "object": "list",
            "data": [summary],
            "has_more": False,
            "url": f"/v1/billing/meters/{meter['id']}/event_summaries",
        }
