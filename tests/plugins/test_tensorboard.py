"""The TensorBoard monitor: heatmap colour scale, the printed command, the events it writes."""

from __future__ import annotations

import io
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from nas_core import ArchSpec, RunContext
from nas_core.plugins import make_plugin_manager
from nas_tensorboard import monitor as plugin
from nas_tensorboard import plugin as tb_plugin
from nas_tensorboard.monitor import _STOPS, colour_range, colour_scale_text, heatmap, tensorboard_command

# softmax(alpha) of a demo search after one epoch: all values between 0.115 and 0.132
DEMO_LIKE = torch.tensor([[0.1150, 0.1250, 0.1240, 0.1190, 0.1320, 0.1280, 0.1300, 0.1270],
                          [0.1260, 0.1230, 0.1210, 0.1180, 0.1310, 0.1290, 0.1200, 0.1160]])


def cell_colour(image: torch.Tensor, row: int, col: int, cell_px: int) -> torch.Tensor:
    return image[:, row * cell_px, col * cell_px]


def test_heatmap_spans_the_full_colour_scale_of_its_own_values():
    cell_px = 3
    image = heatmap(DEMO_LIKE, cell_px=cell_px)
    assert image.shape == (3, 2 * cell_px, 8 * cell_px)
    assert not image.isnan().any()
    darkest = divmod(int(DEMO_LIKE.argmin()), DEMO_LIKE.shape[1])
    brightest = divmod(int(DEMO_LIKE.argmax()), DEMO_LIKE.shape[1])
    torch.testing.assert_close(cell_colour(image, *darkest, cell_px), _STOPS[0])
    torch.testing.assert_close(cell_colour(image, *brightest, cell_px), _STOPS[-1])
    # every cell is a square of one colour, and the 16 different values give 16 different colours
    cells = image[:, ::cell_px, ::cell_px]
    assert torch.equal(image, cells.repeat_interleave(cell_px, 1).repeat_interleave(cell_px, 2))
    assert len({tuple(image[:, r, c].tolist()) for r in range(0, 2 * cell_px, cell_px)
                for c in range(0, 8 * cell_px, cell_px)}) == 16
    assert colour_range(DEMO_LIKE) == pytest.approx((0.115, 0.132))
    assert colour_scale_text(colour_range(DEMO_LIKE)) == "colour scale: 0.1150 (dark) .. 0.1320 (bright)"


def test_heatmap_of_a_constant_matrix_is_the_middle_colour_without_nan():
    image = heatmap(torch.full((3, 4), 0.125), cell_px=2)
    assert not image.isnan().any()
    torch.testing.assert_close(image, _STOPS[2].view(3, 1, 1).expand(3, 6, 8))
    assert colour_scale_text(colour_range(torch.full((3, 4), 0.125))) == \
        "colour scale: all values 0.1250 (middle colour)"
    # a NaN entry (a diverged search) is drawn in the middle colour too, and the rest still scaled
    values = torch.tensor([[0.0, float("nan"), 1.0]])
    image = heatmap(values, cell_px=1)
    assert not image.isnan().any()
    torch.testing.assert_close(image[:, 0, 1], _STOPS[2])
    torch.testing.assert_close(image[:, 0, 2], _STOPS[-1])


def test_heatmap_with_a_fixed_range():
    image = heatmap(torch.tensor([[0.0, 0.25, 1.0]]), cell_px=1, value_range=(0.0, 1.0))
    for col, stop in enumerate((0, 1, 4)):
        torch.testing.assert_close(image[:, 0, col], _STOPS[stop])


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
    logdir = tmp_path / "a run" / "tb"  # a space: the path must be quoted
    command = tensorboard_command(logdir)
    assert command.endswith(" --logdir " + shlex.quote(str(logdir)))
    if where == "no-script":
        assert command.startswith(f"{Path(sys.executable).absolute()} -m tensorboard.main ")
    elif where == "bin":
        assert command.startswith(f"./{plugin.tensorboard_script(Path(sys.executable)).name} ")
    elif where == "repo" and bindir.absolute().is_relative_to(REPO):
        assert command.startswith(f"{bindir.absolute().relative_to(REPO)}/tensorboard ")
    result = run_with_help(command, cwd)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    assert "--logdir" in result.stdout + result.stderr


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


def test_monitor_writes_events_tensorboard_can_read(tmp_path, nas_log, monkeypatch):
    import numpy as np
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    spec = ArchSpec(ops=tuple(f"op{i}" for i in range(8)), edges={"normal": ((0, 2), (1, 2))},
                    num_inputs=2, inputs_per_node=2)
    pm = make_plugin_manager(autoload=False)
    run = RunContext(dir=tmp_path / "run", config=None, phase="search", device=torch.device("cpu"),
                     plugin_manager=pm, epochs=1, spec=spec)
    tb_plugin.nas_run_start(run)
    pm.hook.nas_step_end(run=run, step=0, metrics={"train_loss": torch.tensor(2.5)})
    pm.hook.nas_epoch_end(run=run, epoch=0, metrics={"valid_loss": 2.0}, genotype=None,
                          strengths={"normal": DEMO_LIKE})
    pm.hook.nas_run_end(run=run, genotype=None, error=None)
    assert not [p for p in pm.get_plugins() if isinstance(p, plugin.TensorBoardMonitor)]  # unregistered

    command = tensorboard_command(run.dir / "tb")
    assert nas_log[0] == f"TensorBoard:  {command}" and nas_log[-1] == f"watch it in TensorBoard:  {command}"

    events = EventAccumulator(str(run.dir / "tb"), size_guidance={"images": 0, "tensors": 0}).Reload()
    tags = events.Tags()
    assert [(e.step, e.value) for e in events.Scalars("search_step/train_loss")] == [(0, 2.5)]
    assert [(e.step, e.value) for e in events.Scalars("search/valid_loss")] == [(1, 2.0)]
    assert "alpha_softmax/normal" in tags["images"]
    (image,) = events.Images("alpha_softmax/normal")
    pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
    assert pixels.shape == (2 * 12, 8 * 12, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) == 16  # not one flat colour
    (text,) = events.Tensors("alpha_softmax/normal/text_summary")
    table = text.tensor_proto.string_val[0].decode()
    assert "colour scale: 0.1150 (dark) .. 0.1320 (bright)" in table and "| 0->2 | 0.115 |" in table
