"""The selection protocol (nas select), selection on validation only, and nas compare end to end."""

from __future__ import annotations

import csv
import json

import pytest

from nas_core import Genotype, Toolkit, cli
from nas_darts.cnn_space import DartsCnnSpace
from nas_darts.options import PARAMETER_FREE, DartsCnnOptions
from nas_random.sampler import sample_candidate
from nas_select.protocol import select_best, train_run

TINY_TRAIN = ["--set", "network.cells=3", "--set", "network.channels=4", "--set", "train.max_steps_per_epoch=2",
              "--set", "train.epochs=1", "--set", "train.batch_size=16"]
TINY_SEARCH = ["--set", "space.cells=3", "--set", "space.channels=4", "--set", "search.batch_size=16",
               "--set", "search.max_steps_per_epoch=2", "--set", "search.epochs=1"]


@pytest.fixture(autouse=True)
def _no_tensorboard_plugin(monkeypatch):
    monkeypatch.setenv("NAS_DISABLE_PLUGINS", "tensorboard")


def nas(*args: str) -> int:
    fresh = args[0] != "compare" and "--resume" not in args
    return cli.main([*args, "--threads", "1"] if fresh else list(args))


# -- selection on validation, never on test ---------------------------------------------------

class Poison:
    """A test metric: any use of it fails the test."""

    def __float__(self):
        raise AssertionError("a test metric was read during selection")

    __lt__ = __gt__ = __le__ = __ge__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __float__


class GuardedResults(dict):
    def __getitem__(self, key):
        if key.startswith("test_"):
            raise AssertionError(f"selection read {key}")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key.startswith("test_"):
            raise AssertionError(f"selection read {key}")
        return super().get(key, default)


class FakeToolkit(Toolkit):
    """The real registries and hooks; search and train replaced by instant fakes with known
    metrics (validation from ``valid``, in call order; test metrics poisoned)."""

    valid: list = []
    interrupt_at: int | None = None
    fail_search_seeds: tuple = ()

    def setup(self, valid, interrupt_at=None, fail_search_seeds=()):
        self.valid, self.interrupt_at, self.fail_search_seeds = list(valid), interrupt_at, fail_search_seeds
        self.trained, self.searched = [], []
        return self

    def train(self, config, genotype, run_dir, *, resume=False, progress=None, phase="train"):
        if len(self.trained) == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt
        self.trained.append((str(run_dir), config.seed, genotype))
        run_dir.mkdir(parents=True, exist_ok=True)
        valid = self.valid[len(self.trained) - 1]
        return GuardedResults(params=1000 + len(self.trained), multiply_adds=1, wall_time_s=1.0, device="cpu",
                              valid_top1_error=valid, valid_loss=valid, test_top1_error=Poison(), test_loss=Poison())

    def search(self, config, run_dir, *, resume=False, progress=None, phase="search"):
        if config.seed in self.fail_search_seeds:
            raise RuntimeError("boom")
        self.searched.append(config.seed)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "results.json").write_text(json.dumps({"wall_time_s": 2.0, "device": "cpu"}))
        spec = DartsCnnSpace(DartsCnnOptions()).arch_spec()
        return sample_candidate(spec, config.seed, 0)


def fake_toolkit(**kw) -> FakeToolkit:
    real = Toolkit.load()
    return FakeToolkit(real.plugin_manager, real.registries).setup(**kw)


def run_command(toolkit, *argv) -> int:
    """The command as `nas` runs it (its log on the console), with ``toolkit``."""
    cli._setup_console_logging()  # else what a test sees in its output depends on the tests run before it
    args = cli.build_parser(toolkit).parse_args([*argv])
    return args.handler(args, toolkit)


def test_select_best_reads_only_validation():
    records = [{"index": 0, "status": "done", "valid": {"valid_top1_error": 0.3}, "test_top1_error": 0.1},
               {"index": 1, "status": "failed"},
               {"index": 2, "status": "done", "valid": {"valid_top1_error": 0.2}, "test_top1_error": 0.9},
               {"index": 3, "status": "done", "valid": {"valid_top1_error": 0.2}, "test_top1_error": 0.0}]
    best, metric = select_best(records)
    assert (best["index"], metric) == (2, "valid_top1_error")  # ties: the first


def test_select_resumes_finished_seeds_records_failures_and_selects_on_validation(tmp_path, capsys):
    root = tmp_path / "select"
    toolkit = fake_toolkit(valid=[0.4, 0.1], interrupt_at=1, fail_search_seeds=(12,))
    with pytest.raises(KeyboardInterrupt):  # during seed 11's short training
        run_command(toolkit, "select", "--seeds", "3", "--seed", "10", "--out", str(root), "--no-progress")
    assert toolkit.searched == [10, 11]
    toolkit.setup(valid=[0.1], fail_search_seeds=(12,))
    assert run_command(toolkit, "select", "--resume", str(root), "--no-progress") == 1  # a seed failed
    assert toolkit.searched == [] and [t[1] for t in toolkit.trained] == [11]  # nothing finished is re-run
    out = capsys.readouterr().out
    assert "best by valid_top1_error: seed 11" in out and "failed seeds (recorded in selection.csv): 12" in out
    rows = {r["seed_index"]: r for r in csv.DictReader((root / "selection.csv").open())}
    assert rows["2"]["status"] == "failed" and "boom" in rows["2"]["error"] and rows["1"]["best"] == "True"
    record = json.loads((root / "seed_2" / "record.json").read_text())
    assert record["stage"] == "search" and record["status"] == "failed"
    # only one seed, in a separate process's way: no selection, the seed's own status
    toolkit.setup(valid=[], fail_search_seeds=(12,))
    assert run_command(toolkit, "select", "--resume", str(root), "--only-seed", "2", "--no-progress") == 1
    assert "seed 12: failed" in capsys.readouterr().out


def test_select_refuses_a_short_preset_on_other_data(tmp_path):
    toolkit = fake_toolkit(valid=[])
    with pytest.raises(Exception, match="random_short_paper"):
        run_command(toolkit, "select", "--seeds", "1", "--short-preset", "random_short_paper",
                    "--out", str(tmp_path / "s"))


# -- end to end on digits --------------------------------------------------------------------

def test_end_to_end_random_select_and_compare(tmp_path, capsys):
    rand, sel = tmp_path / "random", tmp_path / "select"
    assert nas("random", "--samples", "3", *TINY_TRAIN, "--no-progress", "--out", str(rand), "--final") == 0
    assert len(list(csv.DictReader((rand / "candidates.csv").open()))) == 3
    for i in range(3):
        results = json.loads((rand / "candidates" / f"00{i}" / "results.json").read_text())
        assert {"wall_time_s", "device"} <= set(results)
    # a candidate already complete (resume after the last checkpoint): its validation metrics
    # come from the checkpoint, nothing is trained again
    record = json.loads((rand / "candidates" / "000" / "record.json").read_text())
    genotype = Genotype.from_dict(record["genotype"])
    results, valid = train_run(Toolkit.load(), None, genotype, rand / "candidates" / "000", device=None,
                               progress=False)
    assert valid == record["valid"] and results["wall_time_s"] == record["wall_time_s"]
    # the searches measure their cells' parameters (a resource penalty of weight 0: no effect on the search)
    assert nas("select", "--seeds", "2", *TINY_SEARCH, *TINY_TRAIN, "--set", "resource.metric=params",
               "--set", "resource.weight=0", "--no-progress", "--out", str(sel), "--final") == 0
    for i in range(2):
        assert (sel / f"seed_{i}" / "search" / "genotype.json").is_file()
        assert (sel / f"seed_{i}" / "short" / "results.json").is_file()
    assert (sel / "final" / "run_0" / "results.json").is_file()
    capsys.readouterr()
    assert nas("select", "--resume", str(sel), "--no-progress") == 0  # complete: nothing re-run
    assert "search (" not in capsys.readouterr().out
    assert nas("compare", str(sel), f"rand={rand}", "--out", str(tmp_path / "table")) == 0
    out = capsys.readouterr().out
    assert "| darts_2nd |" in out and "| rand |" in out and "CPU-hours" in out
    assert (tmp_path / "table.md").read_text().count("\n|") >= 3
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert [r["method"] for r in rows] == ["darts_2nd", "rand"] and all(r["dataset"] == "digits" for r in rows)

    def free_ops(genotype_file):  # by hand: the normal cell's ops among DARTS's weightless ones
        ops = [op for node in Genotype.from_json(genotype_file.read_text()).cells["normal"].nodes for op, _ in node]
        return f"{sum(op in PARAMETER_FREE for op in ops)}/{len(ops)}"

    # the collapse column: every search's derived normal cell; for random search the trained cell
    assert rows[0]["param_free_ops"] == "; ".join(free_ops(sel / f"seed_{i}" / "search" / "genotype.json")
                                                  for i in range(2))
    assert rows[1]["param_free_ops"] == free_ops(rand / "genotype.json")
    assert f"| {rows[0]['param_free_ops'].replace('; ', ', ')} |" in out
    # the cells' cost beside the accuracy: the mean of the searches' results, and the trained networks' multiply-adds
    costs = [json.loads((sel / f"seed_{i}" / "search" / "results.json").read_text())["cell_cost"] for i in range(2)]
    assert {c["unit"] for c in costs} == {"M params"} and rows[0]["cell_cost_unit"] == "M params"
    assert float(rows[0]["cell_cost"]) == pytest.approx(sum(c["value"] for c in costs) / 2)
    assert rows[1]["cell_cost"] == "" and "| - |" in out
    madds = json.loads((rand / "final" / "run_0" / "results.json").read_text())["multiply_adds"]
    assert float(rows[1]["madds_M"]) == pytest.approx(madds / 1e6)
    # another dataset in one final run: refused, naming both runs
    config = rand / "final" / "run_0" / "config.yaml"
    config.write_text(config.read_text().replace("name: digits", "name: cifar10"))
    assert nas("compare", str(sel), str(rand), "--out", str(tmp_path / "t2")) == 2
    err = capsys.readouterr().err
    assert "refuses to mix datasets" in err and str(rand) in err and "cifar10" in err
