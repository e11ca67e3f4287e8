"""The DARTS architecture gradient against a hypergradient computed another way."""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from conftest import StepRun, image_task
from nas_core import DataInfo, MixingWeights
from nas_darts.architect import DartsOptions, _aliased, darts_first_order, darts_second_order, tied_parameters
from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation

DATA = DataInfo((1, 8, 8), 10)


def make(second_order: bool, *, xi: float | None, seed: int = 0, dtype=torch.float64, warm_steps: int = 2,
         relaxation=SoftmaxRelaxation, **opt_kw):
    """A tiny supernet whose SGD already holds momentum buffers (so the virtual step must use them)."""
    torch.manual_seed(seed)
    space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, nodes=2))
    net = space.build_supernet(DATA).to(dtype)
    relax = relaxation(SoftmaxOptions(init_std=0.5), spec=space.arch_spec()).to(dtype)
    factory = darts_second_order if second_order else darts_first_order
    opt = factory(DartsOptions(xi=xi, **opt_kw), supernet=net, relaxation=relax, task=image_task(DATA), epochs=1)
    gen = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.randn(8, *DATA.input_shape, generator=gen, dtype=dtype),
                torch.randint(0, 10, (8,), generator=gen)) for _ in range(2 + warm_steps)]
    for b in batches[2:]:
        opt.weight_step(b)
    return opt, batches[0], batches[1]


def exact_hypergradient(opt, train, val, xi: float) -> list[torch.Tensor]:
    """d/d alpha of L_val(w - xi * (grad_w L_train(w, alpha) + wd*w + momentum*buf), alpha),
    by autograd through the virtual step (create_graph), no finite differences."""
    net, relax, crit = opt.net, opt.relax, F.cross_entropy
    weights = opt.weights
    loss_t = crit(net(train[0], arch_weights=relax.weights()), train[1])
    grads = torch.autograd.grad(loss_t, weights, create_graph=True)
    w_virtual = []
    for w, g in zip(weights, grads):
        buf = opt.w_opt.state[w]["momentum_buffer"]
        w_virtual.append(w.detach() - xi * (g + opt.opts.w_weight_decay * w.detach() + opt.opts.w_momentum * buf))
    out = functional_call(net, dict(zip(opt.names, w_virtual)), (val[0],), {"arch_weights": relax.weights()})
    return list(torch.autograd.grad(crit(out, val[1]), opt.alphas))


def first_order_gradient(opt, val) -> list[torch.Tensor]:
    return list(torch.autograd.grad(F.cross_entropy(opt.net(val[0], arch_weights=opt.relax.weights()), val[1]),
                                    opt.alphas))


def flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


# The network is piecewise smooth (ReLU, max-pool): a finite difference must not step across
# kinks to match the exact derivative, so these float64 checks use a small fd_eps. The paper's
# 0.01 is the default for float32 training; test_fd_step_is_normalised_by_the_vector_norm
# covers how eps is derived from it.
FD_EPS = 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_second_order_gradient_matches_autograd_through_the_virtual_step(seed):
    xi = 0.5  # large, so the Hessian term is a visible part of the gradient
    opt, train, val = make(True, xi=xi, seed=seed, fd_eps=FD_EPS)
    _, ours = opt.arch_gradient(train, val)
    exact = exact_hypergradient(opt, train, val, xi)

    def rel_err(a, b) -> float:
        return float((flat(a) - flat(b)).norm() / flat(b).norm())

    assert rel_err(ours, exact) < 1e-3
    # the test has teeth: the gradient at w' without the Hessian term, and the widely copied bug
    # that scales the Hessian term by 2, are both far outside the tolerance
    at_w_prime = list(torch.autograd.grad(
        F.cross_entropy(functional_call(opt.net, dict(zip(opt.names, opt.virtual_step(train, xi))), (val[0],),
                                        {"arch_weights": opt.relax.weights()}), val[1]), opt.alphas))
    doubled = [2 * e - w for e, w in zip(exact, at_w_prime)]  # w'-gradient - 2 * xi * HVP
    assert rel_err(at_w_prime, exact) > 1e-2
    assert rel_err(doubled, exact) > 1e-2
    assert rel_err(ours, at_w_prime) > 10 * rel_err(ours, exact)


def test_hessian_vector_product_matches_autograd():
    opt, train, _ = make(True, xi=0.1, fd_eps=FD_EPS)
    torch.manual_seed(5)
    v = [torch.randn_like(w) for w in opt.weights]
    ours = opt.hessian_vector_product(v, train)
    loss = F.cross_entropy(opt.net(train[0], arch_weights=opt.relax.weights()), train[1])
    g_w = torch.autograd.grad(loss, opt.weights, create_graph=True)
    exact = torch.autograd.grad(sum((g * t).sum() for g, t in zip(g_w, v)), opt.alphas)
    assert (flat(ours) - flat(exact)).norm() / flat(exact).norm() < 1e-6


def test_exact_hvp_equals_the_autograd_hessian_block_times_v():
    """``hvp: exact`` against the alpha-w block of the Hessian of L_train, built row by row by
    torch.autograd.functional.jacobian of grad_alpha L_train as a function of w, then times v."""
    opt, train, _ = make(True, xi=0.1, hvp="exact")
    torch.manual_seed(5)
    v = [torch.randn_like(w) for w in opt.weights]
    shapes = [w.shape for w in opt.weights]
    sizes = [w.numel() for w in opt.weights]

    def grad_alpha(w_flat: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(opt.names, w_flat.split(sizes), shapes)}
        out = functional_call(opt.net, params, (train[0],), {"arch_weights": opt.relax.weights()})
        return flat(torch.autograd.grad(F.cross_entropy(out, train[1]), opt.alphas, create_graph=True))

    block = torch.autograd.functional.jacobian(grad_alpha, flat(opt.weights).detach())  # [alphas, weights]
    assert block.shape == (sum(a.numel() for a in opt.alphas), sum(sizes))
    expected = block @ flat(v)
    ours = flat(opt.hessian_vector_product(v, train))
    assert expected.norm() > 0
    assert (ours - expected).norm() / expected.norm() < 1e-10
    # the finite difference (with a step small enough not to cross a ReLU's kink) is near, not equal
    opt.opts = attrs.evolve(opt.opts, hvp="finite_difference", fd_eps=FD_EPS)
    fd = flat(opt.hessian_vector_product(v, train))
    assert 1e-12 < (fd - expected).norm() / expected.norm() < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_second_order_gradient_with_the_exact_hvp_is_the_hypergradient(seed):
    xi = 0.5
    opt, train, val = make(True, xi=xi, seed=seed, hvp="exact")
    _, ours = opt.arch_gradient(train, val)
    exact = exact_hypergradient(opt, train, val, xi)
    assert (flat(ours) - flat(exact)).norm() / flat(exact).norm() < 1e-10


def test_fd_step_is_normalised_by_the_vector_norm():
    """eps = fd_eps / ||v||: the points w +- eps*v do not depend on the scale of v, so the
    product is linear in that scale (a fixed eps would not be, across kinks)."""
    opt, train, _ = make(True, xi=0.1)  # the default fd_eps = 0.01
    assert opt.opts.fd_eps == 0.01
    torch.manual_seed(5)
    v = [torch.randn_like(w) for w in opt.weights]
    h1 = flat(opt.hessian_vector_product(v, train))
    h8 = flat(opt.hessian_vector_product([8 * t for t in v], train))
    assert torch.allclose(h8, 8 * h1, rtol=1e-9, atol=1e-12)
    assert h1.norm() > 0
    zero = flat(opt.hessian_vector_product([torch.zeros_like(t) for t in v], train))
    assert torch.equal(zero, torch.zeros_like(zero))

def test_xi_zero_equals_first_order_exactly():
    second, train, val = make(True, xi=0.0)
    first, _, _ = make(False, xi=None)
    assert torch.equal(flat(second.weights), flat(first.weights))
    _, g2 = second.arch_gradient(train, val)
    _, g1 = first.arch_gradient(train, val)
    assert torch.equal(flat(g2), flat(g1))


def test_virtual_step_is_the_next_sgd_iterate():
    opt, train, _ = make(True, xi=None, grad_clip=0.0)
    lr = opt.w_opt.param_groups[0]["lr"]
    virtual = opt.virtual_step(train, lr)
    opt.weight_step(train)  # a real SGD step with the same batch and alpha
    assert torch.allclose(flat(virtual), flat(opt.weights), rtol=0, atol=1e-12)


def test_xi_defaults_to_the_current_weight_lr():
    opt, _, _ = make(True, xi=None, w_lr=0.1, w_lr_min=0.0)
    assert opt.xi == 0.1
    opt.end_epoch()  # cosine over 1 epoch: lr goes to w_lr_min
    assert opt.xi == 0.0
    fixed, _, _ = make(True, xi=0.3)
    assert fixed.xi == 0.3
    first, _, _ = make(False, xi=0.3)
    assert first.xi == 0.0


def test_step_updates_alpha_with_adam_and_weights_with_sgd():
    opt, train, val = make(True, xi=None)
    alphas = [a.detach().clone() for a in opt.alphas]
    weights = [w.detach().clone() for w in opt.weights]
    result = opt.step(train, val, {}, StepRun())
    assert set(result.metrics["train"]) >= {"loss", "top1_error"} and "loss" in result.metrics["arch"]
    assert set(result.state) == {"weights", "arch"}
    assert not torch.equal(flat(alphas), flat(opt.alphas))
    assert not torch.equal(flat(weights), flat(opt.weights))
    assert all(a.grad is None for a in opt.alphas)  # the weight step leaves alpha alone
    assert opt.a_opt.param_groups[0]["betas"] == (0.5, 0.999)
    assert opt.w_opt.param_groups[0]["momentum"] == 0.9


def test_weight_gradient_is_clipped():
    opt, train, _ = make(False, xi=None, grad_clip=1e-3, w_momentum=0.0, w_weight_decay=0.0, w_lr=1.0)
    before = [w.detach().clone() for w in opt.weights]
    opt.weight_step(train)
    step = flat(before) - flat(opt.weights).detach()  # = lr * clipped gradient
    assert float(step.norm()) == pytest.approx(1e-3, rel=1e-4)


class SpyTask:
    """Records the batch and weights of every forward the optimizer runs through the task."""

    def __init__(self, task, opt):
        self.task, self.opt, self.calls = task, opt, []

    def forward(self, model, batch, state):
        self.calls.append((batch, [w.detach().clone() for w in self.opt.weights[:1]]))
        return self.task.forward(model, batch, state)


@pytest.mark.parametrize("second_order, expected", [
    (False, ["val", "train"]),
    # virtual step, L_val at w', L_train at w+ and w-, then the weight step
    (True, ["train", "val", "train", "train", "train"]),
])
def test_arch_step_comes_first_on_the_same_batches(second_order, expected):
    opt, train, val = make(second_order, xi=0.1)
    spy = opt.task = SpyTask(opt.task, opt)
    before = opt.weights[0].detach().clone()
    opt.step(train, val, {}, StepRun())
    assert [("train" if b is train else "val" if b is val else "?") for b, _ in spy.calls] == expected
    # every pass but the weight step's ran at the weights of before the step
    assert all(torch.equal(w[0], before) for _, w in spy.calls)
    assert not torch.equal(opt.weights[0].detach(), before)


class CountingSampler(SoftmaxRelaxation):
    """A stochastic relaxation: each sample is a fresh random temperature; records its use."""

    def __init__(self, options, *, spec):
        super().__init__(options, spec=spec)
        self.drawn, self.used = [], []

    def sample(self, generator):
        draw = float(torch.rand((), generator=generator)) + 0.5
        self.drawn.append(draw)
        return draw

    def weights(self, sample=None):
        self.used.append(sample)
        t = 1.0 if sample is None else sample
        return MixingWeights({k: torch.softmax(a / t, dim=-1) for k, a in self.alphas.items()})


@pytest.mark.parametrize("second_order", [False, True])
def test_one_relaxation_sample_per_step_shared_by_every_pass(second_order):
    opt, train, val = make(second_order, xi=0.1, relaxation=CountingSampler)
    relax = opt.relax
    relax.drawn.clear(), relax.used.clear()
    run = StepRun(seed=3)
    opt.step(train, val, {}, run)
    opt.step(train, val, {}, run)
    first, second = relax.drawn
    assert first != second  # a new draw each step, from the run's generator
    per_step = len(relax.used) // 2
    assert per_step == (5 if second_order else 2)
    assert relax.used == [first] * per_step + [second] * per_step


def test_defaults_of_the_public_rnn_code_options_leave_the_cnn_search_as_it_was():
    """The options that reproduce the public RNN code (tests/plugins/test_rnn_architect_fidelity.py)
    are inert on the CNN space by default: image batches carry no lr_scale and no CNN weight is
    tied, so the gradient and step stay the autograd-checked ones above, bit for bit."""
    defaults = DartsOptions()
    assert not defaults.clip_hessian_vector and defaults.step_tied_weights and defaults.scale_lr_by_window
    results = []
    for kw in ({}, dict(scale_lr_by_window=False), dict(step_tied_weights=False)):
        opt, train, val = make(True, xi=None, **kw)
        assert tied_parameters(opt.net) == set() and opt.lr_scale(train) == 1.0
        _, grads = opt.arch_gradient(train, val)
        opt.step(train, val, {}, StepRun())
        results.append((flat(grads), flat(opt.weights).detach(), flat(opt.alphas).detach()))
    assert all(torch.equal(a, b) for other in results[1:] for a, b in zip(results[0], other))


def test_functional_call_reties_tensors_only_where_one_has_two_names():
    """``functional_call`` re-ties tensors registered under several names by walking every module on
    every call: the architect asks for it only where the network has such a tensor."""
    opt, _, _ = make(True, xi=None)
    assert not opt.aliased and not _aliased(opt.net)
    shared = torch.nn.Linear(2, 2)
    assert _aliased(torch.nn.ModuleDict({"encoder": shared, "decoder": shared}))
    net = torch.nn.Module()
    net.a, net.b = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    assert not _aliased(net)
    net.b.register_buffer("running_mean", net.a.running_mean)
    assert _aliased(net)
