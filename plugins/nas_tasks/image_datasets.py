"""Image datasets: the embedded ``digits`` set and CIFAR-10/100 read from ``--data-root``."""

from __future__ import annotations

import pickle
from pathlib import Path

import attrs
import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset
from torchvision import datasets, transforms
from torchvision.datasets.utils import check_integrity

from nas_core import DataError, DataInfo
from nas_tasks.options import CifarOptions, ImageFolderOptions


@attrs.frozen
class LabelledImages:
    """What an image dataset's factory returns: training and test sets of ``(image, label)``
    pairs, and their shape. The classification task splits ``train`` itself; ``test`` is read
    only to report a trained network's final result."""

    train: Dataset
    test: Dataset
    info: DataInfo

DIGITS_TEST_SIZE = 360  # fixed split: 1437 train / 360 test images
DIGITS_SPLIT_SEED = 20190423  # independent of the run seed, so every run sees the same test set


def digits(options: None, *, root: Path | None = None) -> LabelledImages:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes); no download."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # [N, 1, 8, 8]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    test_idx, train_idx = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    return LabelledImages(train=TensorDataset(images[train_idx], labels[train_idx]),
                    test=TensorDataset(images[test_idx], labels[test_idx]),
                    info=DataInfo(input_shape=(1, 8, 8), num_classes=10))





# What the official python-version files contain besides dicts, lists, strings and numbers: numpy
# arrays, pickled as _reconstruct(ndarray, ...) with a dtype, then their state. Python 2 numpy wrote
# numpy.core.multiarray; numpy 2 writes numpy._core.multiarray. Each maps to the object itself, so
# nothing is imported on a file's say.
_RECONSTRUCT = np.empty(0, np.uint8).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global the official CIFAR files never contain (a tampered file: loading
    it with plain pickle could run code)."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only numpy's array reconstruction: every other global
    (``os.system``, ``builtins.exec``, any class) is refused before anything is called. The
    opcodes that build objects (REDUCE, NEWOBJ, INST, OBJ, EXT*) all obtain their callable
    through ``find_class``, so this is the whole surface; persistent ids are refused by default."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None


class RestrictedCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR-10 (checksums, ``classes``, transforms, ``__getitem__``) with every
    file read through :class:`RestrictedUnpickler` instead of ``pickle.load``, and errors of our
    own (torchvision's suggest downloading; nas never downloads). ``__init__`` and
    ``_load_meta`` follow torchvision 0.29's, which unpickle inline. Module-level, so that
    DataLoader worker processes can unpickle it."""

    nas_name = "cifar10"

    def __init__(self, root: str | Path, train: bool = True, transform=None, target_transform=None,
                 download: bool = False) -> None:
        if download:
            raise ValueError("nas reads CIFAR from --data-root and never downloads it")
        datasets.VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self.train = train
        self._verify([*self.train_list, *self.test_list, [self.meta["filename"], self.meta["md5"]]])
        data, self.targets = [], []
        for file_name, _ in self.train_list if train else self.test_list:
            entry = self._read(file_name)
            if not isinstance(entry, dict) or "data" not in entry:
                raise DataError(f"dataset {self.nas_name!r}: {self._path(file_name)} is not a CIFAR batch "
                                f"(expected a dict with 'data' and labels)")
            array = entry["data"]
            if not (isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.ndim == 2
                    and array.shape[1] == 3 * 32 * 32):
                shape = getattr(array, "shape", None)
                dtype = getattr(array, "dtype", type(array).__name__)
                raise DataError(f"dataset {self.nas_name!r}: {self._path(file_name)} holds data of shape "
                                f"{shape} and type {dtype}; expected uint8 rows of 3072 values")
            data.append(array)
            self.targets.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # HWC, as torchvision
        self._load_meta()

    def _load_meta(self) -> None:
        self._verify([[self.meta["filename"], self.meta["md5"]]])
        data = self._read(self.meta["filename"])
        self.classes = data[self.meta["key"]]
        self.class_to_idx = {_class: i for i, _class in enumerate(self.classes)}

    def _path(self, file_name: str) -> Path:
        return Path(self.root) / self.base_folder / file_name

    def _verify(self, files: list) -> None:
        """Each file exists and, where the list gives an md5, matches it."""
        missing = [name for name, _ in files if not self._path(name).is_file()]
        if missing:
            raise DataError(f"dataset {self.nas_name!r}: missing {', '.join(missing)} in "
                            f"{self._path('')}; extract the official python-version archive there")
        bad = [name for name, md5 in files if not check_integrity(self._path(name), md5)]
        if bad:
            raise DataError(f"dataset {self.nas_name!r} in {self._path('')}: {', '.join(bad)} failed "
                            f"the checksum of the official files; re-extract the official python-version "
                            f"archive, or pass --set dataset.verify_md5=false to use a modified copy "
                            f"(safe: the files are read with a restricted unpickler that runs no code)")

    def _read(self, file_name: str):
        path = self._path(file_name)
        with open(path, "rb") as f:
            try:
                return RestrictedUnpickler(f, encoding="latin1").load()
            except RefusedGlobal as e:
                raise DataError(f"dataset {self.nas_name!r}: {path} refers to the global {e}, which the "
                                f"official CIFAR files never contain; refused to load it, since a tampered "
                                f"file could run code (re-extract the official python-version archive)") from None
            except Exception as e:  # truncated, not a pickle, bit rot
                reason = (str(e).strip().splitlines() or [""])[0][:200]
                raise DataError(f"dataset {self.nas_name!r}: {path} is not a readable CIFAR file "
                                f"({type(e).__name__}{': ' + reason if reason else ''})") from None


class RestrictedCIFAR100(RestrictedCIFAR10, datasets.CIFAR100):
    """torchvision's CIFAR-100 read as :class:`RestrictedCIFAR10` reads CIFAR-10."""

    nas_name = "cifar100"
    base_folder, train_list, test_list, meta = (datasets.CIFAR100.base_folder, datasets.CIFAR100.train_list,
                                                datasets.CIFAR100.test_list, datasets.CIFAR100.meta)


class UnverifiedCIFAR10(RestrictedCIFAR10):
    """CIFAR-10 with checksums off: only that the files exist is checked (an md5 of None).
    Safe for a modified copy, since every file still goes through the restricted unpickler."""

    train_list = [[name, None] for name, _ in RestrictedCIFAR10.train_list]
    test_list = [[name, None] for name, _ in RestrictedCIFAR10.test_list]
    meta = {**RestrictedCIFAR10.meta, "md5": None}


class UnverifiedCIFAR100(RestrictedCIFAR100):
    """CIFAR-100 with checksums off (see UnverifiedCIFAR10)."""

    train_list = [[name, None] for name, _ in RestrictedCIFAR100.train_list]
    test_list = [[name, None] for name, _ in RestrictedCIFAR100.test_list]
    meta = {**RestrictedCIFAR100.meta, "md5": None}


# (class, unverified variant, folder, mean, std of the training set)
_CIFAR = {
    "cifar10": (RestrictedCIFAR10, UnverifiedCIFAR10, "cifar-10-batches-py",
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (RestrictedCIFAR100, UnverifiedCIFAR100, "cifar-100-python",
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _cifar(name: str, options: CifarOptions, root: Path | None) -> LabelledImages:
    cls, unverified, folder, mean, std = _CIFAR[name]
    files = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    expected = f"{root or '<data-root>'}/{folder}/{{{','.join(files)}}}"
    if root is None:
        raise DataError(f"dataset {name!r} needs --data-root: the directory holding {folder}/ "
                        f"(the official python version, extracted), i.e. {expected}")
    missing = [f for f in files if not (Path(root) / folder / f).is_file()]
    if missing:
        raise DataError(f"dataset {name!r} not found: missing {', '.join(missing)} in {Path(root) / folder}; "
                        f"expected {expected} (extract the official python-version archive there)")
    norm = transforms.Normalize(mean, std)
    train_tf = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if options.augment else []
    if not options.verify_md5:
        cls = unverified
    try:
        train = cls(str(root), train=True, transform=transforms.Compose([*train_tf, transforms.ToTensor(), norm]))
        test = cls(str(root), train=False, transform=transforms.Compose([transforms.ToTensor(), norm]))
    except DataError:
        raise
    except Exception as e:  # a damaged file that unpickles but is not what a CIFAR file holds
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise DataError(f"dataset {name!r} in {Path(root) / folder} is unreadable: "
                        f"{type(e).__name__}{': ' + reason if reason else ''}") from None
    for split in (train, test):
        _check_labels(name, Path(root) / folder, split)
    return LabelledImages(train=train, test=test, info=DataInfo((3, 32, 32), len(train.classes)))


def _check_labels(name: str, folder: Path, split: datasets.CIFAR10) -> None:
    """Damaged files can hold a label list of the wrong length or out-of-range labels; say so now
    rather than with an IndexError deep inside training."""
    part = "training" if split.train else "test"
    if len(split.targets) != len(split.data):
        raise DataError(f"dataset {name!r} in {folder}: the {part} files hold {len(split.data)} images "
                        f"but {len(split.targets)} labels")
    bad = [t for t in split.targets if not 0 <= t < len(split.classes)]
    if bad:
        raise DataError(f"dataset {name!r} in {folder}: {part} label {bad[0]} is outside "
                        f"0..{len(split.classes) - 1}")


def cifar10(options: CifarOptions, *, root: Path | None = None) -> LabelledImages:
    """CIFAR-10 (torchvision, python version) from --data-root; never downloads."""
    return _cifar("cifar10", options, root)


def cifar100(options: CifarOptions, *, root: Path | None = None) -> LabelledImages:
    """CIFAR-100 (torchvision, python version) from --data-root; never downloads."""
    return _cifar("cifar100", options, root)





IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def imagefolder(options: ImageFolderOptions, *, root: Path | None = None) -> LabelledImages:
    """Any ImageFolder tree (ImageNet layout: ROOT/train/CLASS/*.jpg, ROOT/val/CLASS/*.jpg), via torchvision."""
    layout = f"{root or '<data-root>'}/{options.train_dir}/<class>/<image> and .../{options.test_dir}/<class>/<image>"
    if root is None:
        raise DataError(f"dataset 'imagefolder' needs --data-root, laid out as {layout}")
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    jitter = options.color_jitter
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(options.image_size), transforms.RandomHorizontalFlip(),
        *([transforms.ColorJitter(jitter, jitter, jitter, 0.2)] if jitter else []), transforms.ToTensor(), norm])
    test_tf = transforms.Compose([transforms.Resize(options.resize), transforms.CenterCrop(options.image_size),
                                  transforms.ToTensor(), norm])
    for sub in (options.train_dir, options.test_dir):
        if not (Path(root) / sub).is_dir():
            raise DataError(f"dataset 'imagefolder': {Path(root) / sub} is not a directory; expected {layout}")
    splits = []
    for sub, tf in ((options.train_dir, train_tf), (options.test_dir, test_tf)):
        folder = Path(root) / sub
        try:
            splits.append(datasets.ImageFolder(str(folder), transform=tf))
        except (FileNotFoundError, RuntimeError) as e:  # no class folders, or no images in them
            raise DataError(f"dataset 'imagefolder' in {folder}: {e}; expected {layout}") from None
    train, test = splits
    if train.classes != test.classes:
        raise DataError(f"dataset 'imagefolder': the classes of {options.train_dir}/ and {options.test_dir}/ "
                        f"differ ({len(train.classes)} vs {len(test.classes)} folders)")
    return LabelledImages(train=train, test=test, info=DataInfo((3, options.image_size, options.image_size),
                                                          len(train.classes)))
