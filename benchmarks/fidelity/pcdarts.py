"""nas_pcdarts side by side with the authors' PC-DARTS code (Xu et al., ICLR 2020;
https://github.com/yuhuixu1993/PC-DARTS): their model_search.Network and first-order Architect against
darts_cnn with `partial_channels` edges, the `edge_normalized` relaxation and `darts_1st`, in float64
on one thread, from identical weights, alphas, betas and batches.

    PCDARTS_SRC=/path/to/PC-DARTS python benchmarks/fidelity/pcdarts.py

Compared: every mixed edge's output (theirs times its beta, as their cell applies it), the loss and
its alpha and beta gradients, then 3 full search steps (architecture step on a validation batch,
weight step with momentum, weight decay and clipping on a training batch): every weight, alpha and
beta after each; then the genotype each derives. Their code is imported, never copied; `.cuda()` is
made a no-op in memory. Exits 0 with a message when PCDARTS_SRC is not set. The figures are in
benchmarks/fidelity/pcdarts.md. The helpers here also serve benchmarks/fidelity/drnas.py.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

C, CELLS, BATCH, SIZE, CLASSES = 8, 3, 4, 8, 10
LR, MOMENTUM, WD, CLIP, ARCH_LR, ARCH_WD = 0.1, 0.9, 3e-4, 5.0, 6e-4, 1e-3  # their train_search.py defaults
TOLERANCE = 1e-10


def source(variable: str, marker: str, url: str) -> Path:
    """The authors' checkout named by ``variable``, or exit 0 explaining how to give it."""
    path = os.environ.get(variable)
    if not path or not (Path(path) / marker).is_file():
        print(f"skipped: set {variable}=<a checkout of {url}> (its {marker} was not found)")
        sys.exit(0)
    return Path(path)


def setup(*paths: Path) -> None:
    """float64, one thread, `.cuda()` a no-op, and the authors' folders importable."""
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    torch.Tensor.cuda = lambda self, *a, **k: self  # their code moves everything to the GPU
    nn.Module.cuda = lambda self, *a, **k: self
    for path in reversed(paths):
        sys.path.insert(0, str(path))


def catalog(*plugins: tuple[str, Any]) -> Any:
    """The registered ops and mixed edges of exactly these plugins (no other installed one)."""
    from nas_core import Catalog, Toolkit

    registries = Toolkit.load(list(plugins), autoload=False).registries
    return Catalog(registries.operations, registries.mixed_edges)


def image_task() -> Any:
    from torch.utils.data import TensorDataset

    from nas_core import DataInfo
    from nas_tasks.classification import ClassificationOptions, ClassificationTask
    from nas_tasks.image_datasets import LabelledImages

    info = DataInfo((3, SIZE, SIZE), CLASSES)
    data = TensorDataset(torch.zeros(8, 3, SIZE, SIZE), torch.zeros(8, dtype=torch.long))
    return ClassificationTask(ClassificationOptions(), data=LabelledImages(data, data, info)), info


class StepRun:
    """What an optimizer step reads from its run: one generator per stream, the identity reduction."""

    def __init__(self, seed: int = 0):
        self.epoch, self.components, self.generators, self.seed = 0, {}, {}, seed

    def generator(self, stream: str) -> torch.Generator:
        return self.generators.setdefault(stream, torch.Generator().manual_seed(self.seed))

    def reduce(self, tensors: Iterable[Tensor]) -> list[Tensor]:
        return list(tensors)


def skeleton(name: str) -> tuple[str, ...]:
    """Where a state-dict key lives, without the layer indices inside ops (which differ between the two
    codes): (cell, edge) for an edge's op, (cell, preprocessing) for a cell's input, else the module;
    and the tensor's kind. Two tensors paired in registration order must agree on it."""
    leaf = name.rsplit(".", 1)[-1]
    edge = re.match(r"cells\.(\d+)\.(?:_ops|edges)\.(\d+)\.", name)
    if edge:
        return "edge", *edge.groups(), leaf
    pre = re.match(r"cells\.(\d+)\.(?:preprocess|pre)(\d)\.", name)
    if pre:
        return "pre", *pre.groups(), leaf
    return name.split(".", 1)[0], leaf


def name_map(theirs: nn.Module, ours: nn.Module) -> dict[str, str]:
    """Their state-dict keys -> ours, pairing the tensors in registration order (both networks
    register stem, cells with their preprocessing and edges, classifier in the same order; zero ops
    and pooling without BN hold none), and checking each pair's shape and cell/edge/kind."""
    a, b = theirs.state_dict(), ours.state_dict()
    assert len(a) == len(b), f"{len(a)} tensors in theirs, {len(b)} in ours"
    mapping = {}
    for (ka, ta), (kb, tb) in zip(a.items(), b.items()):
        assert ta.shape == tb.shape, f"{ka} {tuple(ta.shape)} vs {kb} {tuple(tb.shape)}"
        assert skeleton(ka) == skeleton(kb), (ka, kb)
        mapping[ka] = kb
    return mapping


def copy_state(theirs: nn.Module, ours: nn.Module, mapping: Mapping[str, str]) -> None:
    state = theirs.state_dict()
    ours.load_state_dict({mapping[k]: v for k, v in state.items()})


def rel(a: Tensor, b: Tensor) -> float:
    """max |a - b| / max |b| (0 when both are 0)."""
    a, b = a.detach().double(), b.detach().double()
    scale = float(b.abs().max())
    diff = float((a - b).abs().max())
    return diff / scale if scale > 0 else diff


def worst(pairs: Iterable[tuple[Tensor, Tensor]]) -> float:
    return max(rel(a, b) for a, b in pairs)


class Report:
    """The figures, printed as they come; ``explained`` ones (a difference the script's doc accounts
    for term by term) are shown but left out of the 1e-10 verdict."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, bool]] = []

    def add(self, what: str, value: float, explained: bool = False) -> None:
        self.rows.append((what, value, explained))
        print(f"  {what:<62} {value:.3e}{'  (explained)' if explained else ''}")

    def verdict(self) -> int:
        checked = [(w, v) for w, v, explained in self.rows if not explained]
        bad = [w for w, v in checked if not v <= TOLERANCE]
        print(f"max relative difference {max(v for _, v in checked):.3e} over {len(checked)} comparisons"
              + (f" (and {len(self.rows) - len(checked)} explained ones)" if len(checked) < len(self.rows) else "")
              + ("; all within 1e-10" if not bad else f"; ABOVE 1e-10: {', '.join(bad)}"))
        return 0 if not bad else 1


def weights_after(theirs: nn.Module, ours: nn.Module, mapping: Mapping[str, str]) -> float:
    """The worst of every weight and BN statistic."""
    ours_state = ours.state_dict()
    return worst((ours_state[mapping[k]], t) for k, t in theirs.state_dict().items())


def their_weight_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                      before: Callable[[], None] = lambda: None) -> Tensor:
    """The weight step of their train_search.py's train(): SGD on the training batch, clipped."""
    optimizer.zero_grad()
    before()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    optimizer.step()
    return loss


def main() -> int:
    src = source("PCDARTS_SRC", "model_search.py", "https://github.com/yuhuixu1993/PC-DARTS")
    setup(src)
    import model_search  # theirs
    from architect import Architect  # theirs

    from nas_core import Component
    from nas_darts import plugin as darts_plugin
    from nas_darts.architect import DartsOptimizer
    from nas_darts.cnn_space import DartsCnnSpace
    from nas_darts.options import DartsCnnOptions, DartsOptions
    from nas_pcdarts import plugin as pcdarts_plugin
    from nas_pcdarts.edge_normalized import EdgeNormalizedRelaxation
    from nas_pcdarts.options import EdgeNormalizedOptions, PartialChannelOptions

    torch.manual_seed(0)
    theirs = model_search.Network(C, CLASSES, CELLS, nn.CrossEntropyLoss())
    space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=C, nodes=4,
                                          edge=Component("partial_channels", PartialChannelOptions(k=4))),
                          catalog=catalog(("darts", darts_plugin), ("pcdarts", pcdarts_plugin)))
    task, info = image_task()
    ours = space.build_supernet(info)
    spec = space.arch_spec()
    assert spec.ops == tuple(model_search.PRIMITIVES), (spec.ops, model_search.PRIMITIVES)
    relax = EdgeNormalizedRelaxation(EdgeNormalizedOptions(), spec=spec)
    mapping = name_map(theirs, ours)
    copy_state(theirs, ours, mapping)
    print(f"name map: {len(mapping)} tensors, e.g. " + "; ".join(
        f"{k} -> {mapping[k]}" for k in list(mapping)[6:8] + [k for k in mapping if "._ops.5._ops.4" in k][:2]))
    # alphas and betas of unit scale, so that edges and ops rank clearly apart
    with torch.no_grad():
        for cell_type in ("normal", "reduce"):
            for name, theirs_param in (("alphas", getattr(theirs, f"alphas_{cell_type}")),
                                       ("betas", getattr(theirs, f"betas_{cell_type}"))):
                theirs_param.copy_(torch.randn(theirs_param.shape))
                getattr(relax, name)[cell_type].copy_(theirs_param)
    report = Report()
    gen = torch.Generator().manual_seed(1)

    def batch() -> tuple[Tensor, Tensor]:
        return torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), torch.randint(CLASSES, (BATCH,), generator=gen)

    print("mixed edges (every edge of a normal and a reduction cell, their output times beta):")
    mix = relax.weights()
    for cell_index, cell_type in ((0, "normal"), (1, "reduce")):
        alpha = nn.functional.softmax(getattr(theirs, f"alphas_{cell_type}"), dim=-1)
        beta = getattr(theirs, f"betas_{cell_type}")
        betas = torch.cat([nn.functional.softmax(beta[s:e], dim=-1) for s, e in ((0, 2), (2, 5), (5, 9), (9, 14))])
        diffs = []
        for e in range(len(spec.edges[cell_type])):
            x = torch.randn(BATCH, C if cell_type == "normal" else 2 * C, SIZE, SIZE, generator=gen)
            diffs.append(rel(ours.cells[cell_index].edges[e](x, mix[cell_type][e]),
                             betas[e] * theirs.cells[cell_index]._ops[e](x, alpha[e])))
        report.add(f"{cell_type} cell: 14 edge outputs", max(diffs))

    print("loss and architecture gradients on one validation batch:")
    x, y = batch()
    their_loss = theirs._loss(x, y)
    their_grads = torch.autograd.grad(their_loss, theirs.arch_parameters())
    ours_out = task.forward(lambda inp: ours(inp, arch_weights=relax.weights()), (x, y), None)
    our_params = [relax.alphas["normal"], relax.alphas["reduce"], relax.betas["normal"], relax.betas["reduce"]]
    our_grads = torch.autograd.grad(ours_out.loss, our_params)
    report.add("loss", rel(ours_out.loss, their_loss))
    for label, a, b in zip(("d alpha normal", "d alpha reduce", "d beta normal", "d beta reduce"), our_grads,
                           their_grads):
        report.add(label, rel(a, b))

    print("3 search steps (first order, arch step then weight step, momentum, weight decay, clipping):")
    args = SimpleNamespace(momentum=MOMENTUM, weight_decay=WD, arch_learning_rate=ARCH_LR, arch_weight_decay=ARCH_WD)
    architect = Architect(theirs, args)
    their_sgd = torch.optim.SGD(theirs.parameters(), LR, momentum=MOMENTUM, weight_decay=WD)
    options = DartsOptions(w_lr=LR, w_lr_min=0.0, w_momentum=MOMENTUM, w_weight_decay=WD, grad_clip=CLIP,
                           arch_lr=ARCH_LR, arch_betas=(0.5, 0.999), arch_weight_decay=ARCH_WD)
    optimizer = DartsOptimizer(options, supernet=ours, relaxation=relax, task=task, epochs=50, second_order=False)
    run = StepRun()
    for step in range(3):
        (xt, yt), (xv, yv) = batch(), batch()
        architect.step(xt, yt, xv, yv, LR, their_sgd, unrolled=False)
        their_weight_step(theirs, their_sgd, xt, yt)
        optimizer.step((xt, yt), (xv, yv), {}, run)
        report.add(f"step {step + 1}: weights and BN statistics", weights_after(theirs, ours, mapping))
        report.add(f"step {step + 1}: alphas and betas", worst(zip(our_params, theirs.arch_parameters())))

    return report.verdict() if same_genotype(theirs, relax, spec) else 1


def same_genotype(theirs: nn.Module, relax: Any, spec: Any) -> bool:
    """Whether DARTS's topk over our alphas derives their network's ``genotype()``; printed."""
    from nas_darts.topk import TopKDiscretizer, TopKOptions

    derived = TopKDiscretizer(TopKOptions()).derive(relax.strengths(), spec)
    genotype = theirs.genotype()
    same = all([(op, src) for op, src in getattr(genotype, t)] ==
               [(op, src) for node in derived.cells[t].nodes for op, src in node] for t in ("normal", "reduce"))
    print(f"genotype: {'identical' if same else 'DIFFERENT'} ({genotype.normal})")
    return same


if __name__ == "__main__":
    sys.exit(main())
