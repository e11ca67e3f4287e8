"""FairDARTS (plugin nas_fairdarts): the zero-one loss's value and gradient, alone and in the
architecture step; independent sigmoid weights starting at 0.5; the threshold derivation with its
isolated nodes; a tiny search and training end to end."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from conftest import TINY, image_task, refused
from nas_core import ArchSpec, DataInfo, Genotype, cli
from nas_darts.architect import DartsOptimizer
from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
from nas_darts.options import DartsOptions
from nas_fairdarts.options import SigmoidOptions, ThresholdOptions
from nas_fairdarts.sigmoid import SigmoidRelaxation
from nas_fairdarts.threshold import ThresholdDiscretizer

INFO = DataInfo((1, 8, 8), 10)
OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
SPACE = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, ops=OPS))


def relaxation(**options) -> SigmoidRelaxation:
    relax = SigmoidRelaxation(SigmoidOptions(**options), spec=SPACE.arch_spec()).double()
    with torch.no_grad():
        for a in relax.parameters():
            a.copy_(torch.randn(a.shape, generator=torch.Generator().manual_seed(a.numel()), dtype=a.dtype))
    return relax


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_the_zero_one_loss_value_and_gradient(kind):
    relax = relaxation(zero_one=kind, zero_one_weight=10.0)
    alphas = list(relax.alphas.values())
    term = relax.loss_terms("arch", relax.weights())["zero_one"]
    sigma = [torch.sigmoid(a.detach()) for a in alphas]
    n = sum(s.numel() for s in sigma)  # one mean over both cell types
    if kind == "l2":
        value = -sum(float(((s - 0.5) ** 2).sum()) for s in sigma) / n
        grads = [-2 * (s - 0.5) * s * (1 - s) / n for s in sigma]
    else:
        value = -sum(float((s - 0.5).abs().sum()) for s in sigma) / n
        grads = [-torch.sign(s - 0.5) * s * (1 - s) / n for s in sigma]
    assert float(term.detach()) == pytest.approx(10 * value, rel=1e-12)
    for got, expected in zip(torch.autograd.grad(term, alphas), grads):
        assert torch.allclose(got, 10 * expected, rtol=1e-12, atol=1e-18)
    assert relax.loss_terms("weights", relax.weights()) == {}  # the weight loss's gradient has no part of it
    assert relaxation(zero_one_weight=0.0).loss_terms("arch", relax.weights()) == {}


def test_the_architecture_step_gains_exactly_the_terms_gradient():
    torch.manual_seed(0)
    net = SPACE.build_supernet(INFO).double()
    batch = (torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    grads = {}
    for weight in (0.0, 10.0):
        relax = relaxation(zero_one_weight=weight)
        opt = DartsOptimizer(DartsOptions(), supernet=net, relaxation=relax, task=image_task(INFO), epochs=1,
                             second_order=False)
        out, grads[weight] = opt.arch_gradient(batch, batch)
        assert ("zero_one" in out.stats) == (weight > 0)
    analytic = torch.autograd.grad(relax.loss_terms("arch", relax.weights())["zero_one"], list(relax.parameters()))
    for with_term, without, expected in zip(grads[10.0], grads[0.0], analytic):
        assert torch.allclose(with_term - without, expected, rtol=1e-9, atol=1e-15)


def test_sigmoid_weights_start_at_one_half_and_do_not_compete():
    relax = SigmoidRelaxation(SigmoidOptions(), spec=SPACE.arch_spec())
    assert all(torch.equal(w, torch.full_like(w, 0.5)) for w in relax.weights().values())
    with torch.no_grad():
        relax.alphas["normal"][3, 2] = 4.0
    w = relax.weights()["normal"]
    assert w[3, 2] == torch.sigmoid(torch.tensor(4.0)) and torch.all(w[3, :2] == 0.5) and torch.all(w[3, 3:] == 0.5)
    assert relax.strengths()["normal"].equal(w.detach())


def _spec(ops=("none", "skip_connect", "sep_conv_3x3")) -> ArchSpec:
    edges = tuple((src, 2 + j) for j in range(4) for src in range(2 + j))
    return ArchSpec(ops=ops, edges={"normal": edges}, num_inputs=2, inputs_per_node=2)


def _derive(rows: dict[tuple[int, int], list[float]], threshold: float = 0.85, k: int = 2):
    spec = _spec()
    table = torch.zeros(len(spec.edges["normal"]), len(spec.ops))
    for edge, row in rows.items():
        table[spec.edges["normal"].index(edge)] = torch.tensor(row)
    return ThresholdDiscretizer(ThresholdOptions(threshold=threshold, k=k)).derive({"normal": table}, spec)


def test_threshold_keeps_each_nodes_strongest_inputs_whose_op_reaches_it_and_drops_isolated_nodes():
    genotype = _derive({
        (0, 2): [0.0, 0.90, 0.10], (1, 2): [0.0, 0.20, 0.95],  # node 2: both inputs, strongest first
        (0, 3): [0.99, 0.50, 0.60], (1, 3): [0.0, 0.84, 0.10],  # node 3: none (zero op) never counts: isolated
        (0, 4): [0.0, 0.88, 0.10], (3, 4): [0.0, 0.10, 0.99],  # node 4: its input from node 3 is gone
        (1, 4): [0.0, 0.87, 0.0],  # third-strongest input of node 4: not considered (k = 2)
        (2, 5): [0.0, 0.86, 0.0], (4, 5): [0.0, 0.0, 0.90],  # node 5 reads node 4, renumbered to 3
    })
    cell = genotype.cells["normal"]
    assert cell.nodes == ((("sep_conv_3x3", 1), ("skip_connect", 0)),
                          (("skip_connect", 0),),
                          (("sep_conv_3x3", 3), ("skip_connect", 2)))
    assert cell.concat == (2, 3, 4)
    net = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4)).build_network(
        Genotype({"normal": cell, "reduce": cell}), INFO)  # 3 nodes: darts_cnn builds and runs it
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_a_node_reading_only_isolated_nodes_is_isolated_and_ties_keep_the_lower_input():
    cell = _derive({
        (0, 2): [0.0, 0.90, 0.90],  # equal ops: the first column wins
        (2, 3): [0.0, 0.10, 0.20],  # node 3 isolated
        (3, 4): [0.0, 0.95, 0.0],  # node 4 reads only node 3: isolated too
        (0, 5): [0.0, 0.0, 0.90], (1, 5): [0.0, 0.90, 0.0], (2, 5): [0.0, 0.90, 0.0],  # equal edges: lower input first
    }).cells["normal"]
    assert cell.nodes == ((("skip_connect", 0),), (("sep_conv_3x3", 0), ("skip_connect", 1)))
    assert cell.concat == (2, 3)


def test_a_cell_with_nothing_above_the_threshold_keeps_its_strongest_input_op_with_one_warning(caplog):
    discretizer = ThresholdDiscretizer(ThresholdOptions())
    spec = _spec()
    table = torch.full((14, 3), 0.5)
    table[1, 2], table[4, 1] = 0.6, 0.7  # 1 -> 2 sep_conv; 2 -> 3 (not from an input node) is stronger
    with caplog.at_level(logging.WARNING, logger="nas"):
        for _ in range(2):
            cell = discretizer.derive({"normal": table}, spec).cells["normal"]
    assert cell.nodes == ((("sep_conv_3x3", 1),),) and cell.concat == (2,)
    assert len(caplog.records) == 1 and "no op of the normal cell reaches 0.85" in caplog.text


def test_the_presets(registries):
    from nas_core.config import resolve

    demo = resolve(registries, [], preset="fairdarts_demo")
    assert (demo.relaxation.name, demo.discretizer.name, demo.optimizer.name) == ("sigmoid", "threshold", "darts_1st")
    assert demo.space.options.ops == OPS and demo.optimizer.options.arch_betas == (0.9, 0.999)
    paper = resolve(registries, [], preset="fairdarts_paper")
    o, r, d = paper.optimizer.options, paper.relaxation.options, paper.discretizer.options
    assert (o.w_lr, o.w_lr_min, o.w_momentum, o.w_weight_decay, o.grad_clip) == (0.005, 0.001, 0.9, 3e-4, 5.0)
    assert (o.arch_lr, o.arch_betas, o.arch_weight_decay, paper.optimizer.name) == (3e-3, (0.9, 0.999), 1e-3,
                                                                                    "darts_1st")
    assert (r.init_std, r.zero_one, r.zero_one_weight, d.threshold, d.k) == (0.0, "l2", 10.0, 0.85, 2)
    assert (paper.space.options.cells, paper.space.options.channels, paper.space.options.ops) == (8, 16, OPS)
    assert (paper.search.epochs, paper.search.batch_size, paper.task.options.cutout) == (50, 128, 0)


def test_a_tiny_fairdarts_search_then_training_end_to_end(tmp_path):
    run = tmp_path / "search"
    assert cli.main(["run", "--preset", "fairdarts_demo", *TINY, "--set", "search.epochs=1",
                     "--set", "discretizer.threshold=0.5", "--out", str(run)]) == 0
    assert "arch_zero_one=" in (run / "log.txt").read_text()
    genotype = json.loads((run / "genotype.json").read_text())
    assert {op for cell in genotype.values() for node in cell["nodes"] for op, _ in node} <= set(OPS)
    assert cli.main(["train", "--preset", "fairdarts_demo", "--genotype", str(run / "genotype.json"),
                     "--set", "network.cells=3", "--set", "network.channels=8", "--set", "train.epochs=1",
                     "--set", "train.max_steps_per_epoch=2", "--set", "train.batch_size=16", "--no-progress",
                     "--out", str(tmp_path / "train")]) == 0


BAD = [
    (["--set", "discretizer.threshold=1.5"], "invalid discretizer option: threshold must be in [0, 1]"),
    (["--set", "discretizer.k=0"], "invalid discretizer option: 'k' must be >= 1"),
    (["--set", "relaxation.zero_one=l3"], "invalid relaxation option: 'zero_one' must be in ('l2', 'l1')"),
    (["--set", "relaxation.zero_one_weight=-1"], "invalid relaxation option: 'zero_one_weight' must be >= 0"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[a[-1] for a, _ in BAD])
def test_bad_fairdarts_options_are_one_line(tmp_path, capsys, args, message):
    err = refused(capsys, ["run", "--preset", "fairdarts_demo", *TINY, "--set", "search.epochs=1", *args],
                  tmp_path / "out")
    assert err.startswith(f"nas: error: {message}"), err
