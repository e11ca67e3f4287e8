"""The plugin manager: loads every ``nas`` entry point (built-ins included) and fills the registries.

Environment:
  ``NAS_DISABLE_PLUGINS=a,b``   block these plugins by entry-point name.
  ``NAS_NO_PLUGIN_AUTOLOAD=1``  load no entry points (tests then register plugins explicitly).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import attrs
import pluggy

from nas_core import hookspecs
from nas_core.errors import PluginError
from nas_core.registry import Registry

ENTRY_POINT_GROUP = "nas"

# registry attribute -> (registration hook, what the registry holds)
REGISTRATION_HOOKS = {
    "spaces": ("nas_register_spaces", "search space"),
    "relaxations": ("nas_register_relaxations", "relaxation"),
    "optimizers": ("nas_register_optimizers", "optimizer"),
    "discretizers": ("nas_register_discretizers", "discretizer"),
    "datasets": ("nas_register_datasets", "dataset"),
    "evaluators": ("nas_register_evaluators", "evaluator"),
}


@attrs.define
class Registries:
    spaces: Registry
    relaxations: Registry
    optimizers: Registry
    discretizers: Registry
    datasets: Registry
    evaluators: Registry
    presets: dict[str, tuple[dict[str, Any], str, str]]  # name -> (mapping, plugin, doc)
    genotypes: dict[str, tuple[Any, str, str]]  # name -> (Genotype, plugin, doc)


def _env_list(var: str) -> list[str]:
    return [n.strip() for n in os.environ.get(var, "").split(",") if n.strip()]


def make_plugin_manager(*, autoload: bool | None = None, extra_plugins: Iterable[tuple[str, object]] = (),
                        blocked: Iterable[str] = ()) -> pluggy.PluginManager:
    """A plugin manager with every installed ``nas`` plugin loaded, minus blocked ones."""
    pm = pluggy.PluginManager("nas")
    pm.add_hookspecs(hookspecs)
    for name in [*_env_list("NAS_DISABLE_PLUGINS"), *blocked]:
        pm.set_blocked(name)
    if autoload is None:
        autoload = os.environ.get("NAS_NO_PLUGIN_AUTOLOAD", "") in ("", "0")
    if autoload:
        _load_entry_points(pm)
    for name, plugin in extra_plugins:
        _register(pm, plugin, name, "(registered by caller)")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise PluginError(f"plugin {e.plugin!r} implements a hook that does not exist: {e}") from None
    return pm


def _register(pm: pluggy.PluginManager, plugin: object, name: str, dist: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as e:
        raise PluginError(f"plugin {name!r} ({dist}) is invalid: {e}") from None
    except ValueError as e:  # already registered under another name, or name clash
        raise PluginError(f"plugin {name!r} ({dist}) could not be registered: {e}") from None


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as e:  # any import-time failure of third-party code
            raise PluginError(f"plugin {ep.name!r} ({_dist_label(ep)}, {ep.value}) failed to load: "
                              f"{type(e).__name__}: {e}") from e
        _register(pm, plugin, ep.name, _dist_label(ep))


def _dist_label(ep: metadata.EntryPoint) -> str:
    return f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"


def distribution_of(plugin_name: str) -> str:
    """'name version' of the distribution whose entry point registered ``plugin_name``."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP, name=plugin_name):
        return _dist_label(ep)
    return "(not from an entry point)"


def collect_registries(pm: pluggy.PluginManager) -> Registries:
    """Call every registration hook, one plugin at a time so each item knows its plugin."""
    from nas_core.genotype import Genotype

    regs: dict[str, Any] = {attr: Registry(kind) for attr, (_, kind) in REGISTRATION_HOOKS.items()}
    values: dict[str, dict[str, tuple[Any, str, str]]] = {"presets": {}, "genotypes": {}}
    for plugin_name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        others = [p for p in pm.get_plugins() if p is not plugin]
        for attr, (hook_name, _) in REGISTRATION_HOOKS.items():
            registry = regs[attr]

            def register(name: str, factory: Any, *, options: type | None = None, doc: str | None = None,
                         _reg: Registry = registry, _plugin: str = plugin_name) -> None:
                _reg.add(name, factory, options=options, plugin=_plugin, doc=doc)

            _call(pm, hook_name, others, plugin_name, register)

        for attr, hook_name, kind, expected in (("presets", "nas_register_presets", "preset", dict),
                                                 ("genotypes", "nas_register_genotypes", "genotype", Genotype)):
            def register_value(name: str, value: Any, *, doc: str = "", _plugin: str = plugin_name,
                               _table: dict = values[attr], _kind: str = kind, _type: type = expected) -> None:
                if name in _table:
                    raise PluginError(f"{_kind} {name!r} is registered twice: by plugin {_table[name][1]!r} "
                                      f"and by plugin {_plugin!r}")
                if not isinstance(value, _type):
                    raise PluginError(f"plugin {_plugin!r}: {_kind} {name!r} must be a {_type.__name__}")
                _table[name] = (value, _plugin, doc)

            _call(pm, hook_name, others, plugin_name, register_value)
    return Registries(**regs, **values)


def _call(pm: pluggy.PluginManager, hook_name: str, others: list[object], plugin_name: str, register: Any) -> None:
    caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
    try:
        caller(register=register)
    except PluginError:
        raise
    except Exception as e:
        raise PluginError(f"plugin {plugin_name!r} ({distribution_of(plugin_name)}) failed in {hook_name}: "
                          f"{type(e).__name__}: {e}") from e
