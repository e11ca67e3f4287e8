"""Datasets: the embedded digits set, CIFAR-10/100 read from tiny files in the official format,
the errors users see for missing or damaged data, and how the classification task splits and
loads them (the search split, per-epoch order)."""

from __future__ import annotations

import builtins
import hashlib
import os
import pickle
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from conftest import OWN_PLUGINS
from cifar_files import (
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    CIFAR100_FILES,
    CIFAR100_FOLDER,
    write_cifar10,
    write_cifar100,
    write_py2_pickle,
)
from conftest import Payload, os_system_payload
from nas_core import DataInfo, RunContext, Task, cli
from nas_core.components import build
from nas_core.config import Layer, load_yaml_file, resolve
from nas_core.data import build_task, load_data
from nas_core.errors import ConfigError, DataError
from nas_tasks import image_datasets as datasets
from nas_tasks.classification import ClassificationOptions, ClassificationTask
from nas_tasks.image_datasets import CifarOptions, LabelledImages

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
NO_MD5 = CifarOptions(verify_md5=False, augment=False)


def unnormalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)


def as_uint8(x: torch.Tensor, mean, std) -> np.ndarray:
    return (unnormalise(x, mean, std) * 255).round().clamp(0, 255).to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return datasets.digits(None)


def test_digits_sizes_shapes_dtypes(digits):
    assert len(digits.train) == 1437 and len(digits.test) == 360
    assert digits.info.input_shape == (1, 8, 8) and digits.info.num_classes == 10
    x, y = digits.train.tensors
    assert x.shape == (1437, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1437,) and y.dtype == torch.int64
    xt, yt = digits.test.tensors
    assert xt.shape == (360, 1, 8, 8) and xt.dtype == torch.float32 and yt.dtype == torch.int64
    assert digits.train[0][0].shape == (1, 8, 8)
    assert set(y.tolist()) == set(range(10)) and set(yt.tolist()) == set(range(10))


def test_digits_standardised_on_train(digits):
    # statistics of the train part itself: the whole set's would be off by ~6e-6 / ~9e-5
    x = digits.train.tensors[0].double()
    assert abs(float(x.mean())) < 1e-6
    assert abs(float(x.std()) - 1) < 1e-5
    xt = digits.test.tensors[0]  # same affine map: close to, not exactly, standard
    assert abs(float(xt.mean())) < 0.15 and 0.85 < float(xt.std()) < 1.15


def test_digits_split_fixed_and_independent_of_torch_seed(digits):
    torch.manual_seed(1)
    a = datasets.digits(None)
    torch.manual_seed(987654)
    torch.rand(17)
    b = datasets.digits(None)
    for d in (a, b):
        for got, want in zip((*d.train.tensors, *d.test.tensors), (*digits.train.tensors, *digits.test.tensors)):
            assert torch.equal(got, want)


def test_digits_train_test_disjoint_and_cover_the_set(digits):
    from sklearn.datasets import load_digits

    def rows(ds):
        return [x.numpy().tobytes() for x in ds.tensors[0]]

    train, test = set(rows(digits.train)), set(rows(digits.test))
    assert len(train) == 1437 and len(test) == 360  # the digits set has no duplicate images
    assert not train & test

    # undo the standardisation (pixels are k/16, k in 0..16) and compare with the source set
    x = torch.cat([digits.train.tensors[0], digits.test.tensors[0]]).flatten(1)
    y = torch.cat([digits.train.tensors[1], digits.test.tensors[1]])
    lo, hi = float(x.min()), float(x.max())  # pixel 0 and pixel 16
    levels = ((x - lo) / (hi - lo) * 16)
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    ours = Counter((tuple(r), int(t)) for r, t in zip(levels.round().to(torch.int64).tolist(), y))
    bunch = load_digits()
    source = Counter((tuple(int(v) for v in r), int(t)) for r, t in zip(bunch.images.reshape(-1, 64), bunch.target))
    assert ours == source


# ---------------------------------------------------------------------------------------------
# CIFAR files
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def c10(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("c10"), per_batch=10, n_test=7, seed=1)


@pytest.fixture(scope="module")
def c100(tmp_path_factory):
    return write_cifar100(tmp_path_factory.mktemp("c100"), n_train=12, n_test=6, seed=2)


def test_helper_writes_the_official_python_format(c10, c100):
    """Sanity of the helper itself: keys are bytes when read as the CIFAR page says."""
    assert sorted(p.name for p in c10.folder.iterdir()) == sorted(CIFAR10_FILES)
    assert sorted(p.name for p in c100.folder.iterdir()) == sorted(CIFAR100_FILES)
    with open(c10.folder / "data_batch_2", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (10, 3072)
    assert batch[b"labels"] == c10.train_labels[10:20]
    with open(c10.folder / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="bytes")[b"label_names"][0] == b"airplane"
    with open(c100.folder / "train", "rb") as f:
        train = pickle.load(f, encoding="bytes")
    assert {b"fine_labels", b"coarse_labels", b"data"} <= set(train)
    with open(c100.folder / "meta", "rb") as f:
        assert len(pickle.load(f, encoding="bytes")[b"fine_label_names"]) == 100


def assert_images_round_trip(data, files, mean, std) -> None:
    """Every image and label comes back exactly, once the normalisation is undone."""
    for ds, rows, labels in ((data.train, files.train_data, files.train_labels),
                             (data.test, files.test_data, files.test_labels)):
        for i in range(len(ds)):
            x, y = ds[i]
            assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (3, 32, 32)
            assert y == labels[i]
            assert np.array_equal(as_uint8(x, mean, std), rows[i].reshape(3, 32, 32)), i


def test_cifar10_loads_unverified(c10):
    data = datasets.cifar10(NO_MD5, root=c10.root)
    assert len(data.train) == 50 and len(data.test) == 7
    assert data.info.input_shape == (3, 32, 32) and data.info.num_classes == 10
    assert_images_round_trip(data, c10, CIFAR10_MEAN, CIFAR10_STD)


def test_cifar10_known_image_channels_and_normalisation(tmp_path):
    files = write_cifar10(tmp_path, per_batch=4, seed=3)
    # a known image: red plane all 255, green all 0, blue = column index * 8, in data_batch_2
    pattern = np.zeros((3, 32, 32), np.uint8)
    pattern[0] = 255
    pattern[2] = (np.arange(32, dtype=np.uint8) * 8)[None, :]
    data = files.train_data[4:8].copy()
    data[1] = pattern.reshape(-1)
    labels = [0, 7, 1, 2]
    write_py2_pickle(files.folder / "data_batch_2", {"batch_label": "training batch 2 of 5", "labels": labels,
                                                     "data": data, "filenames": ["a", "b", "c", "d"]})
    loaded = datasets.cifar10(NO_MD5, root=tmp_path)
    x, y = loaded.train[5]  # second image of the second batch file
    assert y == 7
    assert np.array_equal(as_uint8(x, CIFAR10_MEAN, CIFAR10_STD), pattern)
    assert torch.allclose(x[0], torch.full((32, 32), (1 - CIFAR10_MEAN[0]) / CIFAR10_STD[0]), atol=1e-5)
    assert torch.allclose(x[1], torch.full((32, 32), -CIFAR10_MEAN[1] / CIFAR10_STD[1]), atol=1e-5)
    assert torch.allclose(x[2, 5], (torch.arange(32) * 8 / 255 - CIFAR10_MEAN[2]) / CIFAR10_STD[2], atol=1e-5)
    assert loaded.train.classes[7] == "horse"


def test_cifar100_loads_unverified(c100):
    data = datasets.cifar100(NO_MD5, root=c100.root)
    assert len(data.train) == 12 and len(data.test) == 6
    assert data.info.input_shape == (3, 32, 32) and data.info.num_classes == 100
    assert_images_round_trip(data, c100, CIFAR100_MEAN, CIFAR100_STD)  # labels: the fine ones


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_augment_random_on_train_only(name, c10, c100):
    files, mean, std = (c10, CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (c100, CIFAR100_MEAN, CIFAR100_STD)
    data = getattr(datasets, name)(CifarOptions(verify_md5=False, augment=True), root=files.root)
    reads = []
    for seed in range(8):
        torch.manual_seed(seed)
        x, y = data.train[3]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == files.train_labels[3]
        reads.append(x)
    assert any(not torch.equal(reads[0], r) for r in reads[1:]), "augment=True never changed the image"
    assert any(not np.array_equal(as_uint8(r, mean, std), files.train_image(3)) for r in reads)
    torch.manual_seed(5)
    assert torch.equal(data.train[3][0], reads[5])  # random through the torch RNG: reproducible
    # the test set is never augmented
    for seed in range(3):
        torch.manual_seed(seed)
        assert np.array_equal(as_uint8(data.test[2][0], mean, std), files.test_image(2))


def test_cifar_no_augment_is_deterministic(c10):
    data = datasets.cifar10(CifarOptions(verify_md5=False, augment=False), root=c10.root)
    torch.manual_seed(0)
    a = data.train[3][0]
    torch.manual_seed(1)
    assert torch.equal(a, data.train[3][0])


def test_cifar_options_default_verify_md5_and_augment():
    assert CifarOptions() == CifarOptions(augment=True, verify_md5=True)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("augment", [True, False])
def test_cifar_checksum_mismatch_is_a_data_error(name, augment, c10, c100):
    files = c10 if name == "cifar10" else c100
    with pytest.raises(DataError) as info:
        getattr(datasets, name)(CifarOptions(augment=augment), root=files.root)
    message = str(info.value)
    assert "checksum" in message and "verify_md5=false" in message and "re-extract" in message
    assert "download" not in message  # torchvision's own message suggests download=True; nas never downloads
    assert str(files.folder) in message
    assert "\n" not in message


def _pin_checksums(monkeypatch, cls, folder: Path) -> None:
    """Make ``cls`` expect the md5s of the files in ``folder`` (our tiny files are not the official
    ones), so that the verify_md5=true path can be exercised."""
    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(cls, "train_list", [[n, md5(n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5(n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(cls.meta["filename"])})


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_official_format_loads_with_checksums(name, c10, c100, monkeypatch):
    files, cls, mean, std = ((c10, datasets.RestrictedCIFAR10, CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10"
                             else (c100, datasets.RestrictedCIFAR100, CIFAR100_MEAN, CIFAR100_STD))
    _pin_checksums(monkeypatch, cls, files.folder)
    data = getattr(datasets, name)(CifarOptions(verify_md5=True, augment=False), root=files.root)
    assert isinstance(data.train, cls) and not isinstance(data.train, (datasets.UnverifiedCIFAR10,
                                                                         datasets.UnverifiedCIFAR100))
    assert list(data.train.classes) == list(files.classes) and data.train.class_to_idx[files.classes[3]] == 3
    assert_images_round_trip(data, files, mean, std)


# ---------------------------------------------------------------------------------------------
# tampered files: the restricted unpickler
# ---------------------------------------------------------------------------------------------

def _os_system(marker: Path) -> Payload:
    return os_system_payload(marker)


def _exec(marker: Path) -> Payload:
    return Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()")  # pickled as __builtin__.exec


def _tamper(path: Path, payload: Payload) -> None:
    """Rewrite a batch or meta file in the official (Python 2) format with ``payload`` among its entries."""
    if path.name in ("batches.meta", "meta"):
        content = {"label_names": ["a"] * 10, "fine_label_names": ["a"] * 100, "evil": payload}
    else:
        content = {"batch_label": "x", "labels": [0, 1], "fine_labels": [0, 1],
                   "data": np.zeros((2, 3072), np.uint8), "filenames": ["a", "b"], "evil": payload}
    write_py2_pickle(path, content)


_PAYLOADS = [_os_system, _exec]


@pytest.mark.parametrize("payload", _PAYLOADS, ids=["os.system", "exec"])
@pytest.mark.parametrize("victim", ["data_batch_2", "test_batch", "batches.meta"])
def test_tampered_cifar10_file_is_refused_by_the_cli(victim, payload, tmp_path, capsys):
    files = write_cifar10(tmp_path / "data", per_batch=2)
    marker = tmp_path / "marker"
    _tamper(files.folder / victim, payload(marker))
    code = cli.main(["run", "--dataset", "cifar10", "--data-root", str(files.root), "--set", "dataset.verify_md5=false",
                     "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "run").exists()  # refused before anything was written
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas: error: "), err
    assert str(files.folder / victim) in lines[0] and "refused" in lines[0]
    assert re.search(r"global (posix|os)\.system|global (__builtin__|builtins)\.exec", lines[0]), lines[0]


def test_the_payload_is_live(tmp_path):
    """What test_tampered_cifar10_file_is_refused_by_the_cli writes does run code when read as
    torchvision reads it (``pickle.load(f, encoding="latin1")``)."""
    for payload in _PAYLOADS:
        marker = tmp_path / f"marker_{payload.__name__}"
        _tamper(tmp_path / "data_batch_1", payload(marker))
        with open(tmp_path / "data_batch_1", "rb") as f:
            pickle.load(f, encoding="latin1")
        assert marker.exists()


@pytest.mark.parametrize("victim", ["train", "test", "meta"])
def test_tampered_cifar100_file_is_refused(victim, tmp_path):
    files = write_cifar100(tmp_path / "data", n_train=2, n_test=2)
    marker = tmp_path / "marker"
    _tamper(files.folder / victim, _os_system(marker))
    with pytest.raises(DataError) as info:
        datasets.cifar100(NO_MD5, root=files.root)
    assert not marker.exists()
    assert str(files.folder / victim) in str(info.value) and "system" in str(info.value)


def test_tampered_file_is_refused_even_when_its_checksum_is_expected(tmp_path, monkeypatch):
    """With verify_md5 on, a tampered file fails the checksum; and were the expected checksum
    the tampered file's, the unpickler still refuses it: the checksum is not the safeguard."""
    files = write_cifar10(tmp_path / "data", per_batch=2)
    _pin_checksums(monkeypatch, datasets.RestrictedCIFAR10, files.folder)
    marker = tmp_path / "marker"
    _tamper(files.folder / "data_batch_1", _exec(marker))
    with pytest.raises(DataError, match=r"cifar-10-batches-py: data_batch_1 failed the checksum"):
        datasets.cifar10(CifarOptions(), root=files.root)
    _pin_checksums(monkeypatch, datasets.RestrictedCIFAR10, files.folder)
    with pytest.raises(DataError, match="exec"):
        datasets.cifar10(CifarOptions(), root=files.root)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("numpy.core.multiarray", "_reconstruct"),
                                          ("numpy._core.multiarray", "_reconstruct"),
                                          ("numpy", "ndarray"), ("numpy", "dtype")])
def test_restricted_unpickler_admits_numpy_arrays_only(module, name):
    import io

    assert datasets.RestrictedUnpickler(io.BytesIO(b"")).find_class(module, name) is not None
    for refused in [("numpy", "load"), ("numpy.core.multiarray", "scalar"), ("builtins", "getattr"),
                    ("__builtin__", "eval"), ("copy_reg", "_reconstructor"), ("posix", "system"),
                    ("subprocess", "Popen"), (module, name + "_")]:
        with pytest.raises(datasets.RefusedGlobal, match=re.escape(".".join(refused))):
            datasets.RestrictedUnpickler(io.BytesIO(b"")).find_class(*refused)


# ---------------------------------------------------------------------------------------------
# missing and damaged data
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, folder", [("cifar10", CIFAR10_FOLDER), ("cifar100", CIFAR100_FOLDER)])
def test_no_root_names_the_flag_and_the_folder(name, folder):
    with pytest.raises(DataError) as info:
        getattr(datasets, name)(CifarOptions(), root=None)
    assert "--data-root" in str(info.value) and folder in str(info.value)


def _missing_part(message: str) -> set[str]:
    match = re.search(r"missing (.*?) in ", message)
    assert match, message
    return {s.strip() for s in match.group(1).split(",")}


@pytest.mark.parametrize("name, files", [("cifar10", CIFAR10_FILES), ("cifar100", CIFAR100_FILES)])
def test_empty_root_lists_every_file(name, files, tmp_path):
    with pytest.raises(DataError) as info:
        getattr(datasets, name)(CifarOptions(verify_md5=False), root=tmp_path)
    assert _missing_part(str(info.value)) == set(files)


def test_partial_root_lists_the_missing_files(tmp_path):
    files = write_cifar10(tmp_path, per_batch=2)
    (files.folder / "data_batch_4").unlink()
    (files.folder / "batches.meta").unlink()
    for verify in (True, False):
        with pytest.raises(DataError) as info:
            datasets.cifar10(CifarOptions(verify_md5=verify), root=tmp_path)
        message = str(info.value)
        assert _missing_part(message) == {"data_batch_4", "batches.meta"}
        assert str(files.folder) in message


def test_partial_cifar100_root(tmp_path):
    files = write_cifar100(tmp_path, n_train=2, n_test=2)
    (files.folder / "test").unlink()
    with pytest.raises(DataError) as info:
        datasets.cifar100(CifarOptions(verify_md5=False), root=tmp_path)
    assert _missing_part(str(info.value)) == {"test"}


def test_data_in_the_wrong_folder_is_missing(tmp_path):
    """The CIFAR-10 files without their cifar-10-batches-py folder (root pointed one level too deep)."""
    files = write_cifar10(tmp_path / "outer", per_batch=2)
    with pytest.raises(DataError) as info:
        datasets.cifar10(CifarOptions(verify_md5=False), root=files.folder)
    assert CIFAR10_FOLDER in str(info.value)


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a pickle\x00\xff" * 10)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _wrong_pickle(path: Path) -> None:
    write_py2_pickle(path, ["a", "list", "not", "a", "dict"])


def _no_data_key(path: Path) -> None:
    write_py2_pickle(path, {"batch_label": "x", "labels": [0, 1]})


def _wrong_row_width(path: Path) -> None:
    write_py2_pickle(path, {"batch_label": "x", "labels": [0, 1], "data": np.zeros((2, 3000), np.uint8),
                            "filenames": ["a", "b"]})


_ANY_FILE = [_truncated, _garbage, _empty, _wrong_pickle]
_DAMAGE = [(d, v) for v in ("data_batch_3", "test_batch", "batches.meta") for d in _ANY_FILE] + \
          [(d, v) for v in ("data_batch_3", "test_batch") for d in (_no_data_key, _wrong_row_width)]


@pytest.mark.parametrize("damage, victim", _DAMAGE, ids=[f"{v}-{d.__name__[1:]}" for d, v in _DAMAGE])
def test_damaged_file_is_a_data_error(damage, victim, tmp_path):
    files = write_cifar10(tmp_path, per_batch=2)
    damage(files.folder / victim)
    with pytest.raises(DataError) as info:
        datasets.cifar10(CifarOptions(verify_md5=False), root=tmp_path)
    assert str(files.folder) in str(info.value)
    assert "\n" not in str(info.value)


def test_damaged_cifar100_file_is_a_data_error(tmp_path):
    files = write_cifar100(tmp_path, n_train=2, n_test=2)
    _truncated(files.folder / "train")
    with pytest.raises(DataError):
        datasets.cifar100(CifarOptions(verify_md5=False), root=tmp_path)


@pytest.mark.parametrize("labels", [[0, 1, 2], [0, 1, 2, 10]], ids=["too-few-labels", "label-out-of-range"])
def test_inconsistent_labels_are_a_data_error(labels, tmp_path):
    files = write_cifar10(tmp_path, per_batch=4)
    write_py2_pickle(files.folder / "data_batch_5", {"batch_label": "x", "labels": labels,
                                                     "data": files.train_data[16:20], "filenames": ["a"] * 4})
    with pytest.raises(DataError):
        datasets.cifar10(CifarOptions(verify_md5=False), root=tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_unverified_cifar_pickles_for_worker_processes(name, c10, c100):
    files = c10 if name == "cifar10" else c100
    data = getattr(datasets, name)(CifarOptions(verify_md5=False, augment=True), root=files.root)
    clone = pickle.loads(pickle.dumps(data.train))
    torch.manual_seed(0)
    a = clone[1][0]
    torch.manual_seed(0)
    assert torch.equal(a, data.train[1][0])


def test_load_data_root_not_a_directory(registries, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    for root in (not_a_dir, tmp_path / "nowhere"):
        config = resolve(registries, [Layer({"dataset": {"name": "cifar10"}, "data_root": str(root)}, "test")],
                         preset="demo")
        with pytest.raises(DataError, match="--data-root"):
            load_data(registries, config)
        with pytest.raises(DataError, match="--data-root"):
            build_task(registries, config)
    files = write_cifar10(tmp_path / "ok", per_batch=2)
    config = resolve(registries, [Layer({"dataset": {"name": "cifar10", "verify_md5": False},
                                         "data_root": str(files.root)}, "test")], preset="demo")
    data = load_data(registries, config)
    assert isinstance(data, LabelledImages)
    assert len(data.train) == 10 and data.info.num_classes == 10
    task = build_task(registries, config)
    assert isinstance(task, ClassificationTask) and task.info.num_classes == 10
    run = make_run(config)
    assert [len(task.loader(s, batch_size=1, run=run, evaluation=True)) for s in ("weights", "arch")] == [5, 5]


# ---------------------------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------------------------

def nas_command() -> list[str]:
    script = Path(sys.executable).parent / "nas"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "nas_core.cli"]


def nas_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAS_")}
    env["NAS_DISABLE_PLUGINS"] = "tensorboard"
    env["NAS_ONLY_PLUGINS"] = OWN_PLUGINS
    env["PYTHONWARNINGS"] = "ignore"
    env["OMP_NUM_THREADS"] = "1"  # tiny tensors: thread hand-offs cost more than they save (5x here)
    return env


def test_cli_missing_cifar_is_one_line_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([*nas_command(), "run", "--dataset", "cifar10", "--data-root", str(empty),
                             "--no-progress"], cwd=tmp_path, env=nas_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nas: error: ")
    assert _missing_part(lines[0]) == set(CIFAR10_FILES)
    assert CIFAR10_FOLDER in lines[0]


def tiny_search(data_root: Path, run_dir: Path, cells: int = 3) -> list[str]:
    return [*nas_command(), "run", "--dataset", "cifar10", "--data-root", str(data_root),
            "--set", "dataset.verify_md5=false", "--set", f"space.cells={cells}",
            "--set", "space.channels=4", "--set", "search.epochs=1",
            "--set", "search.batch_size=8", "--set", "search.max_steps_per_epoch=1",
            "--optimizer", "darts_1st", "--device", "cpu", "--out", str(run_dir), "--no-progress"]


def run_nas(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=nas_env(), capture_output=True, text=True, timeout=300)


def test_cli_end_to_end_search_on_tiny_cifar10(registries, tmp_path):
    # 3 cells: cell 0 normal, cells 1 and 2 reduction
    files = write_cifar10(tmp_path / "data", per_batch=20, n_test=4)
    run_dir = tmp_path / "run"
    result = run_nas(tiny_search(files.root, run_dir), tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert (run_dir / "genotype.json").is_file()
    assert "dataset=cifar10" in result.stdout and "task=classification" in result.stdout
    # the task the run saved splits the 100 training images into two halves of 50, in file order
    config = resolve(registries, [Layer(load_yaml_file(run_dir / "config.yaml"), "saved config")])
    task = build_task(registries, config)
    run = make_run(config)
    labels = [[int(y) for _, ys in task.loader(s, batch_size=100, run=run, evaluation=True) for y in ys]
              for s in ("weights", "arch")]
    assert labels == [files.train_labels[:50], files.train_labels[50:]]


def test_cli_search_with_two_cells_runs_or_fails_cleanly(tmp_path):
    files = write_cifar10(tmp_path / "data", per_batch=20, n_test=4)
    result = run_nas(tiny_search(files.root, tmp_path / "run", cells=2), tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-600:]
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nas: error: ") and "cells" in lines[0]
    else:
        assert (tmp_path / "run" / "genotype.json").is_file()


@pytest.mark.slow  # two searches in subprocesses; a data error's one line is in the default suite
def test_cli_rerun_same_out_after_data_error(tmp_path):
    data, run_dir = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    first = run_nas(tiny_search(data, run_dir), tmp_path)
    assert first.returncode != 0 and "missing" in first.stderr
    write_cifar10(data, per_batch=20, n_test=4)  # the user fixes the data and runs the same command again
    second = run_nas(tiny_search(data, run_dir), tmp_path)
    assert second.returncode == 0, second.stderr
    assert (run_dir / "genotype.json").is_file()


# ---------------------------------------------------------------------------------------------
# the classification task over these datasets: search split and per-epoch loaders
# ---------------------------------------------------------------------------------------------

def ids_data(n: int) -> LabelledImages:
    """``n`` examples whose input is their own index (and label), in file order."""
    ids = torch.arange(n)
    return LabelledImages(train=TensorDataset(ids, ids), test=TensorDataset(ids[:7], ids[:7]),
                          info=DataInfo(input_shape=(), num_classes=n))


def make_run(config, *, seed: int | None = None, epoch: int = 0, phase: str = "search") -> RunContext:
    """A run context as the engine builds one, at the start of ``epoch``."""
    if seed is not None:
        config = attrs.evolve(config, seed=seed)
    run = RunContext(dir=Path("unused"), config=config, phase=phase, device=torch.device("cpu"),
                     plugin_manager=None, epochs=epoch + 1)
    run.start_epoch_state(epoch)
    return run


@pytest.fixture(scope="module")
def demo(registries):
    return resolve(registries, [], preset="demo")


def _ids(loader) -> list[int]:
    return [int(v) for x, _ in loader for v in x]


def test_search_split_half_is_disjoint_and_covers(demo):
    task = ClassificationTask(ClassificationOptions(search_split=0.5), data=ids_data(101))
    assert task.streams("search") == ("weights", "arch")
    run = make_run(demo)
    weights = _ids(task.loader("weights", batch_size=200, run=run, evaluation=True))
    arch = _ids(task.loader("arch", batch_size=200, run=run, evaluation=True))
    # the first half trains the weights, the second the architecture, in file order
    assert weights == list(range(50)) and arch == list(range(50, 101))
    # and shuffled for training, each stream still holds exactly its half
    assert sorted(_ids(task.loader("weights", batch_size=10, run=run))) == list(range(50))
    assert set(_ids(task.loader("arch", batch_size=17, run=run))) <= set(range(50, 101))


@pytest.mark.parametrize("portion", [0.0, 1.0, 0.001, 0.999, -0.5, 1.5])
def test_search_split_empty_half_is_a_config_error(registries, portion):
    with pytest.raises(ConfigError, match="search_split"):
        config = resolve(registries, [Layer({"task": {"search_split": portion}}, "test")], preset="demo")
        build(registries.tasks, config.task, Task, data=ids_data(100))


def _order(task, stream: str, config, *, seed: int = 0, epoch: int = 0, batch_size: int = 10) -> list[int]:
    return _ids(task.loader(stream, batch_size=batch_size, run=make_run(config, seed=seed, epoch=epoch)))


def test_loader_order_depends_on_seed_epoch_stream_only(demo):
    task = ClassificationTask(ClassificationOptions(search_split=0.5), data=ids_data(200))
    torch.manual_seed(1)
    first = _order(task, "weights", demo, seed=3, epoch=2)
    torch.manual_seed(2)
    torch.rand(5)
    assert _order(task, "weights", demo, seed=3, epoch=2) == first  # not the global RNG
    assert sorted(first) == list(range(100))
    assert first != list(range(100))  # shuffled
    assert _order(task, "weights", demo, seed=3, epoch=3) != first
    assert _order(task, "weights", demo, seed=4, epoch=2) != first
    # the arch half is as large: the same generator would give the same permutation of it
    assert [i - 100 for i in _order(task, "arch", demo, seed=3, epoch=2)] != first


def test_loader_does_not_consume_global_rng(demo):
    task = ClassificationTask(ClassificationOptions(valid_split=0.0), data=ids_data(64))
    torch.manual_seed(42)
    state = torch.get_rng_state()
    run = make_run(demo, seed=1, epoch=5, phase="train")
    assert len(_ids(task.loader("train", batch_size=8, run=run))) == 64
    assert len(_ids(task.loader("train", batch_size=8, run=run, evaluation=True))) == 64
    assert len(_ids(task.loader("test", batch_size=8, run=run, evaluation=True))) == 7
    assert torch.equal(torch.get_rng_state(), state)


def test_loader_keeps_the_last_batch_and_refuses_a_batch_too_large(demo):
    task = ClassificationTask(ClassificationOptions(valid_split=0.0), data=ids_data(25))
    run = make_run(demo, phase="train")
    assert [len(x) for x, _ in task.loader("train", batch_size=10, run=run)] == [10, 10, 5]
    evaluation = task.loader("train", batch_size=10, run=run, evaluation=True)
    assert len(evaluation) == 3 and [len(x) for x, _ in evaluation] == [10, 10, 5]
    assert _ids(evaluation) == list(range(25))
    task.check_batch_size("train", 25, "train.batch_size")
    with pytest.raises(ConfigError, match="train.batch_size"):
        task.check_batch_size("train", 26, "train.batch_size")


def test_loader_cifar_labels_are_int64(c10, demo):
    task = ClassificationTask(ClassificationOptions(), data=datasets.cifar10(NO_MD5, root=c10.root))
    x, y = next(iter(task.loader("weights", batch_size=4, run=make_run(demo))))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
