"""The working files of commands that run several steps, such as ``nas select`` (a search and a
short training per seed) or ``nas random`` (a training per candidate): the config of each stage,
saved once under ``ROOT/configs/STAGE/``; one ``record.json`` per step, written when the step ends
and read to resume without running it again; and a lock file while a process works on a step, so
that processes started together on one directory share the steps out."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nas_core.config import Config, config_differences
from nas_core.errors import ConfigError, NasError, brief
from nas_core.files import create_text_exclusive, write_text_atomic
from nas_core.records import is_number, read_json_object, recorded_seconds, write_json
from nas_core.run import CONFIG_FILE

if TYPE_CHECKING:
    from nas_core.toolkit import Toolkit

RECORD_FILE = "record.json"
CONFIGS_DIR = "configs"
LOCK_FILE = "running.json"
#: what may differ between runs a protocol compares, or processes that share it: each run has its own
#: seed, and the machine's settings (device, threads, where its data lies) do not shape the results
PER_RUN_KEYS = ("seed", "device", "threads", "data_root")
#: the record keys that hold sizes (from the training's results; never a test metric)
SIZE_KEYS = ("params", "params_total", "multiply_adds")


# -- stage configs -----------------------------------------------------------------------------

def stage_config_dir(root: Path, stage: str) -> Path:
    return Path(root) / CONFIGS_DIR / stage


def has_stage_config(root: Path, stage: str) -> bool:
    return (stage_config_dir(root, stage) / CONFIG_FILE).is_file()


def save_stage_config(root: Path, stage: str, config: Config) -> None:
    """``config`` (fully resolved) as ``ROOT/configs/STAGE/config.yaml``."""
    path = stage_config_dir(root, stage)
    path.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path / CONFIG_FILE, yaml.safe_dump(config.layout(), sort_keys=False))


def load_stage_config(toolkit: Toolkit, root: Path, stage: str, device: str | None = None) -> Config:
    """The config saved for ``stage`` (``--device`` may change)."""
    return toolkit.saved_config(stage_config_dir(root, stage), device)


def config_changes(a: Config, b: Config, sections: Iterable[str] | None = None) -> list[str]:
    """The dotted keys where two stages' or runs' configs differ (over ``sections``, default all),
    less :data:`PER_RUN_KEYS`."""
    return config_differences(a.layout(), b.layout(), PER_RUN_KEYS, sections)


def check_same_data(configs: Mapping[str, Config], hint: str = "") -> None:
    """Every stage (name -> config) must train on the same dataset, task and space; ``hint`` says
    how to choose configs that do."""
    first_name, first = next(iter(configs.items()))
    for name, config in configs.items():
        for key in ("dataset", "task", "space"):
            if getattr(config, key).name != getattr(first, key).name:
                raise ConfigError(f"the {first_name} stage uses {key} {getattr(first, key).name!r} but the {name} "
                                  f"stage uses {getattr(config, key).name!r}: choose presets for the same data"
                                  + (f" ({hint})" if hint else ""))


# -- step records ------------------------------------------------------------------------------

def write_record(step_dir: Path, record: Mapping[str, Any]) -> None:
    """``step_dir/record.json``, written atomically."""
    write_json(Path(step_dir) / RECORD_FILE, dict(record))


def read_record(step_dir: Path, stages: Sequence[str] = ()) -> dict[str, Any] | None:
    """``step_dir/record.json`` (None when there is none yet), checked: a finished record
    (``status`` ``done``) has a genotype and numeric validation metrics; the wall times of the
    record and of its ``stages`` (objects inside it) are finite numbers of seconds; sizes are numbers."""
    file = Path(step_dir) / RECORD_FILE
    if not file.is_file():
        return None
    record = read_json_object(file)
    valid, genotype = record.get("valid"), record.get("genotype")
    if record.get("status") == "done" and not (isinstance(valid, dict) and valid and isinstance(genotype, dict)
                                               and all(is_number(v) for v in valid.values())):
        raise NasError(f"{file} is damaged: a finished record needs numeric valid metrics (has {brief(valid)}) and a "
                       f"genotype; move it away to run that part again")
    parts = {"record": record, **{stage: record[stage] for stage in stages if stage in record}}
    for name, part in parts.items():
        if not isinstance(part, dict):
            raise NasError(f"{file} is damaged: {name} is {brief(part)}, not an object")
        if part.get("wall_time_s") is not None:
            recorded_seconds(part["wall_time_s"], f"{file} ({name})")
    sizes = [k for k in SIZE_KEYS if k in record and not is_number(record[k])]
    if sizes:
        raise NasError(f"{file} is damaged: {sizes[0]} is {brief(record[sizes[0]])}, not a number")
    return record


# -- the lock of a step ------------------------------------------------------------------------

class RunLock:
    """``FOLDER/running.json`` (pid and host) while a process works on the step in FOLDER: a
    second process skips that step. The file is created complete in one step, so one that does
    not read as a pid and a host was left damaged by a crash; it is taken over, like one left by
    a process that died on this host."""

    def __init__(self, folder: Path, name: str = LOCK_FILE):
        self.path = Path(folder) / name
        self.held = False

    def acquire(self) -> str | None:
        """None when acquired, else who holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):
            try:
                create_text_exclusive(self.path, json.dumps(me))
            except FileExistsError:
                try:
                    data = self.path.read_bytes()
                except FileNotFoundError:
                    continue  # released meanwhile
                holder = _live_holder(data, me["host"])
                if holder is not None:
                    return holder
                self._remove_stale(data)
                continue
            self.held = True
            return None
        return "another process"

    def _remove_stale(self, data: bytes) -> None:
        """Remove the stale lock that held ``data``; moved aside and compared first, so that a lock
        another process took over meanwhile is put back, not removed."""
        aside = self.path.with_name(f".{self.path.name}.{os.getpid()}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if aside.read_bytes() != data:
                os.link(aside, self.path)
        except FileExistsError:  # a third process locked it meanwhile: it holds the step
            pass
        finally:
            aside.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _live_holder(data: bytes, host: str) -> str | None:
    """Who holds a lock that reads ``data``; None when it is stale: not a pid and a host, or a
    process that is gone from this host (one on another host cannot be checked from here)."""
    try:
        holder = json.loads(data)
    except ValueError:  # not JSON, or not text
        return None
    if not isinstance(holder, dict) or type(holder.get("pid")) is not int or not isinstance(holder.get("host"), str):
        return None
    if holder["host"] == host and not _alive(holder["pid"]):
        return None
    return f"process {holder['pid']} on {holder['host']}"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True
