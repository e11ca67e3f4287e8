"""Write tiny CIFAR-10/100 datasets in the official "python version" on-disk format.

The official archives were pickled by Python 2 (protocol 2): dicts whose keys and strings are
Python 2 ``str``. Read with ``encoding="bytes"`` (as the CIFAR page suggests) those come back
as ``b"data"``, ``b"labels"``...; read with ``encoding="latin1"`` (as torchvision does) they come
back as ``"data"``, ``"labels"``... This module emits the same opcodes (SHORT_BINSTRING /
BINSTRING), so both readers see what they would see on the real files:

    cifar-10-batches-py/data_batch_1..5, test_batch   {b"batch_label", b"labels", b"data", b"filenames"}
    cifar-10-batches-py/batches.meta                 {b"num_cases_per_batch", b"label_names", b"num_vis"}
    cifar-100-python/train, test                      {b"filenames", b"batch_label", b"fine_labels",
                                                       b"coarse_labels", b"data"}
    cifar-100-python/meta                            {b"fine_label_names", b"coarse_label_names"}

``data`` is a uint8 array of shape [N, 3072]: per row the 1024 red, then green, then blue
values of a 32x32 image in row-major order.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import attrs
import numpy as np

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_FILES = (*CIFAR10_TRAIN_FILES, "test_batch", "batches.meta")
CIFAR100_FILES = ("train", "test", "meta")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class Py2Str(bytes):
    """A Python 2 ``str``: pickled as SHORT_BINSTRING/BINSTRING, unpickled as ``str`` (latin1)
    or ``bytes`` (encoding="bytes")."""


class _Py2Array:
    """A uint8 array pickled the way Python 2 numpy did: its raw buffer as a Python 2 str."""

    def __init__(self, array: np.ndarray):
        self.array = np.ascontiguousarray(array, dtype=np.uint8)

    def __reduce__(self):
        reconstruct = np.empty(0, np.uint8).__reduce__()[0]  # numpy's _reconstruct, wherever it lives
        return (reconstruct, (np.ndarray, (0,), Py2Str(b"b")),
                (1, self.array.shape, np.dtype(np.uint8), False, Py2Str(self.array.tobytes())))


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2str(self, obj: Py2Str) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + bytes(obj))
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + bytes(obj))
        self.memoize(obj)

    dispatch[Py2Str] = save_py2str


def _py2(obj):
    """Python 2 strings for every str/bytes, Python-2-style arrays for ndarrays."""
    if isinstance(obj, dict):
        return {_py2(k): _py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_py2(v) for v in obj]
    if isinstance(obj, str):
        return Py2Str(obj.encode("latin1"))
    if isinstance(obj, bytes):
        return Py2Str(obj)
    if isinstance(obj, np.ndarray):
        return _Py2Array(obj)
    return obj


def py2_pickle_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(_py2(obj))
    return buffer.getvalue()


def write_py2_pickle(path: Path, obj) -> None:
    Path(path).write_bytes(py2_pickle_bytes(obj))


def random_images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


@attrs.frozen
class CifarFiles:
    """What was written: rows in file order (train files concatenated in torchvision's order)."""

    root: Path
    folder: Path
    train_data: np.ndarray  # [N, 3072] uint8
    train_labels: list[int]
    test_data: np.ndarray
    test_labels: list[int]
    classes: tuple[str, ...]

    def train_image(self, i: int) -> np.ndarray:
        """Image ``i`` of the training set as [3, 32, 32] uint8 (CHW)."""
        return self.train_data[i].reshape(3, 32, 32)

    def test_image(self, i: int) -> np.ndarray:
        return self.test_data[i].reshape(3, 32, 32)


def write_cifar10(root: Path, *, per_batch: int = 10, n_test: int | None = None, seed: int = 0) -> CifarFiles:
    """``root/cifar-10-batches-py`` with five training batches of ``per_batch`` images each and
    a test batch of ``n_test`` (default ``per_batch``) images."""
    root = Path(root)
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_test = per_batch if n_test is None else n_test
    batches = []
    for i, name in enumerate([*CIFAR10_TRAIN_FILES, "test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        data = random_images(rng, n)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        label = "testing batch 1 of 1" if name == "test_batch" else f"training batch {i + 1} of 5"
        write_py2_pickle(folder / name, {
            "batch_label": label, "labels": labels, "data": data,
            "filenames": [f"tiny_{name}_{j:05d}.png" for j in range(n)],
        })
        batches.append((data, labels))
    write_py2_pickle(folder / "batches.meta", {
        "num_cases_per_batch": per_batch, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072})
    train_data = np.concatenate([d for d, _ in batches[:5]])
    train_labels = [v for _, labels in batches[:5] for v in labels]
    return CifarFiles(root, folder, train_data, train_labels, batches[5][0], batches[5][1], CIFAR10_CLASSES)


def write_cifar100(root: Path, *, n_train: int = 20, n_test: int = 10, seed: int = 0) -> CifarFiles:
    """``root/cifar-100-python`` with ``train``, ``test`` and ``meta``."""
    root = Path(root)
    folder = root / CIFAR100_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fine = tuple(f"fine_class_{i:02d}" for i in range(100))
    coarse = [f"coarse_class_{i:02d}" for i in range(20)]
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = random_images(rng, n)
        fine_labels = [int(v) for v in rng.integers(0, 100, size=n)]
        write_py2_pickle(folder / name, {
            "filenames": [f"tiny_{name}_{j:05d}.png" for j in range(n)], "batch_label": f"{name}ing batch 1 of 1",
            "fine_labels": fine_labels, "coarse_labels": [v // 5 for v in fine_labels], "data": data,
        })
        out[name] = (data, fine_labels)
    write_py2_pickle(folder / "meta", {"fine_label_names": list(fine), "coarse_label_names": coarse})
    return CifarFiles(root, folder, out["train"][0], out["train"][1], out["test"][0], out["test"][1], fine)
