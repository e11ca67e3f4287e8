"""Train a discrete network from scratch (``nas train``; transfer evaluators reuse it)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import attrs
import pluggy
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from nas_core import checkpoint as ckpt
from nas_core.components import build
from nas_core.config import Component, Config, TrainSettings, resolve_device, to_dict
from nas_core.data import check_batch_fits, epoch_loader, limited, load_task, to_device
from nas_core.errors import DataError
from nas_core.genotype import Genotype
from nas_core.interfaces import SearchSpace, TaskData
from nas_core.plugins import Registries
from nas_core.run import CHECKPOINT_FILE, RunInfo, run_epoch

log = logging.getLogger("nas")
RESULTS_FILE = "results.json"


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

    def __init__(self, dataset: Dataset, transform: Any):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, Any]:
        x, y = self.dataset[i]
        return self.transform(x), y


def drop_path_probability(settings: TrainSettings, epoch: int) -> float:
    """Linear ramp from 0 at the first epoch towards ``settings.drop_path`` (as in DARTS)."""
    return settings.drop_path * epoch / settings.epochs


def training_loss(output: Tensor | tuple[Tensor, Tensor], target: Tensor, criterion: nn.Module,
                  aux_weight: float) -> tuple[Tensor, Tensor]:
    """(loss, logits); with an auxiliary head, loss = main + aux_weight * auxiliary."""
    if isinstance(output, tuple):
        logits, aux = output
        return criterion(logits, target) + aux_weight * criterion(aux, target), logits
    return criterion(output, target), output


def count_parameters(network: nn.Module) -> int:
    """Parameters of the network as evaluated: the auxiliary head (training only) excluded."""
    return sum(p.numel() for n, p in network.named_parameters() if not n.startswith("auxiliary"))


def count_multiply_adds(network: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> int:
    """Multiply-adds of one example's inference (convolutions and linear layers)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = network.training
    network.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(torch.zeros(1, *input_shape, device=device))
    network.train(was_training)
    return counter.get_total_flops() // 2  # the counter counts a multiply-add as two FLOPs


@attrs.define
class TrainSetup:
    config: Config
    device: torch.device
    genotype: Genotype
    space: SearchSpace
    network: nn.Module
    task: TaskData


def prepare_training(registries: Registries, config: Config, genotype: Genotype) -> TrainSetup:
    """Seed, load the data and build a freshly initialised network from ``genotype``."""
    device = resolve_device(config.device)
    ckpt.seed_everything(config.seed)
    torch.backends.cudnn.benchmark = False
    task = load_task(registries, config)
    space: SearchSpace = build(registries.spaces, Component(config.space.name, config.network), SearchSpace)
    network = space.build_network(genotype, task.info).to(device)
    check_batch_fits(task.train, config.train.batch_size, key="train.batch_size",
                     what=f"the training set of {config.dataset.name!r}")
    return TrainSetup(config, device, genotype, space, network, task)


def evaluate(network: nn.Module, dataset: Dataset, settings: TrainSettings, device: torch.device,
             seed: int, max_batches: int | None) -> dict[str, float]:
    """Top-1 and top-5 error (top-5 where there are more than 5 classes) on ``dataset``."""
    network.eval()
    loader = epoch_loader(dataset, batch_size=settings.batch_size, seed=seed, epoch=0, stream="test",
                          workers=settings.workers, shuffle=False, drop_last=False)
    top1 = top5 = count = 0
    with torch.no_grad():
        for x, y in limited(iter(loader), max_batches):
            logits = network(x.to(device))
            y = y.to(device)
            ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += int((ranked[:, 0] == y).sum())
            top5 += int((ranked == y[:, None]).any(1).sum())
            count += len(y)
    network.train()
    if count == 0:
        raise DataError("the test set is empty")
    out = {"test_top1_error": 1 - top1 / count}
    if logits.shape[1] > 5:
        out["test_top5_error"] = 1 - top5 / count
    return out


def run_training(setup: TrainSetup, *, pm: pluggy.PluginManager, run_dir: Path, resume: bool = False,
                 progress: bool | None = None, phase: str = "train") -> dict[str, Any]:
    """Train (or resume) in ``run_dir``; writes checkpoints every epoch and ``results.json``."""
    config, device, network, settings = setup.config, setup.device, setup.network, setup.config.train
    optimizer = torch.optim.SGD(network.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    scheduler: torch.optim.lr_scheduler.LRScheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs, eta_min=settings.lr_min)
        if settings.lr_schedule == "cosine" else torch.optim.lr_scheduler.StepLR(optimizer, 1, settings.lr_gamma))
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    train_set = Augmented(setup.task.train, Cutout(settings.cutout)) if settings.cutout > 0 else setup.task.train

    start_epoch, step = 0, 0
    if resume:
        state = ckpt.resume_from(run_dir / CHECKPOINT_FILE,
                                 {"network": network, "optimizer": optimizer, "scheduler": scheduler})
        start_epoch, step = state["epoch"] + 1, state["step"]
        log.info("resuming %s at epoch %d", run_dir, start_epoch + 1)

    info = setup.task.info
    sizes = {"params": count_parameters(network),
             "params_with_auxiliary": sum(p.numel() for p in network.parameters()),
             "multiply_adds": count_multiply_adds(network, info.input_shape, device)}
    log.info("%s: %s on %s, %.3fM params, %.1fM multiply-adds, device %s", phase, config.space.name,
             config.dataset.name, sizes["params"] / 1e6, sizes["multiply_adds"] / 1e6, device)
    run = RunInfo(dir=run_dir, config=config, spec=setup.space.arch_spec(), plugin_manager=pm, phase=phase,
                  start_epoch=start_epoch, genotype=setup.genotype)
    pm.hook.nas_run_start(run=run)
    def train_step(batch: tuple[Tensor, Tensor]) -> dict[str, float]:
        x, y = to_device(batch, device)
        loss, logits = training_loss(network(x), y, criterion, settings.aux_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip > 0:
            nn.utils.clip_grad_norm_(network.parameters(), settings.grad_clip)
        optimizer.step()
        return {"train_loss": float(loss.detach()),
                "train_acc": float((logits.detach().argmax(1) == y).float().mean())}

    results: dict[str, Any] = {}
    try:
        for epoch in range(start_epoch, settings.epochs):
            if hasattr(network, "drop_path_prob"):
                network.drop_path_prob = drop_path_probability(settings, epoch)
            loader = epoch_loader(train_set, batch_size=settings.batch_size, seed=config.seed, epoch=epoch,
                                  stream="train", workers=settings.workers, pin_memory=device.type == "cuda")
            steps = len(loader) if settings.max_steps_per_epoch is None else min(len(loader), settings.max_steps_per_epoch)
            network.train()
            lr = optimizer.param_groups[0]["lr"]

            epoch_metrics, step = run_epoch(limited(iter(loader), steps), train_step, run=run, first_step=step,
                                            total=steps, desc=f"epoch {epoch + 1}/{settings.epochs}", progress=progress)
            scheduler.step()
            epoch_metrics.update(lr=lr, drop_path_prob=float(getattr(network, "drop_path_prob", 0.0)))
            last = epoch + 1 == settings.epochs
            if last or (settings.eval_every and (epoch + 1) % settings.eval_every == 0):
                limit = settings.max_steps_per_epoch
                epoch_metrics.update(evaluate(network, setup.task.test, settings, device, config.seed, limit))
            epoch_metrics.update({"params_M": sizes["params"] / 1e6, "multiply_adds_M": sizes["multiply_adds"] / 1e6})
            ckpt.save_checkpoint(run_dir / CHECKPOINT_FILE, {
                "epoch": epoch, "step": step, "network": network.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": ckpt.rng_state(), "config": to_dict(config),
                "genotype": setup.genotype.to_dict(),
            })
            log.info("epoch %d/%d %s", epoch + 1, settings.epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in sorted(epoch_metrics.items())))
            pm.hook.nas_epoch_end(run=run, epoch=epoch, metrics=epoch_metrics, genotype=setup.genotype, strengths={})
            results = {**{k: v for k, v in epoch_metrics.items() if k.startswith("test_")}, **sizes,
                       "epochs": epoch + 1, "dataset": config.dataset.name, "space": config.space.name}
        if not results:  # resumed a finished run: report what it ended with
            results = {**sizes, **evaluate(network, setup.task.test, settings, device, config.seed,
                                           settings.max_steps_per_epoch),
                       "epochs": settings.epochs, "dataset": config.dataset.name, "space": config.space.name}
        ckpt.write_text_atomic(run_dir / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
    except BaseException as e:
        pm.hook.nas_run_end(run=run, genotype=setup.genotype, error=e)
        raise
    pm.hook.nas_run_end(run=run, genotype=setup.genotype, error=None)
    return results


def format_results(results: dict[str, Any]) -> str:
    parts = [f"{k[len('test_'):].replace('_', ' ')} {100 * v:.2f} %" for k, v in results.items() if k.startswith("test_")]
    parts += [f"{results['params'] / 1e6:.3f} M params", f"{results['multiply_adds'] / 1e6:.1f} M multiply-adds"]
    return "test " + ", ".join(parts)
