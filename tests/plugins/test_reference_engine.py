"""Our engine and the textbook reference in benchmarks/reference compute the same numbers."""

from __future__ import annotations


import attrs
import pytest
import torch

from benchmarks.reference import textbook
from conftest import image_task
from nas_core import DataInfo
from nas_darts.architect import DartsOptions, DartsOptimizer
from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation


def engines(dtype: torch.dtype, second_order: bool, **space_kw):
    torch.manual_seed(0)
    space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, **space_kw))
    net = space.build_supernet(DataInfo((3, 8, 8), 10)).to(dtype)
    relax = SoftmaxRelaxation(SoftmaxOptions(init_std=0.3), spec=space.arch_spec()).to(dtype)
    ours = DartsOptimizer(DartsOptions(xi=0.1, grad_clip=0.0), supernet=net, relaxation=relax,
                          task=image_task(DataInfo((3, 8, 8), 10)), epochs=1, second_order=second_order)
    ref = textbook.Network(c=4, cells=3).to(dtype)
    ref.alphas = [a.to(dtype).detach().requires_grad_(True) for a in ref.alphas]
    textbook.copy_from(ref, net, {k: v.detach() for k, v in relax.alphas.items()})
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(6, 3, 8, 8, generator=gen, dtype=dtype), torch.randint(0, 10, (6,), generator=gen))
               for _ in range(3)]
    # one identical weight step each, so both hold the same momentum buffers
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    ours.weight_step(batches[2])
    textbook.weight_step(ref, batches[2], ref_opt, grad_clip=1e9)
    return ours, ref, ref_opt, batches[0], batches[1]


def rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    a, b = torch.cat([t.detach().reshape(-1) for t in a]), torch.cat([t.detach().reshape(-1) for t in b])
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_loss_and_weight_gradients(dtype):
    ours, ref, _, train, _ = engines(dtype, second_order=False)
    assert rel(list(ours.net.parameters()), list(ref.parameters())) < 1e-6  # same weights after a step
    loss_ours = ours.task.forward(lambda x: ours.net(x, arch_weights=ours.relax.weights()), train, None).loss
    loss_ref = ref.loss(*train)
    assert abs(loss_ours.item() - loss_ref.item()) / abs(loss_ref.item()) < 1e-5
    g_ours = torch.autograd.grad(loss_ours, [*ours.weights, *ours.alphas])
    g_ref = torch.autograd.grad(loss_ref, [*ref.parameters(), *ref.alphas])
    assert rel(g_ours, g_ref) < 1e-5


@pytest.mark.parametrize("second_order", [False, True])
def test_same_architecture_gradients(second_order):
    dtype = torch.float64  # the finite-difference passes amplify float32 rounding differences
    ours, ref, ref_opt, train, val = engines(dtype, second_order=second_order)
    _, g_ours = ours.arch_gradient(train, val)
    architect = textbook.Architect(ref)
    if second_order:
        architect.backward_unrolled(train, val, 0.1, ref_opt)
        g_ref = [a.grad for a in ref.alphas]
    else:
        g_ref = torch.autograd.grad(ref.loss(*val), ref.alphas)
    assert rel(g_ours, g_ref) < 1e-5


def test_recompute_engine_matches_the_reference_too():
    ours, ref, ref_opt, train, val = engines(torch.float64, second_order=True, recompute_edges=True)
    _, g_ours = ours.arch_gradient(train, val)
    textbook.Architect(ref).backward_unrolled(train, val, 0.1, ref_opt)
    assert rel(g_ours, [a.grad for a in ref.alphas]) < 1e-5


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes (issue 20)
def test_the_exact_hvp_double_backward_passes_through_recomputed_edges():
    """Activation checkpointing recomputes each edge in the first backward; the exact product's second
    backward must still see the whole graph: the same gradient as keeping the activations."""
    grads = []
    for recompute in (False, True):
        ours, _, _, train, val = engines(torch.float64, second_order=True, recompute_edges=recompute)
        ours.opts = attrs.evolve(ours.opts, hvp="exact")
        grads.append(ours.arch_gradient(train, val)[1])
    assert rel(grads[1], grads[0]) < 1e-12
