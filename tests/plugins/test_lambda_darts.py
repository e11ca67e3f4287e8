"""Lambda-DARTS (plugin nas_lambda_darts): the alignment's value and its gradient in the per-cell
gradients against autograd of their definitions (cosine and signcorr); darts_cnn's per-cell 3-D mixing
weights (equal slices give the 2-D output, cell i of a type reads slice i, the per-cell gradients sum
to the shared one); one weight step's Lambda against the cosines of per-cell gradients taken by autograd
through per-cell copies made independently, and its regulariser's weight gradient (the central
difference) against the double backward of Lambda's definition in float64, its error falling as eps^2;
lambda's ramp; lambda 0 and ``regularization: none`` are DARTS; second order composes (the
architecture update is DARTS's); the presets, bad input, and a tiny search end to end. The side-by-side
check against the authors' code is benchmarks/fidelity/lambda_darts.py."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, StepRun, image_task, refused
from nas_darts.architect import DartsOptimizer
from nas_darts.cnn_space import DartsCnnSpace
from nas_darts.options import DartsCnnOptions, DartsOptions, SoftmaxOptions
from nas_darts.softmax import SoftmaxRelaxation
from nas_lambda_darts.optimizer import (
    LambdaDartsOptimizer,
    cosine_alignment,
    sign_alignment,
)
from nas_lambda_darts.options import LambdaDartsOptions

from nas_core import DataInfo, MixingWeights, Toolkit, cli
from nas_core.config import resolve

INFO = DataInfo((1, 8, 8), 10)
OPS = ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")
CELLS = 5  # reductions at 1 and 3: normal cells 0, 2, 4 (3 pairs), reduction cells 1, 3 (1 pair)


def setup(seed: int = 0, dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=4, nodes=2, ops=OPS))
    net = space.build_supernet(INFO).to(dtype)
    relax = SoftmaxRelaxation(SoftmaxOptions(init_std=1.0), spec=space.arch_spec()).to(dtype)
    return net, relax


def batch(seed: int, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 1, 8, 8, generator=g).to(dtype), torch.randint(10, (8,), generator=g)


def optimizer(net, relax, epochs: int = 10, **options) -> LambdaDartsOptimizer:
    options = {"grad_clip": 0.0, **options}
    return LambdaDartsOptimizer(LambdaDartsOptions(**options), supernet=net, relaxation=relax,
                                task=image_task(INFO), epochs=epochs)


def per_cell_gradients(net, relax, x, y, create_graph: bool = False) -> tuple[torch.Tensor, dict]:
    """The loss and each cell's gradient in its own copy of the mixing weights, made independently of
    the 3-D path: a pre-hook on every cell hands it a fresh copy (the authors' clone per cell)."""
    mix = relax.weights()
    copies, hooks = [], []

    def hand_a_copy(cell, args):
        copy = mix["reduce" if cell.reduction else "normal"].detach().clone().requires_grad_(True)
        copies.append((cell.reduction, copy))
        return (*args[:2], copy, *args[3:])

    for cell in net.cells:
        hooks.append(cell.register_forward_pre_hook(hand_a_copy))
    try:
        loss = F.cross_entropy(net(x, arch_weights=MixingWeights({t: w.detach() for t, w in mix.items()})), y)
    finally:
        for h in hooks:
            h.remove()
    grads = torch.autograd.grad(loss, [c for _, c in copies], create_graph=create_graph)
    return loss, {t: [g for (red, _), g in zip(copies, grads) if red == (t == "reduce")] for t in ("normal", "reduce")}


def mean_cosine(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([F.cosine_similarity(a.flatten(), b.flatten(), dim=0)
                        for a, b in itertools.combinations(grads, 2)]).mean()


def mean_sign_ratio(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([(a * b).sum() / (a.abs() * b.abs()).sum()
                        for a, b in itertools.combinations(grads, 2)]).mean()


# -- the alignment and its gradient in g ---------------------------------------------------------

@pytest.mark.parametrize("measure, definition", [(cosine_alignment, mean_cosine), (sign_alignment, mean_sign_ratio)],
                         ids=["corr", "signcorr"])
@pytest.mark.parametrize("cells", [2, 3, 6])
def test_the_alignment_and_its_gradient_match_autograd_of_the_definition(measure, definition, cells):
    torch.manual_seed(cells)
    g = torch.randn(cells, 20, dtype=torch.float64, requires_grad=True)
    value, direction = measure(g.detach())
    expected = definition(list(g))
    torch.testing.assert_close(value, expected.detach(), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(direction, torch.autograd.grad(expected, g)[0], rtol=1e-12, atol=1e-15)


def test_aligned_gradients_have_alignment_1_and_no_direction():
    g = torch.randn(1, 10, dtype=torch.float64).repeat(4, 1) * torch.tensor([[1.0], [2.0], [0.5], [3.0]],
                                                                            dtype=torch.float64)
    value, direction = cosine_alignment(g)
    assert value.item() == pytest.approx(1.0, abs=1e-15)
    assert direction.abs().max() < 1e-15


# -- per-cell mixing weights in darts_cnn ---------------------------------------------------------

def test_equal_slices_give_the_shared_weights_output():
    net, relax = setup(dtype=torch.float64)
    x, _ = batch(1, torch.float64)
    with torch.no_grad():
        mix = relax.weights()
        per_cell = MixingWeights({"normal": mix["normal"].expand(3, -1, -1), "reduce": mix["reduce"].expand(2, -1, -1)})
        assert torch.equal(net(x, arch_weights=per_cell), net(x, arch_weights=mix))
        mixed = MixingWeights({"normal": mix["normal"].expand(3, -1, -1), "reduce": mix["reduce"]})  # one type 3-D
        assert torch.equal(net(x, arch_weights=mixed), net(x, arch_weights=mix))


def test_cell_i_of_a_type_reads_slice_i():
    net, _ = setup()
    x, _ = batch(1)
    seen = []
    for cell in net.cells:
        cell.register_forward_pre_hook(lambda cell, args: seen.append((cell.reduction, args[2])))
    weights = {t: torch.rand(n, 5, 4) for t, n in (("normal", 3), ("reduce", 2))}  # nodes 2: 5 edges
    with torch.no_grad():
        net(x, arch_weights=MixingWeights(weights))
    assert [red for red, _ in seen] == [False, True, False, True, False]
    normal = [w for red, w in seen if not red]
    reduce = [w for red, w in seen if red]
    assert all(torch.equal(w, weights["normal"][i]) for i, w in enumerate(normal))
    assert all(torch.equal(w, weights["reduce"][i]) for i, w in enumerate(reduce))


def test_per_cell_weights_of_the_wrong_count_are_refused():
    net, _ = setup()
    x, _ = batch(1)
    with torch.no_grad(), pytest.raises(ValueError, match="per-cell normal weights have 2 slices for 3 normal cells"):
        net(x, arch_weights=MixingWeights({"normal": torch.rand(2, 5, 4), "reduce": torch.rand(5, 4)}))


def test_per_cell_gradients_sum_to_the_shared_gradient_and_differ():
    """The chain rule through the copies: the shared weights' gradient is the sum of the cells'. The
    cells' gradients are not equal (with one shared copy every g_l would be the same and Lambda 1)."""
    net, relax = setup(dtype=torch.float64)
    x, y = batch(1, torch.float64)
    mix = {t: w.detach().requires_grad_(True) for t, w in relax.weights().items()}
    shared = torch.autograd.grad(F.cross_entropy(net(x, arch_weights=MixingWeights(mix)), y), list(mix.values()))
    copies = {t: mix[t].detach().unsqueeze(0).repeat(n, 1, 1).requires_grad_(True) for t, n in (("normal", 3),
                                                                                                  ("reduce", 2))}
    loss = F.cross_entropy(net(x, arch_weights=MixingWeights(copies)), y)
    cells = dict(zip(copies, torch.autograd.grad(loss, list(copies.values()))))
    for (t, g), s in zip(cells.items(), shared):
        torch.testing.assert_close(g.sum(0), s, rtol=1e-12, atol=1e-15)
        assert cosine_alignment(g.flatten(1))[0] < 0.999


# -- the weight step ------------------------------------------------------------------------------

def test_lambda_is_the_mean_cosine_of_the_per_cell_gradients():
    net, relax = setup(dtype=torch.float64)
    x, y = batch(1, torch.float64)
    _, grads = per_cell_gradients(net, relax, x, y)
    opt = optimizer(net, relax, regularization="signcorr", cell_types=("normal", "reduce"))
    out = opt.weight_step((x, y))
    torch.testing.assert_close(out.stats["corr"], mean_cosine(grads["normal"]) + mean_cosine(grads["reduce"]),
                               rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(out.stats["signcorr"],
                               mean_sign_ratio(grads["normal"]) + mean_sign_ratio(grads["reduce"]),
                               rtol=1e-12, atol=1e-15)


def reference_gradient(net, relax, x, y, definition, cell_types) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """grad_w L and grad_w Lambda, by double backward through the per-cell gradients of the definition."""
    weights = list(net.parameters())
    loss, grads = per_cell_gradients(net, relax, x, y, create_graph=True)
    value = sum(definition(grads[t]) for t in cell_types)
    return (list(torch.autograd.grad(loss, weights, retain_graph=True)),
            list(torch.autograd.grad(value, weights)))


@pytest.mark.parametrize("regularization, definition, cell_types", [
    ("corr", mean_cosine, ("normal",)),  # the authors' runs
    ("corr", mean_cosine, ("normal", "reduce")),
    ("signcorr", mean_sign_ratio, ("normal",)),
])
def test_the_regulariser_gradient_matches_the_double_backward_of_its_definition(regularization, definition,
                                                                                 cell_types):
    """The weight gradient the step applies is grad_w (L - lambda * Lambda), Lambda's part by central
    differences. The network is piecewise smooth (ReLU, max pooling): where p +- eps v crosses a kink
    of one activation the difference is off by the jump over 2 eps (at epsilon_0 1e-3 or 1e-4 this
    network's errors are 20 to 70 times the gradient's scale, docs/successors/lambda_darts.md). At
    epsilon_0 = 1e-5 no kink is crossed here: the truncation error is O(eps^2) (~1e-10) and float64
    round-off over 2 eps ~1e-11 times the loss gradient's scale, so 1e-7 of the gradient's scale is
    tight (a wrong sign or factor would be off by 1 or more)."""
    x, y = batch(1, torch.float64)
    net, relax = setup(dtype=torch.float64)
    grad_loss, grad_value = reference_gradient(net, relax, x, y, definition, cell_types)
    opt = optimizer(net, relax, regularization=regularization, cell_types=cell_types, epsilon_0=1e-5,
                    lambda_=0.5, ramp=False)
    applied = []
    sgd_step = opt.w_opt.step
    opt.w_opt.step = lambda: (applied.extend(p.grad.clone() for p in opt.weights), sgd_step())
    opt.weight_step((x, y))
    expected = [g - 0.5 * r for g, r in zip(grad_loss, grad_value)]
    scale = max(float(r.abs().max()) for r in grad_value)  # the regulariser's part, against its own scale
    error = max(float(((a - e) / 0.5).abs().max()) for a, e in zip(applied, expected)) / scale
    assert error < 1e-7


@pytest.mark.parametrize("epoch, epochs, ramp, regularization, expected", [
    (0, 50, True, "corr", 0.0),  # the first epoch: 0
    (25, 50, True, "corr", 0.25 * 25 / 49),
    (49, 50, True, "corr", 0.25),  # the last: lambda_
    (0, 1, True, "corr", 0.0),  # a single epoch stays at 0 (theirs divides by zero)
    (0, 50, False, "corr", 0.25),  # no ramp: constant
    (49, 50, True, "none", 0.0),  # no regulariser
])
def test_lambda_ramps_over_the_epochs(epoch, epochs, ramp, regularization, expected):
    net, relax = setup()
    opt = optimizer(net, relax, epochs=epochs, ramp=ramp, regularization=regularization, lambda_=0.25)
    assert opt.coefficient(epoch) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("options, epoch", [({"regularization": "none"}, 9), ({"lambda_": 0.0}, 9), ({}, 0)],
                         ids=["none", "lambda_0", "first_epoch"])
def test_without_the_regulariser_a_step_is_darts_first_order(options, epoch):
    after = []
    for lambda_darts in (False, True):
        net, relax = setup()
        if lambda_darts:
            opt = optimizer(net, relax, grad_clip=5.0, **options)
        else:
            opt = DartsOptimizer(DartsOptions(), supernet=net, relaxation=relax, task=image_task(INFO), epochs=10,
                                 second_order=False)
        result = opt.step(batch(1), batch(2), {}, StepRun(epoch=epoch))
        after.append([t.detach().clone() for t in (*net.parameters(), *relax.parameters())])
    assert "corr" in result.metrics["train"] and result.metrics["train"]["lambda"] == 0
    assert all(torch.equal(a, b) for a, b in zip(*after))


def test_second_order_composes_the_architecture_update_is_darts():
    alphas, weights = [], []
    for lambda_darts in (False, True):
        net, relax = setup()
        if lambda_darts:
            opt = optimizer(net, relax, second_order=True, ramp=False, lambda_=0.5)
        else:
            opt = DartsOptimizer(DartsOptions(grad_clip=0.0), supernet=net, relaxation=relax, task=image_task(INFO),
                                 epochs=10, second_order=True)
        opt.step(batch(1), batch(2), {}, StepRun(epoch=5))
        alphas.append([a.detach().clone() for a in relax.parameters()])
        weights.append([w.detach().clone() for w in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*alphas))  # the regulariser is in the weight step only
    assert not all(torch.equal(a, b) for a, b in zip(*weights))


# -- configuration and end to end -----------------------------------------------------------------

def test_the_presets(registries):
    demo = resolve(registries, [], preset="lambda_darts_demo")
    o = demo.optimizer.options
    assert demo.optimizer.name == "lambda_darts" and demo.dataset.name == "digits" and demo.search.epochs == 5
    assert demo.space.options.cells == 5 and (o.w_lr, o.arch_lr) == (0.05, 3e-3)
    assert (o.regularization, o.lambda_, o.epsilon_0, o.ramp, o.cell_types) == ("corr", 0.25, 1e-3, True, ("normal",))
    paper = resolve(registries, [], preset="lambda_darts_paper")
    o = paper.optimizer.options
    assert paper.optimizer.name == "lambda_darts" and not o.second_order
    assert (o.regularization, o.lambda_, o.epsilon_0, o.ramp, o.cell_types) == ("corr", 0.25, 1e-3, True, ("normal",))
    assert (o.w_lr, o.w_lr_min, o.w_momentum, o.w_weight_decay, o.grad_clip) == (0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (o.arch_lr, o.arch_betas, o.arch_weight_decay) == (3e-4, (0.5, 0.999), 1e-3)
    assert "none" not in paper.space.options.ops and len(paper.space.options.ops) == 7  # their s5
    assert (paper.search.epochs, paper.search.batch_size, paper.space.options.cells,
            paper.space.options.channels) == (50, 96, 8, 16)
    assert paper.task.options.cutout == 0 and paper.dataset.name == "cifar10"


BAD = [
    (["--set", "optimizer.regularization=cos"],
     "invalid optimizer option: 'regularization' must be in ('corr', 'signcorr', 'none') (got 'cos')"),
    (["--set", "optimizer.lambda_=-1"], "invalid optimizer option: 'lambda_' must be >= 0"),
    (["--set", "optimizer.epsilon_0=0"], "invalid optimizer option: 'epsilon_0' must be > 0"),
    (["--set", "optimizer.cell_types=[]"], "invalid optimizer option: cell_types must name at least one cell type"),
    (["--set", "space.cells=3"],  # one normal cell: nothing to align
     "optimizer 'lambda_darts': cell_types: aligning 'normal' cells needs at least 2 of them; the supernet has 1"),
    (["--set", "space.cells=5", "--set", "optimizer.cell_types=[normal,rnn]"],
     "optimizer 'lambda_darts': cell_types: 'rnn' is not a cell type of this supernet; choose from ['normal', 'reduce']"),
    (["--set", "space.cells=5", "--perturbation", "sdarts_rs"],
     "perturbation 'sdarts_rs': optimizer 'lambda_darts' does not apply perturbations"),
    (["--space", "nb201"],
     "optimizer 'lambda_darts': it needs a supernet that takes per-cell mixing weights"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[a[-1] for a, _ in BAD])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    err = refused(capsys, ["run", "--preset", "lambda_darts_demo", *TINY, *args], tmp_path / "out")
    assert err.startswith("nas: error: ") and message in err, err


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes (issue 20)
def test_a_tiny_search_end_to_end(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", "--preset", "lambda_darts_demo", *TINY, "--set", "space.cells=5",
                     "--set", "search.epochs=2", "--out", str(out)]) == 0
    record = Toolkit.load().load_search(out)
    assert record.complete and record.epochs_done == 2 and record.genotype is not None
    assert record.config.optimizer.name == "lambda_darts"
    assert -1 <= record.metrics["train_corr"] <= 1 and record.metrics["train_lambda"] == 0.25  # the last epoch's

