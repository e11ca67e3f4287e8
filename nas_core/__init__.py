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
    "MixedEdge": "nas_core.interfaces",
    "Catalog": "nas_core.interfaces",  # what a space builds from: registered ops and mixed edges
    "Perturbation": "nas_core.interfaces",
    "OBJECTIVES": "nas_core.interfaces",
    "add_loss_terms": "nas_core.interfaces",  # the regularisers components add to a pass's loss
    "Operation": "nas_core.registry",
    "installed_catalog": "nas_core.toolkit",
    "build_space": "nas_core.components",  # a space from a Component, with the registered catalog
    "TRAIN_STREAMS": "nas_core.interfaces",
    # the run
    "RunContext": "nas_core.context",
    "stream_seed": "nas_core.context",
    "evaluate": "nas_core.engine",
    "Toolkit": "nas_core.toolkit",
    "Config": "nas_core.config",
    "Component": "nas_core.config",  # a chosen component in a Config: name and validated options
    "component_field": "nas_core.config",  # an options field choosing a registered component
    "operations_field": "nas_core.config",  # an options field listing registered candidate operations
    "Phase": "nas_core.engine",  # one kind of run, for a discretizer's final phases
    "config_differences": "nas_core.config",  # which keys two saved configs disagree on
    "load_yaml": "nas_core.config",  # safe and bounded: for any YAML a plugin reads
    "preset_file": "nas_core.config",  # a preset shipped as package data: presets/<name>.yaml
    # genotypes
    "Genotype": "nas_core.genotype",
    "Cell": "nas_core.genotype",
    "load_genotype": "nas_core.genotype_io",  # a file, run directory, registered name or text, as --genotype reads
    "parse_cell_string": "nas_core.genotype_io",  # NAS-Bench-201's |op~0|+|op~0|op~1|+... form
    "format_cell_string": "nas_core.genotype_io",
    "format_genotype_text": "nas_core.genotype_io",  # the text form commands print
    "genotype_by_node": "nas_core.derivation",  # a derivation rule written per node
    "top_k_genotype": "nas_core.derivation",  # DARTS's rule: per node the k strongest edges, each its best op
    "cell_graph": "nas_core.draw",
    "dot_available": "nas_core.draw",  # whether Graphviz's dot program can render cells
    "write_text_atomic": "nas_core.files",
    "mark_run_dir": "nas_core.run",
    "run_kind": "nas_core.run",
    "check_new_files": "nas_core.toolkit",  # refuse to replace files, check folders, before writing
    "create_text_exclusive": "nas_core.files",
    "lazy": "nas_core.registry",
    # a run read back (also Toolkit.load_search / load_training) and the run directory's files
    "SearchRecord": "nas_core.records",
    "TrainingRecord": "nas_core.records",
    "load_search": "nas_core.records",
    "load_training": "nas_core.records",
    "read_results": "nas_core.records",  # results.json, checked (None while the run has not finished)
    "run_type": "nas_core.records",  # search, train, ... (the marker's kind, else what the files say)
    "epoch_genotype_paths": "nas_core.records",  # a search's genotypes/epoch_NNN.json by epoch
    "read_json_object": "nas_core.records",
    "write_json": "nas_core.records",
    "is_number": "nas_core.records",
    "recorded_seconds": "nas_core.records",  # a recorded wall time, checked
    "CONFIG_FILE": "nas_core.run",
    "CHECKPOINT_FILE": "nas_core.run",
    "RESULTS_FILE": "nas_core.run",
    "GENOTYPE_FILE": "nas_core.run",
    "GENOTYPES_DIR": "nas_core.records",
    # the working files of multi-step commands (nas select, nas random): stage configs, step records, locks
    "RunLock": "nas_core.steps",
    "LOCK_FILE": "nas_core.steps",
    "SIZE_KEYS": "nas_core.steps",
    "read_record": "nas_core.steps",
    "write_record": "nas_core.steps",
    "save_stage_config": "nas_core.steps",
    "load_stage_config": "nas_core.steps",
    "has_stage_config": "nas_core.steps",
    "config_changes": "nas_core.steps",  # config_differences of two Configs, less seed and machine keys
    "check_same_data": "nas_core.steps",
    "check_resume_flags": "nas_core.toolkit",
    "CONFIG_FLAGS": "nas_core.toolkit",
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
