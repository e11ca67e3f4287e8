"""P-DARTS (plugin nas_pdarts): per-edge pruning keeps each edge's strongest ops (the zero op dropped
first only in the final choice), the masked softmax, the skip-dropout schedule, the skip cap of the
final normal cell, each stage's supernet (depth, op sets actually built), the clipped architecture
gradient, bad input, and a tiny three-stage search end to end, also resumed across a stage boundary.
The side-by-side check against the authors' code is benchmarks/fidelity/pdarts.py."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from conftest import image_task, refused
from nas_core import ArchSpec, Component, DataInfo, Toolkit, cli, hookimpl
from nas_core.config import resolve
from nas_core.staged_search import stage_config
from nas_darts.architect import DartsOptimizer
from nas_darts.cnn_space import DartsCnnSpace
from nas_darts.options import CNN_OPS, DartsCnnOptions, DartsOptions
from nas_pdarts import progressive
from nas_pdarts.discretizer import PdartsDiscretizer
from nas_pdarts.edge import PdartsEdge, skip_dropout_at
from nas_pdarts.kept import strongest
from nas_pdarts.optimizer import PdartsOptimizer
from nas_pdarts.options import (MaskedSoftmaxOptions, PdartsDiscretizerOptions, PdartsEdgeOptions,
                                PdartsOptimizerOptions, PdartsSettings)
from nas_pdarts.relaxation import MaskedSoftmaxRelaxation

NONE, MAX, AVG, SKIP, SEP3, SEP5, DIL3, DIL5 = range(8)  # CNN_OPS's columns


def spec(rows: int = 3) -> ArchSpec:
    return ArchSpec(ops=CNN_OPS, edges={"normal": tuple((0, 1) for _ in range(rows))}, num_inputs=1,
                    inputs_per_node=1, zero_op="none")


def relaxation(rows: int = 3, alphas=None, kept=None) -> MaskedSoftmaxRelaxation:
    relax = MaskedSoftmaxRelaxation(MaskedSoftmaxOptions(kept=kept), spec=spec(rows)).double()
    if alphas is not None:
        with torch.no_grad():
            relax.alphas["normal"].copy_(torch.tensor(alphas, dtype=torch.float64))
    return relax


def finished(relax, rows: int = 3, keep=(5, 3), relaxation_name: str = "masked_softmax", edge: str = "pdarts"):
    """What the stage hook reads of a finished stage (a SearchRecord's fields)."""
    config = SimpleNamespace(relaxation=Component(relaxation_name, None), settings={"pdarts": PdartsSettings(keep=keep)},
                             space=SimpleNamespace(options=SimpleNamespace(edge=Component(edge, None))))
    return SimpleNamespace(config=config, relaxation=relax, spec=spec(rows))


ALPHAS = [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],  # the last ops strongest
          [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # `none` strongest: kept between stages
          [1.0, 9.0, 0.0, 8.0, 2.0, 7.0, 3.0, 6.0]]


def test_pruning_keeps_the_strongest_ops_of_each_edge():
    layer: dict = {}
    progressive.nas_stage_config(stage=1, finished=finished(relaxation(alphas=ALPHAS)), layer=layer)
    kept = [["skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"],
            ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"],
            ["max_pool_3x3", "skip_connect", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]]
    assert layer == {"relaxation": {"kept": {"normal": kept}}, "space": {"edge": {"kept": {"normal": kept}}}}
    # the next boundary keeps 3 of those 5 and never revives a pruned op, however large its alpha
    later: dict = {}
    big = [[9.0] * 3 + [1.0, 2.0, 3.0, 4.0, 5.0]] * 3
    progressive.nas_stage_config(stage=2, finished=finished(relaxation(alphas=big, kept={"normal": kept})), layer=later)
    assert later["relaxation"]["kept"]["normal"] == [
        ["sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"], ["none", "max_pool_3x3", "avg_pool_3x3"],
        ["max_pool_3x3", "dil_conv_3x3", "dil_conv_5x5"]]
    carried: dict = {}  # past the list of keep counts: the op sets carry over
    progressive.nas_stage_config(stage=3, finished=finished(relaxation(alphas=big, kept={"normal": kept})),
                                 layer=carried)
    assert carried["relaxation"]["kept"]["normal"] == kept


@pytest.mark.parametrize("record", [
    lambda: finished(relaxation(alphas=ALPHAS), relaxation_name="softmax"),  # not a P-DARTS search
    lambda: finished(relaxation(alphas=ALPHAS), keep=()),  # a staged search without pruning
])
def test_the_stage_hook_leaves_other_searches_alone(record):
    layer: dict = {}
    progressive.nas_stage_config(stage=1, finished=record(), layer=layer)
    assert layer == {}


def test_with_another_edge_only_the_relaxation_is_pruned():
    layer: dict = {}
    progressive.nas_stage_config(stage=1, finished=finished(relaxation(alphas=ALPHAS), edge="weighted_sum"), layer=layer)
    assert set(layer) == {"relaxation"}


@pytest.mark.parametrize("row, columns, keep, zero, expected", [
    ([0.5, 0.1, 0.2, 0.3], [0, 1, 2, 3], 2, None, [0, 3]),  # between stages: `none` is an op like any other
    ([0.5, 0.1, 0.2, 0.3], [0, 1, 2, 3], 1, 0, [3]),  # the last stage: `none` dropped first
    ([0.5, 0.1, 0.2, 0.3], [0, 2, 3], 2, 0, [2, 3]),
    ([0.0, 0.2, 0.2, 0.1], [1, 2, 3], 1, None, [2]),  # ties: the lower column is dropped first (np.argmin)
])
def test_the_pruning_rule(row, columns, keep, zero, expected):
    assert strongest(row, columns, keep, zero) == expected


def test_the_masked_softmax_is_the_softmax_of_the_kept_alphas():
    kept = {"normal": [["none", "skip_connect", "sep_conv_3x3"], ["dil_conv_5x5"], list(CNN_OPS)]}
    relax = relaxation(alphas=ALPHAS, kept=kept)
    w = relax.weights()["normal"]
    alpha = relax.alphas["normal"]
    torch.testing.assert_close(w[0, [NONE, SKIP, SEP3]], torch.softmax(alpha[0, [NONE, SKIP, SEP3]], 0),
                               rtol=1e-15, atol=0)
    assert w[1].tolist() == [0.0] * 7 + [1.0] and (w[0, [MAX, AVG, SEP5, DIL3, DIL5]] == 0).all()
    torch.testing.assert_close(w[2], torch.softmax(alpha[2], 0), rtol=1e-15, atol=0)
    grad, = torch.autograd.grad((w * torch.arange(8.0, dtype=w.dtype)).sum(), alpha)
    assert (grad[0, [MAX, AVG, SEP5, DIL3, DIL5]] == 0).all() and (grad[1] == 0).all() and (grad[2] != 0).all()
    assert torch.equal(relax.strengths()["normal"], w.detach())


@pytest.mark.parametrize("epoch, expected", [
    (0, 0.4 * 24 / 25), (9, 0.4 * 15 / 25),  # the warm-up: a linear fall
    (10, 0.4), (15, 0.4 * math.exp(-1.0)), (24, 0.4 * math.exp(-2.8)),  # then exponential, from the rate
])
def test_the_skip_dropout_schedule(epoch, expected):
    assert skip_dropout_at(0.4, epoch, 25, warmup=10) == pytest.approx(expected, rel=1e-15)


def edge(stride: int = 1, **options) -> PdartsEdge:
    from nas_darts.ops import make_op

    return PdartsEdge(PdartsEdgeOptions(**options), ops=CNN_OPS, channels=4, stride=stride,
                      make_op=lambda name, c: make_op(name, c, stride, affine=False, search=True),
                      zero=frozenset({"none"}), cell_type="normal", row=0)


@pytest.mark.parametrize("warmup, freeze, epoch, expected", [
    (None, 10, 3, 0.7 * 20 / 24), (None, 2, 3, 0.7 * math.exp(-0.2)), (1, 10, 3, 0.7 * math.exp(-0.4))])
def test_the_edge_drops_out_its_identity_on_the_schedule(warmup, freeze, epoch, expected):
    e = edge(skip_dropout=0.7, warmup=warmup)
    config = SimpleNamespace(optimizer=Component("pdarts", PdartsOptimizerOptions(freeze_alpha_epochs=freeze)))
    e.start_epoch(SimpleNamespace(phase="search", epoch=epoch, epochs=24, config=config, components={}))
    dropout, = e.dropouts
    assert dropout.p == pytest.approx(expected, rel=1e-15)
    skip = e.ops[e.columns.index(SKIP)]
    assert isinstance(skip, torch.nn.Sequential) and skip[1] is dropout
    # stride 2 (FactorizedReduce) and a zero rate: no dropout, as theirs
    assert not edge(stride=2, skip_dropout=0.7).dropouts and not edge(skip_dropout=0.0).dropouts
    e.eval()  # evaluation computes the plain weighted sum
    x = torch.randn(2, 4, 6, 6)
    weights = torch.zeros(8)
    weights[SKIP] = 1.0
    assert torch.equal(e(x, weights), x)


def test_the_skip_cap_on_a_hand_built_alpha():
    """Normal cell, 4 nodes, three ops left per edge (none, skip, sep_conv_3x3; the others exactly 0).
    Uncapped, 5 of the 8 chosen edges hold skip_connect. Capped at 2, their loop (delete_min_sk_prob,
    keep_1_on, keep_2_branches) removes the weakest chosen skip and chooses again: rows 1 (0.55), 0
    (0.60), then 5 (0.65), after which node 4 takes two other edges."""
    edges = tuple((src, 2 + j) for j in range(4) for src in range(2 + j))
    s = ArchSpec(ops=CNN_OPS, edges={"normal": edges, "reduce": edges}, num_inputs=2, inputs_per_node=2,
                 zero_op="none")
    rows = {  # row: (none, skip, sep_conv_3x3)
        0: (0.05, 0.60, 0.35), 1: (0.05, 0.55, 0.40),  # node 2
        2: (0.05, 0.70, 0.25), 3: (0.90, 0.06, 0.04), 4: (0.60, 0.10, 0.30),  # node 3: `none` never chosen
        5: (0.05, 0.65, 0.30), 6: (0.05, 0.45, 0.50), 7: (0.05, 0.35, 0.60), 8: (0.05, 0.32, 0.63),  # node 4
        9: (0.05, 0.75, 0.20), 10: (0.05, 0.58, 0.37), 11: (0.05, 0.42, 0.53), 12: (0.05, 0.52, 0.43),
        13: (0.05, 0.22, 0.73)}  # node 5
    table = torch.zeros(14, 8, dtype=torch.float64)
    for row, values in rows.items():
        table[row, [NONE, SKIP, SEP3]] = torch.tensor(values, dtype=torch.float64)
    strengths = {"normal": table, "reduce": table}
    uncapped = PdartsDiscretizer(PdartsDiscretizerOptions(max_skip=None)).derive(strengths, s)
    capped = PdartsDiscretizer(PdartsDiscretizerOptions(max_skip=2)).derive(strengths, s)
    sk, sep = "skip_connect", "sep_conv_3x3"
    assert [list(n) for n in uncapped.cells["normal"].nodes] == [
        [(sk, 0), (sk, 1)], [(sk, 0), (sep, 2)], [(sk, 0), (sep, 3)], [(sk, 0), (sep, 4)]]
    assert [list(n) for n in capped.cells["normal"].nodes] == [
        [(sep, 0), (sep, 1)], [(sk, 0), (sep, 2)], [(sep, 2), (sep, 3)], [(sk, 0), (sep, 4)]]
    assert capped.cells["reduce"] == uncapped.cells["reduce"] == uncapped.cells["normal"]  # reduce: no cap
    assert PdartsDiscretizer(PdartsDiscretizerOptions(max_skip=5)).derive(strengths, s) == uncapped
    none_left = PdartsDiscretizer(PdartsDiscretizerOptions(max_skip=0)).derive(strengths, s).cells["normal"]
    assert all(op == sep for node in none_left.nodes for op, _ in node)


def test_each_stage_builds_a_fresh_supernet_of_its_depth_over_the_kept_ops(registries):
    """The demo's three stages: 2, 3, 4 cells; stage 2 and 3 edges build only the ops the hook kept."""
    config = resolve(registries, [], preset="pdarts_demo")
    toolkit = SimpleNamespace(registries=registries)
    kept = {t: [list(CNN_OPS[:5]) if row % 2 else list(CNN_OPS[3:]) for row in range(14)]
            for t in ("normal", "reduce")}
    for stage, cells, rate in ((1, 2, 0.1), (2, 3, 0.4), (3, 4, 0.7)):
        decided = {} if stage == 1 else {"relaxation": {"kept": kept}, "space": {"edge": {"kept": kept}}}
        cfg = stage_config(toolkit, config, stage, decided)
        space = DartsCnnSpace(cfg.space.options)
        net = space.build_supernet(DataInfo((1, 8, 8), 10))
        relax = MaskedSoftmaxRelaxation(cfg.relaxation.options, spec=space.arch_spec())
        assert len(net.cells) == cells and cfg.space.options.edge.options.skip_dropout == rate
        for cell in net.cells:
            for row, e in enumerate(cell.edges):
                assert isinstance(e, PdartsEdge)
                built = [CNN_OPS[c] for c in e.columns]
                expected = [op for op in (CNN_OPS if stage == 1 else kept["normal"][row]) if op != "none"]
                assert built == expected and len(e.ops) == len(expected)
        PdartsOptimizer(cfg.optimizer.options, supernet=net, relaxation=relax, task=image_task(DataInfo((1, 8, 8), 10)),
                        epochs=8)  # the edge's and the relaxation's op sets agree
        if stage > 1:
            assert relax.mask("normal").sum(-1).tolist() == [5] * 14


def test_edges_and_relaxation_that_disagree_are_refused():
    space = DartsCnnSpace(DartsCnnOptions(cells=1, channels=4, nodes=2, edge=Component("pdarts", PdartsEdgeOptions())))
    net = space.build_supernet(DataInfo((1, 8, 8), 10))
    kept = {t: [["skip_connect", "sep_conv_3x3"]] * 5 for t in ("normal", "reduce")}
    relax = MaskedSoftmaxRelaxation(MaskedSoftmaxOptions(kept=kept), spec=space.arch_spec())
    with pytest.raises(ValueError, match="edge 0 of the reduce cell builds .* but the relaxation mixes"):
        PdartsOptimizer(PdartsOptimizerOptions(), supernet=net, relaxation=relax,
                        task=image_task(DataInfo((1, 8, 8), 10)), epochs=1)


def test_the_architecture_gradient_is_clipped_as_clip_grad_norm():
    info = DataInfo((1, 8, 8), 10)

    def arch_step(cls, options):
        torch.manual_seed(0)
        space = DartsCnnSpace(DartsCnnOptions(cells=2, channels=4, nodes=2))
        net = space.build_supernet(info).double()
        relax = MaskedSoftmaxRelaxation(MaskedSoftmaxOptions(), spec=space.arch_spec()).double()
        with torch.no_grad():
            for a in relax.alphas.values():
                a.normal_()
        kwargs = {} if cls is PdartsOptimizer else {"second_order": False}
        opt = cls(options, supernet=net, relaxation=relax, task=image_task(info), epochs=1, **kwargs)
        batch = (torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64),
                 torch.arange(4))
        return opt.arch_gradient(batch, batch)[1]

    plain = arch_step(DartsOptimizer, DartsOptions())
    norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in plain])))
    clipped = arch_step(PdartsOptimizer, PdartsOptimizerOptions(arch_grad_clip=norm / 4))
    for g, h in zip(clipped, plain):
        torch.testing.assert_close(g, h * (norm / 4) / (norm + 1e-6), rtol=1e-12, atol=0)
    unclipped = arch_step(PdartsOptimizer, PdartsOptimizerOptions(arch_grad_clip=0.0))
    assert all(torch.equal(g, h) for g, h in zip(unclipped, plain))


def test_the_presets(registries):
    paper = resolve(registries, [], preset="pdarts_paper")
    o = paper.optimizer.options
    assert (paper.optimizer.name, o.w_lr, o.w_lr_min, o.w_momentum, o.w_weight_decay, o.grad_clip) == (
        "pdarts", 0.025, 0.0, 0.9, 3e-4, 5.0)
    assert (o.arch_lr, o.arch_betas, o.arch_weight_decay, o.arch_grad_clip, o.freeze_alpha_epochs) == (
        6e-4, (0.5, 0.999), 1e-3, 5.0, 10)
    assert (paper.search.epochs, paper.search.batch_size, paper.space.options.channels) == (25, 96, 16)
    assert [s["space"]["cells"] for s in paper.search.stages] == [5, 11, 17]
    assert [s["space"]["edge"]["skip_dropout"] for s in paper.search.stages] == [0.1, 0.4, 0.7]
    assert paper.settings["pdarts"].keep == (5, 3) and paper.discretizer.options.max_skip == 2
    assert paper.relaxation.name == "masked_softmax" and paper.space.options.edge.name == "pdarts"
    demo = resolve(registries, [], preset="pdarts_demo")
    assert [s["space"]["cells"] for s in demo.search.stages] == [2, 3, 4] and demo.dataset.name == "digits"
    assert (demo.optimizer.options.w_lr, demo.optimizer.options.arch_lr) == (0.05, 3e-3)


TINY_PDARTS = ["--preset", "pdarts_demo", "--set", "space.channels=4", "--set", "search.batch_size=16",
               "--set", "search.max_steps_per_epoch=2", "--set", "search.epochs=2",
               "--set", "optimizer.freeze_alpha_epochs=1", "--no-progress"]
BAD = [
    (["--set", "pdarts.keep=[0]"], "invalid pdarts option: keep: every stage keeps at least 1 op per edge"),
    (["--set", "space.edge.skip_dropout=1.0"], "invalid space.edge option: skip_dropout must be in [0, 1), got 1.0"),
    (["--set", "discretizer.max_skip=-1"], "invalid discretizer option"),
    (["--set", "optimizer.arch_grad_clip=-1"], "invalid optimizer option"),
    (["--set", "relaxation.kept={normal: [[skip_connect]]}"], "relaxation 'masked_softmax': relaxation.kept must map"),
    (["--set", "space.edge.kept={normal: [[bogus]]}"], "mixed edge 'pdarts': space.edge.kept.normal[0] must be distinct"),
    (["--set", "space.edge.kept={normal: [[skip_connect]], reduce: [[skip_connect]]}"],
     "mixed edge 'pdarts': space.edge.kept has no op list for edge 1 of the normal cell"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[a[-1] for a, _ in BAD])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    # a plain search: a staged one writes RUN_DIR/config.yaml before it builds the first stage
    err = refused(capsys, ["run", *TINY_PDARTS, "--set", "search.stages=[]", *args], tmp_path / "out")
    assert err.startswith(f"nas: error: {message}"), err


def check_search(out, toolkit):
    """The three stages of a finished tiny search: depths, op sets (8 -> 5 -> 3 per edge), the result."""
    stages = [toolkit.load_search(out, stage=s) for s in (1, 2, 3)]
    assert [len(s.supernet.cells) for s in stages] == [2, 3, 4]
    for s, count in zip(stages, (8, 5, 3)):
        for t in ("normal", "reduce"):
            mask = s.relaxation.mask(t)
            assert (count == 8 and mask is None) or mask.sum(-1).tolist() == [count] * 14
    kept = stages[2].config.relaxation.options.kept
    assert stages[2].config.space.options.edge.options.kept == kept
    genotype = stages[2].genotype
    for t, edges in stages[2].spec.edges.items():  # every chosen op is one its edge kept, never `none`
        for j, node in enumerate(genotype.cells[t].nodes):
            for op, src in node:
                assert op != "none" and op in kept[t][edges.index((src, 2 + j))]
    assert sum(op == "skip_connect" for node in genotype.cells["normal"].nodes for op, _ in node) <= 2
    assert (out / "genotype.json").read_text() == (out / "stage_3" / "genotype.json").read_text()
    return stages


def test_a_tiny_three_stage_search_end_to_end_and_resumed_across_a_stage_boundary(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_DISABLE_PLUGINS", "tensorboard")  # its per-epoch figures are most of the time here
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert cli.main(["run", *TINY_PDARTS, "--out", str(whole)]) == 0
    toolkit = Toolkit.load()
    a = check_search(whole, toolkit)

    class StopAsStageTwoStarts:
        @hookimpl
        def nas_epoch_start(self, run):
            if run.stage == 2 and run.epoch == 0:
                raise KeyboardInterrupt

    assert cli.main(["run", *TINY_PDARTS, "--out", str(broken)], plugins=[StopAsStageTwoStarts()]) == 130
    assert (broken / "stage_1" / "results.json").is_file() and not (broken / "stage_2" / "checkpoint.pt").exists()
    assert cli.main(["run", "--resume", str(broken), "--no-progress"]) == 0
    b = check_search(broken, toolkit)
    assert (broken / "genotype.json").read_text() == (whole / "genotype.json").read_text()
    assert all(torch.equal(x, y) for x, y in zip(a[2].relaxation.parameters(), b[2].relaxation.parameters()))
    assert all(torch.equal(x, y) for x, y in zip(a[2].supernet.state_dict().values(),
                                                 b[2].supernet.state_dict().values()))

