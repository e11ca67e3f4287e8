"""Dataset lookup, the search split and per-epoch loaders whose order depends only on
(seed, epoch): a resumed run reads exactly the batches an uninterrupted one would."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from nas_core.config import Config
from nas_core.errors import ConfigError, DataError
from nas_core.interfaces import TaskData
from nas_core.plugins import Registries


def load_task(registries: Registries, config: Config) -> TaskData:
    entry = registries.datasets.get(config.dataset.name)
    root = Path(config.data_root).expanduser() if config.data_root else None
    if root is not None and not root.is_dir():
        raise DataError(f"--data-root {root} is not a directory")
    data = entry.factory(config.dataset.options, root=root)
    if not isinstance(data, TaskData):
        raise DataError(f"dataset {config.dataset.name!r} (plugin {entry.plugin!r}) returned "
                        f"{type(data).__name__}, not TaskData")
    return data


def search_split(train: Dataset, portion: float) -> tuple[Subset, Subset]:
    """The first ``portion`` of the training set trains weights, the rest validates alpha."""
    n = len(train)
    cut = int(n * portion)
    if not 0 < cut < n:
        raise ConfigError(f"search.train_portion={portion} leaves an empty half of the {n} training examples")
    return Subset(train, range(cut)), Subset(train, range(cut, n))


def stream_seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def check_batch_fits(dataset: Dataset, batch_size: int, *, key: str, what: str) -> None:
    """A ConfigError naming ``key`` when ``dataset`` cannot fill one batch (loaders drop partial batches)."""
    if len(dataset) < batch_size:
        raise ConfigError(f"{key}={batch_size} is larger than the {len(dataset)} examples of {what}; lower it")


def epoch_loader(dataset: Dataset, *, batch_size: int, seed: int, epoch: int, stream: str, workers: int,
                 shuffle: bool = True, drop_last: bool = True, pin_memory: bool = False) -> DataLoader:
    if drop_last:
        check_batch_fits(dataset, batch_size, key="batch_size", what=f"the {stream} split")
    generator = torch.Generator().manual_seed(stream_seed(seed, epoch, stream))
    sampler = RandomSampler(dataset, generator=generator) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                      num_workers=workers, generator=generator, pin_memory=pin_memory,
                      persistent_workers=False)


def to_device(batch: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device, non_blocking=True) for t in batch)


def limited(it: Iterator, limit: int | None) -> Iterator:
    for i, item in enumerate(it):
        if limit is not None and i >= limit:
            return
        yield item
