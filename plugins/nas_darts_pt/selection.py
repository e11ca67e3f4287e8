"""DARTS-PT, perturbation-based architecture selection (Wang et al., "Rethinking architecture
selection in differentiable NAS", ICLR 2021, section 4 and Algorithm 1; the authors' code:
sota/cnn/projection.py, model_search_darts_proj.py).

After the search's epochs the discretizer runs one final phase on the trained supernet (see
docs/successors/darts_pt.md). Each phase epoch is one decision, then fine-tuning:

- first, one undecided edge per cell type (normal and reduction in parallel, as theirs): each of
  its ops in turn is masked (its mixing weight set to 0, the others not renormalised, as their
  ``project_op``), the supernet's validation accuracy (or loss) is measured, and the op whose
  masking hurts most is kept: the edge's weights become that op's one-hot vector;
- then, per node with more than k inputs: each incoming edge in turn is masked (its whole row
  0), and the k edges whose masking hurts most are kept, the others pruned (row 0 for good);
- between decisions the weights are fine-tuned (SGD at the phase's lr) and the architecture keeps
  learning (first-order Adam), the decided edges reading their decision.

The decisions reach the supernet through the mixing weights alone: every forward of the phase
passes ``relaxation.weights(...)`` through :meth:`Projection.apply` (decided rows replaced, pruned
rows zeroed, one op or edge masked while it is measured) before ``supernet(..., arch_weights=...)``.
Any relaxation with soft mixing weights (softmax, DARTS-'s, SDARTS's perturbed weight pass) and any
supernet of the contract work unchanged; nothing here knows DARTS's classes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from nas_core import (ArchSpec, ConfigError, Discretizer, Genotype, MixingWeights, Outcome, Phase,
                      Relaxation, RunContext, StepResult, Supernet, Task, add_loss_terms, hookimpl, top_k_genotype,
                      write_text_atomic)
from nas_darts_pt.options import DartsPtOptions

log = logging.getLogger("nas")

Mask = tuple[str, int, int | None]  # (cell type, edge row, op column; None: the whole edge)
DECISIONS_FILE = "decisions.json"  # in RUN_DIR/final/darts_pt: every decision with what it measured


class Projection:
    """The decisions so far, applied to any mixing weights: a decided edge reads its op's one-hot
    vector, a pruned edge zeros, and while a candidate is measured one op (or edge) reads 0.
    Differentiable in the undecided entries: ``w * keep + fixed``."""

    def __init__(self, spec: ArchSpec):
        self.spec = spec
        self.ops: dict[str, dict[int, int]] = {c: {} for c in spec.edges}  # row -> chosen column
        self.pruned: dict[str, set[int]] = {c: set() for c in spec.edges}
        self.nodes: dict[str, set[int]] = {c: set() for c in spec.edges}  # nodes whose inputs are decided
        self.mask: Mask | None = None

    def factors(self, cell_type: str) -> tuple[Tensor, Tensor]:
        """(keep, fixed) of one cell type, on the CPU, in float64."""
        keep = torch.ones(self.spec.shape(cell_type), dtype=torch.float64)
        fixed = torch.zeros_like(keep)
        for row, col in self.ops[cell_type].items():
            keep[row] = 0
            fixed[row, col] = 1
        for row in self.pruned[cell_type]:
            keep[row] = fixed[row] = 0
        if self.mask is not None and self.mask[0] == cell_type:
            _, row, col = self.mask
            where = (row, slice(None)) if col is None else (row, col)
            keep[where] = fixed[where] = 0
        return keep, fixed

    def apply(self, mix: Mapping[str, Tensor]) -> MixingWeights:
        out = {}
        for cell_type, w in mix.items():
            keep, fixed = self.factors(cell_type)
            out[cell_type] = w * keep.to(w) + fixed.to(w)
        return MixingWeights(out, getattr(mix, "chosen", None))

    @contextlib.contextmanager
    def masked(self, mask: Mask) -> Iterator[None]:
        self.mask = mask
        try:
            yield
        finally:
            self.mask = None

    def undecided_edges(self, cell_type: str) -> list[int]:
        return [row for row in range(len(self.spec.edges[cell_type])) if row not in self.ops[cell_type]]

    def state(self) -> dict[str, Any]:
        return {"ops": {c: {str(r): col for r, col in d.items()} for c, d in self.ops.items()},
                "pruned": {c: sorted(rows) for c, rows in self.pruned.items()},
                "nodes": {c: sorted(nodes) for c, nodes in self.nodes.items()}}

    def load(self, state: Mapping[str, Any]) -> None:
        self.ops = {c: {int(r): int(col) for r, col in state["ops"][c].items()} for c in self.spec.edges}
        self.pruned = {c: set(state["pruned"][c]) for c in self.spec.edges}
        self.nodes = {c: set(state["nodes"][c]) for c in self.spec.edges}


@attrs.frozen
class Score:
    """The supernet on the validation data under one mask: mean loss and top-1 accuracy (None when
    the task reports no ``top1_error``)."""

    loss: float
    acc: float | None

    def harm(self, criterion: str) -> float:
        """Larger when the mask hurts more: a lower accuracy, or a higher loss."""
        if criterion == "loss":
            return self.loss
        if self.acc is None:
            raise ConfigError("discretizer darts_pt: criterion 'acc' needs a task that reports top1_error "
                              "(classification); set discretizer.criterion=loss")
        return -self.acc


@torch.no_grad()
def measure(task: Task, model: Callable[..., Any], batches: Iterable[Any],
            reduce: Callable[[Sequence[Tensor]], list[Tensor]]) -> Score:
    """The task's mean loss and accuracy of ``model`` over ``batches`` (every example weighted
    alike, as their ``infer``'s meters), the wrong predictions counted as whole numbers so that equal
    accuracies tie exactly. ``reduce`` averages over the processes of a data-parallel run."""
    loss = wrong = count = None
    state = None
    has_acc = True
    for batch in batches:
        out: Outcome = task.forward(model, batch, state)
        state = out.state
        n = torch.tensor(float(out.count), dtype=torch.float64)
        batch_loss = out.stats["loss"].double() * n
        err = out.stats.get("top1_error")
        has_acc = has_acc and err is not None
        batch_wrong = (err.double() * n).round() if err is not None else torch.zeros((), dtype=torch.float64)
        loss = batch_loss if loss is None else loss + batch_loss
        wrong = batch_wrong.to(loss) if wrong is None else wrong + batch_wrong.to(loss)
        count = n.to(loss) if count is None else count + n.to(loss)
    if count is None:
        raise ConfigError("discretizer darts_pt: the task's architecture stream gave no batch to measure on")
    loss, wrong, count = (float(t) for t in reduce([loss, wrong, count]))  # means: their ratios are the totals'
    return Score(loss / count, 1 - wrong / count if has_acc else None)


def most_harmful(scores: Sequence[Score], criterion: str) -> int:
    """The index of the mask that hurts most; ties keep the first (their strict comparison)."""
    harms = [s.harm(criterion) for s in scores]
    return max(range(len(harms)), key=lambda i: (harms[i], -i))


def most_harmful_k(scores: Sequence[Score], k: int, criterion: str) -> list[int]:
    """The indices of the k masks that hurt most, in order. Their loop drops the least harmful edge
    until k remain, measuring each with only itself masked; ties drop the later one. On the same
    data that keeps the same k as ranking once, ties keeping the earlier."""
    harms = [s.harm(criterion) for s in scores]
    return sorted(sorted(range(len(harms)), key=lambda i: (-harms[i], i))[:k])


class DartsPtPhase(Phase):
    """The selection as a final phase: one decision per epoch (made as the epoch starts, in
    :meth:`batches`, then fine-tuning), checkpointed with the tuned supernet, the alphas, both
    optimizers and the decisions, so ``--resume`` continues between two decisions."""

    name = "darts_pt"

    def __init__(self, options: DartsPtOptions, *, task: Task, supernet: Supernet, relaxation: Relaxation,
                 spec: ArchSpec, components: Mapping[str, Any], batch_size: int, step_cap: int | None = None):
        self.opts, self.task, self.supernet, self.relaxation, self.spec = options, task, supernet, relaxation, spec
        self.search_components = dict(components)
        self.batch_size = batch_size
        self.eval_batches = options.max_eval_batches or step_cap
        self.tune_cap = options.max_tune_steps
        self.step_cap = step_cap
        self.k = options.k or spec.inputs_per_node
        check_soft_weights(relaxation)
        self.projection = Projection(spec)
        self.op_epochs = max(len(edges) for edges in spec.edges.values())
        self.epochs = self.op_epochs + max(len(self.crowded(c)) for c in spec.edges)
        self.weights = [p for p in supernet.parameters() if p.requires_grad]
        self.alphas = list(relaxation.parameters())
        # theirs: reset_optimizer(lr / 10, ...), a fresh SGD. Their architecture Adam goes on from the
        # search; a fresh one here, as an optimizer's state is not part of the contract between components
        self.w_opt = torch.optim.SGD(self.weights, lr=options.tune_lr, momentum=options.tune_momentum,
                                     weight_decay=options.tune_weight_decay)
        self.a_opt = torch.optim.Adam(self.alphas, lr=options.arch_lr, betas=options.arch_betas,
                                      weight_decay=options.arch_weight_decay)
        self.records: list[dict[str, Any]] = []

    @classmethod
    def from_run(cls, options: DartsPtOptions, run: RunContext) -> DartsPtPhase:
        c = run.components
        return cls(options, task=c["task"], supernet=c["supernet"], relaxation=c["relaxation"], spec=run.spec,
                   components=c, batch_size=run.config.search.batch_size,
                   step_cap=run.config.search.max_steps_per_epoch)

    def crowded(self, cell_type: str) -> list[int]:
        """The nodes of ``cell_type`` with more than k incoming edges: those the second part prunes."""
        dsts = [dst for _, dst in self.spec.edges[cell_type]]
        return sorted(d for d in set(dsts) if dsts.count(d) > self.k)

    # -- the engine's side -----------------------------------------------------------------------

    def describe(self) -> str:
        return (f"darts_pt: {self.epochs} decisions (criterion {self.opts.criterion}, edges {self.opts.edge_decision}), "
                f"{self.opts.proj_intv} passes of fine-tuning after each at lr {self.opts.tune_lr}")

    def parts(self) -> dict[str, Any]:
        return {"supernet": self.supernet, "relaxation": self.relaxation, "w_opt": self.w_opt, "a_opt": self.a_opt}

    def components(self) -> dict[str, Any]:
        return dict(self.search_components)

    def batches(self, run: RunContext) -> tuple[Iterable[Any], int]:
        self.decide(run)
        passes = self.opts.proj_intv if run.epoch + 1 < self.epochs else 1
        first = self._pass(run)
        total = passes * min(len(first[0]), len(first[1]))  # theirs: a validation batch per training batch
        if self.tune_cap is not None:
            total = min(total, self.tune_cap)
        elif self.step_cap is not None:
            total = min(total, passes * self.step_cap)

        def stream() -> Iterator[tuple[Any, Any]]:
            for i in range(passes):
                weights, arch = first if i == 0 else self._pass(run)
                yield from zip(weights, arch)
        return stream(), total

    def _pass(self, run: RunContext) -> tuple[Any, Any]:
        weights = self.task.loader("weights", batch_size=self.batch_size, run=run)
        return weights, self.task.loader("arch", batch_size=self.batch_size, run=run)

    def step(self, batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        """Their tuning step: a first-order architecture step on the validation batch (if
        ``tune_alpha``), then a weight step on the training batch (the perturbation, if the search
        has one, on this pass alone, the decisions applied after it)."""
        train_batch, val_batch = batch
        self.supernet.train()
        components = list(run.components.values())
        sample = self.relaxation.sample(run.generator("relaxation"))
        metrics: dict[str, dict[str, Tensor]] = {}
        out_state: dict[str, Any] = {}
        if self.opts.tune_alpha:
            mix = self.projection.apply(self.relaxation.weights(sample))
            out = self._forward(mix, val_batch, state.get("arch"), "arch", components)
            self._update(self.a_opt, self.alphas, out.loss, run, clip=0.0)
            metrics["arch"], out_state["arch"] = dict(out.stats), out.state
        with torch.no_grad():
            mix = self.projection.apply(self.relaxation.weights(sample))
        perturbation = run.components.get("perturbation")
        if perturbation is not None:
            def loss_of(m: MixingWeights) -> Tensor:
                return self._forward(self.projection.apply(m), train_batch, state.get("weights"), "weights",
                                     components).loss

            mix = self.projection.apply(perturbation.perturb(mix, loss_of, run.generator("perturbation"), run))
        out = self._forward(mix, train_batch, state.get("weights"), "weights", components)
        self._update(self.w_opt, self.weights, out.loss, run, clip=self.opts.grad_clip)
        metrics = {"train": {**out.stats, "lr": torch.tensor(self.w_opt.param_groups[0]["lr"])}, **metrics}
        return StepResult(metrics, {"weights": out.state, **out_state})

    def _forward(self, mix: MixingWeights, batch: Any, state: Any, objective: str,
                 components: Sequence[object]) -> Outcome:
        out = self.task.forward(lambda *inputs: self.supernet(*inputs, arch_weights=mix), batch, state)
        return add_loss_terms(out, components, objective, mix)

    @staticmethod
    def _update(optimizer: torch.optim.Optimizer, params: list[Tensor], loss: Tensor, run: RunContext,
                clip: float) -> None:
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = run.reduce([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)])
        for p, g in zip(params, grads):
            p.grad = g
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def end_epoch(self, run: RunContext, metrics: Mapping[str, float]) -> dict[str, float]:
        run.genotype = self.genotype()
        p = self.projection
        return {"decided_edges": float(sum(len(d) for d in p.ops.values())),
                "pruned_edges": float(sum(len(r) for r in p.pruned.values()))}

    def extra_state(self) -> dict[str, Any]:
        return {"projection": self.projection.state(), "records": self.records}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        if "projection" in state:
            self.projection.load(state["projection"])
            self.records = list(state.get("records", []))

    def finish(self, run: RunContext) -> Projection:
        if run.is_writer:
            write_text_atomic(run.dir / DECISIONS_FILE, json.dumps(self.records, indent=2) + "\n")
        return self.projection

    def genotype(self) -> Genotype:
        """The cells the decisions make (undecided edges ranked by their strengths, as theirs)."""
        return top_k_genotype(self.projection.apply(self.relaxation.strengths()), self.spec, self.k)

    # -- the decisions -----------------------------------------------------------------------------

    def decide(self, run: RunContext) -> None:
        """This epoch's decision, per cell type in the space's order, each measured with the ones
        before it applied (theirs: normal, then reduction)."""
        generator = run.generator("darts_pt")
        for cell_type in self.spec.edges:
            record = (self.decide_op(cell_type, generator, run) if run.epoch < self.op_epochs
                      else self.decide_edges(cell_type, generator, run))
            if record is not None:
                self.records.append({"decision": run.epoch + 1, "cell": cell_type, **record})

    def decide_op(self, cell_type: str, generator: torch.Generator, run: RunContext) -> dict[str, Any] | None:
        rows = self.projection.undecided_edges(cell_type)
        if not rows:
            return None
        row = self._pick(rows, generator)
        cols = [col for col, op in enumerate(self.spec.ops) if op != self.spec.zero_op]
        scores = [self.score((cell_type, row, col), run) for col in cols]
        col = cols[most_harmful(scores, self.opts.criterion)]
        self.projection.ops[cell_type][row] = col
        src, dst = self.spec.edges[cell_type][row]
        log.info("darts_pt: %s edge %d (%d -> %d) keeps %s; with each op masked: %s", cell_type, row, src, dst,
                 self.spec.ops[col], _scores_text([self.spec.ops[c] for c in cols], scores))
        return {"edge": row, "input": src, "node": dst, "chosen": self.spec.ops[col],
                "masked": {self.spec.ops[c]: attrs.asdict(s) for c, s in zip(cols, scores)}}

    def decide_edges(self, cell_type: str, generator: torch.Generator, run: RunContext) -> dict[str, Any] | None:
        nodes = [d for d in self.crowded(cell_type) if d not in self.projection.nodes[cell_type]]
        if not nodes:
            return None
        dst = self._pick(nodes, generator)
        edges = self.spec.edges[cell_type]
        rows = [row for row, (_, d) in enumerate(edges) if d == dst]
        scores = [self.score((cell_type, row, None), run) for row in rows]
        kept = [rows[i] for i in most_harmful_k(scores, self.k, self.opts.criterion)]
        self.projection.pruned[cell_type].update(r for r in rows if r not in kept)
        self.projection.nodes[cell_type].add(dst)
        log.info("darts_pt: %s node %d keeps inputs %s; with each input masked: %s", cell_type, dst,
                 [edges[r][0] for r in kept], _scores_text([str(edges[r][0]) for r in rows], scores))
        return {"node": dst, "kept_inputs": [edges[r][0] for r in kept],
                "masked": {str(edges[r][0]): attrs.asdict(s) for r, s in zip(rows, scores)}}

    def _pick(self, items: Sequence[int], generator: torch.Generator) -> int:
        if self.opts.edge_decision == "fixed":
            return items[0]
        return items[int(torch.randint(len(items), (1,), generator=generator))]

    def score(self, mask: Mask, run: RunContext) -> Score:
        """The supernet under the decisions and ``mask``, on the architecture stream in file order,
        in training mode (batch statistics, as their ``infer(..., _eval=False)``), without gradients."""
        self.supernet.train()
        with self.projection.masked(mask), torch.no_grad():
            mix = self.projection.apply(self.relaxation.weights(None))
        batches = self.task.loader("arch", batch_size=self.batch_size, run=run, evaluation=True)
        if self.eval_batches is not None:
            batches = itertools.islice(batches, self.eval_batches)
        return measure(self.task, lambda *inputs: self.supernet(*inputs, arch_weights=mix), batches, run.reduce)


def check_soft_weights(relaxation: Relaxation) -> None:
    """A ConfigError unless ``relaxation`` mixes every op softly (masking one op of a hard sample,
    e.g. GDAS's, would mask the whole edge or nothing)."""
    with torch.no_grad():
        sample = relaxation.sample(torch.Generator().manual_seed(0))
        hard = relaxation.weights(sample).chosen is not None
    if hard:
        raise ConfigError("discretizer darts_pt masks single ops of soft mixing weights, but this relaxation draws "
                          "one op per edge (hard sampling); search with a softmax-like relaxation (e.g. softmax)")


def _scores_text(names: Sequence[str], scores: Sequence[Score]) -> str:
    return ", ".join(f"{n} loss={s.loss:.4f}" + (f" acc={s.acc:.4f}" if s.acc is not None else "")
                     for n, s in zip(names, scores))


class DartsPtDiscretizer(Discretizer):
    """Every epoch of the search, DARTS's rule on the strengths; after it, the perturbation-based
    selection as a final phase, whose decisions make the search's genotype."""

    def __init__(self, options: DartsPtOptions):
        self.opts = options
        self.phase: DartsPtPhase | None = None

    @hookimpl
    def nas_run_start(self, run: RunContext) -> None:
        """Refuse a relaxation it cannot mask as the search starts, not after its epochs."""
        relaxation = run.components.get("relaxation")
        if run.phase == "search" and relaxation is not None:
            check_soft_weights(relaxation)

    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        return top_k_genotype(strengths, spec, self.opts.k or spec.inputs_per_node)

    def final_phases(self, run: RunContext) -> Sequence[Phase]:
        self.phase = DartsPtPhase.from_run(self.opts, run)
        return [self.phase]

    def final(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext) -> Genotype | None:
        if self.phase is None:
            return None
        return top_k_genotype(self.phase.projection.apply(strengths), spec, self.phase.k)
