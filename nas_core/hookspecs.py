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

    from nas_core.context import RunContext
    from nas_core.genotype import Genotype
    from nas_core.records import SearchRecord

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
def nas_register_tasks(register: Callable[..., None]) -> None:
    """Register tasks (factories returning :class:`~nas_core.interfaces.Task`), built as
    ``factory(options, data=...)`` with what the chosen dataset's factory returned."""


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
def nas_register_trainers(register: Callable[..., None]) -> None:
    """Register trainers of discrete networks (factories returning :class:`~nas_core.interfaces.Trainer`)."""


@hookspec
def nas_register_discretizers(register: Callable[..., None]) -> None:
    """Register discretizers (factories returning :class:`~nas_core.interfaces.Discretizer`)."""


@hookspec
def nas_register_datasets(register: Callable[..., None]) -> None:
    """Register datasets: ``factory(options, root=Path | None)`` returns the data a task reads
    (``root`` is ``--data-root``). Factories check files and raise DataError naming what is missing."""


@hookspec
def nas_register_evaluators(register: Callable[..., None]) -> None:
    """Register evaluators (factories returning :class:`~nas_core.interfaces.Evaluator`)."""


@hookspec
def nas_register_operations(register: Callable[..., None]) -> None:
    """Register candidate operations: ``register(name, factory, *, family, parameter_free=False,
    zero=False, doc=None)``.

    ``family`` names the spaces that build the op and so the factory's signature, which the
    family's space documents (``darts_cnn``: ``factory(channels, stride, affine, search) -> nn.Module``;
    ``darts_rnn``: ``factory() -> Callable[[Tensor], Tensor]``, an activation). ``parameter_free``:
    the op has no weights (pooling, identity; what collapse monitors count). ``zero``: the op means
    "no edge" (DARTS's ``none``): discretizers never choose it and supernets may skip computing it.
    A space's ``ops`` option picks from its family's ops, in any order.
    """


@hookspec
def nas_register_mixed_edges(register: Callable[..., None]) -> None:
    """Register kinds of mixed edge (:class:`~nas_core.interfaces.MixedEdge`): how a supernet edge
    combines its candidate ops (DARTS's weighted sum, PC-DARTS's partial channels, ...). A space
    that builds its edges this way names the kind in an option (``darts_cnn``: ``space.edge``).
    """


@hookspec
def nas_register_perturbations(register: Callable[..., None]) -> None:
    """Register perturbations (:class:`~nas_core.interfaces.Perturbation`) of the weight pass's
    mixing weights (SDARTS's random smoothing and adversarial attack), chosen by the
    ``perturbation`` config section and applied by optimizers that support them."""


@hookspec
def nas_register_genotypes(register: Callable[..., None]) -> None:
    """Register published cells by name: ``register(name, genotype, doc=..., space=None)``.

    ``genotype`` is a :class:`~nas_core.genotype.Genotype`; ``nas train --genotype NAME`` finds it.
    ``space`` names the search space it was found in (``nas show`` checks it against that space).
    """


@hookspec
def nas_register_presets(register: Callable[..., None]) -> None:
    """Register config presets: ``register(name, mapping, doc=..., default=False)``.

    ``mapping`` is a nested dict in the YAML config layout (typically ``yaml.safe_load`` of a
    file shipped with the plugin). A preset sets defaults; config files and ``--set`` win.
    ``default=True`` makes it the preset used without ``--preset`` (at most one may claim it).
    """


@hookspec
def nas_register_settings(register: Callable[..., None]) -> None:
    """Register config sections: ``register(section, attrs_class, doc=...)``.

    The class's fields become the keys ``section.field`` of every config; read them with
    ``config.settings[section]``. The core registers ``search`` and ``train`` the same way.
    """


@hookspec
def nas_register_commands(register: Callable[..., None]) -> None:
    """Register ``nas`` subcommands: ``register(name, run, *, configure=None, help="")``.

    ``configure(parser)`` adds arguments to the subcommand's ``argparse`` parser (call
    ``toolkit.add_config_arguments(parser)`` there for the usual config flags); ``run(args, toolkit)``
    does the work and returns the exit code. ``toolkit`` is a :class:`nas_core.Toolkit`: the
    plugin manager, the registries, config resolution, and the search and training engines.
    """


# ---------------------------------------------------------------------------------------------
# Lifecycle: called by the engine (search and training alike), in this order. Monitors implement
# these; so may the run's own components (task, relaxation, optimizer, network, ...), which the
# engine registers with the plugin manager for the length of the run. Return values are ignored
# except for ``nas_should_stop``. An implementation that needs per-run state may register an
# object with ``run.plugin_manager.register(obj)`` in ``nas_run_start`` and unregister it in
# ``nas_run_end`` (as the TensorBoard plugin does).
# ---------------------------------------------------------------------------------------------


@hookspec
def nas_check_run(run: RunContext) -> None:
    """Before a run writes anything (a new run's directory; a resumed run's next checkpoint): raise
    ConfigError, naming the key and the valid choices, to refuse a config this plugin cannot serve
    (an option of its section that the chosen components do not support). ``run.components`` holds the
    prepared components; components themselves are registered as plugins only from ``nas_run_start``.
    """


@hookspec
def nas_run_start(run: RunContext) -> None:
    """A run begins (also when resumed; ``run.start_epoch`` tells which epoch comes next).

    :param run: the run's directory, resolved config, phase, device, components and plugin manager.
    """


@hookspec
def nas_epoch_start(run: RunContext) -> None:
    """An epoch begins: ``run.epoch`` of ``run.epochs``. Schedules that depend on progress
    (temperatures, drop-path, frozen warm-up epochs) set themselves here.
    """


@hookspec
def nas_step_end(run: RunContext, step: int, metrics: Mapping[str, Tensor]) -> None:
    """A step ended.

    :param step: global step index, counted from 0 across epochs.
    :param metrics: the step's metrics, flattened (``train_loss``, ``arch_loss``, ...), as detached
        0-dim tensors on the run's device (or the CPU): reading one (``float(v)``) waits for the device.
        They are the groups of :class:`~nas_core.interfaces.StepResult` ``metrics``, the place for
        any per-step value a component measures, not only losses: the DARTS optimizer adds the
        step's learning rates (group ``lr``: ``lr_w``, ``lr_arch``) and the architecture gradient's
        norm (``arch_grad_norm``). The epoch's metrics hold their means, each group through
        ``Task.report`` (which passes keys it does not know through unchanged).
    """


@hookspec
def nas_epoch_end(run: RunContext, epoch: int, metrics: Mapping[str, float], genotype: Genotype | None,
                  strengths: Mapping[str, Tensor]) -> None:
    """An epoch ended; its checkpoint (and, in a search, its genotype) is already on disk.

    :param epoch: the epoch that ended, counted from 0.
    :param metrics: epoch means of the step metrics, ``lr``, evaluation metrics (``valid_*``;
        ``test_*`` after the last epoch of training) and what components and ``nas_should_stop``
        implementations added to ``run.epoch_metrics``.
    :param genotype: the genotype derived at the end of this epoch (search) or the one trained.
    :param strengths: :meth:`Relaxation.strengths`, per cell type ``[edges, ops]`` (empty in training).
    """


@hookspec(firstresult=True)
def nas_should_stop(run: RunContext, epoch: int, metrics: Mapping[str, float]) -> str | None:
    """Asked as each epoch ends, before its checkpoint: return a reason (a short sentence) to end
    the run there, cleanly, or None to go on. The first non-None answer wins; the reason is logged
    and checkpointed (``run.stopped``; a search's ``results.json``: ``stopped``), and ``--resume``
    then reports the run as complete.

    What a rule measures to decide goes into ``run.epoch_metrics`` (e.g. the dominant eigenvalue
    of the architecture Hessian that RobustDARTS stops on, Zela et al., ICLR 2020): the engine adds
    it to the epoch's metrics after asking, so it is checkpointed, logged and monitored
    (TensorBoard: ``{phase}/{name}``) like any metric.
    """


@hookspec
def nas_stage_config(stage: int, finished: SearchRecord, layer: dict) -> None:
    """Stage ``stage`` (from 1) of a staged search (``search.stages``) ended; the next begins. Add
    to ``layer`` (a dict in the config layout, applied over that stage's own layer) what this
    stage decided, e.g. P-DARTS's pruned ``space.ops`` from ``finished.relaxation.strengths()``.
    ``finished`` is the stage read back (:class:`~nas_core.records.SearchRecord`: config,
    supernet, relaxation with its alphas, genotypes). Implementations check ``finished.config``
    to see whether the search is theirs (their discretizer, their config section).

    What the next stage inherits in its components (the alphas of the ops kept) is copied by those
    components in ``nas_run_start``, where ``run.previous_stage`` is this record (None in the first
    stage, and when a stage is resumed: its checkpoint holds what it inherited).
    """


@hookspec
def nas_search_results(run: RunContext, genotype: Genotype, results: dict) -> None:
    """A search's result is final (after its final phases): add entries to ``results`` (JSON values
    under names of your own), which becomes its ``results.json``; e.g. the resource penalty's
    ``cell_cost``, the cost of ``genotype``'s cells, which ``nas compare`` shows beside accuracy.
    """


@hookspec
def nas_run_end(run: RunContext, genotype: Genotype | None, error: BaseException | None) -> None:
    """A run ended: normally (``error`` is None) or with an error or interrupt.

    :param genotype: the final genotype, or None if no epoch completed in this process.
    """


