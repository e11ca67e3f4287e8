"""The resource-aware penalty (plugin nas_resource): the cost table, the expected cost and its penalty,
the cost of a derived cell, and a tiny search that a budget moves under it."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY, refused
from nas_core import ArchSpec, Cell, DataInfo, Genotype, MixingWeights, cli
from nas_darts.cnn_space import DartsCnnSpace
from nas_darts.options import DartsCnnOptions
from nas_resource.costs import madds, measure_with_cache
from nas_resource.options import ResourceSettings
from nas_resource.penalty import ResourcePenalty

# one cell type, nodes 2 and 3: node 2 has 2 incoming edges, node 3 has 3
SPEC = ArchSpec(ops=("none", "a", "b"), edges={"normal": ((0, 2), (1, 2), (0, 3), (1, 3), (2, 3))},
                num_inputs=2, inputs_per_node=2)
COSTS = {"normal": torch.tensor([[0.0, 1.0, 4.0], [0.0, 2.0, 3.0], [0.0, 5.0, 1.0], [0.0, 1.0, 1.0],
                                 [0.0, 2.0, 6.0]], dtype=torch.float64)}


def test_the_expected_cost_is_the_weighted_sum_of_op_costs():
    w = torch.tensor([[0.5, 0.25, 0.25], [0.0, 0.5, 0.5], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    penalty = ResourcePenalty(ResourceSettings(metric="params"), SPEC, COSTS)
    expected = 0.0
    for row, keep in enumerate([1, 1, 2 / 3, 2 / 3, 2 / 3]):  # node 3 keeps 2 of its 3 inputs
        live = w[row, 1:] / w[row, 1:].sum()  # the ops a discretizer may choose: `none` never is
        expected += keep * float(live @ COSTS["normal"][row, 1:].float())
    assert float(penalty.expected_cost({"normal": w})) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("target, weight", [(None, 0.5), (2.0, 3.0), (100.0, 3.0)])
def test_the_penalty_and_its_gradient_in_alpha(target, weight):
    alpha = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    penalty = ResourcePenalty(ResourceSettings(metric="params", target=target, weight=weight), SPEC, COSTS)
    term = penalty.loss_terms("arch", MixingWeights({"normal": torch.softmax(alpha, -1)}))["cost_penalty"]
    expected = penalty.expected_cost({"normal": torch.softmax(alpha, -1)})
    by_hand = weight * expected if target is None else weight * max(0.0, float(expected) - target) / target
    assert float(term.detach()) == pytest.approx(float(by_hand))
    assert penalty.loss_terms("weights", MixingWeights({"normal": torch.softmax(alpha, -1)})) == {}
    grad, = torch.autograd.grad(term, alpha)
    if float(by_hand) == 0:  # under the target: no pull at all
        assert torch.equal(grad, torch.zeros_like(grad))
    else:
        assert torch.autograd.gradcheck(
            lambda a: penalty.loss_terms("arch", MixingWeights({"normal": torch.softmax(a, -1)}))["cost_penalty"], (alpha,))


def test_a_derived_cells_cost_is_the_sum_of_its_ops_costs():
    penalty = ResourcePenalty(ResourceSettings(metric="params"), SPEC, COSTS)
    genotype = Genotype({"normal": Cell(nodes=((("b", 0), ("a", 1)), (("a", 2), ("b", 0))), concat=(2, 3))})
    assert penalty.cell_cost(genotype) == 4.0 + 2.0 + 2.0 + 1.0


def test_the_darts_cnn_table_counts_exactly_the_discrete_networks_op_parameters():
    """Every cell of a discrete network built with the search network's size: its ops' parameters are the
    table's entries at the chosen ops, summed (the preprocessing, stem and head are not the cells' choice)."""
    options = DartsCnnOptions(cells=5, channels=8)
    space, info = DartsCnnSpace(options), DataInfo((3, 8, 8), 10)
    penalty = ResourcePenalty(ResourceSettings(metric="params"), space.arch_spec(),
                              space.op_costs(info, measure_with_cache("params", torch.device("cpu"), 1)))
    genotype = Genotype({t: Cell(nodes=((("sep_conv_3x3", 0), ("dil_conv_5x5", 1)), (("skip_connect", 0), ("sep_conv_5x5", 2)),
                                        (("max_pool_3x3", 1), ("dil_conv_3x3", 3)), (("avg_pool_3x3", 0), ("sep_conv_3x3", 4))),
                                 concat=(2, 3, 4, 5)) for t in ("normal", "reduce")})
    net = space.build_network(genotype, info)
    ops = sum(p.numel() for cell in net.cells for p in cell.ops.parameters())
    assert penalty.cell_cost(genotype) == pytest.approx(ops / 1e6, rel=1e-12)


def test_multiply_adds_of_a_separable_conv_by_hand():
    from nas_darts.ops import make_op

    op = make_op("sep_conv_3x3", 4, 1, affine=True, search=False)
    # twice (depthwise 3x3: C*9 per pixel, pointwise: C*C per pixel) on 8x8 pixels
    assert madds(op, (1, 4, 8, 8), torch.device("cpu"), 1) == 2 * (4 * 9 * 64 + 4 * 4 * 64)


def test_latency_is_measured_once_per_op_stride_and_shape():
    calls = []

    def build():
        calls.append(1)
        return torch.nn.Identity()

    measure = measure_with_cache("latency", torch.device("cpu"), 3)
    first = measure("skip_connect", 1, (1, 4, 8, 8), build)
    assert first > 0 and measure("skip_connect", 1, (1, 4, 8, 8), build) == first and len(calls) == 1
    measure("skip_connect", 2, (1, 4, 8, 8), build)
    assert len(calls) == 2


SEARCH = ["run", "--preset", "demo", *TINY, "--optimizer", "darts_1st", "--set", "search.epochs=2",
          "--set", "search.max_steps_per_epoch=4", "--set", "optimizer.arch_lr=0.05", "--set", "resource.metric=params"]


def test_a_budget_moves_the_derived_cells_under_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_DISABLE_PLUGINS", "tensorboard")
    free, budget = tmp_path / "free", tmp_path / "budget"
    # weight 0: the cost is measured and reported, the search is DARTS's
    assert cli.main([*SEARCH, "--set", "resource.weight=0", "--out", str(free)]) == 0
    unpenalised = json.loads((free / "results.json").read_text())["cell_cost"]
    target = unpenalised["value"] / 4
    assert cli.main([*SEARCH, "--set", "resource.weight=10", "--set", f"resource.target={target}",
                     "--out", str(budget)]) == 0
    penalised = json.loads((budget / "results.json").read_text())["cell_cost"]
    assert unpenalised["unit"] == "M params" and unpenalised["value"] > target >= penalised["value"]
    assert penalised["target"] == target and "arch_cost_penalty=" in (budget / "log.txt").read_text()
    table = json.loads((budget / "resource.json").read_text())
    assert table["ops"][0] == "none" and len(table["costs"]["normal"]) == 14


def test_a_resumed_run_reads_the_table_it_started_with(tmp_path):
    """A latency measured anew would differ: the run directory's table is the one a resume uses."""
    from types import SimpleNamespace

    from nas_resource.penalty import COSTS_FILE, _costs, saved_costs

    path = tmp_path / COSTS_FILE
    path.write_text(json.dumps({"metric": "latency", "costs": {"normal": COSTS["normal"].tolist()}}))
    settings = ResourceSettings(metric="latency")
    run = SimpleNamespace(dir=tmp_path, spec=SPEC, components={}, is_writer=True,
                          extra={COSTS_FILE: saved_costs(path, settings, SPEC)})  # as nas_check_run leaves it
    assert torch.equal(_costs(settings, run)["normal"], COSTS["normal"])


TAMPERED = [
    ({"metric": "params", "costs": {"normal": COSTS["normal"].tolist()}}, "is not the latency table"),
    ({"metric": "latency", "costs": {"reduce": COSTS["normal"].tolist()}}, "is not the latency table"),
    ({"metric": "latency", "costs": {"normal": [[0.0, "x", 1.0]] * 5}}, "is damaged: its normal costs"),
    ({"metric": "latency", "costs": {"normal": COSTS["normal"].tolist()[:4]}}, "is damaged: its normal costs"),
    ({"metric": "latency", "costs": {"normal": [[0.0, -1.0, 1.0]] * 5}}, "is damaged: its normal costs"),
]


@pytest.mark.parametrize("saved, message", TAMPERED, ids=["metric", "cells", "text", "rows", "negative"])
def test_a_tampered_table_is_refused_by_name(tmp_path, saved, message):
    from nas_core import NasError
    from nas_resource.penalty import COSTS_FILE, saved_costs

    path = tmp_path / COSTS_FILE
    path.write_text(json.dumps(saved))
    with pytest.raises(NasError, match=message) as e:
        saved_costs(path, ResourceSettings(metric="latency"), SPEC)
    assert str(path) in str(e.value) and "move it away" in str(e.value)


def test_a_resume_over_a_tampered_table_is_one_line_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main([*SEARCH, "--set", "search.epochs=1", "--out", str(run)]) == 0
    table = run / "resource.json"
    table.write_text('{"metric": "params", "costs": {"normal": [[1, "x"]], "reduce": []}}')
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: ") and err.count("\n") == 1 and "resource.json is damaged" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


CNN = ["--preset", "demo", *TINY]
BAD = [
    ([*CNN, "--set", "resource.metric=flops"], "invalid resource option"),
    ([*CNN, "--set", "resource.metric=params", "--set", "resource.target=0"], "invalid resource option"),
    (["--preset", "rnn_demo", "--set", "resource.metric=params", "--set", "search.max_steps_per_epoch=1"],
     "search space 'darts_rnn' does not report its ops' costs"),
]


@pytest.mark.parametrize("args, message", BAD, ids=["unknown-metric", "zero-target", "space-without-costs"])
def test_bad_resource_options_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    err = refused(capsys, ["run", *args, "--set", "search.epochs=1"], tmp_path / "out")
    assert message in err, err
