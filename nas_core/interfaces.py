"""The four interfaces of a differentiable architecture search, and the values they exchange.

One search step (see docs/architecture.md)::

    batches -> BilevelOptimizer.step(train_batch, val_batch)
                 -> Relaxation.weights()            architecture parameters -> mixing weights
                 -> Supernet(x, weights)            built by SearchSpace.build_supernet
                 -> SearchSpace.criterion(...)      losses -> arch and weight updates
    epoch end: Relaxation.strengths() -> Discretizer.derive(...) -> Genotype (JSON)

Each component is built by a factory registered through a ``nas_register_*`` hook, and is
called as ``factory(options, **context)``: ``options`` is an instance of the attrs class
registered with it (validated from the config), ``context`` the explicit keyword arguments
listed on each interface below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
from torch import Tensor, nn
from torch.utils.data import Dataset

from nas_core.genotype import Genotype


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

    def shape(self, cell_type: str) -> tuple[int, int]:
        return (len(self.edges[cell_type]), len(self.ops))


@attrs.frozen
class DataInfo:
    """The shape of a task, as far as a search space needs to know it."""

    input_shape: tuple[int, ...]  # one example, e.g. (3, 32, 32)
    num_classes: int


@attrs.frozen
class TaskData:
    """A registered dataset: training and test sets of ``(input, target)`` pairs.

    Built as ``factory(options, root=Path | None)``. Search splits ``train`` itself; ``test``
    is never touched during search.
    """

    train: Dataset
    test: Dataset
    info: DataInfo


@attrs.frozen
class MixingWeights(Mapping[str, Tensor]):
    """What :meth:`Relaxation.weights` returns: per cell type, an ``[edges, ops]`` weight matrix.

    ``chosen`` is set by hard-sampling relaxations (e.g. GDAS): per cell type, the one column per
    edge whose weight is non-zero. A supernet may then compute only that op, multiplied by its
    weight so the straight-through gradient still reaches the architecture parameters.
    """

    weights: Mapping[str, Tensor]
    chosen: Mapping[str, tuple[int, ...]] | None = None

    def __getitem__(self, cell_type: str) -> Tensor:
        return self.weights[cell_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.weights)

    def __len__(self) -> int:
        return len(self.weights)


class Supernet(nn.Module, ABC):
    """The continuous network: every edge mixes all candidate ops with the given weights."""

    @abstractmethod
    def forward(self, x: Tensor, arch_weights: MixingWeights) -> Tensor:
        """Return logits; ``arch_weights[cell_type]`` has shape ``ArchSpec.shape(cell_type)``."""


class SearchSpace(ABC):
    """A family of cells and the networks stacked from them. Built as ``factory(options)``."""

    @abstractmethod
    def arch_spec(self) -> ArchSpec:
        """The edges and candidate ops that architecture parameters range over."""

    @abstractmethod
    def build_supernet(self, data: DataInfo) -> Supernet:
        """The search network for a task of this shape."""

    @abstractmethod
    def build_network(self, genotype: Genotype, data: DataInfo) -> nn.Module:
        """A discrete, freshly initialised network with the cells of ``genotype``.

        The train engine sets ``network.drop_path_prob`` each epoch where the attribute exists,
        and accepts ``(logits, auxiliary_logits)`` from ``forward`` in training mode."""

    def criterion(self, output: Tensor, target: Tensor) -> Tensor:
        """The training loss; cross-entropy unless a space says otherwise."""
        return nn.functional.cross_entropy(output, target)


class Relaxation(nn.Module, ABC):
    """Owns the architecture parameters (as ``nn.Parameter``, so they checkpoint) and turns
    them into mixing weights. Built as ``factory(options, spec=ArchSpec)``."""

    @abstractmethod
    def weights(self) -> MixingWeights:
        """Differentiable mixing weights per cell type, each of shape ``spec.shape(cell_type)``.

        May be stochastic (e.g. Gumbel sampling): call it once per forward pass."""

    @abstractmethod
    def strengths(self) -> dict[str, Tensor]:
        """Detached op strengths per edge, same shapes; what discretizers and monitors read."""


class BilevelOptimizer(ABC):
    """Updates weights and architecture parameters, one search step at a time.

    Built as ``factory(options, supernet=Supernet, relaxation=Relaxation,
    criterion=callable(output, target), epochs=int)``.
    """

    @abstractmethod
    def step(self, train_batch: tuple[Tensor, Tensor], val_batch: tuple[Tensor, Tensor]) -> dict[str, float]:
        """One search step; returns scalar metrics (at least ``train_loss``)."""

    @abstractmethod
    def end_epoch(self) -> dict[str, float]:
        """Called after each epoch (learning-rate schedules); returns metrics such as ``lr``."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Optimizer and scheduler state, for checkpoints (tensors and plain values only)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class Discretizer(ABC):
    """Turns op strengths into a discrete genotype. Built as ``factory(options)``."""

    @abstractmethod
    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec) -> Genotype:
        """The discrete cells chosen from ``strengths`` (as :meth:`Relaxation.strengths` returns)."""


class Evaluator(ABC):
    """A target task for a discrete genotype (transfer evaluation). Built as ``factory(options)``.

    By default the cell is trained from scratch by the core train engine under the config this
    evaluator contributes; an evaluator that needs its own loop (language models) overrides
    :meth:`prepare` and :meth:`run`.
    """

    @abstractmethod
    def config_layer(self) -> Mapping[str, Any]:
        """The target's settings in the config layout (``dataset``, ``network``, ``train``), applied
        over the preset and under the user's config files and flags."""

    def prepare(self, genotype: Genotype, *, registries: Any, config: Any) -> Any:
        """Load data and build the network; raise NasError on bad input (before anything is written)."""
        from nas_core.train import prepare_training

        return prepare_training(registries, config, genotype)

    def run(self, prepared: Any, *, run_dir: Path, plugin_manager: Any, resume: bool,
            progress: bool | None) -> dict[str, Any]:
        """Train and test; write results under ``run_dir``; return the results."""
        from nas_core.train import run_training

        return run_training(prepared, pm=plugin_manager, run_dir=run_dir, resume=resume, progress=progress,
                            phase="transfer")
