"""OLES (Jiang et al., "Operation-Level Early Stopping for Robustifying Differentiable NAS", NeurIPS 2023;
the authors' train_search.py, ``preserve_grads`` and ``check_grads_cosine``): DARTS, whose parametric
candidate ops stop training once their training and validation gradients stop agreeing.

After every weight step the optimizer keeps each candidate op's weight gradients (as the step applied
them: reduced and clipped); at the next architecture step it scores the op by the cosine similarity of
its validation gradient to the kept one (:func:`op_scores`). Every ``frequency`` scores, an op whose
mean score fell under ``threshold`` is frozen for the rest of the search: it still runs in every
forward pass and its alpha keeps training, but its weights no longer get a gradient, so the weight
step leaves them exactly as they are (SGD skips a parameter without one: no weight decay, no
momentum). Only candidate ops with weights score: pooling, skip (the identity, or FactorizedReduce on
a stride-2 edge, registered parameter-free), the zero op and the cells' preprocessing never freeze.

The validation gradient costs no extra pass. First order (``oles``): the architecture pass's backward
also yields the scored ops' weight gradients at the current weights. Second order (``oles_2nd``): the
gradient at the unrolled weights w', which the hypergradient computes anyway. The frozen ops, the kept
gradients and the window's sums are part of the optimizer's state, so ``--resume`` continues exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch
from nas_darts.architect import DartsOptimizer
from torch import Tensor, nn

from nas_core import ArchSpec, MixedEdge, Outcome, Relaxation, RunContext, StepResult, Supernet, Task
from nas_oles.options import OlesOptions

log = logging.getLogger("nas")
Reduce = Callable[[Sequence[Tensor]], list[Tensor]]


@attrs.frozen
class Candidate:
    """A candidate op with weights, inside a mixed edge."""

    path: str  # the op's module name in the supernet, e.g. cells.0.edges.3.ops.2
    column: int  # its column in the alphas: the op is spec.ops[column]
    params: tuple[Tensor, ...]


def candidate_ops(supernet: nn.Module) -> list[Candidate]:
    """Every candidate op with weights in every mixed edge of ``supernet``. An edge lists its ops as
    ``ops`` (an ``nn.ModuleList``) with their alpha columns as ``columns``, as darts_cnn's
    ``weighted_sum`` and the edges built like it do; a ValueError names an edge that does not."""
    found = []
    for path, module in supernet.named_modules():
        if not isinstance(module, MixedEdge):
            continue
        ops, columns = getattr(module, "ops", None), getattr(module, "columns", None)
        if not isinstance(ops, nn.ModuleList) or columns is None:
            raise ValueError(f"OLES freezes the candidate ops of mixed edges that list them as `ops` with their alpha "
                             f"`columns`; the {type(module).__name__} edge at {path} does not")
        for i, (op, column) in enumerate(zip(ops, columns)):
            params = tuple(op.parameters())
            if any(_scorable(p) for p in params):
                found.append(Candidate(f"{path}.ops.{i}", column, params))
    if not found:
        raise ValueError("OLES freezes candidate ops with weights inside mixed edges, and this supernet has none "
                         "(the darts_cnn space has them)")
    return found


def _scorable(t: Tensor) -> bool:
    """A tensor with a first dimension to take cosines along (the authors' ``len(g) != 0``)."""
    return t.dim() > 0 and t.shape[0] > 0


def op_scores(now: Sequence[Sequence[Tensor]], kept: Sequence[Sequence[Tensor]]) -> Tensor:
    """The gradient-matching score of each op, given two gradients of each of its weight tensors:
    per tensor, ``torch.cosine_similarity`` along dim 0 (one cosine per position of the other
    dimensions) averaged over those positions; per op, the mean over its tensors. As the authors'
    ``check_grads_cosine``, with the tensors of one shape compared in one batch."""
    groups: dict[torch.Size, list[tuple[Tensor, Tensor]]] = {}
    spots: list[list[tuple[torch.Size, int]]] = []  # per op: (group, index in it) of each of its tensors
    for op_now, op_kept in zip(now, kept):
        spots.append([])
        for a, b in zip(op_now, op_kept):
            if _scorable(a):
                group = groups.setdefault(a.shape, [])
                spots[-1].append((a.shape, len(group)))
                group.append((a, b))
    means, offset = [], {}
    for shape, pairs in groups.items():
        offset[shape] = sum(len(m) for m in means)
        cos = torch.cosine_similarity(torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs]), dim=1)
        means.append(cos.reshape(len(pairs), -1).mean(1))
    end = sum(len(m) for m in means)
    flat = torch.cat([*means, means[0].new_zeros(1)])  # the last entry pads the rows of ops with fewer tensors
    width = max(len(s) for s in spots)
    rows = [[offset[shape] + k for shape, k in s] + [end] * (width - len(s)) for s in spots]
    counts = torch.tensor([len(s) for s in spots], dtype=flat.dtype, device=flat.device)
    return flat[torch.tensor(rows, device=flat.device)].sum(1) / counts


class OlesOptimizer(DartsOptimizer):
    """``darts_1st`` (or ``darts_2nd``) with operation-level early stopping."""

    def __init__(self, options: OlesOptions, *, supernet: Supernet, relaxation: Relaxation, task: Task, epochs: int,
                 second_order: bool = False):
        if second_order and options.score == "authors":
            raise ValueError("score: authors reproduces the authors' first-order search (their second-order path "
                             "leaves the kept gradient as the validation side, so every score is 1); use it with "
                             "optimizer oles, or score: clean")
        with torch.no_grad():
            if relaxation.weights().chosen is not None:
                raise ValueError("OLES scores every candidate op at every step, so every op must run in every pass; "
                                 "this relaxation samples one op per edge: use softmax-like mixing")
        super().__init__(options, supernet=supernet, relaxation=relaxation, task=task, epochs=epochs,
                         second_order=second_order)
        self.candidates = candidate_ops(supernet)
        self.every_weight = (self.names, self.weights, self.held)  # the base's lists before any freezing
        self.frozen: list[int] = []  # candidates, in the order they froze
        self.kept: dict[int, list[Tensor]] | None = None  # per live candidate: the last weight step's gradients
        self.validation: dict[Tensor, Tensor] | None = None  # this step's validation gradient, per weight tensor
        self.scored = 0  # scores in the current window
        self.sums: Tensor | None = None  # per candidate: the sum of its scores in the window
        self.names_of: list[str] | None = None  # per candidate: its op name, once a step told the spec
        self.eligible: list[int] | None = None  # the candidates that score (not registered parameter-free)
        self.w_opt.register_step_post_hook(self._keep)

    # -- which ops score ----------------------------------------------------------------------

    def bind(self, spec: ArchSpec) -> None:
        """Name the candidates from the run's spec, and leave out those registered parameter-free
        (skip_connect's FactorizedReduce has weights, but the authors never freeze skip)."""
        self.names_of = [spec.ops[c.column] for c in self.candidates]
        self.eligible = [i for i, name in enumerate(self.names_of) if name not in spec.parameter_free]

    def live(self) -> list[int]:
        frozen = set(self.frozen)
        return [i for i in self.eligible or () if i not in frozen]

    # -- the step -----------------------------------------------------------------------------

    def step(self, train_batch: Any, val_batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        if self.eligible is None:
            self.bind(run.spec)
        self.validation = None
        return super().step(train_batch, val_batch, state, run)

    def arch_gradient(self, train_batch: Any, val_batch: Any, train_state: Any = None, val_state: Any = None, *,
                      sample: Any = None, reduce: Reduce = list) -> tuple[Outcome, list[Tensor]]:
        """DARTS's architecture gradient; first order, the same backward also gives the scored ops'
        validation gradient (second order: :meth:`hessian_vector_product` receives it)."""
        if self.second_order:
            return super().arch_gradient(train_batch, val_batch, train_state, val_state, sample=sample, reduce=reduce)
        out = self.forward_pass(self.weights, self.mixing(sample), val_batch, val_state, "arch")
        scored = [p for i in self.live() for p in self.candidates[i].params] if self.kept is not None else []
        grads = reduce(self.gradients(out.loss, [*self.alphas, *scored]))
        self.validation = dict(zip(scored, grads[len(self.alphas):]))
        return out, grads[:len(self.alphas)]

    def hessian_vector_product(self, v: Sequence[Tensor], batch: Any, state: Any = None,
                               sample: Any = None) -> list[Tensor]:
        # v = grad_w' L_val(w', alpha) over the trainable weights: the second-order validation gradient
        # (clip_hessian_vector scales it as a whole, which no cosine sees)
        self.validation = dict(zip(self.weights, v))
        return super().hessian_vector_product(v, batch, state, sample)

    def weight_step(self, batch: Any, state: Any = None, *, sample: Any = None, reduce: Reduce = list,
                    run: RunContext | None = None) -> Outcome:
        """Score and freeze first (as the authors' check runs between the two steps), then DARTS's
        weight step, which moves the trainable weights only."""
        if self.validation is not None and self.kept is not None:
            self.judge(self.validation)
        self.validation = None
        return super().weight_step(batch, state, sample=sample, reduce=reduce, run=run)

    def _keep(self, *_: Any) -> None:
        """After each weight step (a hook of its SGD): the gradients it applied, for the next score.
        References, not copies: the next step sets new gradient tensors."""
        self.kept = {i: [p.grad for p in self.candidates[i].params] for i in self.live()}

    # -- scores and freezing ------------------------------------------------------------------

    def judge(self, validation: Mapping[Tensor, Tensor]) -> list[int]:
        """Score every live candidate (its gradients in ``validation`` against the kept ones) and, as
        a window closes, freeze those whose mean score is under the threshold; returns those."""
        live = [i for i in self.live() if i in (self.kept or {})]
        if not live:
            return []
        kept = [self.kept[i] for i in live]
        now = [[validation[p] for p in self.candidates[i].params] for i in live]
        if self.opts.score == "authors":  # their .grad still holds the kept gradient when the validation one adds in
            now = [[v + k for v, k in zip(vs, ks)] for vs, ks in zip(now, kept)]
        scores = op_scores(now, kept)
        if self.sums is None:
            self.sums = scores.new_zeros(len(self.candidates))
        index = torch.tensor(live, device=scores.device)
        self.sums[index] += scores
        self.scored += 1
        # theirs counts from 0 and decides when its count reads frequency: frequency + 1 scores (a decision
        # still divides by frequency)
        if self.scored < self.opts.frequency + (self.opts.score == "authors"):
            return []
        means = (self.sums[index] / self.opts.frequency).tolist()
        low = [(i, m) for i, m in zip(live, means) if m < self.opts.threshold]
        for i, m in low:
            log.info("OLES: froze %s at %s (mean gradient-matching score %.4g < %g)", self.name(i),
                     self.candidates[i].path, m, self.opts.threshold)
        self.freeze([i for i, _ in low])
        self.sums.zero_()
        self.scored = 0
        return [i for i, _ in low]

    def name(self, i: int) -> str:
        return self.names_of[i] if self.names_of is not None else f"column {self.candidates[i].column}"

    def freeze(self, indices: Sequence[int]) -> None:
        """Stop training these candidates: their weights leave the lists the passes differentiate."""
        for i in indices:
            for p in self.candidates[i].params:
                p.requires_grad_(False)
            if self.kept is not None:
                self.kept.pop(i, None)
        self.frozen.extend(indices)
        names, weights, held = self.every_weight
        on = [k for k, w in enumerate(weights) if w.requires_grad]
        self.names, self.weights, self.held = [names[k] for k in on], [weights[k] for k in on], [held[k] for k in on]

    # -- epochs and state ---------------------------------------------------------------------

    def end_epoch(self, run: RunContext | None = None) -> dict[str, float]:
        return {**super().end_epoch(run), "oles_frozen": float(len(self.frozen))}

    def state_dict(self) -> dict[str, Any]:
        paths = [c.path for c in self.candidates]
        return {**super().state_dict(), "oles": {
            "frozen": [paths[i] for i in self.frozen],
            "kept": None if self.kept is None else {paths[i]: grads for i, grads in self.kept.items()},
            "scored": self.scored,
            "sums": {} if self.sums is None else dict(zip(paths, self.sums.tolist()))}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        oles = state["oles"]
        index = {c.path: i for i, c in enumerate(self.candidates)}
        unknown = [p for p in [*oles["frozen"], *(oles["kept"] or {}), *oles["sums"]] if p not in index]
        if unknown:
            raise ValueError(f"the OLES state names ops this supernet does not have: {unknown[:3]}")
        ref = self.candidates[0].params[0]
        self.frozen = []
        self.freeze([index[p] for p in oles["frozen"]])
        self.kept = None if oles["kept"] is None else {index[p]: [g.to(ref.device) for g in grads]
                                                       for p, grads in oles["kept"].items()}
        self.scored = int(oles["scored"])
        self.sums = None if not oles["sums"] else torch.tensor(
            [oles["sums"][c.path] for c in self.candidates], dtype=ref.dtype, device=ref.device)


def oles_first_order(options: OlesOptions, **context: Any) -> OlesOptimizer:
    """OLES over DARTS first order, the authors' search."""
    return OlesOptimizer(options, second_order=False, **context)


def oles_second_order(options: OlesOptions, **context: Any) -> OlesOptimizer:
    """OLES over DARTS second order: the scores read the validation gradient at the unrolled weights."""
    return OlesOptimizer(options, second_order=True, **context)
