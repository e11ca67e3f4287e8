"""Build registered components from the config, checking each returns what its kind promises."""

from __future__ import annotations

from typing import Any

from nas_core.config import Component
from nas_core.errors import ConfigError, PluginError
from nas_core.registry import Registry


def build(registry: Registry, chosen: Component, expected: type, **context: Any) -> Any:
    """``factory(options, **context)`` of the chosen entry. A ValueError from the factory is bad
    input (options that do not fit together, data of the wrong kind): it becomes a ConfigError."""
    entry = registry.get(chosen.name)
    try:
        obj = entry.factory(chosen.options, **context)
    except ValueError as e:
        raise ConfigError(f"{registry.kind} {chosen.name!r}: {e}") from e
    if not isinstance(obj, expected):
        raise PluginError(f"{registry.kind} {chosen.name!r} from plugin {entry.plugin!r} built a "
                          f"{type(obj).__name__}, not a {expected.__name__}")
    return obj
