"""The components of a run, and the values they exchange. This module is the map of the system.

One search step (docs/architecture.md)::

    Task.loader("weights"), Task.loader("arch")        -> a weight batch and an architecture batch
    BilevelOptimizer.step(train_batch, val_batch, state, run)
        Relaxation.sample(generator)                  one draw, shared by every pass of the step
        Relaxation.weights(sample) -> MixingWeights
        Task.forward(model, batch, state) -> Outcome  model(*inputs) = Supernet(*inputs, arch_weights=...)
        gradients -> run.reduce(...) -> updates
    epoch end: Relaxation.strengths() -> Discretizer.derive(...) -> Genotype
    search end: Discretizer.final_phases(run) (each a Phase, checkpointed) -> Discretizer.final(...)

Extension points inside a step (docs/writing-a-plugin.md has one section per point): candidate
operations and mixed edges are registered and chosen by name (a space builds them through its
:class:`Catalog`); any component may add terms to the losses (``loss_terms``, see
:func:`add_loss_terms`); a :class:`Perturbation` changes the weight pass's mixing weights.

Training a discrete network is the same loop with ``Trainer.step(batch, state, run)`` on the
task's ``train`` stream, ``valid`` for selection and ``test`` once at the end.

Each component is built by a factory registered through a ``nas_register_*`` hook and called as
``factory(options, **context)``: ``options`` is an instance of the attrs class registered with it
(validated from its config section), ``context`` the keyword arguments listed on each class below.
A component may also implement lifecycle hooks (``@hookimpl`` methods, see hookspecs): the engine
registers it with the plugin manager for the length of the run.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import Tensor, nn

from nas_core.errors import GenotypeError, brief
from nas_core.genotype import Genotype

if TYPE_CHECKING:
    from nas_core.context import RunContext
    from nas_core.engine import Phase
    from nas_core.registry import Operations, Registry

#: The streams of each phase. Search: ``weights`` trains the weights, ``arch`` the architecture.
#: Training: ``train``; ``valid`` (optional) selects and reports per epoch; ``test`` once at the end.
SEARCH_STREAMS = ("weights", "arch")
TRAIN_STREAMS = ("train", "valid", "test")


@attrs.frozen
class ArchSpec:
    """What the architecture parameters describe: which edges exist and which ops they choose from.

    Nodes are numbered per cell: ``0 .. num_inputs-1`` are input nodes, the rest intermediate.
    ``edges[cell_type]`` lists ``(src, dst)`` pairs in the row order of that cell type's
    weight matrix (shape ``[len(edges[cell_type]), len(ops)]``).
    """

    ops: tuple[str, ...]
    edges: Mapping[str, tuple[tuple[int, int], ...]]
    num_inputs: int
    inputs_per_node: int  # the space's natural k: 2 for DARTS CNN cells, 1 for RNN cells
    zero_op: str | None = "none"  # the op meaning "no edge"; never chosen by a discretizer
    # ops without weights (pooling, identity, zero): a derived cell made mostly of them is the
    # "collapse" of DARTS that monitors count
    parameter_free: tuple[str, ...] = ()

    def shape(self, cell_type: str) -> tuple[int, int]:
        return (len(self.edges[cell_type]), len(self.ops))

    def table(self, strengths: Mapping[str, Tensor], cell_type: str) -> list[list[float]]:
        """One cell type's op strengths as plain rows, one per edge in this spec's order; a
        ValueError if their row count does not match the edges (strengths of another space)."""
        table = strengths[cell_type].detach().cpu().tolist()
        if len(table) != len(self.edges[cell_type]):
            raise ValueError(f"strengths[{cell_type!r}] has {len(table)} rows; the space has "
                             f"{len(self.edges[cell_type])} edges")
        return table


@attrs.frozen
class DataInfo:
    """The shape of a task, as far as a search space needs to know it."""

    input_shape: tuple[int, ...]  # one example without the batch dimension, e.g. (3, 32, 32); () for tokens
    num_classes: int  # classes, or the vocabulary size of a language model


@attrs.frozen
class MixingWeights(Mapping[str, Tensor]):
    """What :meth:`Relaxation.weights` returns: per cell type, an ``[edges, ops]`` weight matrix.

    ``chosen`` is set by hard-sampling relaxations (e.g. GDAS): per cell type, the one column per
    edge whose weight is non-zero. A supernet may then compute only that op, multiplied by its
    weight so the straight-through gradient still reaches the architecture parameters.

    Per-cell weights: an optimizer may pass a cell type a ``[cells of that type, edges, ops]``
    tensor instead, so that each cell mixes by its own copy and the loss's gradient in each copy is
    that cell's alone (Lambda-DARTS aligns these). A supernet that accepts them (``darts_cnn``'s)
    gives the i-th cell of the type, in the network's order, slice i, and says so by listing its
    cells' types in order as :attr:`Supernet.cell_types`; a 2-D matrix stays shared by every cell of
    its type. Relaxations always return the 2-D matrices.
    """

    weights: Mapping[str, Tensor]
    chosen: Mapping[str, tuple[int, ...]] | None = None

    def __getitem__(self, cell_type: str) -> Tensor:
        return self.weights[cell_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.weights)

    def __len__(self) -> int:
        return len(self.weights)


@attrs.frozen
class Outcome:
    """What :meth:`Task.forward` returns for one batch."""

    loss: Tensor  # the scalar to differentiate (auxiliary losses and regularisers included)
    state: Any = None  # carried to the next batch of the same stream, detached; None when stateless
    stats: Mapping[str, Tensor] = attrs.Factory(dict)  # detached per-batch means, e.g. loss, top1_error
    count: int = 1  # examples (or tokens) in the batch: the weight of its stats in an epoch mean


@attrs.frozen
class StepResult:
    """What one optimizer or trainer step returns.

    ``metrics`` maps a group to per-step values (detached 0-dim tensors, left on the device so a
    step never waits for the host), e.g. ``{"train": {"loss": ...}, "arch": {"loss": ...}}``;
    the engine reports them as ``train_loss``, ``arch_loss``. Each group's epoch means go through
    ``Task.report`` (which derives e.g. perplexity from ``loss``), so a group is a pass's stats,
    with other values of that pass beside them (the DARTS optimizer adds ``lr`` to ``train`` and
    ``arch``, ``grad_norm`` to ``arch``). ``state`` is the carried state after the step: one entry
    per stream the step read.
    """

    metrics: Mapping[str, Mapping[str, Tensor]]
    state: Mapping[str, Any] = attrs.Factory(dict)


class Task(ABC):
    """The data side of a run: its streams, carried state, loss and metrics.

    Built as ``factory(options, data=object)``, ``data`` being what the chosen dataset's factory
    returned; a task checks that it can use it. The model a task drives is a callable
    ``model(*inputs)``; what the inputs and outputs are is the contract between a task and the
    spaces written for it (classification: images in, logits out).
    """

    info: DataInfo

    @abstractmethod
    def streams(self, phase: str) -> tuple[str, ...]:
        """The streams this task offers in ``phase`` ("search" or "train"), from SEARCH_STREAMS or
        TRAIN_STREAMS. Training without a ``valid`` stream reports test metrics only at the end."""

    @abstractmethod
    def loader(self, stream: str, *, batch_size: int, run: RunContext, evaluation: bool = False) -> Iterable[Any]:
        """The batches of ``stream`` for epoch ``run.epoch``, on ``run.device``, with ``len()``.

        Training order must depend only on ``run.generator(stream)`` (so a resumed run reads the
        same batches); ``evaluation`` asks for every example in a fixed order."""

    @abstractmethod
    def forward(self, model: Callable[..., Any], batch: Any, state: Any) -> Outcome:
        """Run ``model`` on ``batch`` with the carried ``state`` (None at the start of an epoch)."""

    @abstractmethod
    def example_inputs(self, device: torch.device) -> tuple[Any, ...]:
        """The inputs of one example (batch size 1), for counting parameters and multiply-adds."""

    def report(self, means: Mapping[str, float]) -> dict[str, float]:
        """Epoch means of one group's stats -> the metrics to report (e.g. perplexity from loss)."""
        return dict(means)

    def check_batch_size(self, phase: str, batch_size: int, key: str) -> None:
        """Raise ConfigError (naming ``key``) if no stream of ``phase`` can fill one batch."""


class Supernet(nn.Module, ABC):
    """The continuous network: every edge mixes all candidate ops with the given weights."""

    #: the type of each cell, in the network's order, for a supernet that accepts per-cell mixing
    #: weights (see :class:`MixingWeights`); empty for one that does not
    cell_types: tuple[str, ...] = ()

    @abstractmethod
    def forward(self, *inputs: Any, arch_weights: MixingWeights) -> Any:
        """The task's output for ``inputs``; ``arch_weights[cell_type]`` has shape ``ArchSpec.shape(cell_type)``."""


class MixedEdge(nn.Module, ABC):
    """One edge of a supernet: combines its candidate ops under their mixing weights.

    A space that builds its edges from registered kinds (``nas_register_mixed_edges``) calls
    ``catalog.mixed_edge(chosen, **context)``, i.e. ``factory(options, **context)``; the context and
    the inputs of ``forward`` are the space's contract, documented by it. ``darts_cnn``'s: ``ops``
    (the op names, in the columns' order), ``channels``, ``stride``, ``make_op(name, channels)``
    (an op of the space's family built for search at this edge's stride) and
    ``zero`` (the names of zero ops, which need not be computed), ``cell_type`` and ``row`` (the edge's
    row in that cell type's weights: an edge with its own op set, as P-DARTS prunes them, looks it up
    by these), ``fused_edges`` (the space's option: how far ``forward_group`` may fuse, None for the
    kind's own choice); ``forward(x, weights, chosen=None,
    relu_x=None)`` with ``weights`` the edge's row of mixing weights, ``chosen`` its column under
    hard sampling (:attr:`MixingWeights.chosen`) and ``relu_x`` ``relu(x)`` when the cell shares it.

    An edge that holds its candidate ops as modules lists them as ``ops`` (an ``nn.ModuleList``) with
    their alpha columns as ``columns`` (``weighted_sum`` and the kinds built on it, ``partial_channels``
    and ``nb201``'s do): components that look at single ops (OLES scores and freezes their weights)
    read these, and refuse an edge without them.
    """

    def start_epoch(self, run: RunContext) -> None:
        """Called by the supernet as each epoch begins (schedules such as DARTS-'s decaying skip)."""

    @classmethod
    def forward_group(cls, edges: Sequence[MixedEdge], x: Tensor, weights: Tensor, **inputs: Any) -> list[Tensor]:
        """The outputs of ``edges`` (all of this kind) that all read ``x``, with ``weights`` their rows
        of mixing weights stacked and ``inputs`` the rest of ``forward``'s. A space may call this
        instead of each edge's ``forward`` (``darts_cnn`` does for the edges leaving one state unless
        ``space.fused_edges`` is false) so that a kind can compute them together: ``weighted_sum``
        computes the ops that read ``x`` alone once and fuses its conv ops across the edges. This
        default calls each edge."""
        return [edge(x, w, **inputs) for edge, w in zip(edges, weights)]

    @classmethod
    def forward_groups(cls, groups: Sequence[tuple[Sequence[MixedEdge], Tensor, Tensor, dict[str, Any]]]
                       ) -> list[list[Tensor]]:
        """``forward_group(edges, x, weights, **inputs)`` for each of ``groups``, whose inputs are all
        ready at once (``darts_cnn`` calls it for the edges leaving a cell's two inputs), so that a
        kind can compute them together: ``weighted_sum`` fuses them into one group when the inputs have
        one shape and the edges one op set. This default calls ``forward_group`` for each."""
        return [cls.forward_group(edges, x, weights, **inputs) for edges, x, weights, inputs in groups]


@attrs.frozen
class Catalog:
    """What a search space builds from besides its options: the registered candidate operations
    and kinds of mixed edge. Passed to every space factory as ``factory(options, catalog=...)``."""

    operations: Operations
    mixed_edges: Registry

    def mixed_edge(self, chosen: Any, **context: Any) -> MixedEdge:
        """Build the mixed edge kind ``chosen`` (a :class:`~nas_core.config.Component`, as a space's
        ``edge`` option holds it) as ``factory(chosen.options, **context)``."""
        from nas_core.registry import build

        return build(self.mixed_edges, chosen, MixedEdge, **context)


class SearchSpace(ABC):
    """A family of cells and the networks stacked from them. Built as ``factory(options, catalog=Catalog)``:
    a space that offers registered operations checks its ``ops`` against ``catalog.operations``
    and builds them (and its mixed edges) from there, so a plugin's op or edge kind needs no fork."""

    @abstractmethod
    def arch_spec(self) -> ArchSpec:
        """The edges and candidate ops that architecture parameters range over."""

    @abstractmethod
    def build_supernet(self, data: DataInfo) -> Supernet:
        """The search network for a task of this shape."""

    @abstractmethod
    def build_network(self, genotype: Genotype, data: DataInfo) -> nn.Module:
        """A discrete, freshly initialised network with the cells of ``genotype``; raises
        GenotypeError if the genotype does not fit this space."""

    def op_costs(self, data: DataInfo, measure: Callable[[str, int, tuple[int, ...], Callable[[], nn.Module]], float]
                 ) -> dict[str, Tensor]:
        """The cost of every candidate op on every edge, per cell type ``[edges, ops]``, summed over the
        search network's cells of that type: ``measure(op, stride, input_shape, build)`` costs one op
        (``build()`` makes it as a discrete network of this space would, for an input of
        ``input_shape``, batch 1); zero ops cost 0. What resource-aware searches penalise. Spaces that
        cannot say raise NotImplementedError (the default)."""
        raise NotImplementedError(f"search space {type(self).__name__} does not report its ops' costs")

    def validate(self, genotype: Genotype) -> None:
        """Raise GenotypeError naming the spot where ``genotype`` does not fit this space. Every
        command that reads a genotype calls it, before building or drawing anything. The default
        checks the cell types, op names and node indices against :meth:`arch_spec`, and the size
        of each cell (:meth:`Genotype.validate`: any node count up to ``MAX_NODES`` builds, not
        only the searched one); spaces with further rules extend it."""
        spec = self.arch_spec()
        if set(genotype.cells) != set(spec.edges):
            raise GenotypeError(f"genotype has cells {brief(sorted(genotype.cells))}; this space's cells are "
                                f"{sorted(spec.edges)}")
        genotype.validate(spec.ops, spec.num_inputs)


class Relaxation(nn.Module, ABC):
    """Owns the architecture parameters (as ``nn.Parameter``, so they checkpoint) and turns
    them into mixing weights. Built as ``factory(options, spec=ArchSpec)``."""

    def sample(self, generator: torch.Generator) -> Any:
        """The random draws of one step, shared by every forward pass of that step (e.g. Gumbel
        noise). Deterministic relaxations return None."""
        return None

    @abstractmethod
    def weights(self, sample: Any = None) -> MixingWeights:
        """Differentiable mixing weights per cell type, each of shape ``spec.shape(cell_type)``,
        for a draw from :meth:`sample`; ``None`` asks for the deterministic weights used to evaluate."""

    @abstractmethod
    def strengths(self) -> dict[str, Tensor]:
        """Detached op strengths per edge, same shapes; what discretizers and monitors read."""

    def loss_terms(self, objective: str, mix: MixingWeights) -> Mapping[str, Tensor]:
        """Terms to add to a step's loss (see :func:`add_loss_terms`); none by default."""
        return {}

    # -- pruning: an edge's op set shrinks for the rest of the run (docs/writing-a-plugin.md) --------

    #: whether :meth:`weights` and :meth:`strengths` honour :meth:`prune` (through :meth:`masked`)
    supports_pruning: bool = False

    def prune(self, kept: Mapping[str, Tensor]) -> None:
        """Keep each edge's ops where ``kept[cell_type]`` (bool ``[edges, ops]``) is true, for the rest
        of the run: the others get mixing weight and strength exactly 0, and supernet edges that
        read :meth:`kept` at each epoch's start stop computing them. The masks are buffers of this
        module, so checkpoints, ``--resume`` and a finished run read back keep them."""
        if not self.supports_pruning:
            raise TypeError(f"{type(self).__name__} does not support pruning")
        for cell_type, mask in kept.items():
            if not bool(mask.any(dim=-1).all()):
                raise ValueError(f"pruning would leave an edge of the {cell_type} cell without ops")
            name = f"kept_{cell_type}"
            if hasattr(self, name):
                getattr(self, name).copy_(mask)
            else:
                self.register_buffer(name, mask.to(dtype=torch.bool, device=next(self.parameters()).device).clone())

    def kept(self) -> dict[str, Tensor]:
        """The masks :meth:`prune` set, per cell type (bool ``[edges, ops]``); empty before any pruning."""
        return {name[len("kept_"):]: buf for name, buf in self.named_buffers() if name.startswith("kept_")}

    def masked(self, cell_type: str, logits: Tensor) -> Tensor:
        """``logits`` with pruned ops at -inf, so a softmax over them gives those ops exactly 0."""
        mask = getattr(self, f"kept_{cell_type}", None)
        return logits if mask is None else logits.masked_fill(~mask, float("-inf"))

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        # the masks exist only once a run pruned: a relaxation read back from such a run gets them here,
        # on its own device and shaped as the weights they mask (another shape is load_state_dict's
        # usual size-mismatch error); a mask that leaves an edge without ops is refused like one
        masks = {key[len(prefix):]: value for key, value in state_dict.items()
                 if key.startswith(prefix + "kept_") and "." not in key[len(prefix):]}
        if masks:
            with torch.no_grad():
                shapes = {f"kept_{t}": tuple(w.shape) for t, w in self.weights().items()}
            device = next(self.parameters()).device
        for name, value in masks.items():
            if not hasattr(self, name):
                self.register_buffer(name, torch.zeros(shapes.get(name, tuple(value.shape)), dtype=torch.bool,
                                                       device=device))
            if tuple(value.shape) == tuple(getattr(self, name).shape) and not bool(value.bool().any(dim=-1).all()):
                error_msgs.append(f"{prefix}{name} leaves an edge without ops")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


#: The objectives of a search step whose loss components may add terms to.
OBJECTIVES = ("arch", "weights")


def add_loss_terms(outcome: Outcome, components: Iterable[object], objective: str, mix: MixingWeights) -> Outcome:
    """``outcome`` with the regularisers of its pass added: every component with a
    ``loss_terms(objective, mix)`` method (any of the run's components: relaxation, supernet,
    task, space, discretizer...) returns named scalar terms for the loss of ``objective`` ("arch":
    the architecture loss L_val; "weights": the weight loss L_train), computed from ``mix`` (the
    pass's mixing weights, differentiable in the architecture parameters where the pass is) and the
    component's own parameters, e.g. DrNAS's KL of the Dirichlet concentration to its prior or
    FairDARTS's zero-one loss. Their sum joins ``loss`` and each term, detached, joins ``stats`` under
    its name, so the pass's metrics group reports it. Every optimizer passes each forward's outcome
    through here (``run.components.values()``); the second-order hypergradient then differentiates
    through the terms like through the task's loss."""
    terms: dict[str, Tensor] = {}
    seen: set[int] = set()
    for component in components:
        method = getattr(component, "loss_terms", None)
        if method is None or id(component) in seen:
            continue
        seen.add(id(component))
        for name, value in method(objective, mix).items():
            if name in terms or name in outcome.stats:
                raise ValueError(f"{type(component).__name__} adds a loss term named {name!r}, a name already taken "
                                 f"by another term or the task's stats")
            terms[name] = value
    if not terms:
        return outcome
    return attrs.evolve(outcome, loss=outcome.loss + sum(terms.values()),
                        stats={**outcome.stats, **{k: v.detach() for k, v in terms.items()}})


class Perturbation(ABC):
    """Changes the mixing weights of the weight pass alone (SDARTS: Chen & Hsieh, ICML 2020); the
    architecture passes keep the clean ones. Built as ``factory(options, spec=ArchSpec)`` from the
    ``perturbation`` config section and used by optimizers whose ``supports_perturbation`` is true."""

    @abstractmethod
    def perturb(self, mix: MixingWeights, loss_of: Callable[[MixingWeights], Tensor], generator: torch.Generator,
                run: RunContext) -> MixingWeights:
        """The weight pass's mixing weights given the clean ``mix`` (detached). ``loss_of(m)`` is the
        weight pass's loss under mixing weights ``m`` on this step's training batch, differentiable
        in ``m`` (an adversarial attack ascends it); ``generator`` is the step's random stream."""


class BilevelOptimizer(ABC):
    """Updates weights and architecture parameters, one search step at a time.

    Built as ``factory(options, supernet=Supernet, relaxation=Relaxation, task=Task, epochs=int)``.
    Every forward goes through ``task.forward``; gradients taken with ``torch.autograd.grad`` go
    through ``run.reduce`` before use, so that data-parallel runs average them. An optimizer passes
    each forward's outcome through :func:`add_loss_terms`; one that applies the configured
    :class:`Perturbation` (``run.components["perturbation"]``) sets ``supports_perturbation``.
    """

    supports_perturbation: bool = False

    @abstractmethod
    def step(self, train_batch: Any, val_batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        """One search step. ``state`` holds the carried state of the ``weights`` and ``arch``
        streams (empty at the start of an epoch); the result holds it after the step."""

    @abstractmethod
    def end_epoch(self, run: RunContext) -> dict[str, float]:
        """Called after each epoch (learning-rate schedules); returns metrics such as ``lr``."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Optimizer and scheduler state, for checkpoints (tensors and plain values only)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class Trainer(ABC):
    """Trains a discrete network, one step at a time.

    Built as ``factory(options, network=nn.Module, task=Task, epochs=int)``.
    """

    @abstractmethod
    def step(self, batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        """One weight update on a batch of the ``train`` stream."""

    @abstractmethod
    def end_epoch(self, run: RunContext, metrics: Mapping[str, float]) -> dict[str, float]:
        """After each epoch, with its metrics (``valid_*`` included when evaluated); returns metrics
        such as ``lr``. Schedules that react to validation (NT-ASGD) decide here."""

    def evaluating(self) -> contextlib.AbstractContextManager[None]:
        """Held while the network is evaluated; trainers that average weights swap them in here."""
        return contextlib.nullcontext()

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Optimizer and scheduler state, for checkpoints."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class Discretizer(ABC):
    """Turns op strengths into a discrete genotype. Built as ``factory(options)``."""

    @abstractmethod
    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        """The discrete cells chosen from ``strengths`` (as :meth:`Relaxation.strengths` returns).

        During a search ``run`` is given: ``run.components`` holds the supernet, relaxation and
        task, so a discretizer may measure candidates on data (perturbation-based selection).
        ``nas derive`` calls it with ``run=None``."""

    def final_phases(self, run: RunContext) -> Sequence[Phase]:
        """Phases to run on the supernet once the search's epochs are done, before :meth:`final`
        (DARTS-PT: decide one edge per epoch by masking its ops, fine-tuning in between). Each runs
        in ``RUN_DIR/final/<phase.name>`` with its own checkpoints, so ``--resume`` continues inside
        it; ``run.components`` holds the search's components. A staged search asks only in its last
        stage (earlier stages end with their last epoch's :meth:`derive`). None by default."""
        return ()

    def final(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext) -> Genotype | None:
        """The search's result, after its epochs and final phases, when it is not the last epoch's
        :meth:`derive` (the default, None, keeps that one)."""
        return None


class Evaluator(ABC):
    """A target task for a discrete genotype (transfer evaluation). Built as ``factory(options)``.

    The cell is trained from scratch by the core training engine under the config layer this
    evaluator contributes (dataset, task, network, trainer and train sections)."""

    @abstractmethod
    def config_layer(self) -> Mapping[str, Any]:
        """The target's settings in the config layout, applied over the preset and under the
        user's config files and flags."""
