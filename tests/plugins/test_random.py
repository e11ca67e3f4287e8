"""Random search and weight-sharing random search (nas_random)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest
import torch

from nas_core import installed_catalog
from nas_darts.cnn_space import DartsCnnSpace
from nas_darts.options import DartsCnnOptions
from nas_random.options import UniformPathOptions, WsSelectOptions
from nas_random.sampler import node_sources, sample_candidate, sample_genotype
from nas_random.weight_sharing import UniformPathRelaxation, WsSelectDiscretizer
from core.stubs import ToySpace, ToySpaceOptions
from test_select import TINY_SEARCH, fake_toolkit, nas, run_command


@pytest.fixture(autouse=True)
def _no_tensorboard_plugin(monkeypatch):
    monkeypatch.setenv("NAS_DISABLE_PLUGINS", "tensorboard")


# -- the sampler -------------------------------------------------------------------------------

def test_sampler_yields_valid_cells_and_covers_every_op_and_predecessor_pair_uniformly():
    """3000 darts_cnn genotypes: every op and every legal pair of predecessors of every node is
    drawn within 20 % of its uniform expectation (about 4 standard deviations at these counts)."""
    space = DartsCnnSpace(DartsCnnOptions())
    spec = space.arch_spec()
    generator = torch.Generator().manual_seed(0)
    live = [op for op in spec.ops if op != spec.zero_op]
    n = 3000
    ops, pairs = Counter(), Counter()
    for _ in range(n):
        genotype = sample_genotype(spec, generator)
        space.validate(genotype)
        for cell_type, cell in genotype.cells.items():
            assert cell.concat == (2, 3, 4, 5)  # what topk produces
            for j, node in enumerate(cell.nodes):
                srcs = [src for _, src in node]
                assert len(node) == spec.inputs_per_node and len(set(srcs)) == len(srcs)
                pairs[cell_type, j + 2, tuple(sorted(srcs))] += 1
                for op, _ in node:
                    assert op != "none"
                    ops[cell_type, j + 2, op] += 1
    for cell_type in spec.edges:
        for dst, srcs in node_sources(spec, cell_type).items():
            legal = list(combinations(srcs, 2))
            assert srcs == list(range(dst))
            for pair in legal:
                expected = n / len(legal)
                assert abs(pairs[cell_type, dst, pair] - expected) <= 0.2 * expected, (cell_type, dst, pair)
            assert sum(pairs[cell_type, dst, p] for p in legal) == n  # no illegal pair ever
            for op in live:
                expected = 2 * n / len(live)
                assert abs(ops[cell_type, dst, op] - expected) <= 0.2 * expected, (cell_type, dst, op)


def test_sampler_works_on_any_space_and_is_reproducible():
    space = ToySpace(ToySpaceOptions(), catalog=installed_catalog())
    spec = space.arch_spec()  # k = 1, no zero op
    seen = Counter()
    for i in range(200):
        genotype = sample_candidate(spec, seed=7, index=i)
        space.validate(genotype)
        seen.update((j, node[0]) for j, node in enumerate(genotype.cells["cell"].nodes))
    assert set(seen) == {(0, ("identity", 0)), (0, ("tanh", 0)), (1, ("identity", 0)), (1, ("tanh", 0)),
                         (1, ("identity", 1)), (1, ("tanh", 1))}
    assert sample_candidate(spec, 7, 3) == sample_candidate(spec, 7, 3)
    darts = DartsCnnSpace(DartsCnnOptions()).arch_spec()
    assert sample_candidate(darts, 7, 3) == sample_candidate(darts, 7, 3) != sample_candidate(darts, 7, 4)


# -- weight-sharing components -----------------------------------------------------------------

def test_uniform_path_draws_one_hot_cells_and_is_uniform_without_a_sample():
    spec = DartsCnnSpace(DartsCnnOptions()).arch_spec()
    relax = UniformPathRelaxation(UniformPathOptions(), spec=spec)
    assert list(relax.parameters()) == [] and relax.state_dict() == {}
    mix = relax.weights(relax.sample(torch.Generator().manual_seed(1)))
    zero = spec.ops.index("none")
    for cell_type, w in mix.items():
        assert w.shape == spec.shape(cell_type) and torch.equal(w.sum(1), torch.ones(len(w)))
        assert mix.chosen[cell_type] == tuple(int(i) for i in w.argmax(1))
        assert sum(c != zero for c in mix.chosen[cell_type]) == 4 * 2  # k = 2 live edges per node
    uniform = relax.weights(None)
    assert uniform.chosen is None and torch.allclose(uniform["normal"], torch.full(spec.shape("normal"), 1 / 8))
    edge = UniformPathRelaxation(UniformPathOptions(mode="edge"), spec=spec)
    cols = Counter(c for _ in range(50) for c in edge.sample(torch.Generator().manual_seed(_))["normal"])
    assert set(cols) == set(range(len(spec.ops)))  # every op, the zero op included


def test_ws_select_without_a_run_returns_a_documented_seeded_sample():
    space = DartsCnnSpace(DartsCnnOptions())
    spec = space.arch_spec()
    a = WsSelectDiscretizer(WsSelectOptions(seed=3)).derive({}, spec)
    space.validate(a)
    assert a == WsSelectDiscretizer(WsSelectOptions(seed=3)).derive({}, spec)


def test_weight_sharing_random_search_end_to_end(tmp_path, capsys):
    run = tmp_path / "ws"
    assert nas("run", "--preset", "ws_random_demo", *TINY_SEARCH, "--set", "discretizer.candidates=3",
               "--set", "discretizer.max_batches=1", "--no-progress", "--out", str(run)) == 0
    out = capsys.readouterr().out
    assert "ws_select_valid_top1_error=" in out and "ws_select_candidate=" in out and "arch_loss" not in out
    genotype = json.loads((run / "genotype.json").read_text())
    assert all(len(node) == 2 and all(op != "none" for op, _ in node)
               for cell in genotype.values() for node in cell["nodes"])


# -- nas random -------------------------------------------------------------------------------

def test_random_search_picks_the_best_validation_and_resumes_without_retraining(tmp_path, capsys):
    root = tmp_path / "random"
    toolkit = fake_toolkit(valid=[0.5, 0.2, 0.7, 0.3], interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        run_command(toolkit, "random", "--samples", "4", "--out", str(root), "--no-progress")
    first = [t[2] for t in toolkit.trained]
    assert len(first) == 2
    toolkit.setup(valid=[0.7, 0.3])  # candidates 2 and 3 only
    assert run_command(toolkit, "random", "--resume", str(root), "--no-progress") == 0
    assert [Path(t[0]).name for t in toolkit.trained] == ["002", "003"]
    out = capsys.readouterr().out
    assert "best by valid_top1_error: candidate 1" in out
    rows = list(csv.DictReader((root / "candidates.csv").open()))
    assert [r["best"] for r in rows] == ["False", "True", "False", "False"]
    assert [float(r["valid"]) for r in rows] == [0.5, 0.2, 0.7, 0.3]
    table = json.loads((root / "candidates.json").read_text())
    assert table["best"] == 1 and not any("test" in k for row in table["rows"] for k in row)
    winner = json.loads((root / "genotype.json").read_text())
    assert winner == first[1].to_dict()
    spec = DartsCnnSpace(DartsCnnOptions(cells=5, channels=16)).arch_spec()
    assert winner == sample_candidate(spec, 0, 1).to_dict()  # candidate i depends on (seed, i) only
    assert (root / "tb").is_dir()


def test_random_search_budget_reads_a_search_runs_wall_time(tmp_path, capsys):
    search = tmp_path / "search"
    search.mkdir()
    (search / "results.json").write_text(json.dumps({"wall_time_s": 3.5}))
    toolkit = fake_toolkit(valid=[0.5, 0.4, 0.3, 0.2, 0.1])  # each candidate takes 1 s
    assert run_command(toolkit, "random", "--budget-from", str(search), "--out", str(tmp_path / "r"),
                       "--no-progress") == 0
    assert len(toolkit.trained) == 3  # a 4th would exceed 3.5 s
    assert "3 s of training of a 4 s budget" in capsys.readouterr().out
