"""`expand[]`, checked against the installed SDK's resource classes.

Stripe expands an object id into the object (`expand[]=latest_invoice`), includes a list it
leaves out by default (`expand[]=payments` on an invoice), and walks through lists (`data`) and
plain sub-objects (`payments.data.payment.payment_intent`), at most four levels deep
(docs.stripe.com/api/expanding_objects). Anything else is refused with "This property cannot be
expanded (...)". Which fields are ids, lists or sub-objects comes from the SDK's type
annotations: `ExpandableField[...]` is `Union[str, Resource]`, `ListObject[...]` a list.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Callable
from functools import cache

from stripe._list_object import ListObject
from stripe._object_classes import OBJECT_CLASSES
from stripe._stripe_object import StripeObject

from emulator.errors import invalid
from emulator.store import Obj, render

MAX_DEPTH = 4

# What a field holds, as far as expansion goes.
ID, IDS, LIST, OBJECT, OBJECTS, NONE = "id", "ids", "list", "object", "objects", ""

# (object kind, field) -> the list Stripe includes when asked: the field's value for `obj`.
Includable = Callable[[Obj, str], Obj | None]


def expand(objects: dict[str, Obj], includable: Includable, body: Obj, paths: object) -> Obj:
    """`body` with every path in `paths` expanded (in place)."""
    if not isinstance(paths, list):
        raise invalid("Invalid array", param="expand")
    for path in paths:
        parts = str(path).split(".")
        if len(parts) > MAX_DEPTH:
            raise invalid(f"You cannot expand more than {MAX_DEPTH} levels of a property.")
        _walk(objects, includable, body, None, parts, top=True)
    return body


def _walk(
    objects: dict[str, Obj],
    includable: Includable,
    node: Obj,
    cls: type | None,
    parts: list[str],
    top: bool = False,
) -> None:
    head, rest = parts[0], parts[1:]
    if node.get("object") in ("list", "search_result") and cls is None:
        if head != "data" or not rest:
            hint = (
                f" You may want to try expanding 'data.{'.'.join(parts)}' instead."
                if top and head != "data"
                else ""
            )
            raise invalid(f"This property cannot be expanded ({head}).{hint}")
        for item in node.get("data") or []:
            if isinstance(item, dict):
                _walk(objects, includable, item, None, rest)
        return
    resource = cls or _sdk_class(str(node.get("object")))
    annotation = _annotations(resource).get(head) if resource else None
    shape, inner = _shape(annotation) if annotation is not None else (NONE, None)
    value = node.get(head)
    if shape == ID:
        if isinstance(value, str) and value in objects:
            node[head] = value = render(objects[value])
        if rest and isinstance(value, dict):
            _walk(objects, includable, value, None, rest)
        return
    if shape == IDS:
        items: list[object] = value if isinstance(value, list) else []
        for i, item in enumerate(items):
            if isinstance(item, str) and item in objects:
                items[i] = item = render(objects[item])
            if rest and isinstance(item, dict):
                _walk(objects, includable, item, None, rest)
        return
    if shape == LIST:
        if value is None:
            value = includable(node, head)
            if value is not None:
                node[head] = value
        if rest and isinstance(value, dict):
            _walk(objects, includable, value, None, rest)
        return
    if shape in (OBJECT, OBJECTS) and rest:
        for sub in value if isinstance(value, list) else [value]:
            if isinstance(sub, dict):
                _walk(objects, includable, sub, inner, rest)
        return
    if shape == OBJECT and value is None:
        return  # an includable sub-object the emulator does not fill
    raise invalid(f"This property cannot be expanded ({head}).")


@cache
def _sdk_class(kind: str) -> type | None:
    entry = OBJECT_CLASSES.get(kind)
    if entry is None:
        return None
    module, name = entry
    found: type = getattr(importlib.import_module(module), name)
    return found


@cache
def _annotations(cls: type) -> dict[str, object]:
    merged: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        merged.update(inspect.get_annotations(klass))
    return merged


def _shape(annotation: object) -> tuple[str, type | None]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        resources = [a for a in members if isinstance(a, typing.ForwardRef) or _is_object(a)]
        if str in members and resources:
            return ID, None
        return _shape(members[0]) if len(members) == 1 else (NONE, None)
    if annotation is ListObject or origin is ListObject:
        return LIST, None
    if origin is list and args:
        shape, inner = _shape(args[0])
        return {ID: (IDS, None), OBJECT: (OBJECTS, inner)}.get(shape, (NONE, None))
    if _is_object(annotation):
        return OBJECT, annotation if isinstance(annotation, type) else None
    return NONE, None


def _is_object(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, StripeObject)
