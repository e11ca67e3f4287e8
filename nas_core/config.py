"""The run configuration: frozen attrs classes built from layered YAML mappings.

Layers, later wins: built-in defaults < preset < ``--config`` file < CLI flags and ``--set``.
Each component section (``space``, ``optimizer``, ...) holds a ``name`` plus the fields of the
options class that the component registered. A preset's options for a section are kept only
where the finally chosen component takes the same options class as the one the preset names,
so ``--space my_space`` with the ``paper`` preset does not inherit the DARTS space's options;
user layers are always strict.
"""

from __future__ import annotations

import copy
import logging
import math
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import yaml

from nas_core.errors import ConfigError, PluginError, brief, closest_hint

if TYPE_CHECKING:
    from nas_core.plugins import Registries

def _positive(_: object, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


def _non_negative(_: object, attribute: attrs.Attribute, value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be 0 or more, got {value}")


@attrs.frozen
class SearchSettings:
    """Engine settings of a search run (``nas run``)."""

    epochs: int = attrs.field(default=50, validator=_positive)
    batch_size: int = attrs.field(default=64, validator=_positive)
    max_steps_per_epoch: int | None = attrs.field(default=None, validator=_positive)  # cut epochs short
    eval_every: int = attrs.field(default=1, validator=_non_negative)  # evaluate the supernet every N epochs (0: never)
    sync_batchnorm: bool = False  # torchrun on GPUs: batch statistics over all ranks (torch's SyncBatchNorm)
    # a staged search (P-DARTS, DrNAS): one config layer per stage, each over this config, e.g.
    # [{space: {cells: 5}}, {space: {cells: 11}}]; each stage is a search of its own in RUN_DIR/stage_N
    # and the nas_stage_config hook adds what a stage decides for the next (pruned ops). Empty: one search
    stages: tuple[Any, ...] = attrs.field(default=(), validator=lambda _, a, v: _check_stages(v))


def _check_stages(stages: tuple[Any, ...]) -> None:
    for i, layer in enumerate(stages, 1):
        if not isinstance(layer, Mapping):
            raise ValueError(f"search.stages[{i}] must be a mapping in the config layout, got {brief(layer)}")
        if isinstance(layer.get("search"), Mapping) and "stages" in layer["search"]:
            raise ValueError(f"search.stages[{i}] sets search.stages: stages do not nest")


@attrs.frozen
class TrainSettings:
    """Engine settings of training a discrete network from scratch (``nas train``, ``nas transfer``)."""

    epochs: int = attrs.field(default=600, validator=_positive)
    batch_size: int = attrs.field(default=96, validator=_positive)
    max_steps_per_epoch: int | None = attrs.field(default=None, validator=_positive)
    eval_every: int = attrs.field(default=1, validator=_non_negative)  # validate every N epochs (0: only at the end)
    sync_batchnorm: bool = False  # torchrun on GPUs: batch statistics over all ranks (torch's SyncBatchNorm)
    # the weights the test reads: those of the lowest valid_loss (kept in best.pt), or the last epoch's;
    # auto: best_valid when the task has a valid stream, else last; none: the test set is not read
    # at all (candidates and short-budget runs of a selection, which may look at validation only)
    test_model: str = attrs.field(default="auto",
                                  validator=attrs.validators.in_(("auto", "best_valid", "last", "none")))


#: The engines' own sections, registered like any plugin's (``nas_register_settings``).
CORE_SECTIONS: dict[str, tuple[type, str]] = {
    "search": (SearchSettings, "the search engine: epochs, batch size, evaluation"),
    "train": (TrainSettings, "the training engine: epochs, batch size, validation"),
}


@attrs.frozen
class Component:
    """A registered component chosen by name (None: not chosen), with its validated options: what
    ``config.space``, ``config.optimizer``... hold, and an options field made by :func:`component_field`."""

    name: str | None
    options: Any


def operations_field(family: str, default: tuple[str, ...]) -> Any:
    """An options field listing candidate operations of ``family`` (``nas_register_operations``):
    the config checks them against the registered ones, naming the valid choices. Type the field
    ``tuple[str, ...]``."""
    return attrs.field(default=default, metadata={"nas_operations": family})


def component_field(kind: str, default: str) -> Any:
    """An options field that chooses a registered component of ``kind`` (a registry of
    :class:`~nas_core.plugins.Registries`, e.g. ``"mixed_edges"``) with its own options, as a
    config section does: ``edge: partial_channels`` or ``edge: {name: partial_channels, k: 4}``, and
    ``--set space.edge.k=2``. It resolves to a :class:`Component`; ``default`` names the one used
    when the key is not set. Type the field ``Component``."""
    return attrs.field(default=Component(default, None), metadata={"nas_component": kind})


@attrs.frozen
class Config:
    seed: int
    device: str
    data_root: str | None
    threads: int | None  # CPU threads of torch; None: torch's default, recorded when a run starts
    task: Component
    dataset: Component
    space: Component
    relaxation: Component
    optimizer: Component
    trainer: Component
    discretizer: Component
    network: Any  # options of the space for the evaluation network (same class as space.options)
    settings: Mapping[str, Any]  # section name -> attrs instance (search, train, plugins' sections)
    perturbation: Component = Component(None, None)  # of the weight pass's mixing weights (optional)

    @property
    def search(self) -> SearchSettings:
        return self.settings["search"]

    @property
    def train(self) -> TrainSettings:
        return self.settings["train"]

    def layout(self) -> dict[str, Any]:
        """The fully resolved config in the YAML layout (what a run's ``config.yaml`` holds)."""
        return to_dict(self)


# section -> registry attribute
COMPONENTS = {"task": "tasks", "dataset": "datasets", "space": "spaces", "relaxation": "relaxations",
              "optimizer": "optimizers", "trainer": "trainers", "discretizer": "discretizers",
              "perturbation": "perturbations"}
SCALARS: dict[str, Any] = {"seed": int, "device": str, "data_root": str | None, "threads": int | None}
BASE: dict[str, Any] = {"seed": 0, "device": "auto", "data_root": None, "threads": None}


def top_keys(registries: Registries) -> list[str]:
    return sorted([*SCALARS, *COMPONENTS, "network", *registries.settings])


def require(config: Config, registries: Registries, kinds: tuple[str, ...], command: str) -> None:
    """A ConfigError for the first component kind in ``kinds`` that no layer chose."""
    for kind in kinds:
        if getattr(config, kind).name is None:
            registry = getattr(registries, COMPONENTS[kind])
            have = ", ".join(registry.names()) or "none: install a plugin that provides one"
            raise ConfigError(f"{command} needs a {registry.kind}: choose one with --{kind}, a config file or "
                              f"--preset; registered {registry.kind}s: {have}")


@attrs.frozen
class Layer:
    """One source of settings, e.g. a file; ``strict`` layers may not carry unknown keys."""

    data: Mapping[str, Any]
    source: str
    strict: bool = True


# ---------------------------------------------------------------------------------------------
# reading layers
# ---------------------------------------------------------------------------------------------

MAX_YAML_CHARS = 4 * 2**20  # a resolved config.yaml is about 2 kB
MAX_YAML_DEPTH = 32  # a config is 3 levels deep: section, option, list
MAX_YAML_VALUES = 100_000  # counting an alias as every value it stands for


class YamlLimitError(yaml.YAMLError):
    """A YAML document beyond the bounds of a config (see BoundedLoader)."""


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` within the bounds above. PyYAML shares an aliased value rather than
    copying it, but whatever walks the data (checking options, quoting a value) walks every
    expansion: 481 bytes of nested aliases ("billion laughs") grew past 2 GB. Composing is
    recursive, so thousands of nested brackets overflowed Python's stack; a recursive alias
    made a value that contains itself; an integer of thousands of digits is refused by Python."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> the values it stands for, once composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            if anchor in self.anchors and id(self.anchors[anchor]) not in self._sizes:
                raise YamlLimitError(f"the alias {brief('*' + anchor)} is inside the value it names")
        if self._depth >= MAX_YAML_DEPTH:
            raise YamlLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if id(node) not in self._sizes:  # not an alias of a value composed before
            children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                        else node.value if isinstance(node, yaml.SequenceNode) else [])
            size = 1 + sum(self._sizes.get(id(child), 1) for child in children)
            if size > MAX_YAML_VALUES:
                raise YamlLimitError(f"more than {MAX_YAML_VALUES} values once its aliases are expanded")
            self._sizes[id(node)] = size
        return node

    def construct_yaml_int(self, node: Any) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python reads at most 4300 digits
            raise YamlLimitError(f"the integer {brief(node.value)} is too large") from None


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


def load_yaml(text: str) -> Any:
    """YAML ``text`` read safely and within bounds (BoundedLoader): what every config file,
    ``--set`` value and saved run config is read with. Raises yaml.YAMLError, YamlLimitError
    beyond the bounds."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def preset_file(package: str, name: str) -> dict[str, Any]:
    """The preset ``name`` shipped as ``presets/<name>.yaml`` in ``package`` (its package data), read
    with :func:`load_yaml`: what a plugin's ``nas_register_presets`` passes to ``register``."""
    from importlib import resources

    data = load_yaml(resources.files(package).joinpath("presets", f"{name}.yaml").read_text())
    if not isinstance(data, dict):
        raise PluginError(f"{package}/presets/{name}.yaml is not a mapping in the config layout")
    return data


def load_yaml_file(path: str | Path) -> dict[str, Any]:
    """A config file (``--config``, a run's config.yaml): a mapping, read with :func:`load_yaml`."""
    path = Path(path)
    try:
        with path.open() as f:
            text = f.read(MAX_YAML_CHARS + 1)  # no more than that is read, whatever the file's size
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not text ({e.reason} at byte {e.start})") from None
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(f"config file {path} is longer than {MAX_YAML_CHARS} characters; a config is a few kB")
    try:
        data = load_yaml(text)
    except YamlLimitError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["search.epochs=3", "optimizer.xi=0"]`` -> nested mapping; values read as YAML scalars.
    ``space.edge=partial_channels`` with ``space.edge.k=2`` chooses a component option and sets its
    options (``{"edge": {"name": "partial_channels", "k": 2}}``), in either order."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {brief(item)}: expected KEY=VALUE, e.g. search.epochs=3")
        try:
            value = load_yaml(raw) if raw.strip() else None
        except YamlLimitError as e:
            raise ConfigError(f"--set {brief(item)}: {e}") from None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if isinstance(node.get(part), str):  # a component chosen by name, now given options too
                node[part] = {"name": node[part]}
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {brief(item)}: {brief(part)} is set both as a value and as a section")
        if isinstance(node.get(parts[-1]), dict) and isinstance(value, str):  # options first, then the name
            node[parts[-1]]["name"] = value
        else:
            node[parts[-1]] = value
    return out


# ---------------------------------------------------------------------------------------------
# resolving
# ---------------------------------------------------------------------------------------------

def resolve(registries: Registries, layers: list[Layer], *, preset: str | None = None) -> Config:
    """Merge the base, a preset and ``layers`` (in order) and validate the result."""
    all_layers = [Layer(BASE, "built-in defaults", strict=False)]
    if preset is not None:
        if preset not in registries.presets:
            raise ConfigError(f"unknown preset {preset!r}{closest_hint(preset, registries.presets)}; "
                              f"valid presets: {', '.join(sorted(registries.presets)) or '(none registered)'}")
        all_layers += [Layer(registries.presets[name].mapping, f"preset {name!r}", strict=False)
                       for name in registries.preset_chain(preset)]
    all_layers += layers

    keys = top_keys(registries)
    for layer in all_layers:
        if not isinstance(layer.data, Mapping):
            raise ConfigError(f"{layer.source}: expected a mapping")
        for key in layer.data:
            if key not in keys:
                raise ConfigError(f"{layer.source}: unknown key {key!r}{closest_hint(str(key), keys)}; "
                                  f"valid keys: {', '.join(keys)}")

    values: dict[str, Any] = {}
    for key, typ in SCALARS.items():
        value, source = _last(all_layers, key)
        values[key] = _convert(value, typ, key, source)
    if values["threads"] is not None and values["threads"] < 1:
        raise ConfigError(f"threads must be at least 1, got {values['threads']}")
    values["settings"] = {name: _build_attrs(section.options, _section(all_layers, name), name, registries=registries)
                          for name, section in sorted(registries.settings.items())}
    for key, attr in COMPONENTS.items():
        values[key] = _build_component(registries, attr, key, all_layers)
    values["network"] = _build_component(registries, "spaces", "network", all_layers, name_key="space").options
    return Config(**values)


def _last(layers: list[Layer], key: str) -> tuple[Any, str]:
    for layer in reversed(layers):
        if key in layer.data:
            return layer.data[key], layer.source
    raise AssertionError(f"no default for {key}")  # BASE has every scalar


def _section(layers: list[Layer], key: str) -> dict[str, tuple[Any, str]]:
    """Merged ``key -> (value, source)`` of one settings section."""
    merged: dict[str, tuple[Any, str]] = {}
    for layer in layers:
        for k, v in _mapping(layer, key).items():
            merged[str(k)] = (v, layer.source)
    return merged


def _mapping(layer: Layer, key: str) -> Mapping[str, Any]:
    section = layer.data.get(key)
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{layer.source}: {key!r} must be a mapping of options, got {section!r}")
    return section


def _build_component(registries: Registries, attr: str, key: str, layers: list[Layer],
                     name_key: str | None = None) -> Component:
    """A preset (non-strict layer) sets options for the component it names; they carry over to
    the chosen component only if both take the same options class (darts_1st and darts_2nd do,
    a third-party space with a field of the same name does not). ``name_key``: the section that
    names the component, when not ``key`` itself (``network`` takes the options of ``space``)."""
    registry = getattr(registries, attr)
    name_key = name_key or key
    name = None
    for layer in layers:
        name = _mapping(layer, name_key).get("name", name)
    if name is None:
        given = [(k, layer.source) for layer in layers for k in _mapping(layer, key) if layer.strict and k != "name"]
        if given:
            k, source = given[0]
            raise ConfigError(f"{source}: '{key}.{k}' is set but no {registry.kind} is chosen; "
                              f"name one with {name_key}.name or --{name_key}")
        return Component(None, None)
    if not isinstance(name, str):
        raise ConfigError(f"{key}.name must be a string, got {name!r}")
    entry = registry.get(name)
    merged: dict[str, tuple[Any, str]] = {}
    named = None  # the component named so far, layer by layer
    for layer in layers:
        section = _mapping(layer, key)
        named = _mapping(layer, name_key).get("name", named)
        if not layer.strict and (named not in registry or registry.get(named).options is not entry.options):
            continue
        for k, v in section.items():
            if k != "name" or name_key != key:
                merged[str(k)] = (_merge(merged.get(str(k), (None, ""))[0], v), layer.source)
    if entry.options is None:
        if merged:
            k, (_, source) = next(iter(merged.items()))
            raise ConfigError(f"{source}: unknown key '{key}.{k}': {registry.kind} {name!r} takes no options")
        return Component(name, None)
    return Component(name, _build_attrs(entry.options, merged, key, owner=f"{registry.kind} {name!r}",
                                        registries=registries))


def _merge(old: Any, new: Any) -> Any:
    """A later layer's value over an earlier one's. A component chosen in an option (a name, or a
    mapping with a name and options) keeps the earlier options while it names the same component."""
    if not isinstance(new, Mapping) and not (isinstance(new, str) and isinstance(old, Mapping)):
        return new
    old_map = {"name": old} if isinstance(old, str) else dict(old) if isinstance(old, Mapping) else {}
    new_map = {"name": new} if isinstance(new, str) else dict(new)
    if "name" in new_map and new_map["name"] != old_map.get("name"):
        return new_map
    return {**old_map, **new_map}


def _build_attrs(cls: type, merged: dict[str, tuple[Any, str]], section: str, owner: str | None = None, *,
                 registries: Registries | None = None) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs = {}
    for k, (value, source) in merged.items():
        if k not in fields:
            of = f" of {owner}" if owner else ""
            raise ConfigError(f"{source}: unknown key '{section}.{k}'{closest_hint(k, fields)}; "
                              f"valid keys{of}: {', '.join(sorted(fields)) or '(none)'}")
        kind = fields[k].metadata.get("nas_component")
        kwargs[k] = (_nested_component(registries, kind, value, f"{section}.{k}", source) if kind
                     else _convert(value, hints[k], f"{section}.{k}", source))
        family = fields[k].metadata.get("nas_operations")
        if family and registries is not None:
            try:
                registries.operations.check(family, kwargs[k], f"{section}.{k}")
            except ValueError as e:
                raise ConfigError(f"{source}: {e}") from None
    for k, field in fields.items():  # a component option left at its default gets its default options
        kind = field.metadata.get("nas_component")
        if kind and k not in kwargs:
            kwargs[k] = _nested_component(registries, kind, field.default.name, f"{section}.{k}", "default")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # attrs validators of the options class
        message = str(e.args[0]) if e.args and isinstance(e.args[0], str) else str(e)
        raise ConfigError(f"invalid {section} option: {message}") from None


def _nested_component(registries: Registries | None, kind: str, value: Any, key: str, source: str) -> Component:
    """The component an options field chooses (see :func:`component_field`), its options validated."""
    if registries is None:
        raise ConfigError(f"{key}: a component option needs the registries (plugin bug)")
    given = {"name": value} if isinstance(value, str) else value
    if not isinstance(given, Mapping) or not isinstance(given.get("name"), str):
        raise ConfigError(f"{source}: {key} must name a {getattr(registries, kind).kind} (a name, or a mapping with "
                          f"'name' and its options), got {brief(value)}")
    registry = getattr(registries, kind)
    name = given["name"]
    entry = registry.get(name)
    options = {str(k): (v, source) for k, v in given.items() if k != "name"}
    if entry.options is None:
        if options:
            raise ConfigError(f"{source}: unknown key '{key}.{next(iter(options))}': {registry.kind} {name!r} "
                              f"takes no options")
        return Component(name, None)
    return Component(name, _build_attrs(entry.options, options, key, owner=f"{registry.kind} {name!r}",
                                        registries=registries))


def _type_name(typ: Any) -> str:
    return getattr(typ, "__name__", None) or str(typ).replace("typing.", "")


class _OutOfRange(ConfigError):
    """A value of the right type outside the valid range: reported as it is, also for a union."""


#: The valid range of the top-level integers (resolve checks threads >= 1): torch.manual_seed
#: takes -2**63..2**64-1, torch.set_num_threads a C int. 4096 threads is above the hardware
#: threads of the largest servers; the bound is fixed, not the machine's, so that a run's
#: config resumes on any machine.
INT_RANGES: dict[str, tuple[int | None, int, str]] = {
    "seed": (-2**63, 2**64 - 1, "-2**63..2**64-1, the seeds torch.manual_seed accepts"),
    "threads": (None, 4096, "1..4096"),
}


def _check_number(number: int | float, key: str, source: str, given: Any) -> int | float:
    """``number`` (read from ``given``) if finite (an option of nan or inf ran to the end with NaN
    losses) and within its range."""
    if isinstance(number, float) and not math.isfinite(number):
        raise _OutOfRange(f"{source}: {key} must be a finite number, got {brief(given)}")
    low, high, valid = INT_RANGES.get(key, (None, None, ""))
    if (low is not None and number < low) or (high is not None and number > high):
        raise _OutOfRange(f"{source}: {key} must be in {valid}, got {brief(given)}")
    return number


def _convert(value: Any, typ: Any, key: str, source: str) -> Any:
    """Check ``value`` against a type hint; int is accepted for float, and strings such as
    '3e-4' too (YAML 1.1 reads a float without a dot as a string). Numbers must be finite, and
    the top-level integers within INT_RANGES."""
    def fail() -> ConfigError:
        return ConfigError(f"{source}: {key} must be {_type_name(typ)}, got {type(value).__name__} {brief(value)}")

    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except _OutOfRange:
                raise
            except ConfigError:
                pass
        raise fail()
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise fail()
        args = typing.get_args(typ)
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(f"{source}: {key} must have {len(args)} items, got {len(value)}")
        item_types = args[:1] * len(value) if (origin is list or args[-1:] == (Ellipsis,)) else args
        items = [_convert(v, t, f"{key}[{i}]", source) for i, (v, t) in enumerate(zip(value, item_types))]
        return origin(items)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return _check_number(value, key, source, value)
        raise fail()
    if typ is float:
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            try:
                number = float(value)  # '1e309' reads as inf
            except ValueError:
                pass
        if number is None:
            raise fail()
        try:
            number = float(number)
        except OverflowError:  # an int beyond the largest float
            number = math.inf
        return _check_number(number, key, source, value)
    if typ is str:
        if isinstance(value, str):
            return value
        raise fail()
    if typ is typing.Any:
        return copy.deepcopy(value)
    raise ConfigError(f"{key}: unsupported option type {_type_name(typ)} (plugin bug)")


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

def to_dict(config: Config) -> dict[str, Any]:
    """The fully resolved config in the YAML layout; loading it back gives the same Config."""
    out: dict[str, Any] = {k: getattr(config, k) for k in SCALARS}
    for key in COMPONENTS:
        comp: Component = getattr(config, key)
        if comp.name is not None:
            out[key] = _plain(comp)
    for key, value in config.settings.items():
        out[key] = _plain(value)
    if config.network is not None:
        out["network"] = _plain(config.network)
    return out


def _plain(value: Any) -> Any:
    """Options as YAML holds them: a chosen component as its name and options, tuples as lists."""
    if isinstance(value, Component):
        return {"name": value.name, **(_plain(value.options) if value.options is not None else {})}
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def apply_threads(config: Config) -> Config:
    """Set torch's CPU thread count from the config, or record the current one in it: results on
    CPU are bit-identical only for the same thread count, so a run (and its resume) keeps one."""
    import torch

    if config.threads is not None:
        torch.set_num_threads(config.threads)
        return config
    return attrs.evolve(config, threads=torch.get_num_threads())


def sync_batchnorm(module: Any, enabled: bool, device: Any, key: str) -> Any:
    """``module`` with torch's SyncBatchNorm in a torchrun job when ``enabled`` (GPUs only)."""
    from nas_core.distributed import world_size

    if not enabled or world_size() == 1:
        return module
    if device.type != "cuda":
        raise ConfigError(f"{key}=true needs CUDA: torch's SyncBatchNorm does not run on {device.type}")
    import torch

    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)


def resolve_device(name: str) -> Any:
    import torch

    from nas_core.distributed import local_rank, world_size

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and world_size() > 1:  # torchrun: one GPU per process
        name = f"cuda:{local_rank()}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return device


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any], ignore: tuple[str, ...] = (),
                       sections: Iterable[str] | None = None) -> list[str]:
    """The dotted keys where two configs in the YAML layout differ, over ``sections`` (default:
    every top-level key) less ``ignore``; YAML reads tuples back as lists, so the two compare
    equal here."""
    def same(x: Any, y: Any) -> bool:
        if isinstance(x, list | tuple) and isinstance(y, list | tuple):
            return len(x) == len(y) and all(same(i, j) for i, j in zip(x, y))
        return x == y

    out = []
    for key in sorted(set(a) | set(b), key=str) if sections is None else sections:
        if key in ignore:
            continue
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += [f"{key}.{k}" for k in sorted(set(x) | set(y), key=str) if not same(x.get(k), y.get(k))]
        elif not same(x, y):
            out.append(str(key))
    return out


def read_saved(registries: Registries, data: Mapping[str, Any], source: str, device: str | None = None, *,
               resuming: bool = False) -> Config:
    """A saved config (``config.yaml``, a checkpoint's). Sections of plugins not loaded now
    (uninstalled, or disabled with NAS_DISABLE_PLUGINS, as a monitor often is) stay in the file
    and are reported, never fatal: nas cannot tell a monitor's settings from settings that shaped
    the results, so a resume says which plugin to bring back if the run relied on it."""
    absent = [k for k in data if k not in top_keys(registries) and isinstance(data[k], Mapping)]
    if absent:
        names = ", ".join(map(repr, absent))
        logging.getLogger("nas").warning(
            "%s: config section(s) %s of plugins not loaded now are ignored%s", source, names,
            "; if this run relied on them, install or enable their plugin before resuming" if resuming else "")
    layers = [Layer({k: v for k, v in data.items() if k not in absent}, source)]
    if device:
        layers.append(Layer({"device": device}, "command line"))
    return resolve(registries, layers, preset=None)
