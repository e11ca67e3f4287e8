"""The ``classification`` task: images in, logits out; cross-entropy, top-1 and top-5 error.

Streams. Search: the training set's first ``search_split`` trains the weights, the rest the
architecture (the test set is never read). Training: the last ``valid_split`` of the training set
is held out for validation (0: train on all of it, the paper's protocol); test is read once.

A network may return ``(logits, auxiliary_logits)`` in training mode; the auxiliary loss is
added with weight ``aux_weight``.

Batches. Evaluation reads every example in file order. ``train`` is shuffled and keeps its last
partial batch, as the DARTS evaluation code's loader, so every image is seen once per epoch;
unless a process's share of it would hold a single example (a BatchNorm cannot train on one) or
none: then it is dropped every epoch, which the log says once. The search's ``weights`` and
``arch`` streams drop their last partial batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, Subset

from nas_core import ConfigError, Outcome, RunContext, Task, stream_seed
from nas_tasks.image_datasets import LabelledImages
from nas_tasks.options import ClassificationOptions

log = logging.getLogger("nas")

class Cutout:
    """Zero a square of ``size`` pixels centred on a random pixel, clipped at the border
    (DeVries and Taylor 2017). torchvision's RandomErasing keeps its box inside the image,
    which erases a different amount near the edges, so this is written out."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: Tensor) -> Tensor:
        h, w = img.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(cy - self.size // 2, 0), min(cy + self.size // 2, h)
        x0, x1 = max(cx - self.size // 2, 0), min(cx + self.size // 2, w)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0
        return img


class Augmented(Dataset):
    """``dataset`` with ``transform`` applied to each input tensor."""

    def __init__(self, dataset: Dataset, transform: Callable[[Tensor], Tensor]):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, Any]:
        x, y = self.dataset[i]
        return self.transform(x), y


class DeviceLoader:
    """A DataLoader whose batches arrive on ``device``."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class ShardedBatches:
    """Rank ``rank``'s contiguous share of each batch of ``batches`` (all of it on one process);
    empty shares of a short last evaluation batch are skipped."""

    def __init__(self, batches: BatchSampler, rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            part = batch[self.rank * len(batch) // self.world:(self.rank + 1) * len(batch) // self.world]
            if part:
                yield part


def split(dataset: Dataset, portion: float, setting: str) -> tuple[Subset, Subset]:
    """The first ``portion`` of ``dataset`` and the rest, in file order (as the DARTS code splits)."""
    n = len(dataset)
    cut = int(round(n * portion))
    if not 0 < cut < n:
        raise ConfigError(f"{setting} leaves an empty part of the {n} training examples")
    return Subset(dataset, range(cut)), Subset(dataset, range(cut, n))


class ClassificationTask(Task):
    """Image classification: cross-entropy (plus auxiliary head), top-1 and top-5 error."""

    def __init__(self, options: ClassificationOptions, *, data: Any):
        if not isinstance(data, LabelledImages):
            raise ValueError(f"reads labelled images (digits, cifar10, cifar100, imagefolder), but the chosen "
                             f"dataset gives {type(data).__name__}")
        self.options, self.info = options, data.info
        weights, arch = split(data.train, options.search_split, f"task.search_split={options.search_split}")
        self.sets: dict[str, dict[str, Dataset]] = {"search": {"weights": weights, "arch": arch}}
        if options.valid_split > 0:
            train, valid = split(data.train, 1 - options.valid_split, f"task.valid_split={options.valid_split}")
            self.sets["train"] = {"train": train, "valid": valid, "test": data.test}
        else:
            self.sets["train"] = {"train": data.train, "test": data.test}
        if options.cutout > 0:
            self.sets["train"]["train"] = Augmented(self.sets["train"]["train"], Cutout(options.cutout))
        self._told_dropped = False  # the log says once that the last training batch is dropped

    def streams(self, phase: str) -> tuple[str, ...]:
        return tuple(self.sets[phase])

    def _dataset(self, stream: str) -> Dataset:
        for sets in self.sets.values():
            if stream in sets:
                return sets[stream]
        raise KeyError(f"task 'classification' has no stream {stream!r}")

    def loader(self, stream: str, *, batch_size: int, run: RunContext, evaluation: bool = False) -> DeviceLoader:
        dataset = self._dataset(stream)
        # evaluation reads in file order, but a DataLoader without a generator still draws its
        # base seed from the global RNG, which would make training depend on when it evaluates
        generator = (torch.Generator().manual_seed(stream_seed(run.seed, run.epoch, stream, "evaluation"))
                     if evaluation else run.generator(stream))
        if not evaluation and batch_size % run.world_size:
            raise ConfigError(f"batch size {batch_size} does not split evenly over {run.world_size} processes")
        sampler = SequentialSampler(dataset) if evaluation else RandomSampler(dataset, generator=generator)
        drop_last = not evaluation and self._drops_last(stream, len(dataset), batch_size, run.world_size)
        # every rank draws the same global batches and keeps its share of each
        batches = ShardedBatches(BatchSampler(sampler, batch_size, drop_last=drop_last), run.rank, run.world_size)
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=self.options.workers, generator=generator,
                            pin_memory=run.device.type == "cuda")
        return DeviceLoader(loader, run.device)

    def _drops_last(self, stream: str, n: int, batch_size: int, world: int) -> bool:
        """Whether a training stream drops its last partial batch (see the module's docstring)."""
        if stream != "train":
            return True  # the search's streams
        rest = n % batch_size
        if rest == 0 or rest // world >= 2:  # rest // world: the smallest of the processes' shares
            return False
        if not self._told_dropped:
            self._told_dropped = True
            per = f", {rest // world} on some of the {world} processes" if world > 1 else ""
            log.info("the last training batch would hold %d of the %d examples (batch %d%s): dropped every epoch, "
                     "as a BatchNorm cannot train on one example", rest, n, batch_size, per)
        return True

    def check_batch_size(self, phase: str, batch_size: int, key: str) -> None:
        # each training stream must hold one whole batch
        for stream in ("weights", "arch") if phase == "search" else ("train",):
            n = len(self.sets[phase][stream])
            if n < batch_size:
                raise ConfigError(f"{key}={batch_size} is larger than the {n} examples of the {stream} stream; lower it")

    def forward(self, model: Callable[..., Any], batch: Any, state: Any) -> Outcome:
        x, y = batch
        output = model(x)
        logits, aux = output if isinstance(output, tuple) else (output, None)
        loss = F.cross_entropy(logits, y, label_smoothing=self.options.label_smoothing)
        if aux is not None and self.options.aux_weight > 0:
            loss = loss + self.options.aux_weight * F.cross_entropy(aux, y, label_smoothing=self.options.label_smoothing)
        with torch.no_grad():
            ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
            stats = {"loss": loss.detach(), "top1_error": 1 - (ranked[:, 0] == y).float().mean()}
            if logits.shape[1] > 5:
                stats["top5_error"] = 1 - (ranked == y[:, None]).any(1).float().mean()
        return Outcome(loss=loss, state=None, stats=stats, count=len(y))

    def example_inputs(self, device: torch.device) -> tuple[Tensor]:
        return (torch.zeros(1, *self.info.input_shape, device=device),)
