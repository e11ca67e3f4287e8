"""Scheduled op pruning (plugin nas_op_pruning): which ops an edge keeps, what the relaxation and the
supernet then do with the others, and a search pruned, interrupted and resumed bit-identically."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from conftest import TINY, refused
from nas_core import ArchSpec, DataInfo, Toolkit, cli, hookimpl
from nas_darts.cnn_space import DartsCnnSpace
from nas_darts.options import DartsCnnOptions, SoftmaxOptions
from nas_darts.softmax import SoftmaxRelaxation
from nas_op_pruning.schedule import kept_masks

SPEC = ArchSpec(ops=("none", "a", "b", "c"), edges={"normal": ((0, 2), (1, 2))}, num_inputs=2, inputs_per_node=2)


def test_each_edge_keeps_its_strongest_ops_and_the_zero_op():
    strengths = {"normal": torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.0, 0.2, 0.2, 0.6]])}
    masks = kept_masks(strengths, {}, SPEC, keep=2, drop_zero=False)
    # edge 0: b and c beat a (none is kept apart); edge 1: c, then the tie b/a goes to the lower column (a)
    assert masks["normal"].tolist() == [[True, False, True, True], [True, True, False, True]]
    assert kept_masks(strengths, {}, SPEC, keep=2, drop_zero=True)["normal"][:, 0].tolist() == [False, False]


def test_a_later_pruning_chooses_among_the_ops_still_kept():
    previous = {"normal": torch.tensor([[True, True, False, True], [True, True, True, False]])}
    strengths = {"normal": torch.tensor([[0.1, 0.2, 0.0, 0.7], [0.1, 0.5, 0.4, 0.0]])}
    masks = kept_masks(strengths, previous, SPEC, keep=1, drop_zero=False)
    assert masks["normal"].tolist() == [[True, False, False, True], [True, True, False, False]]


def test_pruned_ops_get_weight_zero_and_the_rest_their_softmax_and_the_masks_checkpoint():
    torch.manual_seed(0)
    relax = SoftmaxRelaxation(SoftmaxOptions(init_std=1.0), spec=SPEC)
    mask = torch.tensor([[True, False, True, True], [False, True, True, False]])
    relax.prune({"normal": mask})
    w = relax.weights()["normal"]
    alpha = relax.alphas["normal"].detach()
    for row in range(2):
        kept = mask[row]
        assert torch.allclose(w[row, kept], torch.softmax(alpha[row, kept], -1))
        assert torch.equal(w[row, ~kept], torch.zeros(int((~kept).sum())))
    assert torch.equal(relax.strengths()["normal"], w.detach())
    fresh = SoftmaxRelaxation(SoftmaxOptions(), spec=SPEC)  # as a resume or a finished run read back builds it
    fresh.load_state_dict(relax.state_dict())
    assert torch.equal(fresh.kept()["normal"], mask) and torch.equal(fresh.weights()["normal"], w)
    unpruned = SoftmaxRelaxation(SoftmaxOptions(), spec=SPEC)  # a run from before pruning existed loads as ever
    unpruned.load_state_dict({"alphas.normal": alpha})
    assert unpruned.kept() == {}
    with pytest.raises(ValueError, match="without ops"):
        relax.prune({"normal": torch.zeros(2, 4, dtype=torch.bool)})


@pytest.mark.parametrize("mask, message", [(torch.ones(3, 4, dtype=torch.bool), "size mismatch for kept_normal"),
                                           (torch.zeros(2, 4, dtype=torch.bool), "kept_normal leaves an edge without ops")],
                         ids=["shape", "empty edge"])
def test_a_tampered_mask_is_refused_as_it_loads(mask, message):
    """What a checkpoint's loader turns into its one-line CheckpointError."""
    fresh = SoftmaxRelaxation(SoftmaxOptions(), spec=SPEC)
    with pytest.raises(RuntimeError, match=message):
        fresh.load_state_dict({"alphas.normal": torch.zeros(2, 4), "kept_normal": mask})


@pytest.mark.parametrize("fused", [False, True])
def test_the_supernet_stops_computing_pruned_ops_and_its_output_is_unchanged(fused):
    """Per op, the ops computed are counted; fused, the edges' groups compute their kept columns."""
    torch.manual_seed(0)
    space = DartsCnnSpace(DartsCnnOptions(cells=2, channels=4, nodes=2, fused_edges=fused))
    spec = space.arch_spec()
    net = space.build_supernet(DataInfo((3, 8, 8), 10))
    relax = SoftmaxRelaxation(SoftmaxOptions(init_std=1.0), spec=spec)
    run = SimpleNamespace(components={"relaxation": relax}, phase="search", epoch=0, epochs=2, config=None)
    x = torch.randn(2, 3, 8, 8)
    relax.prune(kept_masks(relax.strengths(), {}, spec, keep=2, drop_zero=False))
    calls = []
    for cell in net.cells:
        for edge in cell.edges:
            def counted(i, *args, op=edge._op):
                calls.append(i)
                return op(i, *args)
            edge._op = counted
    net.eval()
    with torch.no_grad():
        full = net(x, arch_weights=relax.weights())  # every op computed, the pruned ones times 0
        computed_before = len(calls)
        calls.clear()
        net.nas_epoch_start(run)
        pruned = net(x, arch_weights=relax.weights())
    edges = sum(len(cell.edges) for cell in net.cells)
    if not fused:
        assert computed_before == edges * 7 and len(calls) == edges * 2  # 7 ops besides none; then the 2 kept
    assert all(len(edge.computed) == 2 for cell in net.cells for edge in cell.edges)
    assert torch.allclose(full, pruned, atol=1e-6)


TINY_PRUNED = ["--preset", "demo", *TINY, "--optimizer", "darts_1st", "--set", "search.epochs=3",
               "--set", "op_pruning.after=[1,2]", "--set", "op_pruning.keep=[3,1]"]


def _state(run_dir):
    record = Toolkit.load().load_search(run_dir)
    return record, [*record.relaxation.state_dict().values(), *record.supernet.state_dict().values()]


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes (issue 20)
def test_a_pruned_search_derives_from_kept_ops_and_resumes_bit_identically(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_DISABLE_PLUGINS", "tensorboard")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert cli.main(["run", *TINY_PRUNED, "--out", str(whole)]) == 0
    log = (whole / "log.txt").read_text()
    assert "ops_per_edge=7 " in log and "ops_per_edge=3 " in log and "ops_per_edge=1 " in log
    record, a = _state(whole)
    for cell_type, mask in record.relaxation.kept().items():
        assert mask.sum(-1).tolist() == [2] * 14  # none and one op
        for j, node in enumerate(record.genotype.cells[cell_type].nodes):  # every chosen op is its edge's kept one
            for op, src in node:
                row = record.spec.edges[cell_type].index((src, j + 2))
                assert mask[row, record.spec.ops.index(op)]

    class StopAsEpochThreeStarts:
        @hookimpl
        def nas_epoch_start(self, run):
            if run.epoch == 2:
                raise KeyboardInterrupt

    assert cli.main(["run", *TINY_PRUNED, "--out", str(broken)], plugins=[StopAsEpochThreeStarts()]) == 130
    assert cli.main(["run", "--resume", str(broken), "--no-progress"]) == 0
    _, b = _state(broken)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert (broken / "genotype.json").read_text() == (whole / "genotype.json").read_text()


BAD = [
    (["--set", "op_pruning.after=[1]", "--set", "op_pruning.keep=[3,2]"], "after and keep must have one entry"),
    (["--set", "op_pruning.after=[2,1]", "--set", "op_pruning.keep=[3,2]"], "increasing order"),
    (["--set", "op_pruning.after=[1,2]", "--set", "op_pruning.keep=[2,3]"], "decreasing order"),
    (["--set", "op_pruning.after=[1]", "--set", "op_pruning.keep=[7]"], "has only 7 besides the zero op"),
    (["--set", "op_pruning.after=[3]", "--set", "op_pruning.keep=[2]"], "never happens in a search of 3"),
    (["--set", "op_pruning.after=[1]", "--set", "op_pruning.keep=[2]", "--relaxation", "gdas"],
     "relaxation 'gdas' cannot prune ops"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[m.split()[0] + m.split()[-1] for _, m in BAD])
def test_bad_schedules_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    err = refused(capsys, ["run", "--preset", "demo", *TINY, "--set", "search.epochs=3", *args], tmp_path / "out")
    assert message in err, err
