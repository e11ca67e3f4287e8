"""SDARTS (plugin nas_sdarts): eps at a given epoch; clipping and renormalising rows; both perturbations
touch the weight pass only (the architecture update equals the unperturbed one, first and second order,
while the weight pass trains under the perturbed weights) and stay within eps of the clean weights
before renormalisation; rows sum to 1; SDARTS-ADV's result never has a lower loss than the clean
weights (and is dropped when the attack lowered it), its attack leaves batch norm's statistics and the
supernet's mode alone; the presets, bad input and a tiny search of each end to end. The side-by-side
check against the authors' code is benchmarks/fidelity/sdarts.py."""

from __future__ import annotations

import pytest
import torch

import nas_sdarts.perturbations as perturbations
from conftest import StepRun, TINY, image_task, refused
from nas_core import DataInfo, MixingWeights, Toolkit, cli
from nas_core.config import resolve
from nas_darts.architect import DartsOptimizer
from nas_darts.cnn_space import DartsCnnSpace
from nas_darts.options import DartsCnnOptions, DartsOptions, SoftmaxOptions
from nas_darts.softmax import SoftmaxRelaxation
from nas_sdarts.options import AdversarialOptions, SmoothingOptions
from nas_sdarts.perturbations import Adversarial, Smoothing, clip_rows

INFO = DataInfo((1, 8, 8), 10)
OPS = ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")


class Run(StepRun):
    """A step's run with the search's length (the eps schedule reads it)."""

    def __init__(self, epoch: int = 0, epochs: int = 10, components: dict | None = None):
        super().__init__(epoch=epoch, components=components)
        self.epochs, self.phase = epochs, "search"


def setup(seed: int = 0):
    torch.manual_seed(seed)
    space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, nodes=2, ops=OPS))
    net = space.build_supernet(INFO)
    relax = SoftmaxRelaxation(SoftmaxOptions(init_std=1.0), spec=space.arch_spec())
    return space, net, relax


def batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 1, 8, 8, generator=g), torch.randint(10, (8,), generator=g)


def perturbation(kind: str, spec, **options):
    if kind == "rs":
        return Smoothing(SmoothingOptions(**options), spec=spec)
    return Adversarial(AdversarialOptions(**options), spec=spec)


@pytest.mark.parametrize("epoch, epochs, low, high, expected", [
    (0, 50, 0.03, 0.3, 0.03),  # the first epoch: epsilon_min
    (25, 50, 0.03, 0.3, 0.165),
    (49, 50, 0.03, 0.3, 0.2946),  # the last stays below epsilon_max (the authors' epoch / epochs)
    (3, 10, 0.1, 0.1, 0.1),  # equal bounds: constant
])
def test_epsilon_at_a_given_epoch(epoch, epochs, low, high, expected):
    p = Smoothing(SmoothingOptions(epsilon_min=low, epsilon_max=high), spec=None)
    assert p.epsilon(Run(epoch=epoch, epochs=epochs)) == pytest.approx(expected, abs=1e-15)


def test_after_the_search_epsilon_is_the_maximum():
    """A final phase fine-tuning the supernet (DARTS-PT's selection) counts its own epochs: its
    perturbation stays at epsilon_max, as DARTS-PT's code tunes an SDARTS supernet."""
    p = Smoothing(SmoothingOptions(epsilon_min=0.03, epsilon_max=0.3), spec=None)
    run = Run(epoch=0, epochs=20)
    run.phase = "darts_pt"
    assert p.epsilon(run) == 0.3


def test_clip_rows_clamps_renormalises_and_keeps_an_emptied_row_one_hot():
    w = torch.tensor([[0.5, -0.2, 1.5, 0.0], [-0.1, -0.3, -0.05, -0.2]])
    out = clip_rows(w)
    torch.testing.assert_close(out[0], torch.tensor([0.5, 0.0, 1.0, 0.0]) / 1.5)
    assert out[1].tolist() == [0.0, 0.0, 1.0, 0.0]  # all clipped away: one-hot at the largest entry
    torch.testing.assert_close(out.sum(-1), torch.ones(2))


@pytest.fixture
def spy_clip(monkeypatch):
    """Records every input of clip_rows: the candidates before renormalisation."""
    seen: list[torch.Tensor] = []

    def recording(w):
        seen.append(w.detach().clone())
        return clip_rows(w)

    monkeypatch.setattr(perturbations, "clip_rows", recording)
    return seen


@pytest.mark.parametrize("kind", ["rs", "adv"])
@pytest.mark.parametrize("epoch", [0, 9])
def test_the_perturbation_stays_within_eps_before_renormalisation_and_rows_sum_to_1(spy_clip, kind, epoch):
    space, net, relax = setup()
    p = perturbation(kind, space.arch_spec())
    task = image_task(INFO)
    x, y = batch(1)
    run = Run(epoch=epoch, components={"supernet": net})
    eps = p.epsilon(run)
    with torch.no_grad():
        clean = relax.weights()

    def loss_of(m):
        return task.forward(lambda inp: net(inp, arch_weights=m), (x, y), None).loss

    out = p.perturb(clean, loss_of, torch.Generator().manual_seed(0), run)
    assert len(spy_clip) == (2 if kind == "rs" else 2 * (1 + 7))  # per cell type: the start, then 7 PGD steps
    for i, candidate in enumerate(spy_clip):
        w = clean[("normal", "reduce")[i % 2]]
        assert (candidate - w).abs().max() <= eps + 1e-7  # float32 round-off of (c + d) - c
    moved = 0.0
    for t in clean:
        assert out[t].min() >= 0 and out[t].max() <= 1
        torch.testing.assert_close(out[t].sum(-1), torch.ones(out[t].shape[0]))
        moved = max(moved, float((out[t] - clean[t]).abs().max()))
    assert moved > eps / 10  # it did perturb


@pytest.mark.parametrize("kind", ["rs", "adv"])
@pytest.mark.parametrize("second_order", [False, True], ids=["darts_1st", "darts_2nd"])
def test_the_perturbation_touches_the_weight_pass_only(kind, second_order):
    """One search step with the perturbation and one without, from the same state: the architecture
    update is identical (the architecture passes read the clean weights), the weights differ, and
    the weight pass read exactly what the perturbation returned."""
    results = []
    for perturbed in (False, True):
        space, net, relax = setup()
        task = image_task(INFO)
        opt = DartsOptimizer(DartsOptions(), supernet=net, relaxation=relax, task=task, epochs=10,
                             second_order=second_order)
        p = perturbation(kind, space.arch_spec())
        components = {"supernet": net, "relaxation": relax, "task": task, **({"perturbation": p} if perturbed else {})}
        seen = []
        forward = net.forward

        def recording(*inputs, arch_weights):
            seen.append({t: w.detach().clone() for t, w in arch_weights.items()})
            return forward(*inputs, arch_weights=arch_weights)

        net.forward = recording
        with torch.no_grad():
            clean = {t: w.clone() for t, w in relax.weights().items()}
        opt.step(batch(1), batch(2), {}, Run(epoch=5, components=components))
        with torch.no_grad():  # the weight pass follows the architecture step: it mixes by the new alphas
            after = {t: w.clone() for t, w in relax.weights().items()}
        results.append(([a.detach().clone() for a in relax.parameters()],
                         [w.detach().clone() for w in net.parameters()], seen, clean, after))
    (alphas0, weights0, seen0, clean, after), (alphas1, weights1, seen1, _, _) = results
    assert all(torch.equal(a, b) for a, b in zip(alphas0, alphas1))  # the architecture step: unperturbed
    assert not all(torch.equal(a, b) for a, b in zip(weights0, weights1))  # the weight step: perturbed
    arch_passes = seen1[:-1 - (0 if kind == "rs" else 9)]  # before the perturbation's and the weight pass
    assert len(arch_passes) == (4 if second_order else 1) == len(seen0) - 1
    assert all(torch.equal(m[t], clean[t]) for m in arch_passes for t in clean)  # virtual step, HVP included
    weight_mix = seen1[-1]  # the last forward is the weight pass: the perturbed weights, not the clean ones
    assert all(torch.equal(seen0[-1][t], after[t]) for t in after)
    assert all(not torch.equal(weight_mix[t], after[t]) for t in after)
    if kind == "rs":  # exactly the perturbation's output from the run's perturbation stream
        p = perturbation(kind, space.arch_spec())
        expected = p.perturb(MixingWeights(after), None, torch.Generator().manual_seed(0), Run(epoch=5))
        assert all(torch.equal(weight_mix[t], expected[t]) for t in after)


def test_the_attack_never_lowers_the_loss_and_leaves_batch_norm_alone():
    space, net, relax = setup()
    net.train()
    task = image_task(INFO)
    p = perturbation("adv", space.arch_spec())
    run = Run(epoch=9, components={"supernet": net})
    with torch.no_grad():
        clean = relax.weights()
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    for seed in range(3):
        x, y = batch(seed)
        modes = []

        def loss_of(m):
            modes.append(net.training)
            return task.forward(lambda inp: net(inp, arch_weights=m), (x, y), None).loss

        out = p.perturb(clean, loss_of, torch.Generator().manual_seed(seed), run)
        assert modes == [False] * 9  # the loss before, 7 PGD steps, the loss after: all in eval mode
        net.eval()
        with torch.no_grad():
            assert loss_of(out) >= loss_of(clean)
        net.train()
    assert net.training  # its mode is restored
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items())  # no statistics updated


def test_an_attack_that_lowered_the_loss_is_dropped():
    spec = setup()[0].arch_spec()
    p = perturbation("adv", spec, steps=3)
    calls = []

    def loss_of(m):  # each call lower than the one before: the attack ends below the clean loss
        calls.append(1)
        return sum((w * torch.arange(w.shape[1])).sum() for w in m.values()) * 0 + 10.0 - len(calls)

    clean = MixingWeights({"normal": torch.full((5, 4), 0.25), "reduce": torch.full((5, 4), 0.25)})
    out = p.perturb(clean, loss_of, torch.Generator().manual_seed(0), Run(epoch=5))
    assert len(calls) == 1 + 3 + 1 and all(torch.equal(out[t], clean[t]) for t in clean)


def test_the_presets(registries):
    for kind in ("rs", "adv"):
        demo = resolve(registries, [], preset=f"sdarts_{kind}_demo")
        assert demo.perturbation.name == f"sdarts_{kind}" and demo.optimizer.name == "darts_1st"
        assert demo.dataset.name == "digits" and demo.search.epochs == (10 if kind == "rs" else 3)
        paper = resolve(registries, [], preset=f"sdarts_{kind}_paper")
        o, po = paper.optimizer.options, paper.perturbation.options
        assert (po.epsilon_min, po.epsilon_max) == (0.03, 0.3)
        if kind == "adv":
            assert (po.steps, po.random_start, po.attack_mode) == (7, True, "eval")
        assert "none" not in paper.space.options.ops and len(paper.space.options.ops) == 7  # their s5
        assert paper.optimizer.name == "darts_1st"
        assert (o.w_lr, o.w_lr_min, o.w_momentum, o.w_weight_decay, o.grad_clip) == (0.025, 0.001, 0.9, 3e-4, 5.0)
        assert (o.arch_lr, o.arch_betas, o.arch_weight_decay) == (3e-4, (0.5, 0.999), 1e-3)
        assert (paper.search.epochs, paper.search.batch_size, paper.space.options.cells,
                paper.space.options.channels) == (50, 64, 8, 16)
        assert paper.task.options.cutout == 0 and paper.dataset.name == "cifar10"


BAD = [
    ("sdarts_rs_demo", ["--set", "perturbation.epsilon_min=0.5"],
     "invalid perturbation option: epsilon_min (0.5) must not exceed epsilon_max (0.3)"),
    ("sdarts_rs_demo", ["--set", "perturbation.epsilon_max=-1"], "invalid perturbation option: 'epsilon_max' must be >= 0"),
    ("sdarts_adv_demo", ["--set", "perturbation.steps=0"], "invalid perturbation option: 'steps' must be >= 1: 0"),
    ("sdarts_adv_demo", ["--set", "perturbation.attack_mode=test"],
     "invalid perturbation option: 'attack_mode' must be in ('eval', 'train') (got 'test')"),
]


@pytest.mark.parametrize("preset, args, message", BAD, ids=[a[-1] for _, a, _ in BAD])
def test_bad_input_is_one_line(tmp_path, capsys, preset, args, message):
    err = refused(capsys, ["run", "--preset", preset, *TINY, *args], tmp_path / "out")
    assert err.startswith(f"nas: error: {message}"), err


@pytest.mark.parametrize("kind", ["rs", pytest.param("adv", marks=pytest.mark.slow)])  # the attack: unit tests
def test_a_tiny_search_end_to_end(tmp_path, kind):
    out = tmp_path / "run"
    assert cli.main(["run", "--preset", f"sdarts_{kind}_demo", *TINY, "--set", "search.epochs=2",
                     "--out", str(out)]) == 0
    record = Toolkit.load().load_search(out)
    assert record.complete and record.epochs_done == 2 and record.genotype is not None
    assert record.config.perturbation.name == f"sdarts_{kind}"
    assert "arch_loss" in record.metrics and "train_loss" in record.metrics

