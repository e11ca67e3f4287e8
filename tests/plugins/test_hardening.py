"""Issue 16: no file of the user's overwritten, diverged runs stop, resumes keep their config, old
runs stay readable after a plugin goes, and a space brings its own preset."""

from __future__ import annotations

import attrs
import pytest
import yaml

from conftest import TINY
from nas_core import cli, hookimpl
from nas_core.checkpoint import load_checkpoint
from core.stubs import TOY_PRESET, ToyPlugin

RUN = ["run", *TINY, "--optimizer", "darts_1st", "--set", "search.epochs=1"]


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("nas: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("search") / "run"
    assert cli.main([*RUN, "--out", str(run)]) == 0
    return run


# -- files of the user's ----------------------------------------------------------------------------

def test_a_folder_holding_a_config_yaml_is_not_taken_for_a_run(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("keep: me\n")
    assert cli.main([*RUN, "--out", str(mine)]) == 2
    assert "nas did not create" in one_error_line(capsys)
    assert snapshot(mine) == {"config.yaml": b"keep: me\n"}


def test_a_run_directory_is_marked_and_one_that_never_finished_an_epoch_is_redone(tmp_path, search_run):
    assert (search_run / ".nas-run").is_file()
    started = tmp_path / "started"
    started.mkdir()
    (started / ".nas-run").write_text('{"kind": "search"}\n')
    (started / "config.yaml").write_text("seed: 0\n")
    assert cli.main([*RUN, "--out", str(started)]) == 0
    assert (started / "checkpoint.pt").is_file()


def test_derive_replaces_no_existing_file_unless_forced(tmp_path, capsys, search_run):
    mine = tmp_path / "mine.json"
    mine.write_text("my genotype")
    assert cli.main(["derive", str(search_run), "--out", str(mine)]) == 2
    assert "exists and nas does not replace files" in one_error_line(capsys) and mine.read_text() == "my genotype"
    default = search_run / "derived_topk.json"
    assert cli.main(["derive", str(search_run)]) == 0 and default.is_file()
    assert cli.main(["derive", str(search_run)]) == 2  # not even its own earlier output, unasked
    capsys.readouterr()
    assert cli.main(["derive", str(search_run), "--out", str(mine), "--force"]) == 0
    assert mine.read_text().startswith("{")


def test_show_writes_nothing_without_out_and_replaces_no_drawing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["show", "darts_v2"]) == 0
    assert "Genotype(" in capsys.readouterr().out and list(tmp_path.iterdir()) == []
    (tmp_path / "cell_normal.dot").write_text("mine")
    assert cli.main(["show", "darts_v2", "--out", "cell"]) == 2
    refused = capsys.readouterr()
    assert refused.out == "" and refused.err.startswith("nas: error: --out: ") and refused.err.count("\n") == 1
    assert snapshot(tmp_path) == {"cell_normal.dot": b"mine"}
    assert cli.main(["show", "darts_v2", "--out", "cell", "--force"]) == 0
    assert (tmp_path / "cell_normal.dot").read_text().startswith("digraph")


# -- wrong results are not accepted silently ------------------------------------------------------

class PoisonWeightsAtEpoch:
    """Turns the supernet's weights into NaN when ``epoch`` starts: a run that diverges there."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    @hookimpl
    def nas_epoch_start(self, run):
        if run.epoch == self.epoch:
            for p in run.components["supernet"].parameters():
                p.data.fill_(float("nan"))


@pytest.mark.parametrize("steps", [2, pytest.param(12, marks=pytest.mark.slow)], ids=["at the epoch's end", "within the epoch"])
def test_a_diverged_search_stops_and_keeps_its_last_good_checkpoint(tmp_path, capsys, steps):
    run = tmp_path / "run"
    args = [*RUN, "--set", "search.epochs=3", "--set", f"search.max_steps_per_epoch={steps}", "--out", str(run)]
    assert cli.main(args, plugins=[PoisonWeightsAtEpoch(1)]) == 2
    err = one_error_line(capsys)
    assert "the run diverged: train_loss=nan" in err and "of epoch 2" in err and "checkpoint of epoch 1" in err
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 0


def test_a_search_that_diverges_in_its_first_epoch_says_there_is_no_checkpoint(tmp_path, capsys):
    assert cli.main([*RUN, "--out", str(tmp_path / "run")], plugins=[PoisonWeightsAtEpoch(0)]) == 2
    assert "no epoch had finished, so no checkpoint was written" in one_error_line(capsys)


def test_resume_refuses_a_config_yaml_edited_after_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main([*RUN, "--out", str(run)]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["seed"] = 7
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    before = snapshot(run)
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(run)]) == 2
    assert "no longer matches the config its checkpoint was written with (seed)" in one_error_line(capsys)
    assert snapshot(run) == before
    assert cli.main(["run", "--resume", str(run), "--device", "cpu"]) == 2  # --device alone may change


# -- old runs stay readable after a plugin goes -----------------------------------------------------

@attrs.frozen
class ProbeSettings:
    level: int = 1


class ExtrasProbe:
    @hookimpl
    def nas_register_settings(self, register):
        register("extras_probe", ProbeSettings, doc="a plugin's own section")


def test_runs_made_with_a_plugins_section_stay_readable_without_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main([*RUN, "--out", str(run)], plugins=[ExtrasProbe()]) == 0
    assert "extras_probe" in (run / "config.yaml").read_text()
    capsys.readouterr()
    assert cli.main(["derive", str(run), "--out", str(tmp_path / "g.json")]) == 0
    assert "'extras_probe' of plugins not loaded now are ignored" in capsys.readouterr().out
    assert cli.main(["show", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(run)]) == 0  # reported, not fatal (a disabled monitor's section too)
    assert "if this run relied on them, install or enable their plugin before resuming" in capsys.readouterr().out
    assert cli.main(["run", "--resume", str(run)], plugins=[ExtrasProbe()]) == 0


# -- a space brings its own preset; presets build on presets ----------------------------------------

def resolved(capsys, *args, plugins=()) -> dict:
    capsys.readouterr()
    assert cli.main(["config", "show", *args], plugins=plugins) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_a_space_given_without_preset_brings_its_own(capsys):
    config = resolved(capsys, "--space", "darts_rnn", "--optimizer", "darts_2nd")
    assert config["task"]["name"] == "language_model" and config["dataset"]["name"] == "pydoc_topics"
    assert config["optimizer"]["name"] == "darts_2nd"
    assert resolved(capsys, "--space", "darts_cnn")["task"]["name"] == "classification"


def test_a_space_that_cannot_read_the_tasks_data_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "--preset", "rnn_demo", "--space", "darts_cnn", "--out", str(out)]) == 2
    assert "darts_cnn networks read images" in one_error_line(capsys) and not out.exists()


class OnTopOfDemo:
    @hookimpl
    def nas_register_presets(self, register):
        register("demo_short", {"search": {"epochs": 2}, "space": {"cells": 3}}, base="demo", doc="demo, shorter")
        register("loop_a", {}, base="loop_b")
        register("loop_b", {}, base="loop_a")


def test_a_plugins_preset_builds_on_the_default_one(capsys):
    demo = resolved(capsys, "--preset", "demo")
    short = resolved(capsys, "--preset", "demo_short", plugins=[OnTopOfDemo()])
    assert short["search"] == {**demo["search"], "epochs": 2}
    assert short["space"] == {**demo["space"], "cells": 3}
    assert {k: v for k, v in short.items() if k not in ("search", "space")} == \
        {k: v for k, v in demo.items() if k not in ("search", "space")}
    assert cli.main(["config", "show", "--preset", "loop_a"], plugins=[OnTopOfDemo()]) == 2
    assert "build on each other in a circle" in one_error_line(capsys)


class ToyBesideDarts(ToyPlugin):
    """The toy space installed beside the built-ins, its preset not the default."""

    @hookimpl
    def nas_register_presets(self, register):
        register("toy", TOY_PRESET, doc="the toy components")


def test_training_a_run_of_a_plugins_space_uses_that_space(tmp_path, capsys):
    run = tmp_path / "run"
    toy = ToyBesideDarts()
    assert cli.main(["run", "--preset", "toy", "--no-progress", "--out", str(run)], plugins=[toy]) == 0
    trained = tmp_path / "trained"
    assert cli.main(["train", "--genotype", str(run), "--no-progress", "--out", str(trained)], plugins=[toy]) == 0
    assert yaml.safe_load((trained / "config.yaml").read_text())["space"]["name"] == "toy"
    capsys.readouterr()
    other = tmp_path / "other"
    assert cli.main(["train", "--genotype", str(run), "--space", "darts_cnn", "--out", str(other)], plugins=[toy]) == 2
    assert "the genotype was found in space 'toy': pass --space toy" in one_error_line(capsys)
    assert not other.exists()


def test_a_genotype_is_accepted_inline_as_nas_show_prints_it(tmp_path, capsys):
    """`nas train --genotype "$(nas show darts_v2 | head -1)"`, as the README's wording invites."""
    assert cli.main(["show", "darts_v2"]) == 0
    text = capsys.readouterr().out.splitlines()[0]
    assert text.startswith("Genotype(") and len(text) > 255  # longer than a file name may be
    out = tmp_path / "trained"
    assert cli.main(["train", "--genotype", text, "--set", "network.cells=3", "--set", "network.channels=4",
                     "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=1", "--no-progress",
                     "--out", str(out)]) == 0
    assert (out / "genotype.json").read_text() == registered_json("darts_v2")
    assert cli.main(["train", "--genotype", "Genotype(normal=[('sep_conv_3x3', 0)])", "--out", str(tmp_path / "x")]) == 2
    assert one_error_line(capsys).startswith("nas: error: inline genotype text:")


def registered_json(name: str) -> str:
    from nas_core.genotype_io import load_genotype
    from nas_core.toolkit import Toolkit

    return load_genotype(name, Toolkit.load().registries.genotypes).to_json()
