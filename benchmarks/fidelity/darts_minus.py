"""nas_darts_minus side by side with the authors' DARTS- code (Chu et al., ICLR 2021;
https://github.com/Meituan-AutoML/DARTS-): their src/search/model_search.Network with --auxiliary_skip
and their first-order Architect against darts_cnn with `space.edge: darts_minus`, the softmax
relaxation and `darts_1st`, in float64 on one thread, from identical weights, alphas and batches.

    DARTS_MINUS_SRC=/path/to/DARTS- python benchmarks/fidelity/darts_minus.py

Compared, at search epoch 20 of 50 (beta = 0.6 in both: their DecayScheduler, --decay linear
--skip_beta 1, against the edge's start_epoch): every mixed edge's output (weighted sum plus beta times
the auxiliary skip, FactorizedReduce on the reduction cell's stride-2 edges), the loss and its alpha
gradients; then 3 full search steps at epochs 20, 21, 22 (beta 0.6, 0.58, 0.56; architecture step on a
validation batch, weight step with momentum, weight decay and clipping on a training batch): every
weight, alpha and BN statistic after each; then the genotype each derives. Their code is imported,
never copied: their args module parses sys.argv on import, so the script sets it (their flags, and
--save into a temporary folder, where their code writes its config.yaml); `.cuda()` is made a no-op in
memory. Exits 0 with a message when DARTS_MINUS_SRC is not set. Figures: benchmarks/fidelity/darts_minus.md.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pcdarts import (BATCH, CLASSES, CLIP, Report, StepRun, catalog, image_task, rel, same_genotype,  # noqa: E402
                     setup, skeleton, source, their_weight_step, worst)

C, CELLS, EPOCHS, EPOCH = 8, 3, 50, 20
# 16x16 images: at 8x8 the last (reduction) cell's maps are 2x2, where a 3x3 average pool outputs each
# channel's spatial mean and the BN after it sees a batch mean that is round-off of 0 in both codes
SIZE = 16
LR, LR_MIN, MOMENTUM, WD, ARCH_LR, ARCH_WD = 0.025, 0.001, 0.9, 3e-4, 3e-4, 1e-3  # their args.py defaults


def their_modules(src: Path, save: str):
    """Their model_search and Architect, imported with the flags of their run_darts_minus.sh (DARTS
    space s5, auxiliary skip, beta 1 decaying linearly over 50 epochs) on the CPU."""
    sys.argv = ["train_search.py", "--space", "s5", "--auxiliary_skip", "--skip_beta", "1", "--decay", "linear",
                "--decay_max_epoch", str(EPOCHS), "--epochs", str(EPOCHS), "--disable_cuda", "--save", save]
    setup(src)
    from src.search import args as their_args  # noqa: F401 (parses sys.argv)
    from src.search import model_search
    from src.search.architect import Architect
    from src.spaces import spaces_dict

    return model_search, Architect, spaces_dict


def pair_states(theirs: nn.Module, ours: nn.Module) -> dict[str, str]:
    """Their state-dict keys -> ours, in registration order (ours has one more tensor per edge, its
    beta buffer, which their code keeps in a global scheduler), each pair checked by shape and
    cell/edge/kind."""
    a = theirs.state_dict()
    b = {k: v for k, v in ours.state_dict().items() if not k.endswith(".beta")}
    assert len(a) == len(b), f"{len(a)} tensors in theirs, {len(b)} in ours"
    mapping = {}
    for (ka, ta), (kb, tb) in zip(a.items(), b.items()):
        assert ta.shape == tb.shape, f"{ka} {tuple(ta.shape)} vs {kb} {tuple(tb.shape)}"
        assert skeleton(ka) == skeleton(kb), (ka, kb)
        assert ("auxiliary_op" in ka) == (".aux." in kb), (ka, kb)
        mapping[ka] = kb
    return mapping


def main() -> int:
    src = source("DARTS_MINUS_SRC", "src/search/model_search.py", "https://github.com/Meituan-AutoML/DARTS-")
    with tempfile.TemporaryDirectory() as save:
        model_search, Architect, spaces_dict = their_modules(src, save)  # noqa: N806 (their class)
        return compare(model_search, Architect, spaces_dict)


def compare(model_search, Architect, spaces_dict) -> int:  # noqa: N803 (their class)
    from nas_core import Component
    from nas_darts import plugin as darts_plugin
    from nas_darts.architect import DartsOptimizer
    from nas_darts.cnn_space import DartsCnnSpace
    from nas_darts.options import DartsCnnOptions, DartsOptions, SoftmaxOptions
    from nas_darts.softmax import SoftmaxRelaxation
    from nas_darts_minus import plugin as minus_plugin
    from nas_darts_minus.options import DartsMinusEdgeOptions

    args, scheduler = model_search.args, model_search.beta_decay_scheduler
    torch.manual_seed(0)
    theirs = model_search.Network(C, CLASSES, CELLS, nn.CrossEntropyLoss(), spaces_dict["s5"], args=args)
    space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=C, nodes=4,
                                          edge=Component("darts_minus", DartsMinusEdgeOptions(1.0, "linear"))),
                          catalog=catalog(("darts", darts_plugin), ("darts_minus", minus_plugin)))
    task, info = image_task()
    ours = space.build_supernet(info)
    spec = space.arch_spec()
    assert list(spec.ops) == spaces_dict["s5"]["primitives_normal"][0], spec.ops
    relax = SoftmaxRelaxation(SoftmaxOptions(), spec=spec)
    mapping = pair_states(theirs, ours)
    state = theirs.state_dict()
    missing, unexpected = ours.load_state_dict({mapping[k]: v for k, v in state.items()}, strict=False)
    assert not unexpected and all(k.endswith(".beta") for k in missing)
    print(f"name map: {len(mapping)} tensors, e.g. " + "; ".join(
        f"{k} -> {mapping[k]}" for k in [k for k in mapping if "auxiliary_op" in k][:2]))
    with torch.no_grad():  # alphas of unit scale, so that edges and ops rank clearly apart
        for cell_type in ("normal", "reduce"):
            theirs_alpha = getattr(theirs, f"alphas_{cell_type}")
            theirs_alpha.copy_(torch.randn(theirs_alpha.shape))
            relax.alphas[cell_type].copy_(theirs_alpha)
    report = Report()
    gen = torch.Generator().manual_seed(1)

    def batch() -> tuple[Tensor, Tensor]:
        return torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), torch.randint(CLASSES, (BATCH,), generator=gen)

    def start_epoch(epoch: int) -> float:
        scheduler.step(epoch)  # theirs: a global, stepped by train_search.py as each epoch begins
        ours.nas_epoch_start(SimpleNamespace(phase="search", epoch=epoch, epochs=EPOCHS))  # the engine's hook
        betas = {float(e.beta) for cell in ours.cells for e in cell.edges}
        assert len(betas) == 1
        return betas.pop()

    beta = start_epoch(EPOCH)
    report.add(f"beta at epoch {EPOCH} of {EPOCHS} (theirs {scheduler.decay_rate})",
               rel(torch.tensor(beta), torch.tensor(scheduler.decay_rate)))
    print("mixed edges (every edge of a normal and a reduction cell, auxiliary skip included):")
    mix = relax.weights()
    for cell_index, cell_type in ((0, "normal"), (1, "reduce")):
        alpha = nn.functional.softmax(getattr(theirs, f"alphas_{cell_type}"), dim=-1)
        diffs, aux = [], []
        for e in range(len(spec.edges[cell_type])):
            x = torch.randn(BATCH, C if cell_type == "normal" else 2 * C, SIZE, SIZE, generator=gen)
            edge = ours.cells[cell_index].edges[e]
            aux.append(type(edge.aux).__name__)
            diffs.append(rel(edge(x, mix[cell_type][e]), theirs.cells[cell_index]._ops[e](x, alpha[e])))
        report.add(f"{cell_type} cell: 14 edge outputs ({', '.join(sorted(set(aux)))} auxiliaries)", max(diffs))

    print("loss and architecture gradients on one validation batch:")
    x, y = batch()
    their_loss = theirs._loss(x, y)
    their_grads = torch.autograd.grad(their_loss, theirs.arch_parameters())
    ours_out = task.forward(lambda inp: ours(inp, arch_weights=relax.weights()), (x, y), None)
    our_params = [relax.alphas["normal"], relax.alphas["reduce"]]
    our_grads = torch.autograd.grad(ours_out.loss, our_params)
    report.add("loss", rel(ours_out.loss, their_loss))
    for label, a, b in zip(("d alpha normal", "d alpha reduce"), our_grads, their_grads):
        report.add(label, rel(a, b))

    print("3 search steps at epochs 20, 21, 22 (first order, arch step then weight step):")
    architect = Architect(theirs, SimpleNamespace(momentum=MOMENTUM, weight_decay=WD, arch_learning_rate=ARCH_LR,
                                                  arch_weight_decay=ARCH_WD))
    their_sgd = torch.optim.SGD(theirs.parameters(), LR, momentum=MOMENTUM, weight_decay=WD)
    options = DartsOptions(w_lr=LR, w_lr_min=LR_MIN, w_momentum=MOMENTUM, w_weight_decay=WD, grad_clip=CLIP,
                           arch_lr=ARCH_LR, arch_betas=(0.5, 0.999), arch_weight_decay=ARCH_WD)
    optimizer = DartsOptimizer(options, supernet=ours, relaxation=relax, task=task, epochs=EPOCHS, second_order=False)
    run = StepRun()
    for step in range(3):
        beta = start_epoch(EPOCH + step)
        (xt, yt), (xv, yv) = batch(), batch()
        architect.step(xt, yt, xv, yv, LR, their_sgd, unrolled=False)
        their_weight_step(theirs, their_sgd, xt, yt)
        optimizer.step((xt, yt), (xv, yv), {}, run)
        ours_state = ours.state_dict()
        report.add(f"step {step + 1} (beta {beta:.2f}): weights and BN statistics",
                   worst((ours_state[mapping[k]], t) for k, t in theirs.state_dict().items()))
        report.add(f"step {step + 1} (beta {beta:.2f}): alphas", worst(zip(our_params, theirs.arch_parameters())))

    return report.verdict() if same_genotype(theirs, relax, spec) else 1


if __name__ == "__main__":
    sys.exit(main())
