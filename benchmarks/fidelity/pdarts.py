"""nas_pdarts side by side with the authors' P-DARTS code (Chen et al., ICCV 2019;
https://github.com/chenxin061/pdarts): their model_search.Network built at a later stage (pruned
switches, 3 ops per edge, skip dropout on) and one step of their train_search.py's ``train()``
against darts_cnn with the `pdarts` edge, the `masked_softmax` relaxation and the `pdarts` optimizer,
in float64 on one thread, from identical weights, alphas, batches and dropout masks (the global
generator seeded alike before each forward; both draw the masks in the same order). Then their
pruning decisions (``get_min_k`` between stages, ``get_min_k_no_zero`` in the last) against our stage
hook and rule from the same alphas, and their skip-capped genotype (the loop of their main() over
``delete_min_sk_prob``, ``keep_1_on``, ``keep_2_branches``, ``check_sk_number``, ``parse_network``)
against the `pdarts` discretizer for M = 0..4.

    PDARTS_SRC=/path/to/pdarts python benchmarks/fidelity/pdarts.py

Their code is imported, never copied: train_search.py parses its command line and creates a save
folder at import, so the script gives it a temporary one (and an empty working directory);
`.cuda()` is a no-op in memory. The loops of
their main() that drive their pruning and cap functions are written out here (they are inline in
main()). Exits 0 with a message when PDARTS_SRC is not set. Figures: benchmarks/fidelity/pdarts.md.
"""

from __future__ import annotations

import copy
import os
import re
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pcdarts import BATCH, CLASSES, SIZE, Report, StepRun, catalog, image_task, rel, setup, source, worst  # noqa: E402

C, CELLS, P = 8, 3, 0.3  # P: the skip dropout in force during the compared step
STEP_CLIP = 0.05  # their args.grad_clip (weights and alphas) and ours for the compared step: both clips bite
LR, MOMENTUM, WD, ARCH_LR, ARCH_WD = 0.025, 0.9, 3e-4, 6e-4, 1e-3  # their train_search.py defaults
CELL_TYPES = ("normal", "reduce")


def import_theirs(src: Path):
    """Their model_search and train_search modules, importable on CPU."""
    setup(src)
    save = tempfile.mkdtemp(prefix="pdarts_fidelity_")
    sys.argv = ["train_search.py", "--save", save + "/", "--note", "fidelity"]
    here = os.getcwd()
    os.chdir(save)  # create_exp_dir copies the *.py of the working directory: none here
    try:
        import model_search  # theirs
        import train_search  # theirs
    finally:
        os.chdir(here)
    return model_search, train_search


def skeleton(name: str) -> tuple[str, ...]:
    leaf = name.rsplit(".", 1)[-1]
    edge = re.match(r"cells\.(\d+)\.(?:cell_ops|edges)\.(\d+)\.", name)
    if edge:
        return "edge", *edge.groups(), leaf
    pre = re.match(r"cells\.(\d+)\.(?:preprocess|pre)(\d)\.", name)
    return ("pre", *pre.groups(), leaf) if pre else (name.split(".", 1)[0], leaf)


def name_map(theirs: nn.Module, ours: nn.Module) -> dict[str, str]:
    """Their state-dict keys (alphas apart) -> ours, paired in registration order, shapes and places checked."""
    a = {k: v for k, v in theirs.state_dict().items() if "alphas" not in k}
    b = ours.state_dict()
    assert len(a) == len(b), f"{len(a)} tensors in theirs, {len(b)} in ours"
    mapping = {}
    for (ka, ta), (kb, tb) in zip(a.items(), b.items()):
        assert ta.shape == tb.shape and skeleton(ka) == skeleton(kb), (ka, kb, ta.shape, tb.shape)
        mapping[ka] = kb
    return mapping


def switches_to_kept(switches: list[list[bool]], ops: tuple[str, ...]) -> list[list[str]]:
    return [[op for op, on in zip(ops, row) if on] for row in switches]


def their_pruning(prob: np.ndarray, switches: list[list[bool]], drop: int, last: bool, train_search) -> list[list[bool]]:
    """Their main()'s pruning loop for one cell type (written out; it calls their get_min_k*)."""
    switches = copy.deepcopy(switches)
    for i in range(14):
        idxs = [j for j in range(len(switches[i])) if switches[i][j]]
        drops = (train_search.get_min_k_no_zero(prob[i, :], idxs, drop) if last
                 else train_search.get_min_k(prob[i, :], drop))
        for idx in drops:
            switches[i][idxs[idx]] = False
    return switches


def their_capped_genotypes(alphas: dict[str, Tensor], switches: dict[str, list], train_search) -> dict[int, object]:
    """Their main()'s end of the last stage, written out around their functions: the genotype for
    each M the skip-cap loop logs (and for the M it never reaches, the uncapped one)."""
    normal_prob = nn.functional.softmax(alphas["normal"], dim=-1).detach().numpy()
    reduce_prob = nn.functional.softmax(alphas["reduce"], dim=-1).detach().numpy()
    sw2 = {t: copy.deepcopy(switches[t]) for t in CELL_TYPES}  # switches_normal_2, switches_reduce_2
    sw = {t: their_pruning(p, switches[t], 2, True, train_search) for t, p in (("normal", normal_prob),
                                                                                 ("reduce", reduce_prob))}
    normal_final, reduce_final = [0] * 14, [0] * 14
    for i in range(14):
        if sw2["normal"][i][0]:
            normal_prob[i][0] = 0
        normal_final[i] = max(normal_prob[i])
        if sw2["reduce"][i][0]:
            reduce_prob[i][0] = 0
        reduce_final[i] = max(reduce_prob[i])
    keep = {"normal": [0, 1], "reduce": [0, 1]}
    n, start = 3, 2
    for _ in range(3):
        end = start + n
        for t, final in (("normal", normal_final), ("reduce", reduce_final)):
            ranked = sorted(range(n), key=lambda x: final[start:end][x])
            keep[t] += [ranked[-1] + start, ranked[-2] + start]
        start, n = end, n + 1
    for t in CELL_TYPES:
        for i in range(14):
            if i not in keep[t]:
                sw[t][i] = [False] * len(sw[t][i])
    out = {8: train_search.parse_network(sw["normal"], sw["reduce"])}
    normal = sw["normal"]
    for sks in range(0, 9):
        max_sk = 8 - sks
        num_sk = train_search.check_sk_number(normal)
        while num_sk > max_sk:
            normal_prob = train_search.delete_min_sk_prob(normal, sw2["normal"], normal_prob)
            normal = train_search.keep_1_on(sw2["normal"], normal_prob)
            normal = train_search.keep_2_branches(normal, normal_prob)
            num_sk = train_search.check_sk_number(normal)
        out[max_sk] = train_search.parse_network(normal, sw["reduce"])
    return out


def as_pairs(genotype, t: str) -> list[tuple[str, int]]:
    if isinstance(genotype, tuple):  # theirs
        return sorted((op, src) for op, src in getattr(genotype, t))
    return sorted((op, src) for node in genotype.cells[t].nodes for op, src in node)


def main() -> int:
    src = source("PDARTS_SRC", "model_search.py", "https://github.com/chenxin061/pdarts")
    model_search, train_search = import_theirs(src)
    train_search.args.report_freq = 10**9  # no per-step log lines
    # their accuracy meter (logged only) calls .view on a non-contiguous tensor, which torch >= 1.x refuses
    train_search.utils.accuracy = lambda output, target, topk: [torch.zeros(())] * len(topk)

    from nas_core import Component
    from nas_darts import plugin as darts_plugin
    from nas_darts.cnn_space import DartsCnnSpace
    from nas_darts.options import DartsCnnOptions
    from nas_pdarts import plugin as pdarts_plugin
    from nas_pdarts import progressive
    from nas_pdarts.discretizer import PdartsDiscretizer
    from nas_pdarts.kept import strongest
    from nas_pdarts.optimizer import PdartsOptimizer
    from nas_pdarts.options import (MaskedSoftmaxOptions, PdartsDiscretizerOptions, PdartsEdgeOptions,
                                    PdartsOptimizerOptions, PdartsSettings)
    from nas_pdarts.relaxation import MaskedSoftmaxRelaxation

    ops = tuple(model_search.PRIMITIVES)
    cat = catalog(("darts", darts_plugin), ("pdarts", pdarts_plugin))
    task, info = image_task()
    report = Report()
    rng = np.random.RandomState(0)
    torch.manual_seed(0)

    print("pruning after stages 1 and 2 (their get_min_k), from the same unit-scale alphas:")
    switches = {t: [[True] * 8 for _ in range(14)] for t in CELL_TYPES}
    stage_spec = None
    for stage, (keep, drop) in enumerate(((5, 3), (3, 2)), start=1):
        kept = None if stage == 1 else {t: switches_to_kept(switches[t], ops) for t in CELL_TYPES}
        space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=C, ops=ops), catalog=cat)
        stage_spec = space.arch_spec()
        relax = MaskedSoftmaxRelaxation(MaskedSoftmaxOptions(kept=kept), spec=stage_spec)
        their_alphas = {t: torch.tensor(rng.randn(14, sum(switches[t][0]))) for t in CELL_TYPES}
        with torch.no_grad():
            for t in CELL_TYPES:
                full = torch.zeros(14, 8)
                full[torch.tensor(switches[t])] = their_alphas[t].flatten()
                relax.alphas[t].copy_(full)
        config = SimpleNamespace(relaxation=Component("masked_softmax", None),
                                 settings={"pdarts": PdartsSettings(keep=(5, 3))},
                                 space=SimpleNamespace(options=SimpleNamespace(edge=Component("pdarts", None))))
        layer: dict = {}
        progressive.nas_stage_config(stage=stage, finished=SimpleNamespace(config=config, relaxation=relax,
                                                                            spec=stage_spec), layer=layer)
        switches = {t: their_pruning(nn.functional.softmax(their_alphas[t], dim=-1).numpy(), switches[t], drop, False,
                                     train_search) for t in CELL_TYPES}
        same = all(layer["relaxation"]["kept"][t] == switches_to_kept(switches[t], ops) for t in CELL_TYPES)
        report.add(f"after stage {stage}: kept op sets differ (0: identical, 8 -> {keep})", 0.0 if same else 1.0)

    print("the last stage's pruning (their get_min_k_no_zero: `none` dropped first, 3 -> 1):")
    mismatches = 0
    for t in CELL_TYPES:
        alpha = torch.tensor(rng.randn(14, 3))
        alpha[:, 0] += 2.0  # `none` (kept on some edges) often the strongest: the rule matters
        prob = nn.functional.softmax(alpha, dim=-1).numpy()
        theirs_sw = their_pruning(prob, switches[t], 2, True, train_search)
        for i in range(14):
            cols = [j for j in range(8) if switches[t][i][j]]
            row = [0.0] * 8
            for col, value in zip(cols, prob[i]):
                row[col] = float(value)
            ours_cols = strongest(row, cols, 1, zero=0 if 0 in cols else None)
            mismatches += ours_cols != [j for j in range(8) if theirs_sw[i][j]]
    report.add("kept op per edge differs (edges, of 28)", float(mismatches))

    print("a search step of the last stage (3 ops per edge, skip dropout 0.3):")
    kept = {t: switches_to_kept(switches[t], ops) for t in CELL_TYPES}
    torch.manual_seed(0)
    theirs = model_search.Network(C, CLASSES, CELLS, nn.CrossEntropyLoss(), switches_normal=switches["normal"],
                                  switches_reduce=switches["reduce"], p=P).double()
    edge = Component("pdarts", PdartsEdgeOptions(skip_dropout=P, kept=kept))
    # contiguous activations, as theirs: dropout draws its mask in memory order, so channels-last
    # tensors would get the same distribution but other masks than theirs
    space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=C, ops=ops, edge=edge, channels_last=False), catalog=cat)
    spec = space.arch_spec()
    ours = space.build_supernet(info)
    relax = MaskedSoftmaxRelaxation(MaskedSoftmaxOptions(kept=kept), spec=spec)
    mapping = name_map(theirs, ours)
    ours.load_state_dict({mapping[k]: v for k, v in theirs.state_dict().items() if k in mapping})
    masks = {t: relax.mask(t) for t in CELL_TYPES}
    with torch.no_grad():  # unit-scale alphas, skip favoured so that the cap below has work to do
        for t in CELL_TYPES:
            alpha = getattr(theirs, f"alphas_{t}")
            alpha.copy_(torch.randn(alpha.shape))
            full = torch.zeros(14, 8)
            full[masks[t]] = alpha.flatten()
            relax.alphas[t].copy_(full)
    print(f"  name map: {len(mapping)} tensors; {sum(isinstance(m, nn.Dropout) for m in ours.modules())} skip dropouts "
          f"in ours, {sum(isinstance(m, nn.Dropout) for m in theirs.modules())} in theirs")

    def kept_cols(t: str, a: Tensor) -> Tensor:
        return a[masks[t]].view(14, -1)

    gen = torch.Generator().manual_seed(1)
    mix = relax.weights()
    for index, t in ((0, "normal"), (1, "reduce")):
        their_w = nn.functional.softmax(getattr(theirs, f"alphas_{t}"), dim=-1)
        diffs = []
        for e in range(14):
            x = torch.randn(BATCH, C if t == "normal" else 2 * C, SIZE, SIZE, generator=gen)
            torch.manual_seed(100 + e)
            a = ours.cells[index].edges[e](x, mix[t][e])
            torch.manual_seed(100 + e)
            diffs.append(rel(a, theirs.cells[index].cell_ops[e](x, their_w[e])))
        report.add(f"{t} cell: 14 edge outputs (same dropout masks)", max(diffs))
        report.add(f"{t}: mixing weights of the kept ops", rel(kept_cols(t, mix[t]), their_w))

    def batch() -> tuple[Tensor, Tensor]:
        return torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), torch.randint(CLASSES, (BATCH,), generator=gen)

    (xt, yt), (xv, yv) = batch(), batch()
    theirs.train(), ours.train()
    torch.manual_seed(7)
    their_loss = theirs._loss(xv, yv)
    their_grads = torch.autograd.grad(their_loss, theirs.arch_parameters())
    torch.manual_seed(7)
    options = PdartsOptimizerOptions(w_lr=LR, w_lr_min=0.0, w_momentum=MOMENTUM, w_weight_decay=WD,
                                     grad_clip=STEP_CLIP, arch_lr=ARCH_LR, arch_betas=(0.5, 0.999),
                                     arch_weight_decay=ARCH_WD, arch_grad_clip=STEP_CLIP)
    optimizer = PdartsOptimizer(options, supernet=ours, relaxation=relax, task=task, epochs=25)
    our_out = optimizer.forward_pass(optimizer.weights, relax.weights(), (xv, yv), None, "arch")
    our_grads = torch.autograd.grad(our_out.loss, [relax.alphas[t] for t in CELL_TYPES])
    report.add("validation loss", rel(our_out.loss, their_loss))
    report.add("d loss / d alpha, kept entries (normal, reduce)",
               worst((kept_cols(t, g), h) for t, g, h in zip(CELL_TYPES, our_grads, their_grads)))
    report.add("d loss / d alpha, pruned entries (exactly 0)",
               max(float(g[~masks[t]].abs().max()) for t, g in zip(CELL_TYPES, our_grads)))

    norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in our_grads])))
    print(f"  the architecture gradient's norm {norm:.3f} is clipped to {STEP_CLIP} in the step below")
    train_search.args.grad_clip = STEP_CLIP
    # one step of their train() (architecture step: Adam with the gradient clipped at 5; then the weight
    # step) against ours; the global generator seeded alike before each side's step
    network_params = [v for k, v in theirs.named_parameters() if "alphas" not in k]
    their_sgd = torch.optim.SGD(network_params, LR, momentum=MOMENTUM, weight_decay=WD)
    their_adam = torch.optim.Adam(theirs.arch_parameters(), lr=ARCH_LR, betas=(0.5, 0.999), weight_decay=ARCH_WD)
    torch.manual_seed(11)
    train_search.train([(xt, yt)], [(xv, yv)], nn.DataParallel(theirs), network_params, nn.CrossEntropyLoss(),
                       their_sgd, their_adam, LR, train_arch=True)
    torch.manual_seed(11)
    optimizer.step((xt, yt), (xv, yv), {}, StepRun())
    report.add("after one step: alphas, kept entries", worst((kept_cols(t, relax.alphas[t]),
                                                              getattr(theirs, f"alphas_{t}")) for t in CELL_TYPES))
    ours_state = ours.state_dict()
    report.add("after one step: weights and BN statistics",
               worst((ours_state[mapping[k]], v) for k, v in theirs.state_dict().items() if k in mapping))

    print("the skip-capped genotype (their main()'s loop) from these alphas, for M = 0..4 and uncapped:")
    with torch.no_grad():
        for t in CELL_TYPES:  # skip favoured where it is kept, so that the cap has work to do
            alpha = getattr(theirs, f"alphas_{t}")
            for i in range(14):
                cols = [c for c in range(8) if switches[t][i][c]]
                if 3 in cols:
                    alpha[i, cols.index(3)] += 3.0
            full = torch.zeros(14, 8)
            full[masks[t]] = alpha.flatten()
            relax.alphas[t].copy_(full)
    genotypes = their_capped_genotypes({t: getattr(theirs, f"alphas_{t}").detach() for t in CELL_TYPES}, switches,
                                       train_search)
    differ = 0
    for m in (None, 4, 3, 2, 1, 0):
        ours_g = PdartsDiscretizer(PdartsDiscretizerOptions(max_skip=m)).derive(relax.strengths(), spec)
        theirs_g = genotypes[8 if m is None else m]
        same = all(as_pairs(ours_g, t) == as_pairs(theirs_g, t) for t in CELL_TYPES)
        skips = sum(op == "skip_connect" for op, _ in as_pairs(ours_g, "normal"))
        print(f"  M={m}: {'identical' if same else 'DIFFERENT'} ({skips} skips in the normal cell)")
        differ += not same
    report.add("capped genotypes that differ (of 6)", float(differ))
    return report.verdict()


if __name__ == "__main__":
    sys.exit(main())
