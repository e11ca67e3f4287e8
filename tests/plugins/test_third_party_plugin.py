"""A third-party plugin, installed for real: docs/examples/nas-example-plugin is pip-installed
into a temporary directory and the ``nas`` command, run as a subprocess, must find it through
its entry point alone (no import list, no registration by the caller)."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
import yaml

from nas_core import DataInfo, Genotype, GenotypeError, MixingWeights, Toolkit
from nas_core.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "nas-example-plugin"
TIMEOUT_S = 120  # per subprocess; a hung child fails the test instead of the whole session


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed example package: its code and its .dist-info."""
    tmp = tmp_path_factory.mktemp("example_plugin")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    source = tmp / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "--quiet", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"
    assert list(target.glob("nas_example_plugin-*.dist-info/entry_points.txt"))
    return target


def nas(site: Path, *args: str, cwd: Path, disable: str = "tensorboard") -> subprocess.CompletedProcess:
    """Run the installed ``nas`` command with the example package importable."""
    script = Path(sys.executable).parent / ("nas.exe" if os.name == "nt" else "nas")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "nas_core.cli"]
    paths = [str(site), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "NAS_DISABLE_PLUGINS": disable}
    for var in ("NAS_NO_PLUGIN_AUTOLOAD", "NAS_ONLY_PLUGINS"):  # the point of these tests is autoloading
        env.pop(var, None)
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def plugin_block(listing: str, name: str) -> str:
    """The lines ``nas plugins`` prints for one plugin: its header and the indented lines below."""
    match = re.search(rf"^{re.escape(name)}  \(.*\)\n(?:  .*\n?)*", listing, flags=re.MULTILINE)
    assert match, f"plugin {name!r} not listed:\n{listing}"
    return match.group(0)


def test_nas_plugins_lists_the_example(site: Path, tmp_path: Path) -> None:
    proc = nas(site, "plugins", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    block = plugin_block(proc.stdout, "example")
    assert block.startswith("example  (nas-example-plugin 0.1.0)")
    assert "search spaces: tiny_mlp" in block
    assert "commands: tiny-mlp-info" in block
    assert "darts  (nas-toolkit" in proc.stdout  # built-ins still load beside it


def test_listing_with_the_example_installed_loads_no_torch(site: Path, tmp_path: Path) -> None:
    """Every nas command loads every plugin module: the example's must not import torch."""
    code = ("import sys, contextlib, io\nfrom nas_core import cli\n"
            "for args in (['list'], ['plugins'], ['--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        cli.main(args)\n"
            "print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    for var in ("NAS_NO_PLUGIN_AUTOLOAD", "NAS_ONLY_PLUGINS"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert "tiny_mlp" in nas(site, "list", "tiny*", cwd=tmp_path).stdout


def test_the_plugin_command_is_listed_and_runs(site: Path, tmp_path: Path) -> None:
    proc = nas(site, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    help_text = " ".join(proc.stdout.split())  # argparse wraps to the terminal's width
    assert "tiny-mlp-info print the edges and candidate ops the tiny_mlp space searches over [plugin example]" \
        in help_text

    proc = nas(site, "tiny-mlp-info", "--nodes", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "search space tiny_mlp (plugin example)",
        "ops: none, identity, linear_relu, linear_tanh (zero op: none)",
        "cell 'cell': 3 x 4 weights, one row per edge (src -> dst):",
        "  0 -> 1",
        "  0 -> 2",
        "  1 -> 2",
    ]
    assert "cell 'cell': 6 x 4 weights" in nas(site, "tiny-mlp-info", cwd=tmp_path).stdout  # the default: 3 nodes


def test_the_plugin_command_reports_bad_flags_in_one_line(site: Path, tmp_path: Path) -> None:
    proc = nas(site, "tiny-mlp-info", "--nodes", "0", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "nas: error: --nodes: 'nodes' must be >= 1: 0"
    assert proc.stdout == ""


def test_disabling_the_example_unregisters_its_space(site: Path, tmp_path: Path) -> None:
    proc = nas(site, "list", cwd=tmp_path, disable="tensorboard,example")
    assert proc.returncode == 0, proc.stderr
    assert "tiny_mlp" not in proc.stdout and "tiny-mlp-info" not in proc.stdout
    assert "darts_cnn" in proc.stdout
    proc = nas(site, "tiny-mlp-info", cwd=tmp_path, disable="tensorboard,example")
    assert proc.returncode == 2  # argparse: no such command
    assert "invalid choice: 'tiny-mlp-info'" in proc.stderr


@pytest.fixture(scope="module")
def search_run(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a two-step second-order search on tiny_mlp."""
    cwd = tmp_path_factory.mktemp("search")
    proc = nas(site, "run", "--space", "tiny_mlp", "--optimizer", "darts_2nd", "--set", "task.search_split=0.75",
               "--set", "search.epochs=1", "--set", "search.max_steps_per_epoch=2",
               "--out", "RUN", "--no-progress", cwd=cwd)
    assert proc.returncode == 0, f"nas run failed:\n{proc.stdout}\n{proc.stderr}"
    return cwd / "RUN"


def test_search_writes_a_one_input_genotype(search_run: Path) -> None:
    genotype = Genotype.from_json((search_run / "genotype.json").read_text())
    cell = genotype.cells["cell"]
    assert len(cell.nodes) == 3
    assert all(len(node) == 1 for node in cell.nodes)  # topk with the space's inputs_per_node=1
    assert all(op != "none" for node in cell.nodes for op, _ in node)
    assert cell.concat == (1, 2, 3)
    config = yaml.safe_load((search_run / "config.yaml").read_text())
    assert config["space"] == {"name": "tiny_mlp", "width": 32, "nodes": 3}
    assert config["optimizer"]["name"] == "darts_2nd"
    assert config["task"]["name"] == "classification" and config["task"]["search_split"] == 0.75
    log = (search_run / "log.txt").read_text()
    # the supernet is evaluated on the architecture stream after the epoch
    assert re.search(r"epoch 1/1 .*\barch_loss=.* train_top1_error=\S+ .*valid_top1_error=\S+", log), log


def test_searched_genotype_trains_from_scratch(site: Path, search_run: Path, tmp_path: Path) -> None:
    proc = nas(site, "train", "--space", "tiny_mlp", "--genotype", str(search_run), "--set", "train.epochs=1",
               "--set", "train.max_steps_per_epoch=2", "--out", "TRAIN", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, f"nas train failed:\n{proc.stdout}\n{proc.stderr}"
    results = json.loads((tmp_path / "TRAIN" / "results.json").read_text())
    assert results["space"] == "tiny_mlp" and results["task"] == "classification"
    assert 0 <= results["test_top1_error"] <= 1
    assert results["params"] > 0
    config = yaml.safe_load((tmp_path / "TRAIN" / "config.yaml").read_text())
    assert config["network"] == {"width": 32, "nodes": 3}  # tiny_mlp's options, not the preset's darts_cnn ones


def test_preset_options_of_another_space_do_not_apply(site: Path, tmp_path: Path) -> None:
    proc = nas(site, "config", "show", "--space", "tiny_mlp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["space"] == {"name": "tiny_mlp", "width": 32, "nodes": 3}


@pytest.fixture
def example_plugin(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The example's plugin module, imported in this process from the installed copy."""
    monkeypatch.syspath_prepend(str(site))
    yield importlib.import_module("nas_example_plugin.plugin")
    for name in [n for n in sys.modules if n.split(".")[0] == "nas_example_plugin"]:
        del sys.modules[name]  # later tests must not see a module whose path is gone


def test_searched_genotype_builds_a_network(example_plugin: ModuleType, search_run: Path) -> None:
    # The way a plugin's own tests register it: no entry points, the module passed in.
    toolkit = Toolkit.load([("example", example_plugin)], autoload=False)
    entry = toolkit.registries.spaces.get("tiny_mlp")
    assert entry.plugin == "example"
    space = entry.factory(entry.options(width=16))
    data = DataInfo(input_shape=(1, 8, 8), num_classes=10)

    supernet = space.build_supernet(data)
    mix = MixingWeights({"cell": torch.full(space.arch_spec().shape("cell"), 0.25)})
    assert supernet(torch.randn(5, 1, 8, 8), arch_weights=mix).shape == (5, 10)
    with pytest.raises(TypeError):
        supernet(torch.randn(5, 1, 8, 8), mix)  # arch_weights is keyword-only

    genotype = Genotype.from_json((search_run / "genotype.json").read_text())
    net = space.build_network(genotype, data)
    assert net(torch.randn(5, 1, 8, 8)).shape == (5, 10)

    bad = Genotype.from_dict({"cell": {"nodes": [[["conv_3x3", 0]]], "concat": [1]}})
    with pytest.raises(GenotypeError, match="unknown op 'conv_3x3'"):
        space.build_network(bad, data)
    with pytest.raises(GenotypeError, match="needs the cell 'cell'"):
        space.build_network(Genotype.from_dict({"normal": {"nodes": [[["identity", 0]]], "concat": [1]}}), data)


def test_the_command_runs_in_process(example_plugin: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    # `main(argv, plugins=..., autoload=False)`: the command with exactly the plugins named.
    assert main(["tiny-mlp-info", "--nodes", "1"], plugins=[("example", example_plugin)], autoload=False) == 0
    out = capsys.readouterr().out
    assert "cell 'cell': 1 x 4 weights, one row per edge (src -> dst):\n  0 -> 1\n" in out


def test_unknown_space_option_is_a_one_line_error(site: Path, tmp_path: Path) -> None:
    proc = nas(site, "run", "--space", "tiny_mlp", "--set", "space.no_such_key=1", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "no_such_key" in lines[0]
    assert "valid keys" in lines[0] and "nodes" in lines[0] and "width" in lines[0]
    assert not (tmp_path / "runs").exists()  # config errors stop before a run directory is made


def test_the_suite_sees_only_the_projects_plugins(tmp_path: Path) -> None:
    """An installed plugin that adds a config section changes no test (tests/conftest.py sets
    NAS_ONLY_PLUGINS), and is seen once a test lifts that."""
    site = tmp_path / "site"
    (site / "extras_probe-0.1.dist-info").mkdir(parents=True)
    (site / "extras_probe-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: extras-probe\n"
                                                                  "Version: 0.1\n")
    (site / "extras_probe-0.1.dist-info" / "entry_points.txt").write_text("[nas]\nextras = extras_probe\n")
    (site / "extras_probe.py").write_text(
        "import attrs\nfrom nas_core import hookimpl\n\n@attrs.frozen\nclass Probe:\n    level: int = 1\n\n"
        "@hookimpl\ndef nas_register_settings(register):\n    register('extras_probe', Probe)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    show = [sys.executable, "-m", "nas_core.cli", "config", "show"]
    hermetic = subprocess.run(show, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    assert hermetic.returncode == 0 and "extras_probe" not in hermetic.stdout, hermetic.stderr
    env.pop("NAS_ONLY_PLUGINS")
    open_ = subprocess.run(show, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    assert open_.returncode == 0 and "extras_probe:" in open_.stdout, open_.stderr
