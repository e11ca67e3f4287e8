"""Every hook a plugin can implement, grouped by phase.

A plugin is a module (or object) exposing functions marked ``@hookimpl`` whose names match
the specs below; it is found through the ``nas`` entry-point group of its distribution.
Argument names matter, order does not: an implementation may accept a subset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from torch import Tensor

    from nas_core.genotype import Genotype
    from nas_core.run import RunInfo

hookspec = pluggy.HookspecMarker("nas")
hookimpl = pluggy.HookimplMarker("nas")

# ---------------------------------------------------------------------------------------------
# Registration: called once by the plugin manager after all plugins are loaded. Each hook gets
# a ``register(name, factory, *, options=None, doc=None)`` callback; call it once per item.
# ``factory`` is called as ``factory(options, **context)`` (see nas_core.interfaces);
# ``options`` is an attrs class whose fields become the config keys of that component.
# Registering a name that another plugin already registered raises an error naming both.
# ---------------------------------------------------------------------------------------------


@hookspec
def nas_register_spaces(register: Callable[..., None]) -> None:
    """Register search spaces (factories returning :class:`~nas_core.interfaces.SearchSpace`)."""


@hookspec
def nas_register_relaxations(register: Callable[..., None]) -> None:
    """Register relaxations (factories returning :class:`~nas_core.interfaces.Relaxation`)."""


@hookspec
def nas_register_optimizers(register: Callable[..., None]) -> None:
    """Register bilevel optimizers (factories returning :class:`~nas_core.interfaces.BilevelOptimizer`)."""


@hookspec
def nas_register_discretizers(register: Callable[..., None]) -> None:
    """Register discretizers (factories returning :class:`~nas_core.interfaces.Discretizer`)."""


@hookspec
def nas_register_datasets(register: Callable[..., None]) -> None:
    """Register datasets (factories returning :class:`~nas_core.interfaces.TaskData`)."""


@hookspec
def nas_register_evaluators(register: Callable[..., None]) -> None:
    """Register evaluators (factories returning :class:`~nas_core.interfaces.Evaluator`)."""


@hookspec
def nas_register_genotypes(register: Callable[..., None]) -> None:
    """Register published cells by name: ``register(name, genotype, doc=...)``.

    ``genotype`` is a :class:`~nas_core.genotype.Genotype`; ``nas train --genotype NAME`` finds it.
    """


@hookspec
def nas_register_presets(register: Callable[..., None]) -> None:
    """Register config presets: ``register(name, mapping, doc=...)``.

    ``mapping`` is a nested dict in the YAML config layout (typically ``yaml.safe_load`` of a
    file shipped with the plugin). A preset sets defaults; config files and ``--set`` win.
    """


# ---------------------------------------------------------------------------------------------
# Lifecycle: called by the search (and, later, training) engine, in this order. Monitors
# implement these. Return values are ignored. An implementation that needs per-run state may
# register an object with ``run.plugin_manager.register(obj)`` in ``nas_run_start`` and
# unregister it in ``nas_run_end`` (as the TensorBoard plugin does).
# ---------------------------------------------------------------------------------------------


@hookspec
def nas_run_start(run: RunInfo) -> None:
    """A run begins (also when resumed; ``run.start_epoch`` tells which epoch comes next).

    :param run: the run's directory, resolved config, architecture spec and plugin manager.
    """


@hookspec
def nas_step_end(run: RunInfo, step: int, metrics: Mapping[str, float]) -> None:
    """A search step ended.

    :param step: global step index, counted from 0 across epochs.
    :param metrics: what :meth:`BilevelOptimizer.step` returned (``train_loss``, ...).
    """


@hookspec
def nas_epoch_end(run: RunInfo, epoch: int, metrics: Mapping[str, float], genotype: Genotype,
                  strengths: Mapping[str, Tensor]) -> None:
    """An epoch ended; its checkpoint and genotype are already on disk.

    :param epoch: the epoch that ended, counted from 0.
    :param metrics: epoch means of the step metrics, plus ``lr`` and any evaluation metrics.
    :param genotype: the genotype derived at the end of this epoch.
    :param strengths: :meth:`Relaxation.strengths`, per cell type ``[edges, ops]``.
    """


@hookspec
def nas_run_end(run: RunInfo, genotype: Genotype | None, error: BaseException | None) -> None:
    """A run ended: normally (``error`` is None) or with an error or interrupt.

    :param genotype: the final genotype, or None if no epoch completed in this process.
    """


