"""One registry per kind of component: name -> factory, plus the factory's options class.

Plugins never touch a registry directly: they receive its ``register`` callback from a
``nas_register_*`` hook, so the core owns naming and conflict checks.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from nas_core.errors import ConfigError, PluginError, UnknownNameError


@attrs.frozen
class Entry:
    """A registered component: how to build it and which options it accepts."""

    name: str
    factory: Callable[..., Any]
    options: type | None  # an attrs class; None means the component takes no options
    plugin: str  # the plugin that registered it
    doc: str = ""


class Registry:
    """Components of one kind (search spaces, relaxations, ...), keyed by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, factory: Callable[..., Any], *, options: type | None = None,
            plugin: str = "?", doc: str | None = None, force: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} with an invalid name {name!r}")
        if options is not None and not attrs.has(options):
            raise PluginError(f"plugin {plugin!r}: options of {self.kind} {name!r} must be an attrs class")
        if name in self._entries and not force:
            first = self._entries[name].plugin
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by plugin {first!r} and by plugin {plugin!r}"
            )
        if doc is None:
            doc = (getattr(factory, "__doc__", None) or "").strip().splitlines()[0:1]
            doc = doc[0] if doc else ""
        self._entries[name] = Entry(name, factory, options, plugin, doc)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


@attrs.frozen
class Operation:
    """A registered candidate operation (``nas_register_operations``)."""

    name: str
    family: str  # the spaces that build it, and so the factory's signature
    factory: Callable[..., Any]
    plugin: str
    parameter_free: bool = False  # no weights: pooling, identity, the zero op
    zero: bool = False  # means "no edge": never chosen by a discretizer
    doc: str = ""


class Operations:
    """Candidate operations by family and name, in registration order."""

    def __init__(self) -> None:
        self._families: dict[str, dict[str, Operation]] = {}

    def add(self, op: Operation) -> None:
        if not isinstance(op.name, str) or not op.name or not isinstance(op.family, str) or not op.family:
            raise PluginError(f"plugin {op.plugin!r} registered an operation with an invalid name or family "
                              f"({op.name!r}, {op.family!r})")
        family = self._families.setdefault(op.family, {})
        if op.name in family:
            raise PluginError(f"operation {op.name!r} of family {op.family!r} is registered twice: by plugin "
                              f"{family[op.name].plugin!r} and by plugin {op.plugin!r}")
        family[op.name] = op

    def get(self, family: str, name: str) -> Operation:
        try:
            return self._families[family][name]
        except KeyError:
            raise UnknownNameError(f"{family} operation", name, self._families.get(family, {})) from None

    def names(self, family: str) -> tuple[str, ...]:
        return tuple(self._families.get(family, {}))

    def families(self) -> list[str]:
        return sorted(self._families)

    def check(self, family: str, ops: tuple[str, ...], key: str = "space.ops") -> None:
        """A ValueError (a ConfigError once the space is built) unless ``ops`` are distinct, registered
        in ``family``, and not all zero ops."""
        valid = self.names(family)
        unknown = [o for o in ops if o not in valid]
        if unknown:
            raise ValueError(f"{key}: unknown ops {unknown}; valid ops: {', '.join(valid)}")
        if len(set(ops)) != len(ops) or all(self.get(family, o).zero for o in ops):
            raise ValueError(f"{key}: needs distinct ops, at least one of them not a zero op")


def build(registry: Registry, chosen: Any, expected: type, **context: Any) -> Any:
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


def lazy(target: str) -> Callable[..., Any]:
    """A factory that imports ``"package.module:attribute"`` on its first call.

    Registering ``lazy("my_plugin.space:MySpace")`` keeps the import of the module (and of torch)
    out of ``nas list``, ``nas plugins`` and ``nas --help``; pass ``doc=`` to ``register``."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"lazy({target!r}): expected 'package.module:attribute'")

    def factory(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module_name), attribute)(*args, **kwargs)

    factory.__qualname__ = factory.__name__ = f"lazy({target})"
    return factory
