"""Image datasets: the embedded ``digits`` set and CIFAR-10/100 read from ``--data-root``."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset
from torchvision import datasets, transforms

from nas_core import DataError, DataInfo


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


@attrs.frozen
class CifarOptions:
    augment: bool = True  # random crop (padding 4) and horizontal flip on the training set
    verify_md5: bool = True  # check the files against the official checksums


class UnverifiedCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR-10 with checksums off: it checks only that the files exist, since
    torchvision skips the md5 of entries whose md5 is None. Module-level so that DataLoader
    worker processes can unpickle it."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class UnverifiedCIFAR100(datasets.CIFAR100):
    """torchvision's CIFAR-100 with checksums off (see UnverifiedCIFAR10)."""

    train_list = [[name, None] for name, _ in datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR100.test_list]
    meta = {**datasets.CIFAR100.meta, "md5": None}


# (torchvision class, unverified variant, folder, mean, std of the training set)
_CIFAR = {
    "cifar10": (datasets.CIFAR10, UnverifiedCIFAR10, "cifar-10-batches-py",
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (datasets.CIFAR100, UnverifiedCIFAR100, "cifar-100-python",
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
        train = cls(str(root), train=True, download=False,
                    transform=transforms.Compose([*train_tf, transforms.ToTensor(), norm]))
        test = cls(str(root), train=False, download=False,
                   transform=transforms.Compose([transforms.ToTensor(), norm]))
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise DataError(f"dataset {name!r} in {Path(root) / folder} failed its checksum or could not be read "
                        f"({e}); re-extract the official archive, or set dataset.verify_md5=false "
                        f"for a modified copy") from None
    except Exception as e:  # unpickling errors of damaged batch files
        raise DataError(f"dataset {name!r} in {Path(root) / folder} is unreadable: {type(e).__name__}: {e}") from None
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


@attrs.frozen
class ImageFolderOptions:
    train_dir: str = "train"  # class folders of training images under --data-root
    test_dir: str = "val"  # class folders of test images (ImageNet's validation set)
    image_size: int = 224  # training crop and test centre crop
    resize: int = 256  # test images are resized to this before the centre crop
    color_jitter: float = 0.4  # brightness/contrast/saturation jitter of training images (0: off)


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
