"""nas_lambda_darts side by side with the authors' Lambda-DARTS code (Movahedi et al., ICLR 2023;
https://github.com/dr-faustus/Lambda-DARTS): the search step of their sota/cnn/train_search.py
(first-order Architect; softmax_arch_parameters; the weight pass with a copy of the mixing weights per
cell; get_corr; get_perturbations; the passes at p - eps v and p + eps v; get_reg_grads; clipping; SGD;
restore_arch_parameters) against darts_cnn, the softmax relaxation and `lambda_darts`, in float64 on
one thread, from identical weights, alphas and batches.

    LAMBDA_DARTS_SRC=/path/to/Lambda-DARTS python benchmarks/fidelity/lambda_darts.py

Compared for `corr` and `signcorr`, over 3 search steps at epochs 20, 21, 22 of 50 (lambda = 0.25 e /
49): Lambda (their get_corr, our train `corr`); the finite difference's perturbation eps * v of every
normal cell; the weight pass's loss; the regulariser's weight gradient (theirs: what get_reg_grads adds,
ours: -lambda times `alignment_gradient`); the weight gradients as the step applies them (clipped);
every weight, BN statistic and alpha after the step. Then one step at epoch 0, where lambda is 0: their
code still runs the two extra passes (and updates batch norm's running statistics twice more), ours
skips them. Their code is imported, never copied; `.cuda()` is a no-op. Their weight step (in
train_search.py's train(), which parses its arguments on import) is written out here. Exits 0 with a
message when LAMBDA_DARTS_SRC is not set. Figures: benchmarks/fidelity/lambda_darts.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pcdarts import BATCH, CLASSES, CLIP, Report, StepRun, catalog, image_task, name_map, rel, setup, source, worst  # noqa: I001

C, CELLS, EPOCHS, SIZE = 8, 5, 50, 16  # 5 cells: normal cells 0, 2, 4 (3 pairs); 16x16: see darts_minus.py
LR, MOMENTUM, WD, ARCH_LR, ARCH_WD = 0.025, 0.9, 3e-4, 3e-4, 1e-3  # their train_search.py defaults
LAMBDA, EPS0 = 0.25, 1e-3  # their run_search.sh


def main() -> int:
    src = source("LAMBDA_DARTS_SRC", "sota/cnn/model_search.py", "https://github.com/dr-faustus/Lambda-DARTS")
    setup(src)
    from sota.cnn import model_search  # theirs
    from sota.cnn.architect import Architect  # theirs
    from sota.cnn.spaces import spaces_dict  # theirs

    report = Report()
    for kind, epochs in (("corr", (20, 21, 22)), ("signcorr", (20, 21, 22)), ("corr", (0,))):
        print(f"{kind}, epochs {list(epochs)}:")
        compare(kind, epochs, model_search, Architect, spaces_dict, report)
    return report.verdict()


def compare(kind: str, epochs: tuple[int, ...], model_search, Architect, spaces_dict, report: Report) -> None:
    from nas_darts import plugin as darts_plugin
    from nas_darts.cnn_space import DartsCnnSpace
    from nas_darts.options import DartsCnnOptions, SoftmaxOptions
    from nas_darts.softmax import SoftmaxRelaxation
    from nas_lambda_darts.optimizer import LambdaDartsOptimizer
    from nas_lambda_darts.options import LambdaDartsOptions

    torch.manual_seed(0)
    theirs = model_search.Network(C, CLASSES, CELLS, nn.CrossEntropyLoss(), spaces_dict["s5"], epsilon_0=EPS0,
                                  lambda_=LAMBDA, corr_type=kind)
    ops = tuple(spaces_dict["s5"]["primitives_normal"][0])
    space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=C, nodes=4, ops=ops),
                          catalog=catalog(("darts", darts_plugin)))
    task, info = image_task()
    ours = space.build_supernet(info)  # fed 16x16 images: the supernet pools adaptively
    relax = SoftmaxRelaxation(SoftmaxOptions(), spec=space.arch_spec())
    mapping = name_map(theirs, ours)
    ours.load_state_dict({mapping[k]: v for k, v in theirs.state_dict().items()})
    with torch.no_grad():  # alphas of unit scale: mixing weights far from uniform, per-cell gradients apart
        for cell_type in ("normal", "reduce"):
            theirs_alpha = getattr(theirs, f"alphas_{cell_type}")
            theirs_alpha.copy_(torch.randn(theirs_alpha.shape))
            relax.alphas[cell_type].copy_(theirs_alpha)
    options = LambdaDartsOptions(w_lr=LR, w_lr_min=0.001, w_momentum=MOMENTUM, w_weight_decay=WD, grad_clip=CLIP,
                                 arch_lr=ARCH_LR, arch_betas=(0.5, 0.999), arch_weight_decay=ARCH_WD,
                                 regularization=kind, lambda_=LAMBDA, epsilon_0=EPS0)
    optimizer = LambdaDartsOptimizer(options, supernet=ours, relaxation=relax, task=task, epochs=EPOCHS)
    architect = Architect(theirs, SimpleNamespace(momentum=MOMENTUM, weight_decay=WD, arch_learning_rate=ARCH_LR,
                                                  arch_weight_decay=ARCH_WD))
    their_sgd = torch.optim.SGD(theirs.parameters(), LR, momentum=MOMENTUM, weight_decay=WD)
    ours_seen, theirs_seen = record_ours(optimizer), record_theirs(theirs)
    gen = torch.Generator().manual_seed(1)

    def batch() -> tuple[Tensor, Tensor]:
        return torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), torch.randint(CLASSES, (BATCH,), generator=gen)

    run = StepRun()
    run.components = {"task": task, "supernet": ours, "relaxation": relax}
    for step, epoch in enumerate(epochs):
        run.epoch = epoch
        (xt, yt), (xv, yv) = batch(), batch()
        # theirs: the body of train_search.py's train() for one batch, at the epoch's lambda
        theirs.lambda_ = LAMBDA * epoch / (EPOCHS - 1)
        theirs.train()
        architect.step(xt, yt, xv, yv, LR, their_sgd, unrolled=False)
        their_sgd.zero_grad()
        architect.optimizer.zero_grad()
        theirs.softmax_arch_parameters()
        their_loss = nn.functional.cross_entropy(theirs(xt, updateType="weight"), yt)
        their_loss.backward()
        their_corr = theirs.get_corr()
        u = theirs.get_perturbations()
        forward_grads = torch.autograd.grad(
            nn.functional.cross_entropy(theirs(xt, pert=u, updateType="weight"), yt), theirs.parameters())
        backward_grads = torch.autograd.grad(
            nn.functional.cross_entropy(theirs(xt, pert=[-u_ for u_ in u], updateType="weight"), yt),
            theirs.parameters())
        theirs.get_reg_grads(forward_grads, backward_grads)
        nn.utils.clip_grad_norm_(theirs.parameters(), CLIP)
        their_grads = {k: p.grad.detach().clone() for k, p in theirs.named_parameters()}
        their_sgd.step()
        theirs.restore_arch_parameters()
        # ours: one search step
        ours_seen["passes"] = 0
        result = optimizer.step((xt, yt), (xv, yv), {}, run)
        label = f"step {step + 1} (epoch {epoch}, lambda {theirs.lambda_:.4f})"
        report.add(f"{label}: Lambda (their get_corr)", rel(result.metrics["train"]["corr"], torch.tensor(their_corr)))
        report.add(f"{label}: weight-pass loss", rel(result.metrics["train"]["loss"], their_loss))
        params = {name: i for i, name in enumerate(optimizer.names)}
        if theirs.lambda_ > 0:
            normal = [p for p, cell in zip(u, theirs.cells) if not cell.reduction]
            eps = optimizer.finite_difference_step(ours_seen["direction"])
            report.add(f"{label}: perturbation eps * v of each normal cell",
                       worst(zip(eps * ours_seen["direction"]["normal"], normal)))
            ours_reg = [-optimizer.strength * r for r in ours_seen["regulariser"]]
            print(f"  {label}: ||lambda grad_w Lambda|| / ||grad_w L|| = {theirs_seen['share']:.3g} (theirs)")
            report.add(f"{label}: the regulariser's weight gradient",
                       worst((ours_reg[params[mapping[k]]], g) for k, g in theirs_seen["regulariser"].items()))
        else:
            print(f"  {label}: our step ran {ours_seen['passes']} regulariser passes, theirs 2")
        report.add(f"{label}: weight gradients (clipped)",
                   worst((ours_seen["applied"][params[mapping[k]]], g) for k, g in their_grads.items()))
        ours_state = ours.state_dict()
        statistic = ("running_mean", "running_var", "num_batches_tracked")
        weights = [(k, t) for k, t in theirs.state_dict().items() if not k.endswith(statistic)]
        stats = [(k, t) for k, t in theirs.state_dict().items() if k.endswith(statistic)]
        report.add(f"{label}: weights after", worst((ours_state[mapping[k]], t) for k, t in weights))
        report.add(f"{label}: BN running statistics after", worst((ours_state[mapping[k]], t) for k, t in stats),
                   explained=epoch == 0)
        report.add(f"{label}: alphas after", worst(zip((relax.alphas["normal"], relax.alphas["reduce"]),
                                                       theirs.arch_parameters())))


def record_ours(optimizer) -> dict:
    """What our step computes, recorded: the alignment's direction, the regulariser's gradient and the
    weight gradients as the SGD step reads them."""
    seen: dict = {}
    alignment_gradient = optimizer.alignment_gradient

    def recording_alignment_gradient(direction, *args, **kwargs):
        seen["direction"] = direction
        seen["regulariser"] = out = alignment_gradient(direction, *args, **kwargs)
        seen["passes"] = 2
        return out

    optimizer.alignment_gradient = recording_alignment_gradient
    sgd_step = optimizer.w_opt.step

    def recording_step(*a, **k):
        seen["applied"] = [p.grad.detach().clone() for p in optimizer.weights]
        return sgd_step(*a, **k)

    optimizer.w_opt.step = recording_step
    return seen


def record_theirs(model) -> dict:
    """What their get_reg_grads adds to each weight's gradient (after minus before)."""
    seen: dict = {}
    get_reg_grads = model.get_reg_grads

    def recording(forward_grads, backward_grads):
        before = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
        get_reg_grads(forward_grads, backward_grads)
        seen["regulariser"] = {k: p.grad.detach() - before[k] for k, p in model.named_parameters()}
        seen["share"] = _norm(seen["regulariser"].values()) / _norm(before.values())

    model.get_reg_grads = recording
    return seen


def _norm(tensors) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors])))


if __name__ == "__main__":
    sys.exit(main())
