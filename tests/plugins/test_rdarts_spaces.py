"""RobustDARTS's spaces S1-S4 and op-set presets (plugin nas_robust_darts, nas_robust_darts.spaces): each
space's supernet builds exactly its allowed ops per edge, and derives only them even from alphas that
favour a disallowed op; the noise op's statistics, shape, stride, missing input gradient and
reproducibility; the presets; tiny searches of S1 and S4 end to end. The side-by-side check against the
authors' code is benchmarks/fidelity/rdarts_spaces.py."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY, refused
from nas_core import DataInfo, Discretizer, Relaxation, Toolkit, cli, hookimpl
from nas_core.components import build_space
from nas_core.config import Layer, resolve
from nas_core.registry import build
from nas_darts.options import CNN_OPS
from nas_robust_darts.noise import NoiseOp
from nas_robust_darts.spaces import NO_SKIP, S1, S1_OPS, UNIFORM

INFO = DataInfo((1, 8, 8), 10)
SMALL = {"space": {"cells": 3, "channels": 4}}


def allowed(space: str, cell_type: str, row: int) -> set[str]:
    return set(S1[cell_type][row]) if space == "s1" else set(UNIFORM[space])


def built(registries, preset: str):
    config = resolve(registries, [Layer(SMALL, "test")], preset=preset)
    space = build_space(registries, config.space)
    spec = space.arch_spec()
    relax = build(registries.relaxations, config.relaxation, Relaxation, spec=spec).double()
    discretizer = build(registries.discretizers, config.discretizer, Discretizer)
    return config, space, spec, space.build_supernet(INFO).double(), relax, discretizer


@pytest.mark.parametrize("space", ["s1", "s2", "s3", "s4"])
def test_each_edge_builds_exactly_its_allowed_ops(registries, space):
    _, _, spec, net, _, _ = built(registries, f"rdarts_{space}_demo")
    assert spec.ops == (S1_OPS if space == "s1" else UNIFORM[space])
    for cell in net.cells:
        cell_type = "reduce" if cell.reduction else "normal"
        for row, edge in enumerate(cell.edges):
            names = [spec.ops[c] for c in edge.columns]  # the ops the edge computes (`none` never is)
            assert set(names) == allowed(space, cell_type, row) - {"none"} and len(edge.ops) == len(names)


@pytest.mark.parametrize("space", ["s1", "s2", "s3", "s4"])
def test_alphas_favouring_a_disallowed_op_still_derive_only_allowed_ops(registries, space):
    _, _, spec, _, relax, discretizer = built(registries, f"rdarts_{space}_demo")
    with torch.no_grad():
        for cell_type, alpha in relax.alphas.items():
            for row in range(alpha.shape[0]):
                ok = allowed(space, cell_type, row)
                for col, op in enumerate(spec.ops):
                    # a disallowed op (S1) or `none` (S3) far ahead; among the allowed ones the last wins
                    alpha[row, col] = 10.0 if op not in ok or op == "none" else float(col) / 10
    genotype = discretizer.derive(relax.strengths(), spec)
    for cell_type, edges in spec.edges.items():
        for j, node in enumerate(genotype.cells[cell_type].nodes):
            assert len(node) == 2
            for op, src in node:
                row = edges.index((src, 2 + j))
                ok = allowed(space, cell_type, row) - {"none"}
                assert op in ok and op == max(ok, key=spec.ops.index)
    if space == "s1":  # a disallowed op weighs exactly 0 and gets no gradient
        weights = relax.weights()
        weights["normal"].sum().backward()
        mask = relax.mask("normal")
        assert torch.all(weights["normal"][~mask] == 0) and torch.all(relax.alphas["normal"].grad[~mask] == 0)


def test_the_s1_table_is_theirs():
    # src/spaces.py primitives_1, first and last edges of both cells, and its op count per edge
    assert S1["normal"][0] == ("skip_connect", "dil_conv_3x3") and S1["normal"][13] == ("dil_conv_3x3", "dil_conv_5x5")
    assert S1["reduce"][0] == ("max_pool_3x3", "avg_pool_3x3") and S1["reduce"][6] == ("max_pool_3x3", "sep_conv_3x3")
    assert all(len(rows) == 14 and all(len(p) == 2 for p in rows) for rows in S1.values())
    assert S1_OPS == ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5")


def test_the_presets(registries):
    for space in ("s1", "s2", "s3", "s4"):
        demo = resolve(registries, [], preset=f"rdarts_{space}_demo")
        paper = resolve(registries, [], preset=f"rdarts_{space}_paper")
        assert demo.dataset.name == "digits" and demo.space.options.cells == 4
        assert (paper.space.options.cells, paper.space.options.channels, paper.search.epochs,
                paper.search.batch_size, paper.optimizer.name) == (8, 16, 50, 64, "darts_2nd")
        assert demo.space.options.ops == paper.space.options.ops
    s1 = resolve(registries, [], preset="rdarts_s1_paper")
    assert s1.relaxation.options.kept == s1.space.options.edge.options.kept
    assert s1.relaxation.options.kept["reduce"][4] == ["skip_connect", "dil_conv_5x5"]
    assert s1.space.options.edge.options.skip_dropout == 0.0
    for name in ("no_skip_demo", "no_skip_paper"):
        ops = resolve(registries, [], preset=name).space.options.ops
        assert ops == NO_SKIP and "skip_connect" not in ops and len(ops) == 7
        assert tuple(op for op in CNN_OPS if op != "skip_connect") == ops
    assert resolve(registries, [], preset="deep_paper").space.options.cells == 14
    assert resolve(registries, [], preset="deep_demo").space.options.cells == 8


def test_no_skip_never_derives_skip(registries):
    _, _, spec, _, relax, discretizer = built(registries, "no_skip_demo")
    assert "skip_connect" not in spec.ops
    genotype = discretizer.derive(relax.strengths(), spec)
    assert all(op != "skip_connect" for cell in genotype.cells.values() for node in cell.nodes for op, _ in node)


@pytest.mark.parametrize("stride, shape", [(1, (64, 3, 9, 9)), (2, (64, 3, 5, 5))])
def test_the_noise_op_draws_standard_normal_noise_shaped_like_the_input(stride, shape):
    op = NoiseOp(stride)
    x = torch.randn(64, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    for mode in (op.train, op.eval):
        mode()
        out = op(x)
        assert out.shape == shape and out.dtype == torch.float64 and not out.requires_grad
        assert abs(float(out.mean())) < 0.05 and abs(float(out.std()) - 1) < 0.05  # n >= 4800: 5 sigma < 0.08
    assert not torch.equal(op(x), op(x))  # fresh noise at every call
    assert NoiseOp(stride)(x.to(memory_format=torch.channels_last)).shape == shape


def test_the_noise_op_gives_no_gradient_to_its_input_but_one_to_its_weight():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    w = torch.tensor(0.5, requires_grad=True)
    (w * NoiseOp(1)(x) + 0 * x).sum().backward()
    assert torch.all(x.grad == 0) and w.grad is not None and float(w.grad) != 0


def test_the_noise_op_repeats_with_the_seed():
    x = torch.zeros(2, 3, 4, 4)
    torch.manual_seed(7)
    a = NoiseOp(1)(x)
    torch.manual_seed(7)
    b = NoiseOp(1)(x.to(memory_format=torch.channels_last))
    assert torch.equal(a, b) and torch.equal(a, torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(7)))


def test_a_recomputed_noise_edge_redraws_the_same_noise(registries):
    # space.recompute_edges recomputes an edge in backward: the same draws, so the same gradients
    def grads(recompute: bool):
        config = resolve(registries, [Layer({"space": {"cells": 3, "channels": 4, "recompute_edges": recompute}},
                                            "test")], preset="rdarts_s4_demo")
        space = build_space(registries, config.space)
        torch.manual_seed(0)
        net = space.build_supernet(INFO)
        relax = build(registries.relaxations, config.relaxation, Relaxation, spec=space.arch_spec())
        torch.manual_seed(1)
        out = net(torch.randn(2, 1, 8, 8), arch_weights=relax.weights())
        return torch.autograd.grad(out.square().sum(), list(relax.parameters()) + list(net.parameters()))

    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(grads(False), grads(True)))


@pytest.mark.parametrize("space", ["s1", "s4"])
def test_a_tiny_search_end_to_end(tmp_path, monkeypatch, space):
    monkeypatch.setenv("NAS_DISABLE_PLUGINS", "tensorboard")
    runs = []
    for name in ("a", "b"):  # the same seed: the same noise, the same alphas and cell
        out = tmp_path / name
        assert cli.main(["run", "--preset", f"rdarts_{space}_demo", *TINY, "--set", "search.epochs=1",
                         "--out", str(out)]) == 0
        runs.append(out)
    genotype = json.loads((runs[0] / "genotype.json").read_text())
    assert genotype == json.loads((runs[1] / "genotype.json").read_text())
    for cell_type in ("normal", "reduce"):
        rows = [(src, 2 + j) for j in range(4) for src in range(2 + j)]
        for j, node in enumerate(genotype[cell_type]["nodes"]):
            for op, src in node:
                assert op in allowed(space, cell_type, rows.index((src, 2 + j)))


def test_an_interrupted_s4_search_resumes_with_the_same_noise(tmp_path, monkeypatch):
    """The noise draws from the global generator, whose state the checkpoint keeps: a search stopped
    after its first epoch and resumed ends with the alphas and weights of an uninterrupted one."""
    monkeypatch.setenv("NAS_DISABLE_PLUGINS", "tensorboard")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    args = ["run", "--preset", "rdarts_s4_demo", *TINY, "--set", "search.epochs=2"]
    assert cli.main([*args, "--out", str(whole)]) == 0

    class StopAsEpochTwoStarts:
        @hookimpl
        def nas_epoch_start(self, run):
            if run.epoch == 1:
                raise KeyboardInterrupt

    assert cli.main([*args, "--out", str(broken)], plugins=[StopAsEpochTwoStarts()]) == 130
    assert cli.main(["run", "--resume", str(broken), "--no-progress"]) == 0
    toolkit = Toolkit.load()
    a, b = toolkit.load_search(whole), toolkit.load_search(broken)
    assert all(torch.equal(x, y) for x, y in zip(a.relaxation.parameters(), b.relaxation.parameters()))
    assert all(torch.equal(x, y) for x, y in zip(a.supernet.state_dict().values(), b.supernet.state_dict().values()))


BAD = [
    ("rdarts_s1_demo", ["--set", "space.nodes=3"], "relaxation 'masked_softmax': relaxation.kept.normal must list"),
    ("rdarts_s1_demo", ["--set", "space.nodes=5"], "mixed edge 'pdarts': space.edge.kept has no op list for edge 14"),
    ("rdarts_s4_demo", ["--set", "space.ops=[noise, bogus]"],
     "--set: space.ops: unknown ops ['bogus']; valid ops: none, "),
]


@pytest.mark.parametrize("preset, args, message", BAD, ids=[a[-1] for _, a, _ in BAD])
def test_bad_input_is_one_line(tmp_path, capsys, preset, args, message):
    err = refused(capsys, ["run", "--preset", preset, *TINY, *args], tmp_path / "out")
    assert err.startswith(f"nas: error: {message}"), err
