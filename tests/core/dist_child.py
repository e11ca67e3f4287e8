"""One process of a torchrun job in tests/core/test_distributed*.py: the toy components plus the
DARTS plugin (or, with ``"installed": true``, the installed plugins), and test hooks that dump
each rank's tensors, kill or hang rank 1 mid-run, SIGTERM torchrun, or fail one rank alone before
the run starts."""

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
    def __init__(self, dump: str | None, kill_at_epoch: int | None, hang_at_epoch: int | None,
                 terminate_at_epoch: int | None = None):
        self.dump, self.kill_at_epoch, self.hang_at_epoch = dump, kill_at_epoch, hang_at_epoch
        self.terminate_at_epoch = terminate_at_epoch

    @hookimpl
    def nas_step_end(self, run):
        if run.rank == 0 and run.epoch == self.terminate_at_epoch:
            os.kill(os.getppid(), signal.SIGTERM)  # as a scheduler stops torchrun, which stops every process
            time.sleep(60)
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


def fail_before_start_on(rank: int) -> None:
    """Rank ``rank`` alone finds a problem in its last check before the run starts."""
    from nas_core import ConfigError, distributed

    if distributed.env_rank() == rank:
        def refuse(batch_size, key):
            raise ConfigError(f"a problem only rank {rank} has")

        distributed.check_batch_split = refuse


if __name__ == "__main__":
    options = json.loads(sys.argv[1])
    hooks = TestHooks(options.get("dump"), options.get("kill_at_epoch"), options.get("hang_at_epoch"),
                      options.get("terminate_at_epoch"))
    if options.get("fail_before_start_on") is not None:
        fail_before_start_on(options["fail_before_start_on"])
    if options.get("installed"):
        sys.exit(cli.main(sys.argv[2:], plugins=[hooks]))
    sys.exit(cli.main(sys.argv[2:], plugins=[ToyPlugin(), ("darts", darts), hooks], autoload=False))
