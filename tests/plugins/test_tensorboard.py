"""The TensorBoard monitor: the printed command, the tags it writes (read back with TensorBoard's own
reader), the custom-scalars layout, the heatmap option (issue 21)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
import types
import urllib.request
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY
from nas_core import ArchSpec, Genotype, RunContext, cli, hookimpl
from nas_core.checkpoint import load_checkpoint
from nas_core.plugins import make_plugin_manager
from nas_tensorboard import monitor as plugin
from nas_tensorboard import plugin as tb_plugin
from nas_tensorboard.monitor import alpha_layout, tensorboard_command
from nas_tensorboard.plots import alpha_tag, edge_labels, entropy, parameter_free_count
from nas_tensorboard.plugin import TensorBoardOptions

pytestmark = pytest.mark.usefixtures("tensorboard_on")  # these tests read what the monitor writes

# softmax(alpha) of a demo search after one epoch: all values between 0.115 and 0.132
DEMO_LIKE = torch.tensor([[0.1150, 0.1250, 0.1240, 0.1190, 0.1320, 0.1280, 0.1300, 0.1270],
                          [0.1260, 0.1230, 0.1210, 0.1180, 0.1310, 0.1290, 0.1200, 0.1160]])
SPEC = ArchSpec(ops=tuple(f"op{i}" for i in range(8)), edges={"normal": ((0, 2), (1, 2))}, num_inputs=2,
                inputs_per_node=2)


def env_without_activated_venv() -> dict[str, str]:
    """The environment of a user who installed with the README and never activated the venv."""
    bindir = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PATH": os.pathsep.join(path)}


def run_with_help(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command + " --help", shell=True, cwd=cwd, env=env_without_activated_venv(),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("where", ["repo", "bin", "elsewhere", "no-script"])
def test_the_printed_command_works_as_printed(where, tmp_path, monkeypatch):
    bindir = Path(sys.executable).parent
    cwd = {"repo": REPO, "bin": bindir}.get(where, tmp_path)
    monkeypatch.chdir(cwd)
    if where == "no-script":  # an interpreter without a tensorboard script beside it
        monkeypatch.setattr(plugin, "tensorboard_script", lambda python: None)
    run_dir = tmp_path / "a run"  # a space: the path must be quoted
    command = tensorboard_command(run_dir)
    assert command.endswith(" --logdir_spec " + shlex.quote(f"a run:{run_dir}"))
    if where == "no-script":
        assert command.startswith(f"{Path(sys.executable).absolute()} -m tensorboard.main ")
    elif where == "bin":
        assert command.startswith(f"./{plugin.tensorboard_script(Path(sys.executable)).name} ")
    elif where == "repo" and bindir.absolute().is_relative_to(REPO):
        assert command.startswith(f"{bindir.absolute().relative_to(REPO)}/tensorboard ")
    result = run_with_help(command, cwd)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    assert "--logdir_spec" in result.stdout + result.stderr


@pytest.mark.parametrize("run_dir", ["runs/a,b", "runs/a:b", "a,b/run"])
def test_a_path_the_logdir_spec_would_misread_gets_plain_logdir(run_dir):
    """TensorBoard's spec splits at commas and at the name's first colon."""
    assert tensorboard_command(run_dir).endswith(" --logdir " + shlex.quote(run_dir))


def _tensorboard_url(tb: subprocess.Popen) -> str:
    """The address a starting TensorBoard prints (``TensorBoard 2.x at http://host:port/``)."""
    for line in tb.stdout:
        found = re.search(r"(http://\S+/) ", line)
        if found:
            return found.group(1)
    raise AssertionError("TensorBoard ended without serving")


def test_tensorboard_names_the_run_after_its_directory(tmp_path, monkeypatch):
    """The printed command, run: TensorBoard lists the run as ``NAME/tb`` (``--logdir RUN_DIR/tb``
    would list it as ``.``), as ``--logdir runs/`` names it, and keeps every epoch's image."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "darts-seed0"
    with SummaryWriter(str(run_dir / "tb")) as writer:
        writer.add_scalar("search/valid_loss", 2.0, 1)
        for epoch in range(12):  # more than the 10 TensorBoard keeps by default
            writer.add_image("cell/normal", torch.zeros(3, 2, 2), epoch)
    monkeypatch.chdir(tmp_path)
    command = [*shlex.split(tensorboard_command(run_dir)), "--host", "127.0.0.1", "--port", "0",
               "--reload_task", "blocking", "--reload_interval", "0"]  # read the logs once, then serve
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env_without_activated_venv()) as tb:
        watchdog = threading.Timer(240, tb.kill)
        watchdog.start()
        try:
            url = _tensorboard_url(tb)
            no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            runs = json.load(no_proxy.open(url + "data/runs", timeout=60))
            images = json.load(no_proxy.open(url + "data/plugin/images/images?run=darts-seed0/tb&tag=cell/normal",
                                             timeout=60))
        finally:
            watchdog.cancel()
            tb.kill()
    assert runs == ["darts-seed0/tb"]
    assert [image["step"] for image in images] == list(range(12))  # every epoch on the slider


@pytest.fixture
def nas_log():
    """The lines the plugin logs (the CLI's handler is not installed when hooks are called directly)."""
    lines: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger, handler = logging.getLogger("nas"), Handler(logging.INFO)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def read_events(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(logdir), size_guidance={"images": 0, "tensors": 0, "scalars": 0}).Reload()


def points(events, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def text(events, tag: str) -> str:
    return events.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()


class Relaxation:
    """What the monitor reads of a search's relaxation: its strengths as the run starts."""

    def strengths(self):
        return {"normal": torch.full((2, 8), 0.125)}


@pytest.mark.parametrize("scale, expected", [("fixed", (0.0, 1.0)), ("epoch", None)])
def test_monitor_writes_events_tensorboard_can_read(tmp_path, nas_log, monkeypatch, scale, expected):
    import numpy as np
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    drawn = []
    real_heatmap_png = plugin.heatmap_png

    def heatmap_png(values, spec, cell_type, **kwargs):
        drawn.append(kwargs["value_range"])
        return real_heatmap_png(values, spec, cell_type, **kwargs)

    monkeypatch.setattr(plugin, "heatmap_png", heatmap_png)
    config = types.SimpleNamespace(settings={"tensorboard": TensorBoardOptions(heatmap_scale=scale)})
    pm = make_plugin_manager(autoload=False)
    run = RunContext(dir=tmp_path / "run", config=config, phase="search", device=torch.device("cpu"),
                     plugin_manager=pm, epochs=1, spec=SPEC, components={"relaxation": Relaxation()})
    tb_plugin.nas_run_start(run)
    pm.hook.nas_epoch_start(run=run)
    pm.hook.nas_step_end(run=run, step=0, metrics={"train_loss": torch.tensor(2.5)})
    pm.hook.nas_epoch_end(run=run, epoch=0, metrics={"valid_loss": 2.0}, genotype=None,
                          strengths={"normal": DEMO_LIKE})
    pm.hook.nas_run_end(run=run, genotype=None, error=None)
    assert not [p for p in pm.get_plugins() if isinstance(p, plugin.TensorBoardMonitor)]  # unregistered

    command = tensorboard_command(run.dir)
    assert nas_log[0] == f"TensorBoard:  {command}" and nas_log[-1] == f"watch it in TensorBoard:  {command}"
    assert drawn == [expected, expected]  # at the start and after the epoch

    events = read_events(run.dir / "tb")
    assert points(events, "search_step/train_loss") == [(0, 2.5)]
    assert [step for step, seconds in points(events, "search_step/seconds") if seconds >= 0] == [0]
    assert points(events, "search/valid_loss") == [(1, 2.0)]
    assert [step for step, _ in points(events, "search/epoch_seconds")] == [1]
    assert points(events, "alpha/normal/edge_1_2/op4") == [(0, 0.125), (1, pytest.approx(0.131))]
    assert [step for step, _ in points(events, "alpha_entropy/normal")] == [0, 1]
    images = events.Images("alpha_heatmap/normal")
    assert [image.step for image in images] == [0, 1]
    pixels = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert("RGB"))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 300  # a labelled figure, not 2x8 squares
    table = text(events, "alpha_softmax/normal")
    assert "| `c_{k-1} -> 2` | 0.126 | 0.123 |" in table


def test_options_reach_the_config_and_bad_values_are_one_line(capsys):
    assert cli.main(["config", "show", "--set", "tensorboard.heatmap_scale=epoch"]) == 0
    assert "tensorboard:\n  heatmap_scale: epoch\n" in capsys.readouterr().out
    assert cli.main(["config", "show", "--set", "tensorboard.heatmap_scale=daily"]) == 2
    err = capsys.readouterr().err
    assert err == ("nas: error: invalid tensorboard option: 'heatmap_scale' must be in ('fixed', 'epoch') "
                   "(got 'daily')\n")


def test_the_recurrent_cell_is_charted_per_node():
    """With one input per node, every (input, op) pair into a node competes: one chart per node."""
    from nas_darts.rnn_space import CELL_TYPE, cell_edges

    spec = ArchSpec(ops=("none", "tanh", "relu"), edges={CELL_TYPE: cell_edges(3)}, num_inputs=1,
                    inputs_per_node=1)
    (category,) = alpha_layout(spec).values()
    assert list(category) == ["into 1", "into 2", "into 3"]
    kind, tags = category["into 3"]
    assert kind == "Multiline" and len(tags) == 3 * 3  # three inputs (0, 1, 2) x three ops
    assert tags[0] == f"^{re.escape(alpha_tag(CELL_TYPE, 0, 3, 'none'))}$"


# -- a whole search, read back ----------------------------------------------------------------

EPOCHS = 2
STEPS = 2  # TINY's search.max_steps_per_epoch


class Recorder:
    """The strengths a search passes on, and a stopping rule that logs what it measures (the hook
    point of RobustDARTS' Hessian eigenvalue) through ``run.epoch_metrics``."""

    def __init__(self):
        self.strengths: list[dict[str, torch.Tensor]] = []
        self.spec: ArchSpec | None = None

    @hookimpl
    def nas_run_start(self, run):
        self.spec = run.spec
        self.strengths.append(run.components["relaxation"].strengths())

    @hookimpl
    def nas_should_stop(self, run, epoch):
        run.epoch_metrics["hessian_eigenvalue"] = 0.5 + epoch
        return None

    @hookimpl
    def nas_epoch_end(self, strengths):
        self.strengths.append({k: v.clone() for k, v in strengths.items()})


def tiny_png(genotype: Genotype) -> dict[str, bytes]:
    """Stands in for Graphviz's ``dot`` where it is not installed."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), "white").save(buffer, format="png")
    return {name: buffer.getvalue() for name in genotype.cells}


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    from nas_core.draw import dot_available

    run = tmp_path_factory.mktemp("tb") / "run"
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NAS_DISABLE_PLUGINS", "")  # the monitor on (conftest turns it off)
        if not dot_available():
            patch.setattr(plugin, "png_bytes", tiny_png)
        assert cli.main(["run", "--optimizer", "darts_1st", "--set", f"search.epochs={EPOCHS}", *TINY,
                         "--out", str(run)], plugins=[recorder]) == 0
    return types.SimpleNamespace(dir=run, events=read_events(run / "tb"), strengths=recorder.strengths,
                                 spec=recorder.spec, state=load_checkpoint(run / "checkpoint.pt"))


def test_step_metrics_each_step(search):
    events, steps = search.events, list(range(EPOCHS * STEPS))
    for name in ("train_loss", "arch_loss", "arch_grad_norm", "train_lr", "arch_lr", "seconds"):
        assert [step for step, _ in points(events, f"search_step/{name}")] == steps, name
    assert all(v > 0 for _, v in points(events, "search_step/arch_grad_norm") + points(events, "search_step/seconds"))
    arch_lr = search.state["config"]["optimizer"]["arch_lr"]
    assert [v for _, v in points(events, "search_step/arch_lr")] == pytest.approx([arch_lr] * len(steps))
    # the weights' lr follows the cosine schedule: each step's is the lr its epoch reports
    epoch_lr = [v for _, v in points(events, "search/lr")]
    assert [v for _, v in points(events, "search_step/train_lr")] == pytest.approx(
        [lr for lr in epoch_lr for _ in range(STEPS)])


def test_epoch_metrics_are_the_means_of_the_steps(search):
    events = search.events
    for name in ("arch_grad_norm", "train_lr", "train_loss"):
        step_values = [v for _, v in points(events, f"search_step/{name}")]
        means = [sum(step_values[e * STEPS:(e + 1) * STEPS]) / STEPS for e in range(EPOCHS)]
        assert points(events, f"search/{name}") == [(e + 1, pytest.approx(m)) for e, m in enumerate(means)], name
    assert [step for step, _ in points(events, "search/epoch_seconds")] == [1, 2]
    # what a stopping rule measured: in the epoch's metrics, its checkpoint and TensorBoard
    assert points(events, "search/hessian_eigenvalue") == [(1, 0.5), (2, 1.5)]
    assert search.state["metrics"]["hessian_eigenvalue"] == 1.5


def test_every_op_strength_on_every_edge_as_the_relaxation_had_it(search):
    spec, events = search.spec, search.events
    assert len(search.strengths) == EPOCHS + 1  # the start, then each epoch
    final = {k: torch.softmax(a, dim=-1) for k, a in search.state["relaxation"].items()}
    for key, alphas in final.items():  # the checkpoint's alphas (alphas.normal, ...), softmaxed
        torch.testing.assert_close(search.strengths[-1][key.split(".")[-1]], alphas)
    alpha_tags = set()
    for cell_type in spec.edges:
        for e, (src, dst) in enumerate(spec.edges[cell_type]):
            for o, op in enumerate(spec.ops):
                tag = alpha_tag(cell_type, src, dst, op)
                alpha_tags.add(tag)
                assert points(events, tag) == [(x, float(s[cell_type][e, o])) for x, s in enumerate(search.strengths)]
        assert points(events, f"alpha_entropy/{cell_type}") == [
            (x, pytest.approx(entropy(s[cell_type]))) for x, s in enumerate(search.strengths)]
    assert {t for t in events.Tags()["scalars"] if t.startswith("alpha/")} == alpha_tags


def test_the_custom_scalars_layout_charts_every_edge_with_existing_tags(search):
    from tensorboard.plugins.custom_scalar import layout_pb2

    events, spec = search.events, search.spec
    (config,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    scalars = events.Tags()["scalars"]
    charted = []
    assert [c.title for c in layout.category] == [f"alpha {cell_type}" for cell_type in spec.edges]
    for category, cell_type in zip(layout.category, spec.edges):
        assert [chart.title for chart in category.chart] == edge_labels(spec, cell_type)  # c_{k-2} -> 2, ...
        for chart in category.chart:
            for regex in chart.multiline.tag:
                (tag,) = [t for t in scalars if re.fullmatch(regex, t)]  # exactly one existing tag
                charted.append(tag)
    assert sorted(charted) == sorted(t for t in scalars if t.startswith("alpha/"))


def test_images_texts_and_the_collapse_count_each_epoch(search):
    events, spec = search.events, search.spec
    genotypes = [Genotype.from_json((search.dir / "genotypes" / f"epoch_{e:03d}.json").read_text())
                 for e in range(1, EPOCHS + 1)]
    for cell_type in spec.edges:
        assert [image.step for image in events.Images(f"alpha_heatmap/{cell_type}")] == [0, 1, 2]
        assert [image.step for image in events.Images(f"cell/{cell_type}")] == [1, 2]
        assert points(events, f"collapse/parameter_free_{cell_type}") == [
            (e, parameter_free_count(g, cell_type, spec)) for e, g in enumerate(genotypes, 1)]
    assert [t.step for t in events.Tensors("genotype/text_summary")] == [1, 2]
    assert genotypes[-1].to_json() in text(events, "genotype")
    assert f"--logdir_spec run:{search.dir}" in (search.dir / "log.txt").read_text()
