"""nas_robust_darts side by side with the authors' RobustDARTS code (Zela et al., ICLR 2020;
https://github.com/automl/RobustDARTS): the dominant eigenvalue of the architecture Hessian on one batch,
and the early-stop decisions of their EVLocalAvg on a sequence of readings.

    RDARTS_SRC=/path/to/RobustDARTS python benchmarks/fidelity/robust_darts.py

Compared, in float64 on one thread, from identical weights (copied by name map), alphas and batch:
their src/search/analyze.py ``Analyzer.compute_Hw`` (the full Hessian of the validation loss in the
alphas, row by row, plus the arch weight decay times I) and its largest eigenvalue (numpy's
``max(eigvals(H))``, as their train_search.py takes it), against our Hessian-vector products (each
product H v against their H @ v) and our Lanczos eigenvalue, which never forms H. Then their
``EVLocalAvg.update``/``early_stop`` (src/utils.py) and our ``stop_epoch`` on hand-made sequences of
readings: the decision after every reading. Their code is imported, never copied; `.cuda()` is made a
no-op. Exits 0 with a message when RDARTS_SRC is not set. The figures are in benchmarks/fidelity/robust_darts.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pcdarts import Report, catalog, copy_state, image_task, name_map, rel, setup, source  # noqa: E402

C, CELLS, BATCH, ARCH_WD = 4, 3, 4, 1e-3  # ARCH_WD: their args.py arch_weight_decay


def eigen_check(report: Report) -> None:
    from src.search.analyze import Analyzer  # theirs
    from src.search.model_search import Network  # theirs
    from src.spaces import spaces_dict  # theirs

    from nas_darts import plugin as darts_plugin
    from nas_darts.cnn_space import DartsCnnSpace
    from nas_darts.options import DartsCnnOptions, SoftmaxOptions
    from nas_darts.softmax import SoftmaxRelaxation
    from nas_robust_darts.hessian import dominant_eigenvalue, hessian_operator

    torch.manual_seed(0)
    theirs = Network(C, 10, CELLS, nn.CrossEntropyLoss(), spaces_dict["s5"])  # s5: the DARTS space
    space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=C, nodes=4), catalog=catalog(("darts", darts_plugin)))
    task, info = image_task()
    ours = space.build_supernet(info)
    spec = space.arch_spec()
    assert list(spec.ops) == spaces_dict["s5"]["primitives_normal"][0]
    mapping = name_map(theirs, ours)
    copy_state(theirs, ours, mapping)
    relax = SoftmaxRelaxation(SoftmaxOptions(), spec=spec)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # alphas of unit scale: a Hessian well away from the uniform point
        for cell, their_alpha in (("normal", theirs.alphas_normal), ("reduce", theirs.alphas_reduce)):
            relax.alphas[cell].copy_(torch.randn(relax.alphas[cell].shape, generator=g))
            their_alpha.data.copy_(relax.alphas[cell])
    x, y = torch.randn(BATCH, 3, 8, 8, generator=g), torch.arange(BATCH) % 10
    args = SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_weight_decay=ARCH_WD)
    their_h = Analyzer(args, theirs).compute_Hw(x, y, x, y, 0.025, None, False).detach()
    their_ev = float(max(np.linalg.eigvals(their_h.numpy())).real)
    ours.train()
    mix = relax.weights(None)
    loss = task.forward(lambda inp: ours(inp, arch_weights=mix), (x, y), None).loss
    hvp = hessian_operator(loss, list(relax.parameters()), l2=ARCH_WD)
    vectors = torch.randn(5, their_h.shape[0], generator=g)
    report.add("Hessian-vector products H v (5 random v) vs their H @ v",
               max(rel(hvp(v), their_h @ v) for v in vectors))
    eigen = dominant_eigenvalue(ours, relax, task, (x, y), generator=torch.Generator().manual_seed(0), l2=ARCH_WD,
                                tol=1e-13, max_iter=their_h.shape[0])
    report.add(f"dominant eigenvalue: Lanczos ({eigen.iterations} HVPs) vs max(eigvals(their H))",
               abs(eigen.value - their_ev) / abs(their_ev))
    print(f"  (their eigenvalue {their_ev:.15g}, ours {eigen.value:.15g}; H is {their_h.shape[0]}x{their_h.shape[0]})")


def rule_check(report: Report) -> None:
    from src.utils import EVLocalAvg  # theirs

    from nas_robust_darts.early_stop import stop_epoch

    rng = np.random.default_rng(0)
    sequences = {
        "flat then a step up (defaults)": [1.0 if e <= 14 else 3.0 for e in range(0, 50, 2)],
        "slow drift (defaults)": list(np.linspace(1.0, 1.25, 25)),
        "noisy rise (defaults)": list(np.exp(np.linspace(0, 1.5, 25)) + rng.normal(0, 0.2, 25)),
    }
    settings = dict(window=5, delta=4, factor=1.3, start_epoch=10, every=2, epochs=50)
    mismatches, decisions, stops = 0, 0, []
    for name, values in sequences.items():
        s = settings
        tracker = EVLocalAvg(s["window"], s["every"], s["epochs"])
        readings: list[tuple[int, float]] = []
        for epoch, value in zip(range(0, s["epochs"], s["every"]), values):
            tracker.update(epoch, value, f"genotype@{epoch}")
            readings.append((epoch, value))
            if epoch == s["epochs"] - 1:
                continue  # theirs decides at every reading but the last epoch's
            tracker.early_stop(epoch, s["factor"], s["start_epoch"], s["delta"])
            theirs = tracker.stop_epoch if tracker.stop_search else None
            ours = stop_epoch(readings, every=s["every"], window=s["window"], delta=s["delta"], factor=s["factor"],
                              start_epoch=s["start_epoch"])
            decisions += 1
            mismatches += theirs != ours
            if theirs is not None:
                stops.append((name, epoch, theirs, tracker.stop_genotype))
                break  # their train_search.py stops here (early_stop 1)
    print(f"  their first stops: {stops}")
    report.add(f"EVLocalAvg stop decisions differing ({decisions} decisions, 3 sequences)", float(mismatches))


def main() -> int:
    src = source("RDARTS_SRC", "src/search/analyze.py", "https://github.com/automl/RobustDARTS")
    setup(src)
    report = Report()
    eigen_check(report)
    rule_check(report)
    return report.verdict()


if __name__ == "__main__":
    sys.exit(main())
