"""nas_oles side by side with the authors' OLES code (Jiang et al., NeurIPS 2023;
https://github.com/PasaLab/oles): their train_search.py `train()` (the first-order Architect step,
`check_grads_cosine`, the clipped SGD weight step, `preserve_grads`) on their model_search.Network,
against darts_cnn with the softmax relaxation and the `oles` optimizer, in float64 on one thread, from
identical weights, alphas and batches.

    OLES_SRC=/path/to/oles python benchmarks/fidelity/oles.py

Two runs of STEPS search steps each, from the same start:
- "authors": their code as it is against `score: authors`, with their hard-coded window (20) and
  threshold (0.4) patched in memory to FREQUENCY and THRESHOLD (the constants of their
  `check_grads_cosine`, so that two decisions fall within the run): after every step, the training
  loss, alpha gradients, weights and BN statistics, alphas, every op's kept gradients, every op's
  window sum and count, and the set of frozen ops.
- "clean": their code with the weights' gradients set to None between two steps (their kept copies
  stay), which turns their score into the paper's cosine of the validation gradient and the kept
  training gradient, against `score: clean`; the windows out of reach in both (their decision would
  divide frequency + 1 scores by frequency), so the window sums are the scores compared.

Their code is imported, never copied. In memory only: `.cuda()` is a no-op, and `.cpu()` returns a
copy, as it does on the GPU their code runs on (on the CPU it would return the gradient itself, which
the next backward accumulates into, so every score would read 1). Importing their train_search.py
parses sys.argv and writes its experiment folder, log and a ../logs TensorBoard folder: the script
imports it inside a temporary folder. Exits 0 with a message when OLES_SRC is not set. Figures:
benchmarks/fidelity/oles.md.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pcdarts import (
    CLASSES,
    Report,
    StepRun,
    catalog,
    copy_state,
    image_task,
    name_map,
    rel,
    setup,
    source,
    weights_after,
    worst,
)

C, CELLS, SIZE, BATCH = 8, 3, 16, 4  # 16x16 images: see darts_minus.py (a BN after a 2x2 pooled map)
LR, LR_MIN, MOMENTUM, WD, ARCH_LR, ARCH_WD = 0.025, 0.001, 0.9, 3e-4, 3e-4, 1e-3  # their argparse defaults
FREQUENCY, THRESHOLD, STEPS = 3, 0.85, 9  # theirs decides every FREQUENCY + 1 scores: after steps 5 and 9


def their_modules(src: Path, work: Path) -> Any:
    """Their train_search (imported in ``work``, where it writes), model_search and Architect."""
    setup(src)
    torch.Tensor.cpu = lambda self, *a, **k: self.clone()  # a copy, as from their GPU
    sys.argv = ["train_search.py"]
    run_dir = work / "run"
    run_dir.mkdir()
    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        import train_search  # theirs: parses sys.argv, makes search-EXP-*/ and ../logs here
    finally:
        os.chdir(cwd)
    import model_search
    from architect import Architect

    return train_search, model_search, Architect


def patch_window(check: Any, frequency: int, threshold: float) -> None:
    """Their check_grads_cosine with its constants 20 (the count that decides) and 0.4 replaced (from
    the function's original code, so that each run sets its own)."""
    original = check.__dict__.setdefault("original_code", check.__code__)
    consts = original.co_consts
    assert sum(type(c) is int and c == 20 for c in consts) == 1 and sum(type(c) is float and c == 0.4
                                                                      for c in consts) == 1, consts
    check.__code__ = original.replace(co_consts=tuple(
        frequency if type(c) is int and c == 20 else threshold if type(c) is float and c == 0.4 else c
        for c in consts))


class OneBatch:
    """Their valid queue: train() draws `next(iter(valid_queue))` each step."""

    def __init__(self, batch: tuple[Tensor, Tensor]):
        self.batch = batch

    def __iter__(self):
        return iter([self.batch])


def main() -> int:
    src = source("OLES_SRC", "train_search.py", "https://github.com/PasaLab/oles")
    with tempfile.TemporaryDirectory() as work:
        modules = their_modules(src, Path(work))
        verdicts = [compare(*modules, score=score) for score in ("authors", "clean")]
    return max(verdicts)


def compare(train_search: Any, model_search: Any, Architect: Any, *, score: str) -> int:
    from nas_darts import plugin as darts_plugin
    from nas_darts.cnn_space import DartsCnnSpace
    from nas_darts.options import DartsCnnOptions, SoftmaxOptions
    from nas_darts.softmax import SoftmaxRelaxation
    from nas_oles.optimizer import OlesOptimizer
    from nas_oles.options import OlesOptions

    authors = score == "authors"
    frequency = FREQUENCY if authors else 1000
    patch_window(train_search.check_grads_cosine, frequency, THRESHOLD)
    theirs_as = "their code as it is" if authors else "their code, weight gradients set to None between steps"
    print(f"\n== score: {score} ({theirs_as}; window {frequency}, threshold {THRESHOLD}) ==")
    torch.manual_seed(0)
    theirs = model_search.Network(C, CLASSES, CELLS, nn.CrossEntropyLoss())
    space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=C, nodes=4), catalog=catalog(("darts", darts_plugin)))
    task, info = image_task()
    ours = space.build_supernet(info)
    spec = space.arch_spec()
    assert spec.ops == tuple(model_search.PRIMITIVES), (spec.ops, model_search.PRIMITIVES)
    relax = SoftmaxRelaxation(SoftmaxOptions(), spec=spec)
    mapping = name_map(theirs, ours)
    copy_state(theirs, ours, mapping)
    print(f"name map: {len(mapping)} tensors, e.g. " + "; ".join(
        f"{k} -> {mapping[k]}" for k in [k for k in mapping if "._ops.1._ops.4" in k][:2]))
    with torch.no_grad():  # alphas of unit scale, as in the other checks
        for cell_type in ("normal", "reduce"):
            theirs_alpha = getattr(theirs, f"alphas_{cell_type}")
            theirs_alpha.copy_(torch.randn(theirs_alpha.shape))
            relax.alphas[cell_type].copy_(theirs_alpha)
    our_alphas = [relax.alphas["normal"], relax.alphas["reduce"]]

    architect = Architect(theirs, SimpleNamespace(momentum=MOMENTUM, weight_decay=WD, arch_learning_rate=ARCH_LR,
                                                  arch_weight_decay=ARCH_WD))
    their_sgd = torch.optim.SGD(theirs.parameters(), LR, momentum=MOMENTUM, weight_decay=WD)
    options = OlesOptions(w_lr=LR, w_lr_min=LR_MIN, w_momentum=MOMENTUM, w_weight_decay=WD, grad_clip=5.0,
                          arch_lr=ARCH_LR, arch_betas=(0.5, 0.999), arch_weight_decay=ARCH_WD, frequency=frequency,
                          threshold=THRESHOLD, score=score)
    optimizer = OlesOptimizer(options, supernet=ours, relaxation=relax, task=task, epochs=50)
    arch_grads: list[list[Tensor]] = []
    arch_gradient = optimizer.arch_gradient

    def recorded(*args: Any, **kwargs: Any) -> Any:  # our alpha gradients, which the step does not keep
        out, grads = arch_gradient(*args, **kwargs)
        arch_grads.append(grads)
        return out, grads

    optimizer.arch_gradient = recorded
    their_arch_grads: list[list[Tensor]] = []
    their_arch_step = architect.step

    def their_recorded(*args: Any, **kwargs: Any) -> None:  # read before their weight step's backward adds to them
        their_arch_step(*args, **kwargs)
        their_arch_grads.append([a.grad.clone() for a in theirs.arch_parameters()])

    architect.step = their_recorded
    run = StepRun()
    run.spec = spec
    # their scored op (cell, edge, column) -> its module; ours -> candidate index
    their_ops = {(i, e, k): op for i, cell in enumerate(theirs.cells) for e, mixed in enumerate(cell._ops)
                 for k, op in enumerate(mixed._ops) if any(True for _ in op.parameters())}
    our_ops = {}
    for n, cand in enumerate(optimizer.candidates):
        i, e = map(int, re.match(r"cells\.(\d+)\.edges\.(\d+)\.", cand.path).groups())
        our_ops[(i, e, cand.column)] = n
    gen = torch.Generator().manual_seed(1)

    def batch() -> tuple[Tensor, Tensor]:
        return torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), torch.randint(CLASSES, (BATCH,), generator=gen)

    report, agree = Report(), True
    for step in range(STEPS):
        (xt, yt), (xv, yv) = batch(), batch()
        if not authors:
            their_sgd.zero_grad(set_to_none=True)
        _, their_loss = train_search.train([(xt, yt)], OneBatch((xv, yv)), theirs, architect, nn.CrossEntropyLoss(),
                                           their_sgd, LR, 0)
        result = optimizer.step((xt, yt), (xv, yv), {}, run)
        eligible = [key for key in our_ops if our_ops[key] in optimizer.eligible]
        report.add(f"step {step + 1}: training loss", rel(result.metrics["train"]["loss"], torch.tensor(their_loss)))
        report.add(f"step {step + 1}: d alpha (normal, reduce)",
                   worst(zip(arch_grads[-1], their_arch_grads[-1])))
        report.add(f"step {step + 1}: weights and BN statistics", weights_after(theirs, ours, mapping))
        report.add(f"step {step + 1}: alphas", worst(zip(our_alphas, theirs.arch_parameters())))
        live = [key for key in eligible if our_ops[key] in (optimizer.kept or {})]
        report.add(f"step {step + 1}: kept gradients ({len(live)} ops)",
                   worst((g, t) for key in live
                         for g, t in zip(optimizer.kept[our_ops[key]], their_ops[key].pre_grads)))
        if optimizer.sums is not None:
            sums = torch.stack([optimizer.sums[our_ops[key]] for key in eligible])
            report.add(f"step {step + 1}: window sums of the scores",
                       rel(sums, torch.stack([torch.as_tensor(their_ops[key].avg, dtype=sums.dtype)
                                              for key in eligible])))
        their_frozen = {key for key, op in their_ops.items() if not all(p.requires_grad for p in op.parameters())}
        our_frozen = {key for key, n in our_ops.items() if n in optimizer.frozen}
        counts = {their_ops[key].count for key in eligible if key not in their_frozen}
        agree &= their_frozen == our_frozen and counts == {optimizer.scored}
        mean = ""
        if optimizer.scored:  # over the ops still training
            live_sums = [float(optimizer.sums[our_ops[key]]) for key in eligible if key not in our_frozen]
            mean = f", mean live score {sum(live_sums) / len(live_sums) / optimizer.scored:.3f}"
        same = "identical" if their_frozen == our_frozen else "DIFFERENT"
        print(f"  step {step + 1}: window count theirs {sorted(counts)} ours {optimizer.scored}{mean}; "
              f"frozen ops theirs {len(their_frozen)} ours {len(our_frozen)}: {same}")
    if authors and not 0 < len(optimizer.frozen) < len(optimizer.eligible):
        print(f"the run froze {len(optimizer.frozen)} of {len(optimizer.eligible)} ops: choose THRESHOLD for a mix")
        agree = False
    return report.verdict() if agree else 1


if __name__ == "__main__":
    sys.exit(main())
