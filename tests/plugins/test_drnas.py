"""DrNAS (plugin nas_drnas): the Dirichlet relaxation's pathwise (rsample) gradient is the gradient of the
expectation (against a finite difference of its closed form), the KL and L2 regularisers' values and
gradients, reproducible draws, per-edge pruning masks, the progressive search's stage hooks (per-edge
top-k, alphas and widened weights inherited, only for DrNAS searches), its presets, bad input and a
tiny two-stage search end to end. The side-by-side check against the authors' code is
benchmarks/fidelity/drnas.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import yaml

from conftest import StepRun, image_task, refused
from nas_core import ArchSpec, Component, DataInfo, Toolkit, cli
from nas_core.config import resolve
from nas_darts.architect import DartsOptimizer
from nas_darts.cnn_space import DartsCnnSpace
from nas_darts.options import DartsCnnOptions, DartsOptions
from nas_drnas import progressive
from nas_drnas.dirichlet import DirichletRelaxation
from nas_drnas.options import DRNAS_OPS, DirichletOptions, DrnasSettings
from nas_drnas.widen import widened
from nas_pcdarts.options import PartialChannelOptions

OPS = ("a", "b", "c", "d")


def spec(rows: int = 3, ops: tuple[str, ...] = OPS) -> ArchSpec:
    return ArchSpec(ops=ops, edges={"normal": tuple((0, 1) for _ in range(rows))}, num_inputs=1, inputs_per_node=1,
                    zero_op=None)


def relaxation(rows: int = 3, **options) -> DirichletRelaxation:
    return DirichletRelaxation(DirichletOptions(**options), spec=spec(rows)).double()


def test_the_rsample_gradient_is_the_gradient_of_the_expectation():
    """d/d alpha E[f(w)], w ~ Dir(elu(alpha) + 1), f(w) = sum_k c_k w_k^2: the mean of the pathwise
    gradients over many draws against a central finite difference of E[f] in closed form
    (E[w_k^2] = a_k (a_k + 1) / (a0 (a0 + 1)))."""
    rows = 20000
    alpha0 = torch.tensor([0.3, -0.2, 0.8, 0.1], dtype=torch.float64)  # both branches of elu
    c = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    relax = relaxation(rows)
    with torch.no_grad():
        relax.alphas["normal"].copy_(alpha0.expand(rows, 4))
    w = relax.weights(relax.sample(torch.Generator().manual_seed(0)))["normal"]
    per_row, = torch.autograd.grad((c * w**2).sum(), relax.alphas["normal"])  # one pathwise gradient per draw
    mean, se = per_row.mean(0), per_row.std(0) / rows**0.5

    def expectation(alpha):
        a = torch.nn.functional.elu(alpha) + 1
        a0 = a.sum()
        return (c * a * (a + 1) / (a0 * (a0 + 1))).sum()

    h = 1e-6
    steps = h * torch.eye(4, dtype=torch.float64)
    fd = torch.stack([(expectation(alpha0 + e) - expectation(alpha0 - e)) / (2 * h) for e in steps])
    assert (mean - fd).abs().max() < 4 * se.max(), (mean, fd, se)
    assert fd.abs().min() > 10 * se.max()  # the test resolves the gradient: a wrong one would fail it


def test_the_kl_regulariser_value_and_gradient():
    torch.manual_seed(0)
    relax = relaxation(regularizer="kl", reg_scale=0.5)
    with torch.no_grad():
        relax.alphas["normal"].normal_()

    def closed_form(alpha):  # KL(Dir(a) || Dir(1, ..., 1)) per edge, summed
        a = torch.nn.functional.elu(alpha) + 1
        a0 = a.sum(-1)
        return (torch.lgamma(a0) - torch.lgamma(a).sum(-1) - torch.lgamma(torch.tensor(4.0, dtype=a.dtype))
                + ((a - 1) * (torch.digamma(a) - torch.digamma(a0)[:, None])).sum(-1)).sum()

    alpha = relax.alphas["normal"]
    terms = relax.loss_terms("arch", relax.weights(None))
    assert set(terms) == {"kl"}
    torch.testing.assert_close(terms["kl"], 0.5 * closed_form(alpha.detach()), rtol=1e-12, atol=0)
    grad, = torch.autograd.grad(terms["kl"], alpha)
    h, fd = 1e-6, torch.zeros_like(alpha)
    for i in range(alpha.numel()):
        e = torch.zeros_like(alpha).view(-1)
        e[i] = h
        fd.view(-1)[i] = 0.5 * (closed_form(alpha.detach() + e.view_as(alpha))
                                - closed_form(alpha.detach() - e.view_as(alpha))) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-9)
    assert relax.loss_terms("weights", relax.weights(None)) == {}  # the architecture loss only


def test_the_l2_regulariser_value_gradient_and_equivalence_to_adam_weight_decay():
    torch.manual_seed(0)
    relax = relaxation(regularizer="l2", reg_scale=0.5)
    alpha = relax.alphas["normal"]
    term = relax.loss_terms("arch", relax.weights(None))["l2"]
    torch.testing.assert_close(term, 0.25 * (alpha.detach() ** 2).sum())
    grad, = torch.autograd.grad(term, alpha)
    torch.testing.assert_close(grad, 0.5 * alpha.detach())
    assert relaxation(regularizer="none").loss_terms("arch", relax.weights(None)) == {}

    # DrNAS applies its L2 as Adam's weight decay: the term gives the same architecture step
    def step(regularizer: str, arch_weight_decay: float):
        info = DataInfo((1, 8, 8), 10)
        torch.manual_seed(0)
        space = DartsCnnSpace(DartsCnnOptions(cells=1, channels=6, nodes=2, ops=DRNAS_OPS,
                                              edge=Component("partial_channels", PartialChannelOptions(k=3))))
        net = space.build_supernet(info).double()
        relax = DirichletRelaxation(DirichletOptions(regularizer=regularizer, reg_scale=0.1),
                                    spec=space.arch_spec()).double()
        opt = DartsOptimizer(DartsOptions(arch_lr=0.1, arch_weight_decay=arch_weight_decay), supernet=net,
                             relaxation=relax, task=image_task(info), epochs=1, second_order=False)
        batch = (torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64),
                 torch.arange(4))
        for _ in range(2):
            opt.step(batch, batch, {}, StepRun())
        return torch.cat([a.detach() for a in relax.alphas.values()])

    torch.testing.assert_close(step("l2", 0.0), step("none", 0.1), rtol=1e-12, atol=1e-15)
    assert not torch.allclose(step("none", 0.0), step("none", 0.1))


def test_draws_are_reproducible_from_the_runs_stream_and_leave_the_global_generator_alone():
    relax = relaxation()
    seed = relax.sample(torch.Generator().manual_seed(3))
    assert seed == relax.sample(torch.Generator().manual_seed(3))
    state = torch.random.get_rng_state()
    w = relax.weights(seed)["normal"]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(w, relax.weights(seed)["normal"]) and not torch.equal(w, relax.weights(seed + 1)["normal"])
    assert (w > 0).all() and torch.allclose(w.sum(-1), torch.ones(3, dtype=torch.float64))
    assert not torch.equal(w[0], w[1])  # one draw per edge


def test_pruned_ops_are_masked_and_each_row_renormalised():
    kept = {"normal": [["a", "c"], ["b", "c", "d"], ["d"]]}
    relax = relaxation(kept=kept)
    torch.manual_seed(0)
    with torch.no_grad():
        relax.alphas["normal"].normal_()
    mask = relax.mask("normal")
    assert mask.tolist() == [[True, False, True, False], [False, True, True, True], [False, False, False, True]]
    w = relax.weights(relax.sample(torch.Generator()))["normal"]
    assert (w[~mask] == 0).all() and (w[mask] > 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(3, dtype=torch.float64))
    alpha = relax.alphas["normal"].detach()
    strengths = relax.strengths()["normal"]  # DrNAS derives from softmax(alpha) over the kept ops
    torch.testing.assert_close(strengths[1, 1:], torch.softmax(alpha[1, 1:], 0))
    assert strengths[2].tolist() == [0.0, 0.0, 0.0, 1.0]
    mean = relaxation(kept=kept, eval_weights="mean")
    mean.load_state_dict(relax.state_dict())
    conc = torch.nn.functional.elu(alpha[0, [0, 2]]) + 1
    torch.testing.assert_close(mean.strengths()["normal"][0, [0, 2]], conc / conc.sum())


@pytest.mark.parametrize("kept, message", [
    ([["a"]], "relaxation.kept must map each cell type ['normal']"),
    ({"normal": [["a"]] * 2}, "relaxation.kept.normal must list the kept ops of each of its 3 edges"),
    ({"normal": [["a"], ["e"], ["b"]]}, "relaxation.kept.normal[1] must be distinct op names of the space (a, b, c"),
    ({"normal": [["a"], [], ["b"]]}, "relaxation.kept.normal[1] must be distinct op names"),
    ({"normal": [["a", "a"], ["c"], ["b"]]}, "relaxation.kept.normal[0] must be distinct op names"),
    ({"normal": [["a"], [3], ["b"]]}, "relaxation.kept.normal[1] must be distinct op names"),
])
def test_a_kept_list_that_does_not_fit_the_space_is_refused(kept, message):
    with pytest.raises(ValueError) as raised:
        relaxation(kept=kept)
    assert str(raised.value).startswith(message), raised.value


def record(relax: DirichletRelaxation, rows: int, prune_to: tuple[int, ...] = (2,), name: str = "dirichlet",
           supernet=None, edge_spec: ArchSpec | None = None):
    """What the stage hooks read of a finished stage (a SearchRecord's fields)."""
    config = SimpleNamespace(relaxation=Component(name, None), settings={"drnas": DrnasSettings(prune_to=prune_to)})
    return SimpleNamespace(config=config, relaxation=relax, spec=edge_spec or spec(rows), supernet=supernet)


def test_pruning_keeps_the_strongest_ops_of_each_edge_not_a_global_top_k():
    relax = relaxation()
    with torch.no_grad():
        relax.alphas["normal"].copy_(torch.tensor([[3.0, 2.0, 0.0, 1.0],
                                                   [0.0, 1.0, 3.0, 2.0],
                                                   [0.5, 0.1, 0.2, 0.9]]))
    layer: dict = {}
    progressive.nas_stage_config(stage=1, finished=record(relax, 3), layer=layer)
    # per edge, in the space's op order; summed over edges the top 2 would be c and d everywhere
    assert layer == {"relaxation": {"kept": {"normal": [["a", "b"], ["c", "d"], ["a", "d"]]}}}
    # a later stage never revives an op pruned before, however large its alpha
    pruned = relaxation(kept=layer["relaxation"]["kept"])
    with torch.no_grad():
        pruned.alphas["normal"].copy_(torch.tensor([[1.0, 2.0, 9.0, 9.0]] * 3))
    later: dict = {}
    progressive.nas_stage_config(stage=2, finished=record(pruned, 3, prune_to=(2, 1)), layer=later)
    assert later["relaxation"]["kept"]["normal"] == [["b"], ["c"], ["d"]]
    carried: dict = {}  # no pruning set for this stage: the mask carries over
    progressive.nas_stage_config(stage=2, finished=record(pruned, 3, prune_to=(2,)), layer=carried)
    assert carried["relaxation"]["kept"] == layer["relaxation"]["kept"]


@pytest.mark.parametrize("finished", [
    lambda: record(relaxation(), 3, name="softmax"),  # not a DrNAS search
    lambda: record(relaxation(), 3, prune_to=()),  # a DrNAS staged search without pruning
])
def test_the_stage_hook_leaves_other_searches_alone(finished):
    layer: dict = {}
    progressive.nas_stage_config(stage=1, finished=finished(), layer=layer)
    assert layer == {}


def stage(k: int, kept=None, seed: int = 0):
    torch.manual_seed(seed)
    space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=12, nodes=2, ops=DRNAS_OPS,
                                          edge=Component("partial_channels", PartialChannelOptions(k=k))))
    relax = DirichletRelaxation(DirichletOptions(kept=kept), spec=space.arch_spec())
    return space, space.build_supernet(DataInfo((1, 8, 8), 10)), relax


@pytest.mark.parametrize("inherit_weights", [True, False])
def test_a_later_stage_starts_from_the_previous_alphas_and_widened_weights(inherit_weights):
    space1, net1, relax1 = stage(6)
    with torch.no_grad():
        relax1.alphas["normal"].normal_()
        relax1.alphas["reduce"].normal_()
    finished = record(relax1, 0, prune_to=(4,), supernet=net1, edge_spec=space1.arch_spec())
    layer: dict = {}
    progressive.nas_stage_config(stage=1, finished=finished, layer=layer)
    space2, net2, relax2 = stage(4, kept=layer["relaxation"]["kept"], seed=1)
    fresh = {k: v.clone() for k, v in net2.state_dict().items()}
    config = SimpleNamespace(relaxation=Component("dirichlet", None),
                             settings={"drnas": DrnasSettings(prune_to=(4,), inherit_weights=inherit_weights)})
    run = SimpleNamespace(previous_stage=finished, config=config, spec=space2.arch_spec(), stage=2,
                          components={"relaxation": relax2, "supernet": net2})
    progressive.nas_run_start(run)
    for t in ("normal", "reduce"):  # the kept ops' alphas, the pruned ones at 0 (DrNAS's prune)
        mask = relax2.mask(t)
        assert mask.sum(-1).tolist() == [4] * 5
        assert torch.equal(relax2.alphas[t].detach(), relax1.alphas[t].detach() * mask)
    old, new = net1.state_dict(), net2.state_dict()
    name = "cells.0.edges.0.ops.3.body.1.weight"  # sep_conv_3x3's first pointwise conv: 2 -> 3 channels
    assert old[name].shape[:2] == (2, 2) and new[name].shape[:2] == (3, 3)
    if inherit_weights:
        assert torch.equal(new["stem.0.weight"], old["stem.0.weight"])
        assert torch.equal(new[name], old[name][[0, 1, 0]][:, [0, 1, 0]])  # new channel 2 copies channel 0
    else:
        assert all(torch.equal(v, fresh[k]) for k, v in new.items())


def test_a_run_that_is_not_a_later_drnas_stage_is_left_alone():
    _, net, relax = stage(4)
    before = {k: v.clone() for k, v in relax.state_dict().items()}
    for previous, name in ((None, "dirichlet"), (record(relaxation(), 3), "softmax")):
        run = SimpleNamespace(previous_stage=previous, config=SimpleNamespace(relaxation=Component(name, None)),
                              components={"relaxation": relax, "supernet": net})
        progressive.nas_run_start(run)
    assert all(torch.equal(v, before[k]) for k, v in relax.state_dict().items())


def test_widening_copies_channels_cyclically_and_narrowing_keeps_the_first():
    old = torch.arange(6.0).view(2, 3)
    assert widened(old, torch.Size([3, 5])).tolist() == [[0, 1, 2, 0, 1], [3, 4, 5, 3, 4], [0, 1, 2, 0, 1]]
    assert widened(old, torch.Size([1, 3])).tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match=r"a tensor of shape \(2, 3\) cannot become \(6,\)"):
        widened(old, torch.Size([6]))


def test_the_presets(registries):
    demo = resolve(registries, [], preset="drnas_demo")
    assert demo.relaxation.name == "dirichlet" and demo.space.options.ops == DRNAS_OPS
    assert demo.space.options.edge == Component("partial_channels", PartialChannelOptions(k=6, skip_zero_weights=True))
    assert demo.settings["drnas"].prune_to == (4,) and len(demo.search.stages) == 2
    paper = resolve(registries, [], preset="drnas_paper")
    o = paper.optimizer.options
    assert (paper.optimizer.name, o.sample, o.freeze_alpha_epochs, o.arch_weight_decay) == (
        "darts_1st", "pass", 10, 0.0)
    assert (o.w_lr, o.w_lr_min, o.w_momentum, o.w_weight_decay, o.grad_clip, o.arch_lr, o.arch_betas) == (
        0.1, 0.0, 0.9, 3e-4, 5.0, 6e-4, (0.5, 0.999))
    r = paper.relaxation.options
    assert (r.regularizer, r.reg_scale, paper.space.options.cells, paper.space.options.channels) == ("l2", 1e-3, 20, 36)
    assert (paper.search.epochs, paper.search.batch_size, paper.space.options.edge.options.k) == (25, 64, 6)
    assert paper.search.stages == ({}, {"space": {"edge": {"k": 4}}})
    assert paper.network.drop_path == 0.3 and paper.train.batch_size == 64


TINY_DRNAS = ["--preset", "drnas_demo", "--set", "space.cells=3", "--set", "search.batch_size=16",
              "--set", "search.max_steps_per_epoch=2", "--no-progress"]
BAD = [
    (["--set", "drnas.prune_to=[0]"], "invalid drnas option: prune_to: every stage keeps at least 1 op per edge"),
    (["--set", "relaxation.regularizer=l1"], "invalid relaxation option: 'regularizer' must be in"),
    (["--set", "space.channels=8"], "mixed edge 'partial_channels': space.edge.k=6 must divide the channels"),
    (["--set", "relaxation.kept={normal: [[skip_connect]]}"], "relaxation 'dirichlet': relaxation.kept must map"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[a[-1] for a, _ in BAD])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    # a plain search: a staged one writes RUN_DIR/config.yaml before it builds the first stage
    err = refused(capsys, ["run", *TINY_DRNAS, "--set", "search.stages=[]", *args], tmp_path / "out")
    assert err.startswith(f"nas: error: {message}"), err


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes (issue 20)
def test_a_tiny_two_stage_search_end_to_end(tmp_path):
    """Stage 1 trains alpha in its second epoch; stage 2 keeps it frozen, so its alphas are stage 1's
    with the pruned entries at 0, exactly."""
    config = tmp_path / "stages.yaml"
    config.write_text(yaml.safe_dump({"search": {"stages": [{}, {"space": {"edge": {"k": 4}},
                                                                 "optimizer": {"freeze_alpha_epochs": 2}}]}}))
    out = tmp_path / "run"
    assert cli.main(["run", *TINY_DRNAS, "--config", str(config), "--set", "search.epochs=2",
                     "--set", "optimizer.freeze_alpha_epochs=1", "--out", str(out)]) == 0
    toolkit = Toolkit.load()
    first, second = toolkit.load_search(out, stage=1), toolkit.load_search(out, stage=2)
    assert "arch_l2" in first.metrics and "arch_loss" not in second.metrics
    assert second.config.space.options.edge.options.k == 4 and first.supernet.cells[0].edges[0].part == 2
    kept = second.config.relaxation.options.kept
    assert all(len(ops) == 4 for rows in kept.values() for ops in rows)
    for t in ("normal", "reduce"):
        mask = second.relaxation.mask(t)
        assert torch.equal(second.relaxation.alphas[t], first.relaxation.alphas[t] * mask)
        # the result's cells use, on every edge they keep, one of that edge's kept ops
        edges = second.spec.edges[t]
        for j, node in enumerate(second.genotype.cells[t].nodes):
            for op, src in node:
                assert op in kept[t][edges.index((src, second.spec.num_inputs + j))]
    assert (out / "genotype.json").read_text() == (out / "stage_2" / "genotype.json").read_text()

