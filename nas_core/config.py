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
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from nas_core.errors import ConfigError, closest_hint
from nas_core.plugins import Registries

DEFAULT_PRESET = "demo"


@attrs.frozen
class SearchSettings:
    """Engine settings of a search run."""

    epochs: int = 50
    batch_size: int = 64
    train_portion: float = 0.5  # share of the training set used for weights; the rest for alpha
    max_steps_per_epoch: int | None = None  # cut epochs short (smoke tests, quick looks)
    workers: int = 0  # DataLoader worker processes
    eval_every: int = 1  # evaluate the supernet on the arch-val half every N epochs (0: never)


@attrs.frozen
class TrainSettings:
    """Training a discrete network from scratch (``nas train``, ``nas transfer``)."""

    epochs: int = 600
    batch_size: int = 96
    lr: float = 0.025
    lr_min: float = 0.0  # cosine schedule ends here
    lr_schedule: str = attrs.field(default="cosine", validator=attrs.validators.in_(("cosine", "step")))
    lr_gamma: float = 0.97  # "step": lr *= lr_gamma after every epoch (the DARTS ImageNet schedule)
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # max L2 norm of the gradient (0: off)
    drop_path: float = 0.2  # drop-path probability at the last epoch, ramped linearly from 0
    aux_weight: float = 0.4  # weight of the auxiliary head's loss (with network.auxiliary)
    cutout: int = 16  # side of the cutout square in pixels (0: off)
    label_smoothing: float = 0.0
    workers: int = 0
    max_steps_per_epoch: int | None = None
    eval_every: int = 1  # evaluate on the test set every N epochs (and always after the last)


@attrs.frozen
class Component:
    """A registered component chosen by name, with its validated options (or None)."""

    name: str
    options: Any


@attrs.frozen
class Config:
    seed: int
    device: str
    data_root: str | None
    dataset: Component
    space: Component
    relaxation: Component
    optimizer: Component
    discretizer: Component
    search: SearchSettings
    network: Any  # options of the space for the evaluation network (same class as space.options)
    train: TrainSettings


# section -> registry attribute
COMPONENTS = {"dataset": "datasets", "space": "spaces", "relaxation": "relaxations",
              "optimizer": "optimizers", "discretizer": "discretizers"}
SCALARS: dict[str, Any] = {"seed": int, "device": str, "data_root": str | None}
SETTINGS = {"search": SearchSettings, "train": TrainSettings}
TOP_KEYS = sorted([*SCALARS, *COMPONENTS, *SETTINGS, "network"])

BASE: dict[str, Any] = {
    "seed": 0, "device": "auto", "data_root": None,
    "dataset": {"name": "digits"}, "space": {"name": "darts_cnn"}, "relaxation": {"name": "softmax"},
    "optimizer": {"name": "darts_2nd"}, "discretizer": {"name": "topk"}, "search": {}, "network": {}, "train": {},
}


@attrs.frozen
class Layer:
    """One source of settings, e.g. a file; ``strict`` layers may not carry unknown keys."""

    data: Mapping[str, Any]
    source: str
    strict: bool = True


# ---------------------------------------------------------------------------------------------
# reading layers
# ---------------------------------------------------------------------------------------------

def load_yaml_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["search.epochs=3", "optimizer.xi=0"]`` -> nested mapping; values read as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. search.epochs=3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is set both as a value and as a section")
        node[parts[-1]] = value
    return out


# ---------------------------------------------------------------------------------------------
# resolving
# ---------------------------------------------------------------------------------------------

def resolve(registries: Registries, layers: list[Layer], *, preset: str | None = DEFAULT_PRESET) -> Config:
    """Merge the base, a preset and ``layers`` (in order) and validate the result."""
    all_layers = [Layer(BASE, "built-in defaults", strict=False)]
    if preset is not None:
        if preset not in registries.presets:
            raise ConfigError(f"unknown preset {preset!r}{closest_hint(preset, registries.presets)}; "
                              f"valid presets: {', '.join(sorted(registries.presets)) or '(none)'}")
        all_layers.append(Layer(registries.presets[preset][0], f"preset {preset!r}", strict=False))
    all_layers += layers

    for layer in all_layers:
        if not isinstance(layer.data, Mapping):
            raise ConfigError(f"{layer.source}: expected a mapping")
        for key in layer.data:
            if key not in TOP_KEYS:
                raise ConfigError(f"{layer.source}: unknown key {key!r}{closest_hint(str(key), TOP_KEYS)}; "
                                  f"valid keys: {', '.join(TOP_KEYS)}")

    values: dict[str, Any] = {}
    for key, typ in SCALARS.items():
        value, source = _last(all_layers, key)
        values[key] = _convert(value, typ, key, source)
    for key, cls in SETTINGS.items():
        values[key] = _build_attrs(cls, _section(all_layers, key), key)
    for key, attr in COMPONENTS.items():
        values[key] = _build_component(getattr(registries, attr), key, all_layers)
    values["network"] = _build_component(registries.spaces, "network", all_layers, name_key="space").options
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


def _build_component(registry: Any, key: str, layers: list[Layer], name_key: str | None = None) -> Component:
    """A preset (non-strict layer) sets options for the component it names; they carry over to
    the chosen component only if both take the same options class (darts_1st and darts_2nd do,
    a third-party space with a field of the same name does not). ``name_key``: the section that
    names the component, when not ``key`` itself (``network`` takes the options of ``space``)."""
    name_key = name_key or key
    name = None
    for layer in layers:
        name = _mapping(layer, name_key).get("name", name)
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
                merged[str(k)] = (v, layer.source)
    if entry.options is None:
        if merged:
            k, (_, source) = next(iter(merged.items()))
            raise ConfigError(f"{source}: unknown key '{key}.{k}': {registry.kind} {name!r} takes no options")
        return Component(name, None)
    return Component(name, _build_attrs(entry.options, merged, key, owner=f"{registry.kind} {name!r}"))


def _build_attrs(cls: type, merged: dict[str, tuple[Any, str]], section: str, owner: str | None = None) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs = {}
    for k, (value, source) in merged.items():
        if k not in fields:
            of = f" of {owner}" if owner else ""
            raise ConfigError(f"{source}: unknown key '{section}.{k}'{closest_hint(k, fields)}; "
                              f"valid keys{of}: {', '.join(sorted(fields)) or '(none)'}")
        kwargs[k] = _convert(value, hints[k], f"{section}.{k}", source)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # attrs validators of the options class
        raise ConfigError(f"invalid {section} option: {e}") from None


def _type_name(typ: Any) -> str:
    return getattr(typ, "__name__", None) or str(typ).replace("typing.", "")


def _convert(value: Any, typ: Any, key: str, source: str) -> Any:
    """Check ``value`` against a type hint; int is accepted for float, and strings such as
    '3e-4' too (YAML 1.1 reads a float without a dot as a string)."""
    def fail() -> ConfigError:
        return ConfigError(f"{source}: {key} must be {_type_name(typ)}, got {type(value).__name__} {value!r}")

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
            return value
        raise fail()
    if typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise fail()
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
        opts = attrs.asdict(comp.options) if comp.options is not None else {}
        out[key] = {"name": comp.name, **opts}
    for key in SETTINGS:
        out[key] = attrs.asdict(getattr(config, key))
    out["network"] = attrs.asdict(config.network) if config.network is not None else {}
    return out


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return device
