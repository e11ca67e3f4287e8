"""Data-parallel runs launched by torchrun: the process group, the few collectives the engine
needs, and how the processes of a job stop together. Nothing here runs on a single process
(``WORLD_SIZE`` unset or 1).

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables; the group is
NCCL on GPUs and gloo on CPU. A rank that dies makes torchrun end the others; a rank that hangs
makes the others' next collective fail after ``NAS_DIST_TIMEOUT`` seconds (default 300).

Stopping together (docs/distributed.md): every process checks what it prepared (options, data,
the checkpoint it resumes) before its run writes anything, and meets the others at the *start
check*, where each posts "ready" or its failure in torchrun's key-value store. If any failed,
all stop with the first failure: rank 0 prints it, the others print nothing, and every process
exits with its status. The store is used rather than a collective because a process can fail
before the process group exists, and because a collective left waiting for a process that has
gone ends in a timeout or an abort rather than a message.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from nas_core.errors import ConfigError, NasError


def world_size() -> int:
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def env_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun), known before the process group exists."""
    return int(os.environ.get("RANK", "0")) if world_size() > 1 else 0


def init(device: Any) -> tuple[int, int]:
    """Join the torchrun job (once per process); returns (rank, world size). (0, 1) without torchrun."""
    if world_size() == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(seconds=timeout_s())
        dist.init_process_group(backend, timeout=timeout, device_id=device if device.type == "cuda" else None)
    return dist.get_rank(), dist.get_world_size()


def timeout_s() -> float:
    try:
        return float(os.environ.get("NAS_DIST_TIMEOUT", "300"))
    except ValueError:
        raise ConfigError(f"NAS_DIST_TIMEOUT={os.environ['NAS_DIST_TIMEOUT']!r} is not a number of seconds") from None


def is_collective_failure(error: BaseException) -> bool:
    """A collective that timed out or lost its peers (as gloo and NCCL report it)."""
    import torch.distributed as dist

    text = str(error)
    return isinstance(error, getattr(dist, "DistError", ())) or any(
        word in text for word in ("gloo", "NCCL", "Timed out", "Connection reset", "Connection closed"))


def active() -> bool:
    import torch.distributed as dist

    return world_size() > 1 and dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """True on rank 0 (and on a single process): the one that prints and writes."""
    if not active():
        return True
    import torch.distributed as dist

    return dist.get_rank() == 0


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_floats(values: list[float]) -> list[float]:
    """Element-wise sums over ranks (evaluation counts and totals)."""
    if not active():
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def shard(items: list[Any], rank: int, world: int) -> list[Any]:
    """Rank ``rank``'s contiguous share of ``items`` (sizes differ by at most one)."""
    n = len(items)
    return items[rank * n // world:(rank + 1) * n // world]


def check_batch_split(batch_size: int, key: str) -> None:
    """Each process reads ``batch_size / N`` examples of every global batch: refuse a batch size
    that does not split evenly, before anything is written."""
    world = world_size()
    if batch_size % world:
        raise ConfigError(f"{key}={batch_size} does not split evenly over the {world} processes of this torchrun "
                          f"job; choose a multiple of {world}")


def resume_command(phase: str, run_dir: Path, world: int | None = None) -> str:
    """The command line that continues the run in ``run_dir`` (its phase ``phase``) with ``world``
    processes, by default this job's: ``nas ... --resume`` for one, else the torchrun command of
    docs/distributed.md."""
    world = world_size() if world is None else world
    tail = f"{'run' if phase == 'search' else 'train'} --resume {shlex.quote(str(run_dir))}"
    if world == 1:
        return f"nas {tail}"
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1")) if world == world_size() else 1
    if nodes > 1 and world % nodes == 0:
        return (f"torchrun --nnodes={nodes} --nproc_per_node={world // nodes} --rdzv_backend=c10d "
                f"--rdzv_endpoint=HOST:PORT --rdzv_id=ID -m nas_core.cli {tail} (on every machine)")
    return f"torchrun --standalone --nproc_per_node={world} -m nas_core.cli {tail}"


# -- stopping together ---------------------------------------------------------------------------

class JobStopped(Exception):
    """Another process of the torchrun job failed before the run began: this one stops with that
    failure's exit status (and, on rank 0, prints its line)."""

    def __init__(self, status: int, line: str):
        super().__init__(line)
        self.status, self.line = status, line


_store: Any = None
_checks = 0  # start checks this process took part in: the same count on every process, so each has its keys
_keys = ""  # the prefix of the last start check's keys
_verdict: tuple[int, str] | None = None  # the failure the job agreed on at its last start check
_running = False  # a start check passed and its run has not finished
_stuck = False  # a start check waited in vain for a process: no more meetings
_spoke = False  # rank 0 printed the line of a failure
_failed = False  # this process ends with a failure


def _job_store() -> Any:
    """torchrun's key-value store (as ``init_process_group`` finds it), with or without a process group."""
    global _store
    if _store is None:
        import torch.distributed as dist

        _store, _, _ = next(dist.rendezvous("env://", timeout=timedelta(seconds=timeout_s())))
    return _store


def _wait(keys: list[str], seconds: float) -> bool:
    """Whether all ``keys`` were posted within ``seconds``. Polls, so that a SIGTERM (torchrun
    stopping the job) is handled meanwhile rather than after a blocking wait."""
    store = _job_store()
    deadline = time.monotonic() + seconds
    while not store.check(keys):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _exchange(failure: tuple[int, str] | None) -> tuple[int, str] | None:
    """Post this process's verdict at the next start check and return the job's: the first
    failure in rank order (naming its rank unless it is rank 0's), or None."""
    global _checks, _keys, _verdict, _stuck
    _keys = f"nas/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/check{_checks}"
    _checks += 1
    _job_store().set(f"{_keys}/rank{env_rank()}", json.dumps(failure))
    keys = [f"{_keys}/rank{r}" for r in range(world_size())]
    if not _wait(keys, timeout_s()):
        _stuck = True
        raise NasError(f"another process of this torchrun job did not reach the start of the run within "
                       f"NAS_DIST_TIMEOUT={timeout_s():g} s")
    for r, key in enumerate(keys):
        posted = json.loads(_job_store().get(key))
        if posted is not None:
            status, line = posted
            _verdict = (status, line if r == 0 else f"{line} (on rank {r})")
            return _verdict
    return None


def start_check() -> None:
    """Every process calls this just before its run writes anything (see the module's docstring);
    JobStopped when another process failed before getting here."""
    global _running
    if world_size() == 1:
        return
    verdict = _exchange(None)
    if verdict is not None:
        raise JobStopped(*verdict)
    _running = True


def run_finished() -> None:
    """The run the last start check began ended well on this process."""
    global _running
    _running = False


# how long a process other than rank 0 waits for rank 0 to print a failure, before it leaves
AGREED_WAIT_S = 30.0  # one both agreed on: rank 0 is printing it
RUN_WAIT_S = 5.0  # one during the run: rank 0 may have failed the same way (then it prints) or not


def conclude(status: int, line: str | None, *, agree: bool = True) -> tuple[int, str | None]:
    """How this process ends, given how it would end alone: the exit status and the line to print
    (None: nothing). One process speaks for a torchrun job: rank 0.

    A failure before the run began is agreed on at the start check, so every process ends with
    the job's first failure. A failure during the run is each process's own: rank 0 prints its
    line; another process prints its line only if rank 0 printed none within ``RUN_WAIT_S`` (a
    failure of that process alone; rank 0 then reports that a process stopped answering).
    ``agree=False`` for interrupts, which reach every process at once. Each failed process's line
    also goes to its torchrun error file, for torchrun's failure report."""
    global _spoke, _failed
    if world_size() == 1:
        return status, line
    _tell_torchrun(line)
    rank = env_rank()
    if status == 0 or not line:
        return status, line
    _failed = True
    try:
        if agree and not _running and _verdict is None and not _stuck:
            _exchange((status, line))
        if _verdict is not None:
            status, line = _verdict
            if rank > 0:
                _wait([f"{_keys}/spoke"], AGREED_WAIT_S)
                return status, None
        elif rank > 0:
            return status, None if not agree or _wait([f"{_keys}/spoke"], RUN_WAIT_S) else f"{line} (on rank {rank})"
    except (Exception, KeyboardInterrupt):  # no store, or a process that never came: speak for this one
        return status, line if rank == 0 else f"{line} (on rank {rank})"
    _spoke = True
    return status, line


def finish() -> None:
    """The last thing a process of a torchrun job does: rank 0 tells the others that it printed
    its failure (they wait for that, see conclude, so that none leaves first and has torchrun
    stop rank 0 before it speaks), then the process leaves its process group (one left to the
    interpreter's exit can abort the process). A process leaving with a failure then ignores
    SIGTERM: the one torchrun sends to the processes still running when the first has left
    would only turn their exit status into "killed by SIGTERM" in torchrun's report."""
    if world_size() == 1:
        return
    if _failed and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _spoke and _keys:
        try:
            _job_store().set(f"{_keys}/spoke", "1")
        except Exception:  # noqa: S110 - nobody left to tell
            pass
    if active() and not _running:  # not after a failure in the run: a collective may be pending
        import torch.distributed as dist

        dist.destroy_process_group()


def _tell_torchrun(line: str | None) -> None:
    """Write ``line`` to this process's torchrun error file (``TORCHELASTIC_ERROR_FILE``, in the
    format of torch.distributed.elastic's ErrorHandler): torchrun's failure report then shows it
    instead of a pointer to its documentation."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or not line:
        return
    from nas_core.files import write_text_atomic

    stamp = str(int(time.time()))
    try:
        write_text_atomic(Path(path), json.dumps({"message": {"message": line, "extraInfo": {
            "py_callstack": line, "timestamp": stamp}}}))
    except OSError:
        pass
