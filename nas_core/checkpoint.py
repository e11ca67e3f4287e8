"""Checkpoints written atomically and loaded with ``weights_only=True``, and RNG state capture."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas_core import files
from nas_core.errors import CheckpointError
from nas_core.files import write_bytes_atomic
from nas_core.run import BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, GENOTYPE_FILE, MARKER_FILE, RESULTS_FILE

FORMAT = "nas-checkpoint-1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import io

    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, bit rot: all mean the same to a user
        raise CheckpointError(f"checkpoint {path} is corrupt or not a nas checkpoint ({_load_failure_reason(e, path)}); "
                              f"it was left untouched") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a {FORMAT} file; it was left untouched")
    return state


# Sentences of PyTorch's load errors that are advice, not a reason: turning off weights-only loading
# (which runs any code the file holds), allowlisting globals, trusting the source, its docs.
_ADVICE = re.compile(r"weights_only|safe_globals|trust|torch\.load|pytorch\.org|file an issue|arbitrary code",
                     re.IGNORECASE)
_REASON_MAX = 200


def _load_failure_reason(error: BaseException, path: Path) -> str:
    """Why ``torch.load`` failed on ``path``, in a few words of our own where the file's shape
    says it (PyTorch's texts for these are misleading: a truncated archive can read as
    "[Errno 22] Invalid argument", a text file as "pop from empty list"), else PyTorch's reason."""
    torch_reason = _torch_reason(error)
    if torch_reason.startswith("unsupported global"):
        return torch_reason
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        return e.strerror or type(e).__name__
    if not magic:
        return "empty file"
    if magic != b"PK\x03\x04":
        return "not a zip archive"
    try:
        import zipfile

        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return "truncated or damaged zip archive"
    if not any(name.endswith("/data.pkl") for name in names):
        return "a zip archive that holds no PyTorch checkpoint"
    return torch_reason


def _torch_reason(error: BaseException) -> str:
    """A short reason from PyTorch's error text: one line, at most ``_REASON_MAX`` characters,
    ending at a sentence or clause boundary, and without PyTorch's advice (never to turn off weights-only loading)."""
    text = str(error)
    refused = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", text)
    if refused:  # PyTorch drops the "builtins." of builtins' names; say it again
        name = refused.group(1) if "." in refused.group(1) else f"builtins.{refused.group(1)}"
        return f"unsupported global '{name}'"
    if "TorchScript archive" in text:
        return "a TorchScript archive, not a checkpoint"
    text = text.split("Check the documentation of torch.load")[0]
    if "WeightsUnpickler error:" in text:  # what the unpickler said comes after torch's preamble
        text = text.rsplit("WeightsUnpickler error:", 1)[1]
    text = text.replace("Weights only load failed.", " ")
    text = re.sub(r"\[enforce fail at [^\]]*\]\s*\.?", " ", text)  # c10's source location
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text)]
    kept = [s for s in sentences if s and not _ADVICE.search(s)]
    if not kept:
        return type(error).__name__
    reason = kept[0]  # the first sentence says what failed; PyTorch's next ones speculate or advise
    if len(reason) > _REASON_MAX:  # end at the last clause boundary (or word) that fits
        head = reason[:_REASON_MAX]
        cut = max(head.rfind(", "), head.rfind("; "), head.rfind(": "))
        reason = head[:cut] if cut > _REASON_MAX // 4 else head.rsplit(" ", 1)[0]
    reason = reason.rstrip(" .,;:")
    if type(error).__name__ in ("RuntimeError", "UnpicklingError"):
        return reason
    return f"{type(error).__name__}: {reason}"


def saved_world_size(state: Mapping[str, Any]) -> int:
    """How many processes wrote the checkpoint ``state`` (one unless it was a torchrun job)."""
    return int(state.get("world_size") or len(state.get("ranks") or state.get("rng_ranks") or [None]))


def rank_state(parts: Mapping[str, Any]) -> dict[str, Any]:
    """What differs between the processes of a torchrun job and shapes the results, for the
    checkpoint: each process's random streams and its modules' buffers (batch normalisation's
    running statistics follow each process's own share of every batch, and evaluation uses them)."""
    return {"rng": rng_state(), "buffers": {name: _buffers(part) for name, part in parts.items()}}


def _buffers(part: Any) -> dict[str, torch.Tensor]:
    if not isinstance(part, torch.nn.Module):
        return {}
    state = part.state_dict()
    return {name: state[name].detach().cpu() for name, _ in part.named_buffers() if name in state}


def resume_from(path: Path, state: Mapping[str, Any], parts: Mapping[str, Any], *, rank: int = 0) -> None:
    """Load ``state`` (the checkpoint at ``path``) into each of ``parts`` (name -> object with
    ``load_state_dict``) and restore the random streams; in a torchrun job's checkpoint, process
    ``rank``'s own buffers and streams. A mismatch is a CheckpointError, not a traceback."""
    ranks = state.get("ranks") or [{"rng": rng} for rng in state.get("rng_ranks") or []]
    own = ranks[rank] if rank < len(ranks) else {"rng": state.get("rng")}
    try:
        for name, part in parts.items():
            part.load_state_dict({**state[name], **own.get("buffers", {}).get(name, {})})
        set_rng_state(own["rng"])
        if "epoch" not in state or "step" not in state:
            raise KeyError("epoch")
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        reason = str(e).splitlines()[0][:200] if str(e) else ""
        raise CheckpointError(f"checkpoint {path} does not match this run ({type(e).__name__}: {reason})") from None


def remove_stale_temporaries(run_dir: Path) -> None:
    """Remove what interrupted atomic writes left in ``run_dir``, such as a checkpoint's copy when
    the process was killed while writing it. Only when resuming, by the one process that writes."""
    files.remove_stale_temporaries(run_dir, (CHECKPOINT_FILE, BEST_FILE, CONFIG_FILE, GENOTYPE_FILE, MARKER_FILE,
                                             RESULTS_FILE))


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
