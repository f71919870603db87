"""Stripe's form encoding, decoded; parameters checked against the installed SDK's types.

`stripe/params/` in the SDK lists every request parameter of the API version it pins, so
the emulator takes its notion of "unknown parameter" from there instead of from memory.
"""

from __future__ import annotations

import importlib
import re
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from stripe._request_options import RequestOptions

from emulator.errors import StripeApiError

_NAME = re.compile(r"\b([A-Z][A-Za-z0-9]*Params[A-Za-z0-9]*)\b")
_OPTIONS = set(RequestOptions.__annotations__)


def decode(body: str) -> dict[str, Any]:
    """`a[b][0][c]=1&expand[]=x` -> {"a": {"b": [{"c": "1"}]}, "expand": ["x"]}."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        head, _, rest = key.partition("[")
        parts = [head] + (rest[:-1].split("][") if rest else [])
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


@cache
def _params_class(module: str) -> type:
    """`billing.meter_event_create` -> stripe.params.billing.MeterEventCreateParams."""
    package, _, name = module.rpartition(".")
    path = "stripe.params" + (f".{package}" if package else "") + f"._{name}_params"
    cls_name = "".join(part.capitalize() for part in name.split("_")) + "Params"
    cls: type = getattr(importlib.import_module(path), cls_name)
    return cls


def check(params: dict[str, Any], schema: str) -> None:
    """Reject a parameter the API version does not have, as Stripe does (400, named)."""
    cls = _params_class(schema)
    _check(params, cls, "", importlib.import_module(cls.__module__))


def _check(value: Any, cls: type, prefix: str, module: Any) -> None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, cls, f"{prefix}[{i}]", module)
        return
    if not isinstance(value, dict):
        return
    fields = {k: v for k, v in cls.__annotations__.items() if k not in _OPTIONS}
    for key, item in value.items():
        name = f"{prefix}[{key}]" if prefix else key
        if key not in fields:
            raise StripeApiError(
                400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )
        spec = str(fields[key])
        if "Dict[str" in spec:  # free-form maps such as metadata
            continue
        nested = [getattr(module, n) for n in _NAME.findall(spec) if hasattr(module, n)]
        if nested and isinstance(item, dict | list):
            _check(item, nested[0], name, module)
