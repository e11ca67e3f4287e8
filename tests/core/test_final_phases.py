"""A discretizer's final phases (the DARTS-PT pattern): after the search's epochs, one decision per
phase epoch on the supernet (mask each op of an edge, measure the task's loss, keep the op whose
removal hurts most), fine-tuning the weights in between; checkpoints and --resume inside the phase;
the final genotype from the decisions, while the per-epoch ones come from ``derive``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch

from nas_core import (ArchSpec, Cell, Discretizer, Genotype, MixingWeights, Phase, RunContext, StepResult, cli,
                      evaluate, hookimpl)
from stubs import CELL, ToyArgmax, ToyPlugin

TOY = ["--preset", "toy", "--set", "search.epochs=2", "--set", "search.max_steps_per_epoch=2", "--no-progress",
       "--discretizer", "toy_projection"]


class Projection(Phase):
    """One edge decided per epoch: its op whose masking raises the loss most; a weight step between."""

    name = "projection"

    def __init__(self, run: RunContext, fail_at: int | None):
        c = run.components
        self.task, self.supernet, self.relaxation, self.spec = c["task"], c["supernet"], c["relaxation"], run.spec
        self.epochs = len(self.spec.edges[CELL])
        self.chosen: dict[int, int] = {}
        self.fail_at = fail_at
        self.tune = torch.optim.SGD(self.supernet.parameters(), lr=0.01)

    def describe(self) -> str:
        return f"projection: {self.epochs} edges"

    def parts(self) -> dict[str, Any]:
        return {"supernet": self.supernet, "tune": self.tune}

    def components(self) -> dict[str, Any]:
        return {"task": self.task, "supernet": self.supernet, "relaxation": self.relaxation}

    def mix(self, mask: tuple[int, int] | None = None) -> MixingWeights:
        w = self.relaxation.weights(None)[CELL].detach().clone()
        for row, col in self.chosen.items():
            w[row] = torch.nn.functional.one_hot(torch.tensor(col), w.shape[1]).to(w)
        if mask is not None:
            w[mask] = 0
        return MixingWeights({CELL: w})

    def batches(self, run: RunContext):
        loader = self.task.loader("weights", batch_size=4, run=run)
        return loader, len(loader)

    max_steps_per_epoch = 1

    def step(self, batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        if run.epoch == self.fail_at:
            raise KeyboardInterrupt
        mix = self.mix()
        out = self.task.forward(lambda *x: self.supernet(*x, arch_weights=mix), batch, state.get("weights"))
        self.tune.zero_grad()
        out.loss.backward()
        self.tune.step()
        return StepResult({"tune": dict(out.stats)}, {"weights": out.state})

    def end_epoch(self, run: RunContext, metrics: Mapping[str, float]) -> dict[str, float]:
        row = run.epoch
        losses = []
        for col in range(len(self.spec.ops)):
            mix = self.mix((row, col))
            losses.append(evaluate(self.task, lambda *x: self.supernet(*x, arch_weights=mix), "arch", batch_size=4,
                                   run=run)["arch_loss"])
        self.chosen[row] = max(range(len(losses)), key=losses.__getitem__)
        return {"decided_edge": float(row)}

    def extra_state(self) -> dict[str, Any]:
        return {"chosen": {str(k): v for k, v in self.chosen.items()}}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.chosen = {int(k): v for k, v in state.get("chosen", {}).items()}

    def finish(self, run: RunContext) -> dict[int, int]:
        return self.chosen


class ProjectionDiscretizer(Discretizer):
    fail_at: int | None = None  # a phase epoch at which the next run is interrupted (then cleared)

    def __init__(self, options: None):
        self.decisions: dict[int, int] = {}

    def derive(self, strengths, spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        return ToyArgmax(None).derive(strengths, spec, run)

    def final_phases(self, run: RunContext):
        phase = Projection(run, ProjectionDiscretizer.fail_at)
        ProjectionDiscretizer.fail_at = None
        self.phase = phase
        return [phase]

    def final(self, strengths, spec: ArchSpec, run: RunContext) -> Genotype:
        chosen = self.phase.chosen
        nodes = []
        for dst in (1, 2):
            rows = [r for r, (_, d) in enumerate(spec.edges[CELL]) if d == dst]
            nodes.append(tuple((spec.ops[chosen[r]], spec.edges[CELL][r][0]) for r in rows))
        return Genotype({CELL: Cell(tuple(nodes), (1, 2))})


class PhasePlugin:
    @hookimpl
    def nas_register_discretizers(self, register):
        register("toy_projection", ProjectionDiscretizer)


def nas(*args: str) -> int:
    return cli.main(list(args), plugins=[ToyPlugin(), PhasePlugin()], autoload=False)


def test_final_phase_decides_the_genotype_and_resumes_inside(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert nas("run", *TOY, "--out", str(whole)) == 0
    phase_dir = whole / "final" / "projection"
    assert (phase_dir / "checkpoint.pt").is_file() and (phase_dir / ".nas-run").is_file()
    per_epoch = Genotype.from_json((whole / "genotypes" / "epoch_002.json").read_text())
    final = Genotype.from_json((whole / "genotype.json").read_text())
    assert [len(node) for node in final.cells[CELL].nodes] == [1, 2]  # every edge decided, unlike derive's
    assert [len(node) for node in per_epoch.cells[CELL].nodes] == [1, 1]
    assert json.loads((whole / "results.json").read_text())["genotype"] == final.to_dict()

    ProjectionDiscretizer.fail_at = 2  # interrupted in the phase's third decision
    assert nas("run", *TOY, "--out", str(broken)) == 130  # as Ctrl-C ends it
    from nas_core.checkpoint import load_checkpoint

    assert load_checkpoint(broken / "final" / "projection" / "checkpoint.pt")["epoch"] == 1
    assert not (broken / "results.json").exists()
    assert nas("run", "--resume", str(broken), "--no-progress") == 0
    assert (broken / "genotype.json").read_text() == (whole / "genotype.json").read_text()
    tuned = load_checkpoint(broken / "final" / "projection" / "checkpoint.pt")["supernet"]
    expected = load_checkpoint(phase_dir / "checkpoint.pt")["supernet"]
    assert all(torch.equal(tuned[k], expected[k]) for k in expected)  # bit-identical across the resume
    # a finished run resumed again: the phase is complete, nothing runs, the result stands
    assert nas("run", "--resume", str(broken), "--no-progress") == 0
    assert (broken / "genotype.json").read_text() == (whole / "genotype.json").read_text()


def test_a_staged_search_runs_the_final_phases_after_its_last_stage_only(tmp_path):
    """Earlier stages end with their last epoch's derive (what the next stage builds on); the
    selection runs once, on the last stage's supernet, and decides the search's genotype."""
    config = tmp_path / "stages.yaml"
    config.write_text("search: {stages: [{}, {}]}\n")
    run = tmp_path / "run"
    assert nas("run", *TOY, "--config", str(config), "--out", str(run)) == 0
    assert not (run / "stage_1" / "final").exists()
    assert (run / "stage_2" / "final" / "projection" / "checkpoint.pt").is_file()
    final = Genotype.from_json((run / "genotype.json").read_text())
    assert [len(node) for node in final.cells[CELL].nodes] == [1, 2]  # the decisions, not derive's
    first = Genotype.from_json((run / "stage_1" / "genotype.json").read_text())
    assert [len(node) for node in first.cells[CELL].nodes] == [1, 1]
