"""GDAS (plugin nas_gdas): the hard Gumbel-softmax relaxation is one-hot forward with the softmax's
gradient on the same draw, computes only the sampled op, draws reproducibly (redrawing infinite
noise), anneals tau and checkpoints it; its derivation rule; a tiny search and training end to end."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, StepRun, image_task, refused
from nas_core import ArchSpec, DataInfo, Genotype, MixingWeights, cli
from nas_core.checkpoint import load_checkpoint
from nas_darts.architect import DartsOptimizer
from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
from nas_darts.options import DartsOptions
from nas_gdas import gumbel
from nas_gdas.gumbel import GdasRelaxation
from nas_gdas.options import GdasOptions, GdasTopKOptions
from nas_gdas.topk import GdasTopKDiscretizer

INFO = DataInfo((1, 8, 8), 10)


def tiny(init_std: float = 0.5, tau: float = 2.0):
    torch.manual_seed(0)
    space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4))
    net = space.build_supernet(INFO).double()
    relax = GdasRelaxation(GdasOptions(init_std=init_std), spec=space.arch_spec()).double()
    relax.tau.fill_(tau)
    batch = (torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    return space, net, relax, batch


def test_a_gdas_forward_is_one_hot_and_its_alpha_gradient_is_the_softmaxs_on_the_same_draw():
    _, net, relax, (x, y) = tiny()
    draw = relax.sample(torch.Generator().manual_seed(3))
    mix = relax.weights(draw)
    # the softmax of the same draw, recomputed independently
    probs = {t: torch.softmax((torch.log_softmax(a, -1) + draw[t]) / 2.0, -1) for t, a in relax.alphas.items()}
    for t, w in mix.items():
        assert torch.equal(w.detach(), F.one_hot(probs[t].argmax(-1), w.shape[-1]).double())  # exactly one-hot
        assert mix.chosen[t] == tuple(probs[t].argmax(-1).tolist())
    g_hard = torch.autograd.grad(F.cross_entropy(net(x, arch_weights=mix), y), list(relax.alphas.values()))
    # dL/dh at the one-hot point, then pulled back through the softmax alone
    leaves = {t: w.detach().clone().requires_grad_(True) for t, w in mix.items()}
    d_h = torch.autograd.grad(F.cross_entropy(net(x, arch_weights=MixingWeights(leaves, mix.chosen)), y),
                              list(leaves.values()))
    g_soft = torch.autograd.grad(list(probs.values()), list(relax.alphas.values()), grad_outputs=d_h)
    for hard, soft in zip(g_hard, g_soft):
        assert soft.abs().max() > 1e-6
        assert torch.allclose(hard, soft, rtol=1e-12, atol=1e-15)


def test_only_the_sampled_op_of_each_edge_runs():
    _, net, relax, (x, _) = tiny()
    calls = []
    for cell in net.cells:
        for edge in cell.edges:
            for op in edge.ops:  # a conv op's body: the cell may hand it the shared relu(x) directly
                getattr(op, "body", op).register_forward_hook(lambda module, args, out: calls.append(module))
    mix = relax.weights(relax.sample(torch.Generator().manual_seed(0)))
    net(x, arch_weights=mix)
    zero = 0  # the column of 'none' among the DARTS ops: not computed
    sampled = sum(c != zero for cell in net.cells for c in mix.chosen["reduce" if cell.reduction else "normal"])
    assert len(calls) == sampled and sampled > 0


def test_draws_come_from_the_generator_and_infinite_noise_is_drawn_again(monkeypatch):
    _, _, relax, _ = tiny()
    a, b = (relax.sample(torch.Generator().manual_seed(5)) for _ in range(2))
    c = relax.sample(torch.Generator().manual_seed(6))
    assert all(torch.equal(a[t], b[t]) and not torch.equal(a[t], c[t]) for t in a)

    real, draws = gumbel._exponential, []

    def first_has_a_zero(shape, dtype, generator):
        e = real(shape, dtype, generator)
        if not draws:
            e[0, 0] = 0.0  # -log(0) = inf: the authors draw again
        draws.append(e)
        return e

    monkeypatch.setattr(gumbel, "_exponential", first_has_a_zero)
    noise = relax.sample(torch.Generator().manual_seed(5))
    assert len(draws) == 3  # normal twice, then reduce
    assert all(torch.isfinite(n).all() for n in noise.values())
    assert torch.equal(noise["normal"], -draws[1].log()) and torch.equal(noise["reduce"], -draws[2].log())


def test_tau_falls_linearly_from_tau_max_to_tau_min_and_is_checkpointed():
    spec = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4)).arch_spec()
    relax = GdasRelaxation(GdasOptions(tau_max=10.0, tau_min=0.1), spec=spec)
    seen = []
    for epoch in range(5):
        run = StepRun(epoch=epoch)
        run.epochs, run.epoch_metrics = 5, {}
        relax.nas_epoch_start(run)
        seen.append(run.epoch_metrics["tau"])
        assert float(relax.tau) == seen[-1]
    assert seen == pytest.approx([10.0, 7.525, 5.05, 2.575, 0.1], abs=1e-12)
    fresh = GdasRelaxation(GdasOptions(), spec=spec)
    fresh.load_state_dict(relax.state_dict())
    assert float(fresh.tau) == pytest.approx(0.1)


@pytest.mark.parametrize("per, draws", [("step", 1), ("pass", 2)])
def test_one_draw_per_step_or_one_per_pass(per, draws):
    _, net, relax, batch = tiny()
    opt = DartsOptimizer(DartsOptions(sample=per, w_nesterov=True), supernet=net, relaxation=relax,
                         task=image_task(INFO), epochs=1, second_order=False)
    calls = []
    sample = relax.sample
    relax.sample = lambda generator: (calls.append(1), sample(generator))[1]
    opt.step(batch, batch, {}, StepRun())
    assert len(calls) == draws


def _spec(ops=("none", "skip_connect", "sep_conv_3x3"), nodes=2) -> ArchSpec:
    edges = tuple((src, 2 + j) for j in range(nodes) for src in range(2 + j))
    return ArchSpec(ops=ops, edges={"normal": edges}, num_inputs=2, inputs_per_node=2)


def test_the_derivation_keeps_the_strongest_pairs_even_from_one_input():
    spec = _spec()
    s = torch.tensor([
        # node 2: both best pairs come from input 0; 'none' is strongest but never chosen
        [0.50, 0.30, 0.20],  # 0 -> 2
        [0.60, 0.15, 0.25],  # 1 -> 2
        # node 3: ties keep the lower input, then the lower column
        [0.00, 0.40, 0.10],  # 0 -> 3
        [0.00, 0.10, 0.40],  # 1 -> 3
        [0.00, 0.40, 0.40],  # 2 -> 3
    ])
    genotype = GdasTopKDiscretizer(GdasTopKOptions()).derive({"normal": s}, spec)
    cell = genotype.cells["normal"]
    assert cell.nodes == ((("skip_connect", 0), ("sep_conv_3x3", 1)),
                          (("skip_connect", 0), ("sep_conv_3x3", 1)))
    s[0] = torch.tensor([0.1, 0.5, 0.4])
    cell = GdasTopKDiscretizer(GdasTopKOptions()).derive({"normal": s}, spec).cells["normal"]
    assert cell.nodes[0] == (("skip_connect", 0), ("sep_conv_3x3", 0))  # two ops on one edge
    assert cell.concat == (2, 3)
    net = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, nodes=2)).build_network(
        Genotype({"normal": cell, "reduce": cell}), INFO)  # which darts_cnn builds and runs
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    k3 = GdasTopKDiscretizer(GdasTopKOptions(k=3)).derive({"normal": s}, spec).cells["normal"]
    assert [len(node) for node in k3.nodes] == [3, 3]


def test_the_presets(registries):
    from nas_core.config import resolve

    demo = resolve(registries, [], preset="gdas_demo")
    assert (demo.relaxation.name, demo.discretizer.name, demo.optimizer.name) == ("gdas", "gdas_topk", "darts_1st")
    assert (demo.optimizer.options.sample, demo.optimizer.options.w_nesterov, demo.search.epochs) == ("pass", True, 30)
    paper = resolve(registries, [], preset="gdas_paper")
    o, r = paper.optimizer.options, paper.relaxation.options
    assert (paper.optimizer.name, o.sample, o.w_nesterov, o.w_momentum, o.grad_clip) == ("darts_1st", "pass", True, 0.9, 5.0)
    assert (o.w_lr, o.w_lr_min, o.w_weight_decay, o.arch_lr, o.arch_betas, o.arch_weight_decay) == (
        0.025, 0.001, 5e-4, 3e-4, (0.5, 0.999), 1e-3)
    assert (r.tau_max, r.tau_min, paper.search.epochs, paper.search.batch_size) == (10.0, 0.1, 250, 256)
    assert (paper.space.options.cells, paper.space.options.channels, len(paper.space.options.ops)) == (6, 16, 8)
    assert (paper.task.options.search_split, paper.task.options.cutout, paper.dataset.name) == (0.5, 0, "cifar10")


def test_a_tiny_gdas_search_then_training_end_to_end(tmp_path):
    run = tmp_path / "search"
    assert cli.main(["run", "--preset", "gdas_demo", *TINY, "--set", "search.epochs=2", "--out", str(run)]) == 0
    log = (run / "log.txt").read_text()
    assert "tau=10 " in log and "tau=0.1 " in log
    state = load_checkpoint(run / "checkpoint.pt")
    assert float(state["relaxation"]["tau"]) == pytest.approx(0.1)
    assert state["optimizer"]["w_opt"]["param_groups"][0]["nesterov"] is True
    genotype = json.loads((run / "genotype.json").read_text())
    for cell in genotype.values():
        assert len(cell["nodes"]) == 4 and all(len(node) == 2 and "none" not in str(node) for node in cell["nodes"])
    assert cli.main(["train", "--preset", "gdas_demo", "--genotype", str(run / "genotype.json"),
                     "--set", "network.cells=3", "--set", "network.channels=8", "--set", "train.epochs=1",
                     "--set", "train.max_steps_per_epoch=2", "--set", "train.batch_size=16", "--no-progress",
                     "--out", str(tmp_path / "train")]) == 0


def test_gdas_over_partial_channel_edges(tmp_path):
    """Composition: the hard sample drives PC-DARTS's edge (plugin nas_pcdarts) as it drives DARTS's."""
    run = tmp_path / "search"
    assert cli.main(["run", "--preset", "gdas_demo", *TINY, "--set", "search.epochs=1", "--set",
                     "space.edge.name=partial_channels", "--set", "space.edge.k=2", "--out", str(run)]) == 0
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["config"]["space"]["edge"]["name"] == "partial_channels"
    grad_norm = float((run / "log.txt").read_text().split("arch_grad_norm=")[1].split()[0])
    assert grad_norm > 0  # alpha learns through the edges' straight-through weights


BAD = [
    (["--set", "relaxation.tau_min=20"], "invalid relaxation option: tau_min (20.0) must not exceed tau_max (10.0)"),
    (["--set", "relaxation.tau_max=0"], "invalid relaxation option: 'tau_max' must be > 0"),
    (["--set", "discretizer.k=0"], "invalid discretizer option: 'k' must be >= 1"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[a[-1] for a, _ in BAD])
def test_bad_gdas_options_are_one_line(tmp_path, capsys, args, message):
    err = refused(capsys, ["run", "--preset", "gdas_demo", *TINY, "--set", "search.epochs=1", *args], tmp_path / "out")
    assert err.startswith(f"nas: error: {message}"), err
