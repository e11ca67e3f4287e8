"""A full disk under the TensorBoard monitor (issue 16): the event writer's background thread
prints no traceback; the error reaches the run in its own thread (where nas reports it in one
line), and closing the writer of a failed run raises nothing more."""

from __future__ import annotations

import errno

import pytest
import torch

from nas_core import RunContext
from nas_core.plugins import make_plugin_manager
from nas_tensorboard import plugin as tb_plugin
from nas_tensorboard.monitor import TensorBoardMonitor

pytestmark = pytest.mark.usefixtures("tensorboard_on")  # these tests read what the monitor writes


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # pytest's report of one
def test_a_full_disk_is_the_runs_error_not_a_thread_traceback(tmp_path, monkeypatch, capsys):
    from tensorboard.summary.writer.record_writer import RecordWriter

    pm = make_plugin_manager(autoload=False)
    run = RunContext(dir=tmp_path / "run", config=None, phase="train", device=torch.device("cpu"),
                     plugin_manager=pm, epochs=1)
    tb_plugin.nas_run_start(run)
    (monitor,) = [p for p in pm.get_plugins() if isinstance(p, TensorBoardMonitor)]

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RecordWriter, "write", full)
    with pytest.raises(OSError, match="No space left on device"):
        pm.hook.nas_epoch_end(run=run, epoch=0, metrics={"valid_loss": 2.0}, genotype=None, strengths={})
    monitor.writer.file_writer.event_writer._async_writer._worker.join(timeout=10)  # its thread has ended
    pm.hook.nas_run_end(run=run, genotype=None, error=OSError(errno.ENOSPC, "No space left on device"))
    assert not [p for p in pm.get_plugins() if isinstance(p, TensorBoardMonitor)]  # unregistered all the same
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception in thread" not in err, err
