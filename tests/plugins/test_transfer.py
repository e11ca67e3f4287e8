"""Transfer evaluation end to end on tiny datasets written in their real on-disk formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from cifar_files import write_cifar100
from nas_core.errors import DataError
from nas_tasks.image_datasets import ImageFolderOptions, LabelledImages, imagefolder


def write_imagefolder(root, classes=("cat", "dog", "fish"), per_class=6):
    """ROOT/{train,val}/<class>/*.{png,jpg}: real image files of different sizes and modes."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                size = (40 + 4 * i, 36 + 2 * c)
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                pixels[..., c] = 255  # a class-coloured channel, something to learn
                image = Image.fromarray(pixels)
                if i % 2:
                    image.save(folder / f"{i}.jpg", quality=90)
                else:
                    image.convert("L" if i % 3 == 0 else "RGB").save(folder / f"{i}.png")
    return root


def test_imagefolder_dataset_reads_real_files(tmp_path):
    root = write_imagefolder(tmp_path)
    data = imagefolder(ImageFolderOptions(image_size=32, resize=36), root=root)
    assert isinstance(data, LabelledImages)
    assert data.info.input_shape == (3, 32, 32) and data.info.num_classes == 3
    assert len(data.train) == len(data.test) == 18
    x, y = data.test[0]
    assert x.shape == (3, 32, 32) and y == 0
    with pytest.raises(DataError, match="needs --data-root"):
        imagefolder(ImageFolderOptions(), root=None)
    (tmp_path / "only_train" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"only_train/val is not a directory; expected .*/train/<class>/<image>"):
        imagefolder(ImageFolderOptions(), root=tmp_path / "only_train")
    (tmp_path / "val" / "extra").mkdir()
    (tmp_path / "val" / "extra" / "x.png").write_bytes((tmp_path / "val" / "cat" / "0.png").read_bytes())
    with pytest.raises(DataError, match="classes of train/ and val/ differ"):
        imagefolder(ImageFolderOptions(), root=tmp_path)


TINY = ["--set", "network.cells=3", "--set", "network.channels=8", "--set", "train.epochs=2",
        "--set", "train.batch_size=6", "--set", "train.max_steps_per_epoch=2", "--no-progress"]


@pytest.mark.slow  # the CIFAR-10 -> CIFAR-100 transfer runs end to end in the default suite
def test_transfer_to_imagenet_style_network_on_an_imagefolder_tree(tmp_path):
    root = write_imagefolder(tmp_path / "data")
    run = tmp_path / "run"
    result = run_cli("transfer", "--genotype", "darts_v2", "--target", "imagenet", "--data-root", str(root),
                     "--set", "dataset.image_size=32", "--set", "dataset.resize=36", *TINY, "--out", str(run))
    assert result.returncode == 0, result.stderr
    config = (run / "config.yaml").read_text()
    # the target's settings arrive: reducing stem, label smoothing, the step schedule
    assert "stem: imagenet" in config and "label_smoothing: 0.1" in config and "lr_schedule: step" in config
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"] == "imagefolder" and "test_top1_error" in results and "test_top5_error" not in results
    assert "lr=0.1 " in result.stdout and "lr=0.097" in result.stdout  # step decay by 0.97 per epoch


def test_transfer_cifar10_cell_to_cifar100(tmp_path):
    files = write_cifar100(tmp_path / "data", n_train=24, n_test=12)
    run = tmp_path / "run"
    result = run_cli("transfer", "--genotype", "darts_v1", "--target", "cifar100", "--data-root", str(files.root),
                     "--set", "dataset.verify_md5=false", *TINY, "--out", str(run))
    assert result.returncode == 0, result.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"] == "cifar100" and "test_top5_error" in results
    assert "cutout: 16" in (run / "config.yaml").read_text()


def test_unknown_target_lists_the_registered_ones(tmp_path):
    result = run_cli("transfer", "--genotype", "darts_v2", "--target", "imagenett", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "did you mean 'imagenet'" in result.stderr and "Valid evaluators: cifar100, imagenet" in result.stderr
