"""Build registered components from the config, checking each returns what its kind promises."""

from __future__ import annotations

from typing import Any

from nas_core.config import Component
from nas_core.errors import PluginError
from nas_core.registry import Registry


def build(registry: Registry, chosen: Component, expected: type, **context: Any) -> Any:
    entry = registry.get(chosen.name)
    obj = entry.factory(chosen.options, **context)
    if not isinstance(obj, expected):
        raise PluginError(f"{registry.kind} {chosen.name!r} from plugin {entry.plugin!r} built a "
                          f"{type(obj).__name__}, not a {expected.__name__}")
    return obj
