"""nas_drnas side by side with the authors' DrNAS code (Chen et al., ICLR 2021;
https://github.com/xiangning-chen/DrNAS, DARTS-space/): their model_search.Network, Architect and the
progressive step of their train_search.py (prune to 4 ops per edge, widen K from 6 to 4) against
darts_cnn with `partial_channels` edges, the `dirichlet` relaxation, `darts_1st` with a fresh draw
per pass, and the `drnas` stage hooks; float64, one thread, identical weights, alphas, batches and
Dirichlet draws (their draws come from the global generator seeded with the seeds ours take from the
run's stream).

    DRNAS_SRC=/path/to/DrNAS python benchmarks/fidelity/drnas.py

For each regulariser (l2, kl), compared: the Dirichlet draw, every mixed edge's output under it, the
loss and the alpha gradient under one draw (theirs plus Adam's weight decay for l2, which is how
their code applies it), 3 search steps; then their pruning and widening against our stage hooks
(masks, alphas; the widened tensors are checked for keeping the old channels: DrNAS picks the
copied channels at random, we copy them cyclically), and, from their widened weights, 2 steps of
the second stage (K=4, pruned ops masked and skipped), each side with fresh optimizers.

Two second-stage differences are explained, not bugs, and the script separates them out:
- A pruned op's weights never enter a forward again. Their SGD skips them (no gradient); ours gives
  every weight a gradient, zero for these, so weight decay (and its momentum) shrinks them: lr * wd
  = 3e-5 relative after one step, 8.7e-5 after two. They are reported apart, as "explained".
- A pruned alpha entry gets a gradient of round-off size (analytically zero: the renormalised kept
  weights do not depend on it), which differs between the two codes in its last bits; Adam turns it
  into a step of about lr * g / eps ~ 1e-12. That is harmless in itself, but torch's gamma sampler
  draws one extra uniform for a concentration below 1 (elu(alpha) + 1 < 1 for alpha < 0), so whether
  the entry lands at -1e-12 or +1e-12 shifts every later draw of the Dirichlet sample. In the second
  stage our pruned entries therefore take their values after each architecture step (kept entries
  untouched): without it, the draws part after the first step, as two runs of DrNAS itself would
  on two machines.

Exits 0 with a message when DRNAS_SRC is not set. The figures are in benchmarks/fidelity/drnas.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pcdarts import (BATCH, CLASSES, CLIP, SIZE, Report, StepRun, catalog, copy_state, image_task,  # noqa: E402
                     name_map, rel, setup, source, their_weight_step, worst)

C, CELLS = 12, 3  # 12 and 24 channels: K=6 and K=4 both divide them, and the halves stay even
LR, MOMENTUM, WD, ARCH_LR, REG_SCALE = 0.1, 0.9, 3e-4, 6e-4, 1e-3  # their train_search.py defaults
CELL_TYPES = ("normal", "reduce")


def pruned_op(key: str, masks: dict[str, Tensor]) -> bool:
    """Whether their state-dict ``key`` belongs to an op pruned from its edge."""
    found = re.match(r"cells\.(\d+)\._ops\.(\d+)\._ops\.(\d+)\.", key)
    if not found:
        return False
    cell, edge, op = map(int, found.groups())
    reduction = cell in (CELLS // 3, 2 * CELLS // 3)
    return not bool(masks["reduce" if reduction else "normal"][edge, op])


def main() -> int:
    src = source("DRNAS_SRC", "DARTS-space/model_search.py", "https://github.com/xiangning-chen/DrNAS")
    setup(src / "DARTS-space", src)
    import model_search  # theirs
    from architect import Architect  # theirs

    report = Report()
    for reg in ("l2", "kl"):
        print(f"regulariser {reg}:")
        if compare(model_search, Architect, reg, report):
            return 1
    return report.verdict()


def compare(model_search, Architect, reg: str, report: Report) -> bool:  # noqa: N803 (their class)
    """Adds this regulariser's figures to ``report``; True if the genotypes differ."""
    from nas_core import Component
    from nas_darts import plugin as darts_plugin
    from nas_darts.architect import DartsOptimizer
    from nas_darts.cnn_space import DartsCnnSpace
    from nas_darts.options import DartsCnnOptions, DartsOptions, TopKOptions
    from nas_darts.topk import TopKDiscretizer
    from nas_drnas import progressive
    from nas_drnas.dirichlet import DirichletRelaxation
    from nas_drnas.options import DirichletOptions, DrnasSettings
    from nas_pcdarts import plugin as pcdarts_plugin
    from nas_pcdarts.options import PartialChannelOptions

    cat = catalog(("darts", darts_plugin), ("pcdarts", pcdarts_plugin))
    task, info = image_task()
    ops = tuple(model_search.PRIMITIVES)

    def our_stage(k: int, kept=None):
        edge = Component("partial_channels", PartialChannelOptions(k=k, skip_zero_weights=True))
        space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=C, nodes=4, ops=ops, edge=edge), catalog=cat)
        relax = DirichletRelaxation(DirichletOptions(regularizer=reg, reg_scale=REG_SCALE, kept=kept),
                                    spec=space.arch_spec())
        options = DartsOptions(w_lr=LR, w_lr_min=0.0, w_momentum=MOMENTUM, w_weight_decay=WD, grad_clip=CLIP,
                               arch_lr=ARCH_LR, arch_betas=(0.5, 0.999), arch_weight_decay=0.0, sample="pass")
        net = space.build_supernet(info)
        return space, net, relax, DartsOptimizer(options, supernet=net, relaxation=relax, task=task, epochs=50,
                                                 second_order=False)

    torch.manual_seed(0)
    theirs = model_search.Network(C, CLASSES, CELLS, nn.CrossEntropyLoss(), k=6, reg_type=reg, reg_scale=REG_SCALE)
    space, ours, relax, optimizer = our_stage(6)
    mapping = name_map(theirs, ours)
    copy_state(theirs, ours, mapping)
    with torch.no_grad():  # alphas of unit scale: concentrations far apart, a clear pruning
        for t in CELL_TYPES:
            getattr(theirs, f"alphas_{t}").copy_(torch.randn(14, len(ops)))
            relax.alphas[t].copy_(getattr(theirs, f"alphas_{t}"))
    gen = torch.Generator().manual_seed(1)

    def batch() -> tuple[Tensor, Tensor]:
        return torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), torch.randint(CLASSES, (BATCH,), generator=gen)

    # mixed edges under one draw
    mix = relax.weights(7)
    torch.manual_seed(7)
    drawn = {t: model_search.process_step_matrix(getattr(theirs, f"alphas_{t}"), "dirichlet", None) for t in CELL_TYPES}
    report.add("Dirichlet draw (same seed)", worst((mix[t], drawn[t]) for t in CELL_TYPES))
    for cell_index, t in ((0, "normal"), (1, "reduce")):
        diffs = []
        for e in range(14):
            x = torch.randn(BATCH, C if t == "normal" else 2 * C, SIZE, SIZE, generator=gen)
            diffs.append(rel(ours.cells[cell_index].edges[e](x, mix[t][e]),
                             theirs.cells[cell_index]._ops[e](x, drawn[t][e])))
        report.add(f"{t} cell: 14 edge outputs", max(diffs))

    # loss and alpha gradient under one draw
    x, y = batch()
    torch.manual_seed(11)
    their_loss = theirs._loss(x, y)  # cross-entropy, plus the KL term for kl
    their_grads = torch.autograd.grad(their_loss, theirs.arch_parameters())
    if reg == "l2":  # their L2 is Adam's weight decay: the gradient Adam sees
        their_grads = [g + REG_SCALE * a for g, a in zip(their_grads, theirs.arch_parameters())]
    our_out = optimizer.forward_pass(optimizer.weights, relax.weights(11), (x, y), None, "arch")
    our_grads = torch.autograd.grad(our_out.loss, [relax.alphas[t] for t in CELL_TYPES])
    our_loss = our_out.loss - our_out.stats.get("l2", 0.0)  # theirs holds no L2 term
    report.add(f"loss (cross-entropy{' + KL' if reg == 'kl' else ''})", rel(our_loss, their_loss))
    report.add("d alpha (normal, reduce)", worst(zip(our_grads, their_grads)))

    # full steps: a fresh draw in each forward; ours take their seeds from the run's stream
    args = SimpleNamespace(momentum=MOMENTUM, weight_decay=WD, arch_learning_rate=ARCH_LR, reg_type=reg,
                           reg_scale=REG_SCALE)

    def steps(count: int, label: str, net: nn.Module, opt: DartsOptimizer, names: dict,
              pruned: dict[str, Tensor] | None = None) -> None:
        """``count`` steps of both, each side from a fresh weight and architecture optimizer. With
        ``pruned`` (the masks), our pruned alpha entries take their values after each architecture
        step (see the module's doc: they differ by round-off, which changes the draws), and the
        pruned ops' weights are reported apart."""
        architect = Architect(theirs, args)
        their_sgd = torch.optim.SGD(theirs.parameters(), LR, momentum=MOMENTUM, weight_decay=WD)
        if pruned is not None:
            arch_step = opt.a_opt.step

            def synced_step() -> None:
                arch_step()
                with torch.no_grad():
                    for t in CELL_TYPES:
                        alpha = opt.relax.alphas[t]
                        alpha.copy_(torch.where(pruned[t], alpha, getattr(theirs, f"alphas_{t}")))

            opt.a_opt.step = synced_step
        run = StepRun(seed=5)
        seeds = torch.Generator().manual_seed(5)  # the same stream: the seeds ours will draw, in order
        for step in range(count):
            (xt, yt), (xv, yv) = batch(), batch()
            arch_seed, weight_seed = (int(torch.randint(2**62, (), generator=seeds)) for _ in range(2))
            torch.manual_seed(arch_seed)
            architect.step(xt, yt, xv, yv, LR, their_sgd, unrolled=False)
            their_weight_step(theirs, their_sgd, xt, yt, before=lambda: torch.manual_seed(weight_seed))
            opt.step((xt, yt), (xv, yv), {}, run)
            theirs_state, ours_state = theirs.state_dict(), net.state_dict()
            dead = set() if pruned is None else {k for k in theirs_state if pruned_op(k, pruned)}
            report.add(f"{label} step {step + 1}: weights and BN statistics" + (" (kept ops, rest)" if dead else ""),
                       worst((ours_state[names[k]], v) for k, v in theirs_state.items() if k not in dead))
            if dead:
                report.add(f"{label} step {step + 1}: weights of pruned ops (explained)",
                           worst((ours_state[names[k]], theirs_state[k]) for k in dead), explained=True)
            report.add(f"{label} step {step + 1}: alphas" + (" (kept entries)" if pruned else ""),
                       worst((opt.relax.alphas[t] * (pruned[t] if pruned else 1),
                              getattr(theirs, f"alphas_{t}") * (pruned[t] if pruned else 1)) for t in CELL_TYPES))

    steps(3, "stage 1", ours, optimizer, mapping)

    # the progressive step: their prune + wider, our stage hooks
    theirs.pruning(4)
    theirs.wider(4)
    finished = SimpleNamespace(config=SimpleNamespace(relaxation=Component("dirichlet", None),
                                                      settings={"drnas": DrnasSettings(prune_to=(4,))}),
                               relaxation=relax, spec=space.arch_spec(), supernet=ours)
    layer: dict = {}
    progressive.nas_stage_config(stage=1, finished=finished, layer=layer)
    space2, ours2, relax2, optimizer2 = our_stage(4, kept=layer["relaxation"]["kept"])
    run = SimpleNamespace(previous_stage=finished, config=SimpleNamespace(
        relaxation=Component("dirichlet", None), settings={"drnas": DrnasSettings(prune_to=(4,))}),
        spec=space2.arch_spec(), components={"relaxation": relax2, "supernet": ours2}, stage=2)
    progressive.nas_run_start(run)
    their_masks = {"normal": theirs.mask_normal, "reduce": theirs.mask_reduce}
    masks_equal = all(torch.equal(relax2.mask(t), their_masks[t]) for t in CELL_TYPES)
    print(f"  pruning masks (4 of 7 ops per edge): {'identical' if masks_equal else 'DIFFERENT'}")
    report.add("alphas after pruning", worst((relax2.alphas[t], getattr(theirs, f"alphas_{t}")) for t in CELL_TYPES))
    mapping2 = name_map(theirs, ours2)
    state, their_state, old_state = ours2.state_dict(), theirs.state_dict(), ours.state_dict()
    widened = [k for k, v in their_state.items() if v.shape != old_state[mapping[k]].shape]
    kept_old = worst((state[mapping2[k]][tuple(slice(0, n) for n in old_state[mapping[k]].shape)],
                      old_state[mapping[k]]) for k in widened)
    same = worst((state[mapping2[k]], v) for k, v in their_state.items() if k not in widened)
    report.add(f"inherited weights: {len(their_state) - len(widened)} tensors of unchanged shape", same)
    report.add(f"inherited weights: {len(widened)} widened tensors keep the old channels", kept_old)
    # the second stage from identical (their widened) weights, masked draws, pruned ops skipped; both
    # with fresh optimizers (DrNAS carries its momentum and Adam moments over: docs/successors/drnas.md)
    copy_state(theirs, ours2, mapping2)
    steps(2, "stage 2", ours2, optimizer2, mapping2, pruned=their_masks)

    derived = TopKDiscretizer(TopKOptions()).derive(relax2.strengths(), space2.arch_spec())
    genotype = theirs.genotype()
    same_genotype = all([tuple(p) for p in getattr(genotype, t)] ==
                        [p for node in derived.cells[t].nodes for p in node] for t in CELL_TYPES)
    print(f"  genotype after stage 2: {'identical' if same_genotype else 'DIFFERENT'} ({genotype.normal})")
    return not (masks_equal and same_genotype)


if __name__ == "__main__":
    sys.exit(main())
