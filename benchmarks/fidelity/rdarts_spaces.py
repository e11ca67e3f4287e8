"""RobustDARTS's spaces S1, S3 and S4 and its noise op side by side with the authors' code (Zela et al.,
ICLR 2020; https://github.com/automl/RobustDARTS): their src/search/model_search.py ``Network`` over
``spaces_dict[s]`` (src/spaces.py) against darts_cnn configured as this toolkit's ``rdarts_<s>_*``
presets (nas_robust_darts.spaces: S1 through the ``pdarts`` edge and the ``masked_softmax``
relaxation with S1's per-edge op table as ``kept``; S3 and S4 as ``space.ops`` with DARTS's softmax),
in float64 on one thread, from identical weights (copied by the PC-DARTS script's name map), alphas
and batch. Their alphas hold one column per op of an edge's own list, ours one per op of the space:
their entry (edge, j) is our (edge, column of their j-th op); our other columns are masked (S1).

Compared: parameter counts; every mixed edge of a normal and a reduction cell; the training loss,
the alpha gradients and the weight gradients of one forward and backward; their ``genotype()`` on
the same alphas against DARTS's ``topk`` over our strengths. The noise op draws from torch's global
generator in both codes (their ``Tensor.normal_``, our ``torch.randn``), so the same draws are injected
by seeding it alike before each forward: both draw in the same order (edge by edge, op by op).

    RDARTS_SRC=/path/to/RobustDARTS python benchmarks/fidelity/rdarts_spaces.py

Their code is imported, never copied; `.cuda()` is a no-op. Exits 0 with a message when RDARTS_SRC
is not set. Figures: benchmarks/fidelity/rdarts_spaces.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pcdarts import Report, catalog, copy_state, image_task, name_map, rel, setup, source, worst  # noqa: E402

C, CELLS, BATCH, SIZE, CLASSES = 4, 3, 4, 8, 10


def compare(space_name: str, report: Report) -> bool:
    from src.search.model_search import Network  # theirs
    from src.spaces import spaces_dict  # theirs

    from nas_core import Component
    from nas_darts import plugin as darts_plugin
    from nas_darts.cnn_space import DartsCnnSpace
    from nas_darts.options import DartsCnnOptions, SoftmaxOptions, TopKOptions
    from nas_darts.softmax import SoftmaxRelaxation
    from nas_darts.topk import TopKDiscretizer
    from nas_pdarts import plugin as pdarts_plugin
    from nas_pdarts.options import MaskedSoftmaxOptions, PdartsEdgeOptions
    from nas_pdarts.relaxation import MaskedSoftmaxRelaxation
    from nas_robust_darts import plugin as rdarts_plugin
    from nas_robust_darts.spaces import space_layer

    print(f"space {space_name}:")
    primitives = spaces_dict[space_name]
    torch.manual_seed(0)
    theirs = Network(C, CLASSES, CELLS, nn.CrossEntropyLoss(), primitives)
    layer = space_layer(space_name)  # what the presets set
    ops = tuple(layer["space"]["ops"])
    edge = layer["space"].get("edge")
    edge_component = (Component("pdarts", PdartsEdgeOptions(kept=edge["kept"])) if edge
                      else Component("weighted_sum", None))
    space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=C, nodes=4, ops=ops, edge=edge_component),
                          catalog=catalog(("darts", darts_plugin), ("pdarts", pdarts_plugin),
                                          ("robust_darts", rdarts_plugin)))
    task, info = image_task()
    ours = space.build_supernet(info)
    spec = space.arch_spec()
    relax = (MaskedSoftmaxRelaxation(MaskedSoftmaxOptions(kept=layer["relaxation"]["kept"]), spec=spec) if edge
             else SoftmaxRelaxation(SoftmaxOptions(), spec=spec))
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    report.add(f"parameter count ({count(theirs)} theirs, {count(ours)} ours)",
               abs(count(theirs) - count(ours)) / count(theirs))
    mapping = name_map(theirs, ours)
    copy_state(theirs, ours, mapping)

    # columns[t][e][j]: our alpha column of their op j on edge e
    lists = {"normal": primitives["primitives_normal"], "reduce": primitives["primitives_reduct"]}
    columns = {t: [[spec.ops.index(op) for op in row] for row in rows] for t, rows in lists.items()}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # alphas of unit scale, so that edges and ops rank clearly apart
        for t in ("normal", "reduce"):
            their_alpha = getattr(theirs, f"alphas_{t}")
            their_alpha.copy_(torch.randn(their_alpha.shape, generator=g))
            relax.alphas[t].copy_(torch.randn(relax.alphas[t].shape, generator=g))  # masked columns: anything
            for e, cols in enumerate(columns[t]):
                relax.alphas[t][e, cols] = their_alpha[e]

    def gathered(ours_tensor: Tensor, t: str) -> Tensor:
        return torch.stack([ours_tensor[e, cols] for e, cols in enumerate(columns[t])])

    theirs.train(), ours.train()
    mix = relax.weights()
    for cell_index, t in ((0, "normal"), (1, "reduce")):
        assert theirs.cells[cell_index].reduction == (t == "reduce") == ours.cells[cell_index].reduction
        weights = nn.functional.softmax(getattr(theirs, f"alphas_{t}"), dim=-1)
        report.add(f"{t} cell: mixing weights of the edges' own ops", rel(gathered(mix[t], t), weights))
        diffs = []
        for e in range(14):
            x = torch.randn(BATCH, C if t == "normal" else 2 * C, SIZE, SIZE, generator=g)
            torch.manual_seed(100 + e)
            a = theirs.cells[cell_index]._ops[e](x, weights[e])
            torch.manual_seed(100 + e)
            diffs.append(rel(ours.cells[cell_index].edges[e](x, mix[t][e]), a))
        report.add(f"{t} cell: 14 edge outputs", max(diffs))

    x, y = torch.randn(BATCH, 3, SIZE, SIZE, generator=g), torch.randint(CLASSES, (BATCH,), generator=g)
    torch.manual_seed(7)
    their_loss = theirs._loss(x, y)
    their_params = list(theirs.parameters())
    their_grads = torch.autograd.grad(their_loss, theirs.arch_parameters() + their_params)
    torch.manual_seed(7)
    our_loss = task.forward(lambda inp: ours(inp, arch_weights=relax.weights()), (x, y), None).loss
    our_named = dict(ours.named_parameters())
    our_params = [our_named[mapping[name]] for name, _ in theirs.named_parameters()]
    our_grads = torch.autograd.grad(our_loss, [relax.alphas["normal"], relax.alphas["reduce"]] + our_params)
    report.add("training loss", rel(our_loss, their_loss))
    report.add("d alpha normal (their columns)", rel(gathered(our_grads[0], "normal"), their_grads[0]))
    report.add("d alpha reduce (their columns)", rel(gathered(our_grads[1], "reduce"), their_grads[1]))
    if edge:  # a masked column weighs 0: no gradient
        masked = [float(our_grads[i][~relax.mask(t)].abs().max()) for i, t in enumerate(("normal", "reduce"))]
        report.add("d alpha of the masked (disallowed) columns, absolute", max(masked))
    report.add(f"weight gradients ({len(their_params)} tensors)", worst(zip(our_grads[2:], their_grads[2:])))

    derived = TopKDiscretizer(TopKOptions()).derive(relax.strengths(), spec)
    genotype = theirs.genotype()
    same = all([tuple(pair) for pair in getattr(genotype, t)] ==
               [(op, src) for node in derived.cells[t].nodes for op, src in node] for t in ("normal", "reduce"))
    print(f"  genotype: {'identical' if same else 'DIFFERENT'} (theirs: normal {genotype.normal}; "
          f"reduce {genotype.reduce})")
    return same


def main() -> int:
    src = source("RDARTS_SRC", "src/search/model_search.py", "https://github.com/automl/RobustDARTS")
    setup(src)
    report = Report()
    same = [compare(name, report) for name in ("s1", "s3", "s4")]
    verdict = report.verdict()
    return verdict if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
