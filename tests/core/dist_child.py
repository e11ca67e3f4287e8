"""One process of a torchrun job in tests/core/test_distributed.py: the toy components plus the
DARTS plugin, and test hooks that dump each rank's tensors or kill rank 1 mid-run."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import torch  # noqa: E402

import nas_darts.plugin as darts  # noqa: E402
from nas_core import cli, hookimpl  # noqa: E402
from stubs import ToyPlugin  # noqa: E402


class TestHooks:
    def __init__(self, dump: str | None, kill_at_epoch: int | None, hang_at_epoch: int | None):
        self.dump, self.kill_at_epoch, self.hang_at_epoch = dump, kill_at_epoch, hang_at_epoch

    @hookimpl
    def nas_step_end(self, run):
        if run.rank == 1 and run.epoch == self.kill_at_epoch:
            os.kill(os.getpid(), signal.SIGKILL)  # a rank that dies without a word
        if run.rank == 1 and run.epoch == self.hang_at_epoch:
            time.sleep(3600)  # a rank that hangs

    @hookimpl
    def nas_run_end(self, run, error):
        if error is None and self.dump:
            tensors = {f"{role}.{name}": t.detach().clone() for role in ("supernet", "relaxation", "network")
                       if role in run.components for name, t in run.components[role].state_dict().items()}
            torch.save(tensors, Path(self.dump) / f"rank{run.rank}.pt")


if __name__ == "__main__":
    options = json.loads(sys.argv[1])
    hooks = TestHooks(options.get("dump"), options.get("kill_at_epoch"), options.get("hang_at_epoch"))
    sys.exit(cli.main(sys.argv[2:], plugins=[ToyPlugin(), ("darts", darts), hooks], autoload=False))
