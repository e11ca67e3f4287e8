"""nas: a plugin-based neural architecture search toolkit.

The plugin contract is what this package exports; plugins import nothing else from ``nas_core``.
The interfaces (``nas_core.interfaces``) and hooks (``nas_core.hookspecs``) are the map of the
system; everything algorithm-specific arrives through plugins. Names are imported on first use,
so ``import nas_core`` (and ``nas --help``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # hooks
    "hookimpl": "nas_core.hookspecs",
    "hookspec": "nas_core.hookspecs",
    # components and the values they exchange
    "Task": "nas_core.interfaces",
    "SearchSpace": "nas_core.interfaces",
    "Supernet": "nas_core.interfaces",
    "Relaxation": "nas_core.interfaces",
    "BilevelOptimizer": "nas_core.interfaces",
    "Trainer": "nas_core.interfaces",
    "Discretizer": "nas_core.interfaces",
    "Evaluator": "nas_core.interfaces",
    "ArchSpec": "nas_core.interfaces",
    "DataInfo": "nas_core.interfaces",
    "MixingWeights": "nas_core.interfaces",
    "Outcome": "nas_core.interfaces",
    "StepResult": "nas_core.interfaces",
    "SEARCH_STREAMS": "nas_core.interfaces",
    "TRAIN_STREAMS": "nas_core.interfaces",
    # the run
    "RunContext": "nas_core.context",
    "stream_seed": "nas_core.context",
    "evaluate": "nas_core.engine",
    "Toolkit": "nas_core.toolkit",
    "Config": "nas_core.config",
    "config_differences": "nas_core.config",  # which keys two saved configs disagree on
    "load_yaml": "nas_core.config",  # safe and bounded: for any YAML a plugin reads
    # genotypes
    "Genotype": "nas_core.genotype",
    "Cell": "nas_core.genotype",
    "cell_graph": "nas_core.draw",
    "dot_available": "nas_core.draw",  # whether Graphviz's dot program can render cells
    "write_text_atomic": "nas_core.files",
    "mark_run_dir": "nas_core.run",
    "run_kind": "nas_core.run",
    "check_new_files": "nas_core.toolkit",  # refuse to replace files, check folders, before writing
    "create_text_exclusive": "nas_core.files",
    "lazy": "nas_core.registry",
    # errors
    "NasError": "nas_core.errors",
    "ConfigError": "nas_core.errors",
    "DataError": "nas_core.errors",
    "CheckpointError": "nas_core.errors",
    "GenotypeError": "nas_core.errors",
    "PluginError": "nas_core.errors",
    "brief": "nas_core.errors",  # a user's value quoted in a message, shortened
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
