"""SNAS (plugin nas_snas): the relaxed sample is soft and its alpha gradient is the reparameterised
one on the same draw; tau follows the authors' schedule and checkpoints; the single-level step moves
weights and alpha by one loss's gradients (against autograd); the derivation keeps every edge with
its argmax op; a tiny search and training end to end; bad options are one line."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, StepRun, image_task, refused
from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
from nas_snas.argmax import SnasArgmaxDiscretizer
from nas_snas.optimizer import SnasOptimizer
from nas_snas.options import SnasArgmaxOptions, SnasOptimizerOptions, SnasOptions
from nas_snas.relaxation import SnasRelaxation, temperature

from nas_core import ArchSpec, DataInfo, Genotype, cli
from nas_core.checkpoint import load_checkpoint

INFO = DataInfo((1, 8, 8), 10)


def tiny(tau: float = 0.5, **relax_options):
    torch.manual_seed(0)
    space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4))
    net = space.build_supernet(INFO).double()
    relax = SnasRelaxation(SnasOptions(**relax_options), spec=space.arch_spec()).double()
    relax.tau.fill_(tau)
    batch = (torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    return space, net, relax, batch


def test_alpha_is_initialised_around_init_mean():
    _, _, relax, _ = tiny(init_mean=1.0, init_std=0.01)
    alphas = torch.cat([a.detach().flatten() for a in relax.alphas.values()])
    assert abs(float(alphas.mean()) - 1.0) < 0.01 and 0.005 < float(alphas.std()) < 0.015


def test_the_sample_is_soft_and_shared_by_the_cells_of_a_type():
    _, net, relax, (x, _) = tiny(tau=0.3)
    draw = relax.sample(torch.Generator().manual_seed(3))
    mix = relax.weights(draw)
    assert mix.chosen is None  # every op of every edge runs
    for t, w in mix.items():
        assert torch.allclose(w.sum(-1), torch.ones(w.shape[0], dtype=w.dtype), rtol=0, atol=1e-12)
        assert bool((w > 0).all()) and float(w.detach().max()) < 1  # soft: no entry exactly 0 or 1
        expected = torch.softmax((relax.alphas[t] + draw[t]) / 0.3, -1)
        assert torch.allclose(w, expected, rtol=1e-14, atol=0)
    seen = []  # the weights each cell receives: one matrix per type, the same object for all its cells
    for cell in net.cells:
        cell.register_forward_pre_hook(lambda module, args, kwargs: seen.append((module.reduction, id(args[2]))),
                                       with_kwargs=True)
    net(x, arch_weights=mix)
    assert len(seen) == 3 and len({i for r, i in seen if not r}) == 1


def test_the_alpha_gradient_is_the_reparameterised_one_on_the_same_draw():
    """d L(softmax((alpha + G) / tau)) / d alpha through the network equals dL/dZ pulled back by the
    softmax's Jacobian at the same G, recomputed independently: (Z * (dL/dZ - <Z, dL/dZ>)) / tau."""
    _, net, relax, (x, y) = tiny(tau=0.7)
    draw = relax.sample(torch.Generator().manual_seed(1))
    mix = relax.weights(draw)
    g_alpha = torch.autograd.grad(F.cross_entropy(net(x, arch_weights=mix), y), list(relax.alphas.values()))
    leaves = {t: w.detach().clone().requires_grad_(True) for t, w in mix.items()}
    from nas_core import MixingWeights

    d_z = torch.autograd.grad(F.cross_entropy(net(x, arch_weights=MixingWeights(leaves)), y), list(leaves.values()))
    for got, (t, z), dz in zip(g_alpha, leaves.items(), d_z):
        z = z.detach()
        expected = z * (dz - (z * dz).sum(-1, keepdim=True)) / 0.7
        assert got.abs().max() > 1e-8
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-16)


def test_draws_come_from_the_generator_and_an_infinite_one_is_drawn_again(monkeypatch):
    _, _, relax, _ = tiny()
    a, b = (relax.sample(torch.Generator().manual_seed(5)) for _ in range(2))
    c = relax.sample(torch.Generator().manual_seed(6))
    assert all(torch.equal(a[t], b[t]) and not torch.equal(a[t], c[t]) for t in a)
    real, draws = torch.rand, []

    def first_has_a_zero(*args, **kwargs):
        u = real(*args, **kwargs)
        if not draws:
            u[0, 0] = 0.0
        draws.append(u)
        return u

    monkeypatch.setattr(torch, "rand", first_has_a_zero)
    noise = relax.sample(torch.Generator().manual_seed(5))
    assert len(draws) == 3 and all(torch.isfinite(n).all() for n in noise.values())
    assert torch.equal(noise["normal"], -(-draws[1].log()).log())


@pytest.mark.parametrize("anneal_epochs, epochs, expected", [
    (None, 5, [0.806, 0.612, 0.418, 0.224, 0.03]),  # over the run: tau_min at the last epoch
    (150, 3, [1 - 0.97 / 150, 1 - 2 * 0.97 / 150, 1 - 3 * 0.97 / 150]),  # the authors' hard-coded 150
    (2, 4, [0.515, 0.03, 0.03, 0.03]),  # held at tau_min after the horizon
])
def test_tau_follows_the_authors_schedule_and_is_checkpointed(anneal_epochs, epochs, expected):
    spec = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4)).arch_spec()
    options = SnasOptions(anneal_epochs=anneal_epochs)
    relax = SnasRelaxation(options, spec=spec)
    seen = []
    for epoch in range(epochs):
        run = StepRun(epoch=epoch)
        run.epochs, run.epoch_metrics = epochs, {}
        relax.nas_epoch_start(run)
        seen.append(run.epoch_metrics["tau"])
        assert float(relax.tau) == seen[-1] == temperature(options, epoch, epochs)
    assert seen == pytest.approx(expected, abs=1e-12)
    fresh = SnasRelaxation(options, spec=spec)
    fresh.load_state_dict(relax.state_dict())
    assert float(fresh.tau) == pytest.approx(expected[-1])


@pytest.mark.parametrize("arch_optimizer", ["sgd", "adam"])
def test_the_single_level_step_moves_weights_and_alpha_by_one_losss_gradients(arch_optimizer):
    _, net, relax, batch = tiny(tau=0.5)
    opts = SnasOptimizerOptions(arch_optimizer=arch_optimizer, arch_lr=0.1, read_arch_stream=False,
                                grad_clip=1e9, arch_grad_clip=1e9, w_momentum=0.0, w_weight_decay=0.0)
    opt = SnasOptimizer(opts, supernet=net, relaxation=relax, task=image_task(INFO), epochs=1)
    w0 = [p.detach().clone() for p in net.parameters()]
    a0 = [a.detach().clone() for a in relax.alphas.values()]
    # the same draw, recomputed: one loss, autograd on both weights and alpha
    draw = relax.sample(StepRun().generator("relaxation"))
    loss = F.cross_entropy(net(batch[0], arch_weights=relax.weights(draw)), batch[1])
    g = torch.autograd.grad(loss, [*net.parameters(), *relax.alphas.values()], allow_unused=True)
    g_w, g_a = g[:len(w0)], g[len(w0):]
    result = opt.step(batch, batch, {}, StepRun())
    assert float(result.metrics["train"]["loss"]) == pytest.approx(float(loss.detach()), rel=1e-12)
    for p, p0, gp in zip(net.parameters(), w0, g_w):
        assert torch.allclose(p, p0 - opts.w_lr * (0 if gp is None else gp), rtol=1e-12, atol=1e-15)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in g_a]))
    assert float(result.metrics["arch"]["grad_norm"]) == pytest.approx(float(norm), rel=1e-12)
    for a, ga0, ga in zip(relax.alphas.values(), a0, g_a):
        step = ga if arch_optimizer == "sgd" else ga / (ga.abs() + 1e-8)  # Adam's first step: lr g / (|g| + eps)
        assert (a - ga0).abs().max() > 0
        assert torch.allclose(a, ga0 - 0.1 * step, rtol=1e-10, atol=1e-12)


def test_both_streams_are_trained_on_and_alpha_gradients_are_clipped_to_10():
    _, net, relax, batch = tiny()
    opts = SnasOptimizerOptions(arch_lr=1.0, arch_grad_clip=1e-3)
    opt = SnasOptimizer(opts, supernet=net, relaxation=relax, task=image_task(INFO), epochs=1)
    a0 = [a.detach().clone() for a in relax.alphas.values()]
    draws = []
    sample = relax.sample
    relax.sample = lambda generator: (draws.append(1), sample(generator))[1]
    result = opt.step(batch, batch, {}, StepRun())
    assert len(draws) == 2 and "loss" in result.metrics["arch"]  # two single-level updates, a draw each
    moved = torch.linalg.vector_norm(torch.cat([(a - b).flatten() for a, b in zip(relax.alphas.values(), a0)]))
    assert float(moved) <= 2 * 1e-3 + 1e-9  # two SGD steps of lr 1 on a gradient clipped to norm 1e-3
    assert SnasOptimizerOptions().arch_grad_clip == 10.0


def _spec(ops=("none", "skip_connect", "sep_conv_3x3"), nodes=2) -> ArchSpec:
    edges = tuple((src, 2 + j) for j in range(nodes) for src in range(2 + j))
    return ArchSpec(ops=ops, edges={"normal": edges}, num_inputs=2, inputs_per_node=2, zero_op="none")


def test_the_derivation_keeps_every_edge_with_its_argmax_op_none_included():
    spec = _spec()
    s = torch.tensor([
        [0.50, 0.30, 0.20],  # 0 -> 2: none is strongest
        [0.10, 0.15, 0.75],  # 1 -> 2
        [0.20, 0.40, 0.40],  # 0 -> 3: a tie, the first op
        [0.10, 0.10, 0.80],  # 1 -> 3
        [0.00, 0.60, 0.40],  # 2 -> 3
    ])
    cell = SnasArgmaxDiscretizer(SnasArgmaxOptions()).derive({"normal": s}, spec).cells["normal"]
    # strongest edge first within a node, as the authors' genotype_edge_all lists them
    assert cell.nodes == ((("sep_conv_3x3", 1), ("none", 0)),
                          (("sep_conv_3x3", 1), ("skip_connect", 2), ("skip_connect", 0)))
    assert cell.concat == (2, 3)
    no_zero = SnasArgmaxDiscretizer(SnasArgmaxOptions(zero=False)).derive({"normal": s}, spec).cells["normal"]
    assert no_zero.nodes[0] == (("sep_conv_3x3", 1), ("skip_connect", 0))
    net = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, nodes=2)).build_network(
        Genotype({"normal": cell, "reduce": cell}), INFO)  # which darts_cnn builds and runs
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_the_presets(registries):
    from nas_core.config import resolve

    demo = resolve(registries, [], preset="snas_demo")
    assert (demo.relaxation.name, demo.optimizer.name, demo.discretizer.name) == ("snas", "snas", "snas_argmax")
    paper = resolve(registries, [], preset="snas_paper")
    o, r = paper.optimizer.options, paper.relaxation.options
    assert (o.w_lr, o.w_lr_min, o.w_momentum, o.w_weight_decay, o.grad_clip) == (0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (o.arch_optimizer, o.arch_lr, o.arch_weight_decay, o.arch_grad_clip, o.read_arch_stream) == (
        "sgd", 3e-4, 0.0, 10.0, True)
    assert (r.tau0, r.tau_min, r.anneal_epochs, r.init_mean, r.init_std) == (1.0, 0.03, 150, 1.0, 0.01)
    assert (paper.search.epochs, paper.search.batch_size, paper.dataset.name) == (150, 64, "cifar10")
    assert (paper.space.options.cells, paper.space.options.channels, len(paper.space.options.ops)) == (8, 16, 8)


def test_a_tiny_snas_search_then_training_end_to_end(tmp_path):
    run = tmp_path / "search"
    assert cli.main(["run", "--preset", "snas_demo", *TINY, "--set", "search.epochs=2", "--out", str(run)]) == 0
    log = (run / "log.txt").read_text()
    assert "tau=0.515 " in log and "tau=0.03 " in log and "arch_loss=" in log
    state = load_checkpoint(run / "checkpoint.pt")
    assert float(state["relaxation"]["tau"]) == pytest.approx(0.03)
    genotype = json.loads((run / "genotype.json").read_text())
    for cell in genotype.values():  # every edge kept: 2 + 3 + 4 + 5
        assert [len(node) for node in cell["nodes"]] == [2, 3, 4, 5] and cell["concat"] == [2, 3, 4, 5]
    assert cli.main(["train", "--preset", "snas_demo", "--genotype", str(run / "genotype.json"),
                     "--set", "network.cells=3", "--set", "network.channels=8", "--set", "train.epochs=1",
                     "--set", "train.max_steps_per_epoch=2", "--set", "train.batch_size=16", "--no-progress",
                     "--out", str(tmp_path / "train")]) == 0


def test_snas_over_partial_channel_edges(tmp_path):
    """Composition: the soft sample drives PC-DARTS's edge (plugin nas_pcdarts) as it drives DARTS's."""
    run = tmp_path / "search"
    assert cli.main(["run", "--preset", "snas_demo", *TINY, "--set", "search.epochs=1", "--set",
                     "space.edge.name=partial_channels", "--set", "space.edge.k=2", "--out", str(run)]) == 0
    grad_norm = float((run / "log.txt").read_text().split("arch_grad_norm=")[1].split()[0])
    assert grad_norm > 0


BAD = [
    (["--set", "relaxation.tau_min=2"], "invalid relaxation option: tau_min (2.0) must not exceed tau0 (1.0)"),
    (["--set", "relaxation.anneal_epochs=0"], "invalid relaxation option: 'anneal_epochs' must be >= 1"),
    (["--set", "optimizer.arch_optimizer=rmsprop"], "invalid optimizer option: 'arch_optimizer' must be in"),
    (["--set", "optimizer.arch_grad_clip=-1"], "invalid optimizer option: 'arch_grad_clip' must be >= 0"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[a[-1] for a, _ in BAD])
def test_bad_snas_options_are_one_line(tmp_path, capsys, args, message):
    err = refused(capsys, ["run", "--preset", "snas_demo", *TINY, "--set", "search.epochs=1", *args], tmp_path / "out")
    assert err.startswith(f"nas: error: {message}"), err
