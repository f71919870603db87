"""Temporal activities: one class per outside system, its client passed in."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def activities_of(*instances: object) -> list[Callable[..., Any]]:
    """The bound `@activity.defn` methods of the given objects, for a worker."""
    return [
        method
        for instance in instances
        for _, method in inspect.getmembers(instance, inspect.ismethod)
        if hasattr(method, "__temporal_activity_definition")
    ]
