"""RobustDARTS (plugin nas_robust_darts): the dominant eigenvalue of the architecture Hessian by Lanczos on
Hessian-vector products (a known quadratic; a tiny real supernet against the dense Hessian); the authors'
local-average stop rule on hand-made readings; a tiny search stopped early whose result is the earlier
epoch's cell, with the eigenvalue in its metrics and TensorBoard, reported complete by --resume; DARTS-ADA's
roll-back with a raised weight decay; bad input. The side-by-side check against the authors' code is
benchmarks/fidelity/robust_darts.py."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from conftest import TINY, image_task
from nas_core import DataInfo, MixingWeights, Toolkit, cli
from nas_darts.cnn_space import DartsCnnSpace
from nas_darts.options import DartsCnnOptions, DartsOptions, SoftmaxOptions
from nas_darts.softmax import SoftmaxRelaxation
from nas_robust_darts.early_stop import STATE_FILE, RobustDartsMonitor, read_history, stop_epoch
from nas_robust_darts.hessian import dominant_eigenvalue, hessian_operator, lanczos_max
from nas_robust_darts.options import RobustDartsSettings


def _symmetric(n: int, shift: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a + a.T + shift * torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("shift", [6.0, -12.0], ids=["positive", "largest-magnitude-negative"])
def test_the_eigenvalue_of_a_known_quadratic(shift):
    """val loss 0.5 a^T H a over two parameter tensors: Lanczos finds numpy's largest eigenvalue, also
    when the eigenvalue of largest magnitude is a negative one (where power iteration would not)."""
    h = _symmetric(12, shift, seed=1)
    a, b = torch.zeros(5, dtype=torch.float64, requires_grad=True), torch.zeros(7, dtype=torch.float64, requires_grad=True)
    x = torch.cat([a, b])
    eigen = lanczos_max(hessian_operator(0.5 * x @ h @ x, [a, b], l2=0.25),
                        torch.randn(12, generator=torch.Generator().manual_seed(0), dtype=torch.float64), tol=1e-12)
    expected = np.linalg.eigvalsh(h.numpy()).max() + 0.25
    assert eigen.value == pytest.approx(expected, rel=1e-10)


def test_the_eigenvalue_on_a_tiny_supernet_matches_the_dense_hessian():
    torch.manual_seed(0)
    info = DataInfo((3, 8, 8), 10)
    space = DartsCnnSpace(DartsCnnOptions(cells=2, channels=4, nodes=2))
    net = space.build_supernet(info).double()
    relax = SoftmaxRelaxation(SoftmaxOptions(init_std=1.0), spec=space.arch_spec()).double()
    task = image_task(info)
    batch = (torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.arange(6) % 10)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    eigen = dominant_eigenvalue(net, relax, task, batch, generator=torch.Generator().manual_seed(0), l2=1e-3,
                                tol=1e-12, max_iter=200)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # BN statistics put back
    cells = list(relax.alphas)
    params = tuple(relax.alphas[k].detach().clone() for k in cells)

    def val_loss(*alphas):
        mix = MixingWeights({k: torch.softmax(a, dim=-1) for k, a in zip(cells, alphas)})
        return task.forward(lambda x: net(x, arch_weights=mix), batch, None).loss

    net.train()
    blocks = torch.autograd.functional.hessian(val_loss, params)
    sizes = [p.numel() for p in params]
    dense = torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(params))], 1)
                       for i in range(len(params))], 0)
    assert eigen.value == pytest.approx(np.linalg.eigvalsh(dense.numpy()).max() + 1e-3, rel=1e-9)


# readings every 2 epochs, flat at 1 until epoch 14, then 3: the authors' rule (window 5, delta 4,
# factor 1.3, es_start_epoch 10) first decides after epoch 22 and returns epoch 10
RULE = dict(every=2, window=5, delta=4, factor=1.3, start_epoch=10)
STEP = [(e, 1.0 if e <= 14 else 3.0) for e in range(0, 40, 2)]


def test_the_local_average_rule_stops_at_the_right_epoch():
    decisions = {readings[-1][0]: stop_epoch(readings, **RULE) for readings in (STEP[:n] for n in range(1, 20))}
    assert decisions[22] == 10  # mean(1, 3, 3, 3, 3) / mean(1 x 5) = 2.6 > 1.3
    assert all(d is None for e, d in decisions.items() if e < 22)


def test_the_rule_never_returns_an_epoch_before_start_epoch():
    spike = [(e, 1.0 if e < 4 else 100.0) for e in range(0, 40, 2)]  # a huge early rise
    decisions = [stop_epoch(spike[:n], **RULE) for n in range(1, 20)]
    assert all(d is None for d in decisions[:11])  # up to epoch 20: nothing at or after epoch 10 to return
    assert not any(d is not None and d < 10 for d in decisions)
    # and the ratio must exceed the factor, not equal it
    flat = [(e, 2.0) for e in range(0, 40, 2)]
    assert all(stop_epoch(flat[:n], **{**RULE, "factor": 1.0}) is None for n in range(1, 20))


# the rule forced: every epoch, a window of 1, compared with the previous reading, any rise or fall
FORCED = ["--set", "robust_darts.every=1", "--set", "robust_darts.window=1", "--set", "robust_darts.delta=1",
          "--set", "robust_darts.start_epoch=0", "--set", "robust_darts.factor=1e-9",
          "--set", "robust_darts.max_iter=5", "--set", "space.nodes=2", "--set", "search.max_steps_per_epoch=1",
          "--set", "optimizer.name=darts_1st"]


def test_a_tiny_search_stops_early_with_the_earlier_cell_and_resumes_complete(tmp_path, capsys, tensorboard_on):
    out = tmp_path / "run"
    args = ["run", "--preset", "robust_darts_demo", *TINY, *FORCED, "--set", "search.epochs=4", "--out", str(out)]
    assert cli.main(args) == 0
    history = read_history(out)
    assert [r["epoch"] for r in history.readings] == [0, 1]  # stopped after the second epoch (from 0: 1)
    assert history.stop["result_epoch"] == 0 and "epoch 1" in history.stop["reason"]
    assert json.loads((out / "genotype.json").read_text()) == json.loads((out / "genotypes" / "epoch_001.json").read_text())
    record = Toolkit.load().load_search(out)
    assert record.complete and record.epochs_done == 2
    results = json.loads((out / "results.json").read_text())
    assert results["genotype"] == history.readings[0]["genotype"] and results["stopped"] == history.stop["reason"]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["stopped"] == history.stop["reason"] and state["metrics"]["hessian_eigenvalue"] == history.readings[1]["eigenvalue"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0}).Reload()
    assert [p.value for p in events.Scalars("search/hessian_eigenvalue")] == pytest.approx(
        [r["eigenvalue"] for r in history.readings])
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(out), "--no-progress"]) == 0
    assert read_history(out).readings == history.readings
    assert json.loads((out / "genotype.json").read_text()) == history.readings[0]["genotype"]


def test_a_resumed_search_decides_as_an_uninterrupted_one(tmp_path):
    """The readings of epochs after the checkpoint are dropped on resume: an interrupted run that is
    resumed keeps exactly the history an uninterrupted one has."""
    out = tmp_path / "run"
    assert cli.main(["run", "--preset", "robust_darts_demo", *TINY, *FORCED, "--set", "robust_darts.early_stop=none",
                     "--set", "search.epochs=2", "--out", str(out)]) == 0
    full = read_history(out)
    # as if the process died after writing epoch 2's reading but before its checkpoint
    stale = {**full.readings[-1], "eigenvalue": -1.0}
    (out / STATE_FILE).write_text(json.dumps({"readings": full.readings[:1] + [stale], "rollbacks": [], "stop": None}))
    run = type("Run", (), {"dir": out, "start_epoch": 1})()
    assert RobustDartsMonitor(RobustDartsSettings(every=1), run).history.readings == full.readings[:1]


def test_ada_rolls_back_and_raises_the_weight_decay(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", "--preset", "robust_darts_demo", *TINY, *FORCED, "--set", "robust_darts.early_stop=ada",
                     "--set", "discretizer.name=topk", "--set", "search.epochs=3", "--out", str(out)]) == 0
    history = read_history(out)
    # the rule fired after epoch 1 (from 0): back to epoch 0's state, weight decay 3e-4 -> 3e-3; the last
    # epoch ran on, and no stop
    assert history.rollbacks == [{"epoch": 1, "to": 0, "weight_decay": pytest.approx(3e-3)}]
    assert history.stop is None and [r["at"] for r in history.readings] == [0, 1, 1]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["optimizer"]["w_opt"]["param_groups"][0]["weight_decay"] == pytest.approx(3e-3)
    assert not (out / "robust_darts_snapshots").exists()  # removed once the search is complete


def test_the_roll_back_restores_the_saved_state(tmp_path):
    from nas_darts.architect import DartsOptimizer

    info = DataInfo((3, 8, 8), 10)
    space = DartsCnnSpace(DartsCnnOptions(cells=1, channels=4, nodes=1))
    net = space.build_supernet(info)
    relax = SoftmaxRelaxation(SoftmaxOptions(), spec=space.arch_spec())
    opt = DartsOptimizer(DartsOptions(), supernet=net, relaxation=relax, task=image_task(info), epochs=4,
                         second_order=False)
    run = type("Run", (), {"dir": tmp_path, "start_epoch": 0, "epoch_metrics": {}, "is_writer": True,
                           "components": {"supernet": net, "relaxation": relax, "optimizer": opt}})()
    monitor = RobustDartsMonitor(RobustDartsSettings(every=1, early_stop="ada"), run)
    monitor.initial_weight_decay = 3e-4
    monitor.snapshot(run, 0)
    saved = {k: v.clone() for k, v in {**net.state_dict(), **relax.state_dict()}.items()}
    with torch.no_grad():
        for p in [*net.parameters(), *relax.parameters()]:
            p.add_(1.0)
    with warnings.catch_warnings():  # a scheduler step with no optimizer step: only to move it
        warnings.simplefilter("ignore")
        opt.scheduler.step()
    monitor.roll_back(run, 3, {"epoch": 0, "at": 0})
    assert all(torch.equal(v, saved[k]) for k, v in {**net.state_dict(), **relax.state_dict()}.items())
    assert opt.scheduler.last_epoch == 0 and opt.opts.w_weight_decay == pytest.approx(3e-3)
    assert opt.w_opt.param_groups[0]["weight_decay"] == pytest.approx(3e-3)
    assert run.epoch_metrics["weight_decay"] == pytest.approx(3e-3)


BAD = [
    (["--set", "robust_darts.every=0"], "invalid robust_darts option"),
    (["--discretizer", "topk"], "robust_darts.early_stop=es returns the cell of an earlier epoch"),
    (["--set", "robust_darts.early_stop=maybe"], "invalid robust_darts option"),
]


@pytest.mark.parametrize("args, message", BAD, ids=["es-without-readings", "es-without-its-discretizer", "unknown-mode"])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert cli.main(["run", "--preset", "robust_darts_demo", *TINY, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: ") and message in err, err
    assert err.count("\n") == 1
    assert not out.exists()  # every check comes before anything is written


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes (issue 20)
def test_any_search_that_asks_logs_the_eigenvalue_without_stopping(tmp_path, tensorboard_on):
    """DARTS's own search (topk, no early stop) with robust_darts.every=1: a reading each epoch, in the
    epoch metrics and TensorBoard; the run is not stopped and its result is the last epoch's cell."""
    out = tmp_path / "run"
    assert cli.main(["run", "--optimizer", "darts_1st", *TINY, "--set", "search.epochs=2", "--set",
                     "robust_darts.every=1", "--set", "robust_darts.max_iter=5", "--out", str(out)]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0}).Reload()
    values = [p.value for p in events.Scalars("search/hessian_eigenvalue")]
    assert len(values) == 2 and all(v == v for v in values)  # one finite reading per epoch
    assert [r["eigenvalue"] for r in read_history(out).readings] == pytest.approx(values)
    results = json.loads((out / "results.json").read_text())
    assert "stopped" not in results and results["epochs"] == 2
    assert json.loads((out / "genotype.json").read_text()) == json.loads(
        (out / "genotypes" / "epoch_002.json").read_text())
