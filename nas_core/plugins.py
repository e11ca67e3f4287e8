"""The plugin manager: loads every ``nas`` entry point (built-ins included) and fills the registries.

Environment:
  ``NAS_DISABLE_PLUGINS=a,b``   block these plugins by entry-point name.
  ``NAS_NO_PLUGIN_AUTOLOAD=1``  load no entry points (tests then register plugins explicitly).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

import attrs
import pluggy

from nas_core import hookspecs
from nas_core.errors import PluginError
from nas_core.registry import Operation, Operations, Registry

ENTRY_POINT_GROUP = "nas"

# registry attribute -> (registration hook, what the registry holds)
REGISTRATION_HOOKS = {
    "tasks": ("nas_register_tasks", "task"),
    "spaces": ("nas_register_spaces", "search space"),
    "relaxations": ("nas_register_relaxations", "relaxation"),
    "optimizers": ("nas_register_optimizers", "optimizer"),
    "trainers": ("nas_register_trainers", "trainer"),
    "discretizers": ("nas_register_discretizers", "discretizer"),
    "datasets": ("nas_register_datasets", "dataset"),
    "evaluators": ("nas_register_evaluators", "evaluator"),
    "mixed_edges": ("nas_register_mixed_edges", "mixed edge"),
    "perturbations": ("nas_register_perturbations", "perturbation"),
}


@attrs.frozen
class Preset:
    mapping: dict[str, Any]  # the YAML config layout
    plugin: str
    doc: str = ""
    default: bool = False  # used when no --preset is given
    base: str | None = None  # a preset this one builds on: its mapping names only what changes


@attrs.frozen
class Command:
    name: str
    run: Callable[..., int]  # run(args, toolkit) -> exit code
    configure: Callable[[argparse.ArgumentParser], None] | None
    plugin: str
    help: str = ""


@attrs.frozen
class Section:
    name: str
    options: type  # attrs class
    plugin: str
    doc: str = ""


@attrs.define
class Registries:
    tasks: Registry
    spaces: Registry
    relaxations: Registry
    optimizers: Registry
    trainers: Registry
    discretizers: Registry
    datasets: Registry
    evaluators: Registry
    mixed_edges: Registry
    perturbations: Registry
    operations: Operations
    presets: dict[str, Preset]
    genotypes: dict[str, tuple[Any, str, str, str | None]]  # name -> (Genotype, plugin, doc, space)
    settings: dict[str, Section]  # config sections: the core's search and train, and plugins'
    commands: dict[str, Command]

    def preset_for_space(self, space: str | None) -> str | None:
        """The default preset when it uses ``space``, else the first registered preset that does
        (``nas run --space darts_rnn`` needs the RNN space's settings, not the CNN demo's)."""
        default = self.default_preset()
        for name in ([default] if default else []) + list(self.presets):
            named = [self.presets[n].mapping.get("space") for n in self.preset_chain(name)]
            if space is not None and [m["name"] for m in named if isinstance(m, dict) and "name" in m][-1:] == [space]:
                return name
        return default

    def preset_chain(self, name: str) -> list[str]:
        """Preset ``name`` and the presets it builds on, base first: each is a config layer of
        its own, so a preset that builds on another names only what changes."""
        chain: list[str] = []
        while name is not None:
            if name in chain:
                raise PluginError(f"presets {' -> '.join(map(repr, [*chain[::-1], name]))} build on each other "
                                  f"in a circle")
            if name not in self.presets:
                raise PluginError(f"preset {chain[0]!r} (plugin {self.presets[chain[0]].plugin!r}) builds on preset "
                                  f"{name!r}, which no installed plugin registers")
            chain.insert(0, name)
            name = self.presets[name].base
        return chain

    def default_preset(self) -> str | None:
        """The preset a plugin marked as default, if exactly one did."""
        defaults = sorted(n for n, p in self.presets.items() if p.default)
        if len(defaults) > 1:
            raise PluginError(f"presets {', '.join(map(repr, defaults))} (plugins "
                              f"{', '.join(self.presets[n].plugin for n in defaults)}) all claim to be the default; "
                              f"choose one with --preset")
        return defaults[0] if defaults else None


def _env_list(var: str) -> list[str]:
    return [n.strip() for n in os.environ.get(var, "").split(",") if n.strip()]


def make_plugin_manager(*, autoload: bool | None = None, extra_plugins: Iterable[object | tuple[str, object]] = (),
                        blocked: Iterable[str] = ()) -> pluggy.PluginManager:
    """A plugin manager with every installed ``nas`` plugin loaded, minus blocked ones, plus
    ``extra_plugins`` (objects or ``(name, object)`` pairs; tests and embedding programs)."""
    pm = pluggy.PluginManager("nas")
    pm.add_hookspecs(hookspecs)
    for name in [*_env_list("NAS_DISABLE_PLUGINS"), *blocked]:
        pm.set_blocked(name)
    if autoload is None:
        autoload = os.environ.get("NAS_NO_PLUGIN_AUTOLOAD", "") in ("", "0")
    if autoload:
        _load_entry_points(pm)
    for item in extra_plugins:
        name, plugin = item if isinstance(item, tuple) else (getattr(item, "__name__", type(item).__name__), item)
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
    only = _env_list("NAS_ONLY_PLUGINS")  # e.g. a test suite that must not see other installed plugins
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None or (only and ep.name not in only):
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
    from nas_core.config import CORE_SECTIONS
    from nas_core.genotype import Genotype

    regs: dict[str, Any] = {attr: Registry(kind) for attr, (_, kind) in REGISTRATION_HOOKS.items()}
    presets: dict[str, Preset] = {}
    genotypes: dict[str, tuple[Any, str, str, str | None]] = {}
    settings = {name: Section(name, cls, "nas_core", doc) for name, (cls, doc) in CORE_SECTIONS.items()}
    commands: dict[str, Command] = {}
    operations = Operations()

    def unique(table: dict, kind: str, name: Any, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {kind} with an invalid name {name!r}")
        if name in table:
            first = getattr(table[name], "plugin", None) or table[name][1]
            raise PluginError(f"{kind} {name!r} is registered twice: by plugin {first!r} and by plugin {plugin!r}")

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

        def register_preset(name: str, mapping: Any, *, doc: str = "", default: bool = False,
                            base: str | None = None, _plugin: str = plugin_name) -> None:
            unique(presets, "preset", name, _plugin)
            if not isinstance(mapping, dict):
                raise PluginError(f"plugin {_plugin!r}: preset {name!r} must be a dict in the config layout")
            if base is not None and not isinstance(base, str):
                raise PluginError(f"plugin {_plugin!r}: preset {name!r}: base must be a preset name")
            presets[name] = Preset(mapping, _plugin, doc, bool(default), base)

        def register_genotype(name: str, genotype: Any, *, doc: str = "", space: str | None = None,
                              _plugin: str = plugin_name) -> None:
            unique(genotypes, "genotype", name, _plugin)
            if not isinstance(genotype, Genotype):
                raise PluginError(f"plugin {_plugin!r}: genotype {name!r} must be a Genotype")
            genotypes[name] = (genotype, _plugin, doc, space)

        def register_section(name: str, options: type, *, doc: str = "", _plugin: str = plugin_name) -> None:
            unique(settings, "config section", name, _plugin)
            if not attrs.has(options):
                raise PluginError(f"plugin {_plugin!r}: config section {name!r} must be an attrs class")
            settings[name] = Section(name, options, _plugin, doc)

        def register_command(name: str, run: Callable[..., int], *,
                             configure: Callable[[argparse.ArgumentParser], None] | None = None,
                             help: str = "", _plugin: str = plugin_name) -> None:  # noqa: A002 (argparse's word)
            unique(commands, "command", name, _plugin)
            if name in BUILTIN_COMMANDS:
                raise PluginError(f"plugin {_plugin!r}: command {name!r} is a built-in nas command")
            commands[name] = Command(name, run, configure, _plugin, help)

        def register_operation(name: str, factory: Callable[..., Any], *, family: str, parameter_free: bool = False,
                               zero: bool = False, doc: str = "", _plugin: str = plugin_name) -> None:
            operations.add(Operation(name, family, factory, _plugin, bool(parameter_free), bool(zero), doc))

        for hook_name, register_value in (("nas_register_presets", register_preset),
                                          ("nas_register_operations", register_operation),
                                          ("nas_register_genotypes", register_genotype),
                                          ("nas_register_settings", register_section),
                                          ("nas_register_commands", register_command)):
            _call(pm, hook_name, others, plugin_name, register_value)
    return Registries(**regs, operations=operations, presets=presets, genotypes=genotypes, settings=settings, commands=commands)


BUILTIN_COMMANDS = ("run", "train", "transfer", "derive", "show", "plugins", "list", "config")


def _call(pm: pluggy.PluginManager, hook_name: str, others: list[object], plugin_name: str, register: Any) -> None:
    caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
    try:
        caller(register=register)
    except PluginError:
        raise
    except Exception as e:
        raise PluginError(f"plugin {plugin_name!r} ({distribution_of(plugin_name)}) failed in {hook_name}: "
                          f"{type(e).__name__}: {e}") from e
