"""Reading the published NAS-Bench-201 benchmark file without running code from it.

``NAS-Bench-201-v1_1-096897.pth`` (and v1_0) is one ``torch.save``'d dict (the authors' API,
nas_201_api/api_201.py and api_utils.py)::

    {"meta_archs": [cell string, ...],          # the index of a cell is its position here
     "arch2infos": {index: {"full": ArchResults, "less": ArchResults}},   # 200 and 12 training epochs
     "evaluated_indexes": {index, ...}, ...}
    ArchResults:  {"arch_index", "arch_str", "dataset_seed": {dataset: [seed, ...]},
                   "all_results": {(dataset, seed): ResultsCount}, ...}
    ResultsCount: {"params", "flop", "epochs", "train_acc1es": {epoch: %}, "train_losses",
                   "eval_names": [...], "eval_acc1es": {"x-valid@199": %, ...}, "eval_losses", ...}

(both classes stored as their ``state_dict()``: plain dicts). The API opens it with
``torch.load``, which unpickles whatever the file names. Here the pickle is read by an unpickler
that builds plain data only: dicts, lists, tuples, sets, strings, numbers, and numpy number
scalars, whose bytes it decodes itself (their records hold numpy floats, e.g. ``params``). Any
other global (a class, a function such as ``os.system``) or a tensor is refused, naming it, before
anything is called. ``torch.load(..., weights_only=True)`` is not used: it refuses those numpy
scalars, and its unpickler, written in Python, takes far longer over the 4.7 GB file than the C
unpickler used here. Both of torch's container formats are read: the zip archive (torch >= 1.6)
and the legacy stream of pickles (magic number, protocol, system info, the object).
"""

from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from nas_core import NasError, brief

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization's MAGIC_NUMBER
HYPERPARAMETERS = {"200": "full", "12": "less"}  # training epochs -> the key of arch2infos' entries
_ZIP_MAGIC = b"PK\x03\x04"  # a zip archive's first local header, as torch.serialization checks it
_STRUCT = {("f", 8): "d", ("f", 4): "f", ("f", 2): "e", ("i", 8): "q", ("i", 4): "i", ("i", 2): "h", ("i", 1): "b",
           ("u", 8): "Q", ("u", 4): "I", ("u", 2): "H", ("u", 1): "B", ("b", 1): "?"}


class Refused(NasError):
    """The file holds something other than plain data."""


class _Dtype:
    """Stands in for ``numpy.dtype`` while unpickling: records the type code and byte order only."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True):
        kind, size = (code[:1], code[1:]) if isinstance(code, str) else ("", "")
        if not (size.isascii() and size.isdigit() and len(size) < 3 and (kind, int(size)) in _STRUCT):
            raise Refused(f"it holds a numpy scalar of dtype {brief(code)}; only numbers are read")
        self.kind, self.size, self.order = kind, int(size), "<"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.order = {"|": "<", "=": "="}.get(state[1], state[1])


def _scalar(dtype: Any, data: Any = None) -> int | float | bool:
    """``numpy.core.multiarray.scalar(dtype, bytes)``: the number, decoded here."""
    if not isinstance(dtype, _Dtype) or not isinstance(data, bytes) or len(data) != dtype.size:
        raise pickle.UnpicklingError("a numpy scalar that is not a number of its dtype's size")
    return struct.unpack(dtype.order + _STRUCT[(dtype.kind, dtype.size)], data)[0]


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode(str, "latin1")``: how protocol-2 pickles write bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode of something other than latin-1 text")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("_codecs", "encode"): _latin1,
    ("numpy", "dtype"): _Dtype,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
}


class _PlainData(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise Refused(f"it names {f'{module}.{name}'[:120]}, which is not plain data") from None

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("it holds tensors (a torch storage); the benchmark's records are plain numbers")


def _unpickle(stream: BinaryIO) -> Any:
    return _PlainData(stream).load()


def load_plain(path: Path) -> Any:
    """The object ``torch.save`` wrote to ``path`` (or a plain pickle), built from plain data only;
    a NasError naming what was refused or why the file is unreadable."""
    try:
        with path.open("rb") as stream:
            is_zip = stream.read(4) == _ZIP_MAGIC
        if is_zip:
            with zipfile.ZipFile(path) as archive:
                pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                if len(pickles) != 1:
                    raise NasError(f"{path}: a zip file without the one data.pkl of a torch.save archive")
                with archive.open(pickles[0]) as stream:
                    return _unpickle(stream)
        with path.open("rb") as stream:
            first = _unpickle(stream)
            if first != LEGACY_MAGIC:  # a plain pickle
                return first
            _unpickle(stream), _unpickle(stream)  # protocol version, system info
            return _unpickle(stream)
    except Refused as e:
        raise NasError(f"{path}: refused to read it: {e}; only dicts, lists, tuples, sets, strings and numbers "
                       f"are read from benchmark files") from None
    except OSError as e:
        raise NasError(f"cannot read {path}: {e.strerror or e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            zipfile.BadZipFile, MemoryError, RecursionError) as e:
        raise NasError(f"{path}: not a readable torch.save or pickle file ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:200]})") from None


def _get(container: Any, key: Any, where: str) -> Any:
    """``container[key]`` (a dict, or a list by position), or a NasError naming what is missing."""
    try:
        if isinstance(container, Mapping) or (isinstance(container, list) and isinstance(key, int)):
            return container[key]
    except (KeyError, IndexError):
        pass
    raise NasError(f"not a NAS-Bench-201 benchmark file: {where} has no {brief(key)}")


class Benchmark:
    """The benchmark's records, as its API reads them (``ArchResults.get_metrics`` with
    ``is_random=False``: each value the mean over the trials, i.e. the training seeds)."""

    def __init__(self, data: Any, source: str):
        self.source = source
        archs = _get(data, "meta_archs", source)
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise NasError(f"not a NAS-Bench-201 benchmark file: {source}'s meta_archs is not a list of cell strings")
        self.index = {arch: i for i, arch in enumerate(archs)}
        self.infos = _get(data, "arch2infos", source)

    def results(self, arch: str, epochs: str) -> tuple[int, list[dict[str, Any]]]:
        """The index of ``arch`` (a canonical cell string) and, per dataset, the trials' seeds and
        mean final accuracies (%), parameters (M) and FLOPs (M) when trained for ``epochs`` ("200" or "12")."""
        if arch not in self.index:
            raise NasError(f"{self.source}: cell {arch} is not among the benchmark's {len(self.index)} cells")
        index = self.index[arch]
        if not isinstance(self.infos, Mapping) or index not in self.infos:
            raise NasError(f"{self.source}: no results recorded for cell {index} ({arch})")
        where = f"{self.source}: arch2infos[{index}][{HYPERPARAMETERS[epochs]!r}]"
        record = _get(self.infos[index], HYPERPARAMETERS[epochs], f"{self.source}: arch2infos[{index}]")
        if _get(record, "arch_str", where) != arch:
            raise NasError(f"{where} records cell {brief(record['arch_str'])}, not {arch}")
        rows = []
        seeds_of = _get(record, "dataset_seed", where)
        for dataset, seeds in (seeds_of.items() if isinstance(seeds_of, Mapping) else ()):
            trials = [_get(_get(record, "all_results", where), (dataset, seed), f"{where}['all_results']")
                      for seed in seeds]
            rows.append({"dataset": dataset, "seeds": list(seeds), **_means(trials, f"{where}, {dataset}")})
        return index, rows


def _means(trials: list[Any], where: str) -> dict[str, Any]:
    """The mean over trials of the last epoch's accuracies (train and every evaluation set), of the
    parameters and of the FLOPs, as the API's get_metrics(is_random=False) and get_compute_costs."""
    def mean(values: list[Any]) -> float:
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise NasError(f"not a NAS-Bench-201 benchmark file: {where}: a record that is not a number")
        return sum(values) / len(values)

    if not trials:
        raise NasError(f"not a NAS-Bench-201 benchmark file: {where}: no trials")
    epochs = [_get(t, "epochs", where) for t in trials]
    if not all(isinstance(e, int) and e > 0 for e in epochs):
        raise NasError(f"not a NAS-Bench-201 benchmark file: {where}: 'epochs' is not a count of epochs")
    last = [e - 1 for e in epochs]
    accuracy = {"train": mean([_get(_get(t, "train_acc1es", where), e, f"{where} train_acc1es")
                               for t, e in zip(trials, last)])}
    names = _get(trials[0], "eval_names", where)
    for name in names if isinstance(names, list) else ():
        accuracy[name] = mean([_get(_get(t, "eval_acc1es", where), f"{name}@{e}", f"{where} eval_acc1es")
                               for t, e in zip(trials, last)])
    return {"epochs": last[0] + 1, "params": mean([_get(t, "params", where) for t in trials]),
            "flops": mean([_get(t, "flop", where) for t in trials]), "accuracy": accuracy}
