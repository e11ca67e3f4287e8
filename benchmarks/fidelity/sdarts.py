"""nas_sdarts side by side with the authors' SDARTS code (Chen & Hsieh, ICML 2020;
https://github.com/xiangning-chen/SmoothDARTS): the search step of their sota/cnn/train_search.py
(first-order Architect, softmax_arch_parameters, attacker/perturb.py's Random_alpha or Linf_PGD_alpha,
the weight step under the perturbed weights, restore_arch_parameters) against darts_cnn, the softmax
relaxation, `darts_1st` and the `sdarts_rs` or `sdarts_adv` perturbation, in float64 on one thread,
from identical weights, alphas, batches and noise.

    SDARTS_SRC=/path/to/SmoothDARTS python benchmarks/fidelity/sdarts.py

Compared for each perturbation, over 3 search steps at epochs 20, 21, 22 of 50 (eps 0.138, 0.1434,
0.1488): eps; the perturbed mixing weights the weight pass trains under; the weight pass's loss; its
weight gradients (clipped, as the step applies them); every weight, alpha and BN statistic after the
step. The uniform noise (RS, and ADV's random start) is ours, drawn from the run's perturbation stream,
and handed to their `uniform_` in memory, so that both start from the same draw. Their code is
imported, never copied; `.cuda()` is a no-op and the old `Tensor.add_(scalar, tensor)` form their
Linf_SGD uses is mapped to `add_(tensor, alpha=scalar)`, in memory. Their weight step (in
train_search.py's train(), which parses its arguments on import) is written out here. Exits 0 with a
message when SDARTS_SRC is not set. Figures: benchmarks/fidelity/sdarts.md.
"""

from __future__ import annotations

import numbers
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pcdarts import BATCH, CLASSES, CLIP, Report, StepRun, catalog, image_task, rel, setup, source, worst  # noqa: E402
from darts_minus import pair_states  # noqa: E402

C, CELLS, EPOCHS, EPOCH, SIZE = 8, 3, 50, 20, 16  # 16x16: see darts_minus.py
LR, LR_MIN, MOMENTUM, WD, ARCH_LR, ARCH_WD = 0.025, 0.001, 0.9, 3e-4, 3e-4, 1e-3  # their train_search.py defaults
EPS_MAX = 0.3  # their --epsilon_alpha


def old_add_api() -> None:
    """Their Linf_SGD calls ``p.data.add_(-lr, d_p)``, a form torch removed: map it in memory."""
    add_ = torch.Tensor.add_

    def compatible(self: Tensor, *args, **kwargs):
        if len(args) == 2 and isinstance(args[0], numbers.Number):
            return add_(self, args[1], alpha=args[0])
        return add_(self, *args, **kwargs)

    torch.Tensor.add_ = compatible


class InjectedUniform:
    """Their ``uniform_(-eps, eps)`` returns the given draws instead, in order."""

    def __init__(self) -> None:
        self.queue: list[Tensor] = []
        self.original = torch.Tensor.uniform_

    def __enter__(self) -> InjectedUniform:
        def uniform_(tensor: Tensor, low: float = 0.0, high: float = 1.0, **kwargs) -> Tensor:
            draw = self.queue.pop(0)
            assert draw.shape == tensor.shape and low == -high
            return tensor.copy_(draw)

        torch.Tensor.uniform_ = uniform_
        return self

    def __exit__(self, *exc) -> None:
        torch.Tensor.uniform_ = self.original
        assert not self.queue, "a prepared draw was not used"


def main() -> int:
    src = source("SDARTS_SRC", "sota/cnn/model_search.py", "https://github.com/xiangning-chen/SmoothDARTS")
    setup(src)
    old_add_api()
    from attacker import perturb  # theirs
    from optimizers.darts.architect import Architect  # theirs
    from sota.cnn import model_search  # theirs
    from sota.cnn.spaces import spaces_dict  # theirs

    report = Report()
    for kind, attack in (("sdarts_rs", perturb.Random_alpha), ("sdarts_adv", perturb.Linf_PGD_alpha)):
        print(f"{kind}:")
        compare(kind, attack, model_search, Architect, spaces_dict, report)
    return report.verdict()


def compare(kind: str, attack, model_search, Architect, spaces_dict, report: Report) -> None:  # noqa: N803
    from nas_darts import plugin as darts_plugin
    from nas_darts.architect import DartsOptimizer
    from nas_darts.cnn_space import DartsCnnSpace
    from nas_darts.options import DartsCnnOptions, DartsOptions, SoftmaxOptions
    from nas_darts.softmax import SoftmaxRelaxation
    from nas_sdarts.options import AdversarialOptions, SmoothingOptions
    from nas_sdarts.perturbations import Adversarial, Smoothing

    torch.manual_seed(0)
    theirs = model_search.Network(C, CLASSES, CELLS, nn.CrossEntropyLoss(), spaces_dict["s5"])
    space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=C, nodes=4, ops=tuple(spaces_dict["s5"]
                                                                                    ["primitives_normal"][0])),
                          catalog=catalog(("darts", darts_plugin)))
    task, info = image_task()
    ours = space.build_supernet(info)
    spec = space.arch_spec()
    assert "none" not in spec.ops and len(spec.ops) == 7
    relax = SoftmaxRelaxation(SoftmaxOptions(), spec=spec)
    mapping = pair_states(theirs, ours)
    ours.load_state_dict({mapping[k]: v for k, v in theirs.state_dict().items()})
    with torch.no_grad():  # alphas of unit scale: mixing weights far from uniform, so clipping bites
        for cell_type in ("normal", "reduce"):
            theirs_alpha = getattr(theirs, f"alphas_{cell_type}")
            theirs_alpha.copy_(torch.randn(theirs_alpha.shape))
            relax.alphas[cell_type].copy_(theirs_alpha)
    if kind == "sdarts_rs":
        perturbation = Smoothing(SmoothingOptions(0.03, EPS_MAX), spec=spec)
    else:
        perturbation = Adversarial(AdversarialOptions(0.03, EPS_MAX, steps=7, random_start=True), spec=spec)
    options = DartsOptions(w_lr=LR, w_lr_min=LR_MIN, w_momentum=MOMENTUM, w_weight_decay=WD, grad_clip=CLIP,
                           arch_lr=ARCH_LR, arch_betas=(0.5, 0.999), arch_weight_decay=ARCH_WD)
    optimizer = DartsOptimizer(options, supernet=ours, relaxation=relax, task=task, epochs=EPOCHS, second_order=False)
    architect = Architect(theirs, SimpleNamespace(momentum=MOMENTUM, weight_decay=WD, arch_learning_rate=ARCH_LR,
                                                  arch_weight_decay=ARCH_WD, unrolled=False))
    their_sgd = torch.optim.SGD(theirs.parameters(), LR, momentum=MOMENTUM, weight_decay=WD)

    # what our step computes, recorded: the perturbed weights, and the weight gradients as applied
    captured: dict[str, object] = {}
    perturb = perturbation.perturb

    def recording_perturb(mix, loss_of, generator, run):
        captured["mix"] = out = perturb(mix, loss_of, generator, run)
        captured["moved"] = max(float((out[t] - mix[t]).abs().max()) for t in mix)  # 0: the attack was dropped
        return out

    perturbation.perturb = recording_perturb
    sgd_step = optimizer.w_opt.step

    def recording_step(*a, **k):
        captured["grads"] = [p.grad.detach().clone() for p in optimizer.weights]
        return sgd_step(*a, **k)

    optimizer.w_opt.step = recording_step
    gen = torch.Generator().manual_seed(1)
    mirror = torch.Generator().manual_seed(0)  # the same stream as the run's "perturbation" generator

    def batch() -> tuple[Tensor, Tensor]:
        return torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), torch.randint(CLASSES, (BATCH,), generator=gen)

    run = StepRun()
    run.components = {"task": task, "supernet": ours, "relaxation": relax, "perturbation": perturbation}
    run.epochs, run.phase = EPOCHS, "search"
    for step in range(3):
        epoch = EPOCH + step
        run.epoch = epoch
        run.generators.pop("perturbation", None)  # a fresh stream per epoch, as RunContext.generator
        mirror.manual_seed(0)
        their_eps = 0.03 + (EPS_MAX - 0.03) * epoch / EPOCHS  # their train_search.py's schedule
        eps = perturbation.epsilon(run)
        (xt, yt), (xv, yv) = batch(), batch()
        # theirs: the body of train_search.py's train() for one batch
        theirs.train()
        architect.step(xt, yt, xv, yv, LR, their_sgd, unrolled=False)
        their_sgd.zero_grad()
        architect.optimizer.zero_grad()
        theirs.softmax_arch_parameters()
        with InjectedUniform() as draws:
            draws.queue = [Smoothing.noise(p, eps, mirror) for p in theirs.arch_parameters()]
            attack(theirs, xt, yt, their_eps)
        their_sgd.zero_grad()
        architect.optimizer.zero_grad()
        their_mix = [p.detach().clone() for p in theirs.arch_parameters()]
        their_loss = nn.functional.cross_entropy(theirs(xt, updateType="weight"), yt)
        their_loss.backward()
        nn.utils.clip_grad_norm_(theirs.parameters(), CLIP)
        their_grads = {k: p.grad.detach().clone() for k, p in theirs.named_parameters()}
        their_sgd.step()
        theirs.restore_arch_parameters()
        # ours: one search step
        result = optimizer.step((xt, yt), (xv, yv), {}, run)
        label = f"step {step + 1} (epoch {epoch}, eps {eps:.4f})"
        report.add(f"{label}: eps", rel(torch.tensor(eps), torch.tensor(their_eps)))
        ours_mix = captured["mix"]
        print(f"  {label}: the weight pass's mixing weights moved up to {captured['moved']:.4f} from the clean ones")
        report.add(f"{label}: perturbed weights", worst(zip((ours_mix["normal"], ours_mix["reduce"]), their_mix)))
        report.add(f"{label}: weight-pass loss", rel(result.metrics["train"]["loss"], their_loss))
        params = dict(zip(optimizer.names, captured["grads"]))
        report.add(f"{label}: weight gradients (clipped)",
                   worst((params[mapping[k]], g) for k, g in their_grads.items()))
        ours_state = ours.state_dict()
        report.add(f"{label}: weights and BN statistics after",
                   worst((ours_state[mapping[k]], t) for k, t in theirs.state_dict().items()))
        report.add(f"{label}: alphas after", worst(zip((relax.alphas["normal"], relax.alphas["reduce"]),
                                                       theirs.arch_parameters())))


if __name__ == "__main__":
    sys.exit(main())
