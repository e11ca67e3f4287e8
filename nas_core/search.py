"""The search engine: epochs of bilevel steps, then discretize, checkpoint and notify hooks."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import pluggy
import torch
from torch.utils.data import Dataset

from nas_core import checkpoint as ckpt
from nas_core.components import build
from nas_core.config import Config, resolve_device, to_dict
from nas_core.data import check_batch_fits, epoch_loader, limited, load_task, search_split, to_device
from nas_core.genotype import Genotype
from nas_core.interfaces import ArchSpec, BilevelOptimizer, Discretizer, Relaxation, SearchSpace, Supernet
from nas_core.plugins import Registries
from nas_core.run import CHECKPOINT_FILE, GENOTYPE_FILE, RunInfo, run_epoch

log = logging.getLogger("nas")


@attrs.define
class SearchSetup:
    """Everything a search needs, built (and validated) before a run directory is created."""

    config: Config
    device: torch.device
    space: SearchSpace
    spec: ArchSpec
    supernet: Supernet
    relaxation: Relaxation
    optimizer: BilevelOptimizer
    discretizer: Discretizer
    weights_half: Dataset
    arch_half: Dataset


def prepare_search(registries: Registries, config: Config) -> SearchSetup:
    """Seed, load the data and build every component; raises NasError on bad input."""
    device = resolve_device(config.device)
    ckpt.seed_everything(config.seed)
    torch.backends.cudnn.benchmark = False  # autotuned kernels would break run-to-run identity
    task = load_task(registries, config)
    space: SearchSpace = build(registries.spaces, config.space, SearchSpace)
    spec = space.arch_spec()
    supernet: Supernet = space.build_supernet(task.info).to(device)
    relaxation: Relaxation = build(registries.relaxations, config.relaxation, Relaxation, spec=spec).to(device)
    optimizer: BilevelOptimizer = build(registries.optimizers, config.optimizer, BilevelOptimizer,
                                        supernet=supernet, relaxation=relaxation,
                                        criterion=space.criterion, epochs=config.search.epochs)
    discretizer: Discretizer = build(registries.discretizers, config.discretizer, Discretizer)
    weights_half, arch_half = search_split(task.train, config.search.train_portion)
    for half, name in ((weights_half, "weights"), (arch_half, "arch")):
        check_batch_fits(half, config.search.batch_size, key="search.batch_size",
                         what=f"the {name} half of {config.dataset.name!r}")
    return SearchSetup(config, device, space, spec, supernet, relaxation, optimizer, discretizer,
                       weights_half, arch_half)


def run_search(setup: SearchSetup, *, pm: pluggy.PluginManager, run_dir: Path, resume: bool = False,
               progress: bool | None = None) -> Genotype:
    """Run (or resume) a prepared search in ``run_dir``; returns the final genotype."""
    config, device, space, spec = setup.config, setup.device, setup.space, setup.spec
    supernet, relaxation, optimizer, discretizer = setup.supernet, setup.relaxation, setup.optimizer, setup.discretizer
    weights_half, arch_half = setup.weights_half, setup.arch_half

    start_epoch, step, genotype = 0, 0, None
    if resume:
        state = ckpt.resume_from(run_dir / CHECKPOINT_FILE,
                                 {"supernet": supernet, "relaxation": relaxation, "optimizer": optimizer})
        start_epoch, step = state["epoch"] + 1, state["step"]
        genotype = Genotype.from_dict(state["genotype"])
        log.info("resuming %s at epoch %d", run_dir, start_epoch + 1)

    n_params = sum(p.numel() for p in supernet.parameters())
    log.info("search: space=%s optimizer=%s dataset=%s device=%s supernet=%.3fM params, %d+%d examples",
             config.space.name, config.optimizer.name, config.dataset.name, device, n_params / 1e6,
             len(weights_half), len(arch_half))
    run = RunInfo(dir=run_dir, config=config, spec=spec, plugin_manager=pm, start_epoch=start_epoch)
    pm.hook.nas_run_start(run=run)
    settings = config.search
    try:
        for epoch in range(start_epoch, settings.epochs):
            loaders = [epoch_loader(half, batch_size=settings.batch_size, seed=config.seed, epoch=epoch,
                                    stream=stream, workers=settings.workers, pin_memory=device.type == "cuda")
                       for half, stream in ((weights_half, "weights"), (arch_half, "arch"))]
            steps = min(map(len, loaders))
            if settings.max_steps_per_epoch is not None:
                steps = min(steps, settings.max_steps_per_epoch)
            supernet.train()
            epoch_metrics, step = run_epoch(
                limited(zip(*loaders), steps),
                lambda batches: optimizer.step(to_device(batches[0], device), to_device(batches[1], device)),
                run=run, first_step=step, total=steps, desc=f"epoch {epoch + 1}/{settings.epochs}", progress=progress)
            epoch_metrics.update(optimizer.end_epoch())
            if settings.eval_every and (epoch + 1) % settings.eval_every == 0:
                epoch_metrics.update(evaluate(supernet, relaxation, space, arch_half, config, device, steps))
            strengths = relaxation.strengths()
            genotype = discretizer.derive(strengths, spec)
            _save_epoch(run_dir, epoch, step, genotype, supernet, relaxation, optimizer, config)
            log.info("epoch %d/%d %s", epoch + 1, settings.epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in sorted(epoch_metrics.items())))
            pm.hook.nas_epoch_end(run=run, epoch=epoch, metrics=epoch_metrics, genotype=genotype,
                                  strengths=strengths)
    except BaseException as e:
        pm.hook.nas_run_end(run=run, genotype=genotype, error=e)
        raise
    pm.hook.nas_run_end(run=run, genotype=genotype, error=None)
    return genotype


@torch.no_grad()
def evaluate(supernet: Supernet, relaxation: Relaxation, space: SearchSpace, dataset, config: Config,
             device: torch.device, max_batches: int) -> dict[str, float]:
    """Loss and accuracy of the supernet (eval mode) on the arch-validation half."""
    supernet.eval()
    loader = epoch_loader(dataset, batch_size=config.search.batch_size, seed=config.seed, epoch=0,
                          stream="eval", workers=config.search.workers, shuffle=False, drop_last=False)
    mix = relaxation.weights()
    loss_sum, correct, count = 0.0, 0, 0
    limit = max_batches if config.search.max_steps_per_epoch is not None else None
    for x, y in limited(iter(loader), limit):
        x, y = x.to(device), y.to(device)
        logits = supernet(x, mix)
        loss_sum += float(space.criterion(logits, y)) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        count += len(y)
    supernet.train()
    return {"val_loss": loss_sum / max(count, 1), "val_acc": correct / max(count, 1)}


def _save_epoch(run_dir: Path, epoch: int, step: int, genotype: Genotype, supernet: Supernet,
                relaxation: Relaxation, optimizer: BilevelOptimizer, config: Config) -> None:
    (run_dir / "genotypes").mkdir(exist_ok=True)
    text = genotype.to_json()
    ckpt.write_text_atomic(run_dir / "genotypes" / f"epoch_{epoch + 1:03d}.json", text)
    ckpt.write_text_atomic(run_dir / GENOTYPE_FILE, text)
    ckpt.save_checkpoint(run_dir / CHECKPOINT_FILE, {
        "epoch": epoch, "step": step, "supernet": supernet.state_dict(), "relaxation": relaxation.state_dict(),
        "optimizer": optimizer.state_dict(), "rng": ckpt.rng_state(), "config": to_dict(config),
        "genotype": genotype.to_dict(),
    })
