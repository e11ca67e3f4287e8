"""The open contract, proven by a third-party package (tests/third_party/nas-contract-example) that
imports only nas_core's exports and is found through its entry point: a new op, a partial-channel
mixed edge, a Dirichlet relaxation with a KL regulariser, an SDARTS-RS perturbation, alpha warm-up
through the built-in option, a 2-stage search that prunes ops, and a command that reads a finished
search back. Each part's effect is asserted, not only that it runs."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO, TINY, StepRun, image_task
from nas_core import DataInfo, Genotype, MixingWeights, Toolkit
from nas_core import cli

PACKAGE = REPO / "tests" / "third_party" / "nas-contract-example"
PLUGIN = "contract_example"
SEARCH = ["run", *TINY, "--set", "search.epochs=1"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory):
    """The package pip-installed into a folder put on sys.path: nas finds it by its entry point."""
    tmp = tmp_path_factory.mktemp("contract")
    # built from a copy: setuptools leaves build/ beside the sources, which a later build would reuse
    source, target = tmp / "source", tmp / "site"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(target))
        # the example's partial_channels and dirichlet are also the names of the built-in PC-DARTS and
        # DrNAS components: those two plugins stay out, as a user would disable one of two that clash
        own = [name for name in os.environ["NAS_ONLY_PLUGINS"].split(",") if name not in ("pcdarts", "drnas")]
        mp.setenv("NAS_ONLY_PLUGINS", ",".join([*own, PLUGIN]))
        mp.setenv("NAS_DISABLE_PLUGINS", "tensorboard")
        yield target


@pytest.fixture(scope="module")
def toolkit(installed) -> Toolkit:
    return Toolkit.load()


def test_the_package_imports_only_nas_core_exports():
    import nas_core

    for path in (PACKAGE / "nas_contract_example").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nas"):
                assert node.module in ("nas_core", "nas_contract_example") or node.module.startswith(
                    "nas_contract_example."), f"{path.name} imports {node.module}"
                if node.module == "nas_core":
                    assert {a.name for a in node.names} <= set(nas_core.__all__), path.name
        assert len(path.read_text().splitlines()) <= 80, f"{path.name} is over 80 lines"


def test_a_plugin_op_is_searched_and_trained(toolkit, tmp_path):
    ops = "[none,skip_connect,conv_7x1_1x7]"
    assert cli.main([*SEARCH, "--set", f"space.ops={ops}", "--out", str(tmp_path / "s")]) == 0
    record = toolkit.load_search(tmp_path / "s")
    assert record.spec.ops == ("none", "skip_connect", "conv_7x1_1x7")
    assert all(a.shape[-1] == 3 for a in record.relaxation.parameters())  # a column of alpha per op
    convs = [m for m in record.supernet.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 7)]
    assert len(convs) == 14 * 3  # its 1x7 conv on every edge of the 3 cells (14 edges each)

    node = [["conv_7x1_1x7", 0], ["skip_connect", 1]]
    text = yaml.safe_dump({t: {"nodes": [node] * 4, "concat": [2, 3, 4, 5]} for t in ("normal", "reduce")})
    genotype = Genotype.from_dict(yaml.safe_load(text))
    assert cli.main(["train", "--genotype", genotype.to_json(), "--set", "train.batch_size=16",
                     "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2",
                     "--out", str(tmp_path / "t")]) == 0
    trained = toolkit.load_training(tmp_path / "t")
    assert trained.genotype == genotype and trained.params > 0
    assert cli.main(["show", genotype.to_json(), "--out", str(tmp_path / "cell")]) == 0  # drawn and checked too
    assert "conv_7x1_1x7" in (tmp_path / "cell_normal.dot").read_text()
    # the network the training built and checkpointed holds the plugin's op: once per node of every cell
    from nas_core.checkpoint import load_checkpoint

    weights = load_checkpoint(tmp_path / "t" / "checkpoint.pt")["network"]
    assert sum(1 for w in weights.values() if w.dim() == 4 and w.shape[-2:] == (1, 7)) == 4 * trained.config.network.cells


def test_an_unknown_op_names_the_plugin_ops_among_the_valid_ones(installed, capsys):
    assert cli.main([*SEARCH, "--set", "space.ops=[none,conv_9x9]"]) == 2
    err = capsys.readouterr().err
    assert "space.ops: unknown ops ['conv_9x9']" in err and "conv_7x1_1x7" in err


def test_the_partial_channel_edge_computes_its_ops_on_c_over_k_channels(toolkit):
    from torch.utils.flop_counter import FlopCounterMode

    from nas_core import Catalog, Component

    catalog = Catalog(toolkit.registries.operations, toolkit.registries.mixed_edges)
    ops = ("none", "sep_conv_3x3", "dil_conv_3x3", "conv_7x1_1x7")

    def edge(kind: str, channels: int, k: int = 4):
        def make_op(name, c):
            return catalog.operations.get("darts_cnn", name).factory(c, 1, False, True)

        options = toolkit.registries.mixed_edges.get(kind).options
        return catalog.mixed_edge(Component(kind, options(k=k) if options else None), ops=ops, channels=channels,
                                  stride=1, make_op=make_op, zero=frozenset({"none"}))

    def flops(module, x):
        with FlopCounterMode(display=False) as counter:
            module(x, torch.full((4,), 0.25))
        return counter.get_total_flops()

    x = torch.randn(2, 16, 8, 8)
    partial, whole_quarter = edge("partial_channels", 16), edge("weighted_sum", 4)
    assert flops(partial, x) == flops(whole_quarter, x[:, :4]) > 0
    assert flops(edge("weighted_sum", 16), x) > 3 * flops(partial, x)
    out = partial(x, torch.full((4,), 0.25))
    assert out.shape == x.shape
    # the shuffle interleaves the bypassed channels: channel 1 of the output is input channel 4
    assert torch.equal(out[:, 1], x[:, 4])


def _darts(relaxation, second_order: bool, info=DataInfo((1, 8, 8), 10)):
    from nas_darts.architect import DartsOptimizer
    from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
    from nas_darts.options import DartsOptions

    torch.manual_seed(0)
    space = DartsCnnSpace(DartsCnnOptions(cells=1, channels=4, nodes=2))
    net = space.build_supernet(info).double()
    relax = relaxation(space.arch_spec()).double()
    task = image_task(info)
    return DartsOptimizer(DartsOptions(), supernet=net, relaxation=relax, task=task, epochs=1,
                          second_order=second_order), relax


@pytest.mark.parametrize("second_order", [False, True])
def test_the_kl_regulariser_adds_its_analytic_gradient(installed, second_order):
    from torch.distributions import Dirichlet, kl_divergence

    from nas_contract_example.dirichlet import DirichletRelaxation
    from nas_contract_example.options import DirichletOptions

    batch = (torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    grads = {}
    for weight in (0.0, 0.5):
        opt, relax = _darts(lambda spec: DirichletRelaxation(DirichletOptions(kl_weight=weight), spec=spec),
                            second_order)
        torch.manual_seed(1)
        out, grads[weight] = opt.arch_gradient(batch, batch, sample=123)
        assert ("kl" in out.stats) == (weight > 0)
    beta = [p.detach().clone().requires_grad_(True) for p in relax.parameters()]
    kl = sum(kl_divergence(Dirichlet(torch.nn.functional.elu(b) + 1), Dirichlet(torch.ones_like(b))).sum()
             for b in beta)
    analytic = torch.autograd.grad(0.5 * kl, beta)
    for with_kl, without, expected in zip(grads[0.5], grads[0.0], analytic):
        assert torch.allclose(with_kl - without, expected, atol=1e-9)
        assert expected.abs().max() > 1e-6


def test_random_smoothing_perturbs_the_weight_pass_only(installed):
    from nas_contract_example.options import SmoothingOptions
    from nas_contract_example.smoothing import RandomSmoothing
    from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation

    opt, relax = _darts(lambda spec: SoftmaxRelaxation(SoftmaxOptions(), spec=spec), second_order=True)
    seen: list[MixingWeights] = []
    forward = opt.net.forward
    opt.net.forward = lambda x, arch_weights: (seen.append(arch_weights), forward(x, arch_weights=arch_weights))[1]
    batch = (torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    clean = {k: v.detach().clone() for k, v in relax.weights().items()}
    perturbation = RandomSmoothing(SmoothingOptions(epsilon=0.3), spec=None)
    opt.step(batch, batch, {}, StepRun(components={"perturbation": perturbation}))
    # the architecture passes (virtual step, validation, the two finite-difference passes) read
    # the clean weights of alpha before its update; the weight pass alone reads noisy ones
    *arch_passes, weight_pass = seen
    assert len(arch_passes) == 4
    for mix in arch_passes:
        assert all(torch.equal(mix[k].detach(), clean[k]) for k in clean)
    noisy = {k: weight_pass[k] - relax.weights()[k].detach() for k in clean}
    assert all(0 < d.abs().max() <= 0.3 * 2 for d in noisy.values())
    assert all(torch.allclose(weight_pass[k].sum(-1), torch.ones(len(weight_pass[k]), dtype=torch.float64))
               for k in clean)


def test_alpha_warm_up_is_the_built_in_option(installed):
    import attrs

    from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation

    opt, relax = _darts(lambda spec: SoftmaxRelaxation(SoftmaxOptions(), spec=spec), second_order=False)
    opt.opts = attrs.evolve(opt.opts, freeze_alpha_epochs=1)
    batch = (torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    before = [p.detach().clone() for p in relax.parameters()]
    weights_before = [p.detach().clone() for p in opt.weights]
    result = opt.step(batch, batch, {}, StepRun(epoch=0))
    assert all(torch.equal(a, b) for a, b in zip(before, relax.parameters()))  # alpha frozen in epoch 0
    assert any(not torch.equal(a, b) for a, b in zip(weights_before, opt.weights))  # the weights trained
    assert set(result.metrics) == {"train"}
    result = opt.step(batch, batch, {}, StepRun(epoch=1))
    assert any(not torch.equal(a, b) for a, b in zip(before, relax.parameters()))
    assert set(result.metrics) == {"train", "arch"}


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes (issue 20)
def test_a_two_stage_search_prunes_ops_and_inherits_the_rest(toolkit, tmp_path):
    config = tmp_path / "stages.yaml"
    # stage 2 keeps alpha frozen all along, so its final alphas are exactly what it inherited
    config.write_text(yaml.safe_dump({"pruning": {"drop": 2}, "search": {"stages": [
        {}, {"space": {"cells": 4}, "optimizer": {"freeze_alpha_epochs": 5}}]}}))
    run = tmp_path / "run"
    assert cli.main([*SEARCH, "--config", str(config), "--out", str(run)]) == 0
    first, second = toolkit.load_search(run, stage=1), toolkit.load_search(run, stage=2)
    assert len(first.spec.ops) == 8 and len(second.spec.ops) == 6 and set(second.spec.ops) < set(first.spec.ops)
    assert second.config.space.options.cells == 4 and first.config.space.options.cells == 3
    strengths = first.relaxation.strengths()
    score = {op: float(sum(s[:, i].sum() for s in strengths.values())) for i, op in enumerate(first.spec.ops)}
    dropped = set(first.spec.ops) - set(second.spec.ops)
    assert max(score[op] for op in dropped) <= min(score[op] for op in second.spec.ops if op != "none")
    kept = [first.spec.ops.index(op) for op in second.spec.ops]
    for (name, old), (_, new) in zip(first.relaxation.named_parameters(), second.relaxation.named_parameters()):
        assert torch.equal(new, old[..., kept]), name
    assert toolkit.load_search(run).stage == 2  # the run reads back as its last stage
    assert cli.main(["derive", str(run)]) == 0  # and derives from it
    assert Genotype.from_json((run / "stage_2" / "derived_topk.json").read_text()).cells["normal"].nodes
    assert cli.main(["run", "--resume", str(run), "--no-progress"]) == 0  # finished: nothing runs again


def test_the_alphas_command_prints_the_checkpoint_alphas(toolkit, tmp_path, capsys):
    assert cli.main([*SEARCH, "--out", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    assert cli.main(["alphas", str(tmp_path / "s")]) == 0
    lines = capsys.readouterr().out.splitlines()
    from nas_core.checkpoint import load_checkpoint

    alphas = load_checkpoint(tmp_path / "s" / "checkpoint.pt")["relaxation"]
    rows = [(t, row) for t in ("normal", "reduce") for row in torch.softmax(alphas[f"alphas.{t}"], -1)]
    assert len(lines) == len(rows) == 28
    for line, (cell_type, row) in zip(lines, rows):
        assert line.startswith(cell_type)
        printed = [float(item.split("=")[1]) for item in line.split()[2:]]
        assert printed == pytest.approx(row.tolist(), abs=1e-6)


@pytest.mark.parametrize("per", ["step", "pass"])
def test_a_sample_per_step_or_per_pass(installed, per):
    import attrs

    from nas_contract_example.dirichlet import DirichletRelaxation
    from nas_contract_example.options import DirichletOptions

    opt, relax = _darts(lambda spec: DirichletRelaxation(DirichletOptions(), spec=spec), second_order=True)
    opt.opts = attrs.evolve(opt.opts, sample=per)
    seen: list[MixingWeights] = []
    forward = opt.net.forward
    opt.net.forward = lambda x, arch_weights: (seen.append(arch_weights), forward(x, arch_weights=arch_weights))[1]
    batch = (torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    opt.step(batch, batch, {}, StepRun())
    virtual, val, plus, minus, _ = [m["normal"].detach() for m in seen]
    assert torch.equal(plus, minus)  # the finite difference's two sides always share a draw
    assert torch.equal(virtual, val) == (per == "step") and torch.equal(val, plus) == (per == "step")


def test_a_perturbation_through_the_cli_and_one_the_optimizer_cannot_apply(installed, tmp_path, capsys):
    assert cli.main([*SEARCH, "--optimizer", "darts_1st", "--perturbation", "random_smoothing",
                     "--set", "perturbation.epsilon=0.1", "--out", str(tmp_path / "s")]) == 0
    assert yaml.safe_load((tmp_path / "s" / "config.yaml").read_text())["perturbation"] == {
        "name": "random_smoothing", "epsilon": 0.1}
    assert cli.main([*SEARCH, "--preset", "ws_random_demo", "--perturbation", "random_smoothing",
                     "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "optimizer 'ws_random' does not apply perturbations" in err and not (tmp_path / "w").exists()


def test_the_partial_channel_edge_keeps_recompute_and_channels_last(installed):
    """darts_cnn's own options work with a plugin's edge: recomputing edges in backward gives the
    same loss and gradients, in either memory format."""
    from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
    from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation

    from nas_core import Component, installed_catalog

    installed_catalog.cache_clear()  # the catalog of the installed plugins, this one included
    results = []
    for recompute, channels_last in ((False, False), (True, False), (True, True)):
        torch.manual_seed(0)
        space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=8, edge=Component("partial_channels", _pc(2)),
                                              recompute_edges=recompute, channels_last=channels_last))
        net = space.build_supernet(DataInfo((1, 8, 8), 10))
        relax = SoftmaxRelaxation(SoftmaxOptions(), spec=space.arch_spec())
        x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        loss = net(x, arch_weights=relax.weights()).square().mean()
        grads = torch.autograd.grad(loss, [*net.parameters(), *relax.parameters()])
        results.append((loss.detach(), grads))
        assert sum(type(m).__name__ == "PartialChannelEdge" for m in net.modules()) == 3 * 14
    for loss, grads in results[1:]:
        assert torch.allclose(loss, results[0][0], atol=1e-6)
        assert all(torch.allclose(g, h, atol=1e-5) for g, h in zip(grads, results[0][1]))
    installed_catalog.cache_clear()


def _pc(k: int):
    from nas_contract_example.options import PartialChannelOptions

    return PartialChannelOptions(k=k)


@pytest.mark.slow  # P-DARTS's staged search resumes across a stage boundary in the default suite
def test_a_staged_search_interrupted_in_its_second_stage_resumes_to_the_same_result(toolkit, tmp_path):
    from nas_core import hookimpl

    config = tmp_path / "stages.yaml"
    config.write_text(yaml.safe_dump({"pruning": {"drop": 1}, "search": {"stages": [{}, {}]}}))
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    args = [*SEARCH, "--set", "search.epochs=2", "--config", str(config)]
    assert cli.main([*args, "--out", str(whole)]) == 0

    class StopInStageTwo:
        @hookimpl
        def nas_epoch_start(self, run):
            if run.stage == 2 and run.epoch == 1:
                raise KeyboardInterrupt

    assert cli.main([*args, "--out", str(broken)], plugins=[StopInStageTwo()]) == 130
    assert (broken / "stage_2" / "checkpoint.pt").is_file() and not (broken / "results.json").exists()
    assert cli.main(["run", "--resume", str(broken), "--no-progress"]) == 0
    assert (broken / "genotype.json").read_text() == (whole / "genotype.json").read_text()
    a, b = toolkit.load_search(whole), toolkit.load_search(broken)
    assert a.stage == b.stage == 2 and a.spec.ops == b.spec.ops and len(a.spec.ops) == 7
    assert all(torch.equal(x, y) for x, y in zip(a.relaxation.parameters(), b.relaxation.parameters()))
    assert all(torch.equal(x, y) for x, y in zip(a.supernet.state_dict().values(), b.supernet.state_dict().values()))


class WeightPenalty:
    """A component adding lambda * ||W||^2 of one supernet weight to the weight loss."""

    def __init__(self, weight: torch.Tensor, lam: float):
        self.weight, self.lam = weight, lam

    def loss_terms(self, objective, mix):
        return {"penalty": self.lam * self.weight.square().sum()} if objective == "weights" else {}


@pytest.mark.parametrize("optimizer", ["darts_2nd", "ws_random"])
def test_every_optimizer_adds_the_weight_loss_terms(installed, optimizer):
    """One SGD step from the same start with and without the term: the weights differ by exactly
    -lr * 2 * lambda * W (first step: the momentum buffer is the gradient itself)."""
    import attrs

    from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation

    batch = (torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    after, lam = [], 0.25
    for with_term in (False, True):
        opt, relax = _darts(lambda spec: SoftmaxRelaxation(SoftmaxOptions(), spec=spec), second_order=True)
        if optimizer == "ws_random":
            from nas_random.options import UniformPathOptions, WsRandomOptions
            from nas_random.weight_sharing import UniformPathRelaxation, WsRandomOptimizer

            relax = UniformPathRelaxation(UniformPathOptions(), spec=_spec())
            opt = WsRandomOptimizer(WsRandomOptions(grad_clip=0.0), supernet=opt.net, relaxation=relax,
                                    task=opt.task, epochs=1)
        else:
            opt.opts = attrs.evolve(opt.opts, grad_clip=0.0)
        target = opt.net.cells[0].pre1.body[0].weight
        start = target.detach().clone()
        components = {"relaxation": relax, "penalty": WeightPenalty(target, lam)} if with_term else {"relaxation": relax}
        result = opt.step(batch, batch, {}, StepRun(components=components))
        assert ("penalty" in result.metrics["train"]) == with_term
        after.append(target.detach().clone())
    lr = 0.025
    assert torch.allclose(after[1] - after[0], -lr * 2 * lam * start, atol=1e-12)


def _spec():
    from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace

    return DartsCnnSpace(DartsCnnOptions(cells=1, channels=4, nodes=2)).arch_spec()


def test_a_staged_search_with_a_bad_component_option_writes_nothing(installed, tmp_path, capsys):
    config = tmp_path / "stages.yaml"
    config.write_text(yaml.safe_dump({"search": {"stages": [{}, {}]}}))
    out = tmp_path / "run"
    assert cli.main([*SEARCH, "--config", str(config), "--set", "space.edge=partial_channels",
                     "--set", "space.edge.k=3", "--out", str(out)]) == 2
    assert "k=3 does not divide the 4 channels" in capsys.readouterr().err
    assert not out.exists()
