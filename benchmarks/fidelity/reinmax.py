"""ReinMax as GDAS's estimator (plugin nas_gdas, ``estimator: reinmax``) side by side with the
authors' code, microsoft/ReinMax (``reinmax/reinmax.py``: ``reinmax()`` and its ``ReinMaxCore``
autograd Function), in float64 on one thread. Their code is imported from the checkout, never copied.

    REINMAX_SRC=/path/to/ReinMax python benchmarks/fidelity/reinmax.py

For random logits (alpha of a few edges), temperatures 1, 1.5 and 4, and random upstream gradients:
their ``reinmax(logits, tau)`` and our ``gdas`` relaxation with ``estimator: reinmax`` on the same
alpha. Theirs samples with ``torch.multinomial(softmax(logits))``; ours by the Gumbel-max of the
run's draw (the same distribution). "Given the same draw": their ``torch.multinomial`` is made to
return our sampled index in memory, so the forward samples must be equal, and the gradients
of ``sum(sample * g)`` in alpha are compared. Figures in benchmarks/fidelity/reinmax.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pcdarts import Report, rel, setup, source

EDGES, OPS = 14, 8


def main() -> int:
    src = source("REINMAX_SRC", "reinmax/reinmax.py", "https://github.com/microsoft/ReinMax")
    setup(src)
    from nas_gdas.gumbel import GdasRelaxation
    from nas_gdas.options import GdasOptions
    from reinmax import reinmax  # theirs

    from nas_core import ArchSpec

    spec = ArchSpec(ops=tuple(f"op{i}" for i in range(OPS)), edges={"normal": ((0, 1),) * EDGES}, num_inputs=1,
                    inputs_per_node=1, zero_op=None)
    report = Report()
    multinomial = torch.multinomial
    for case, tau in enumerate((1.0, 1.5, 4.0, 1.0, 1.5, 4.0)):
        gen = torch.Generator().manual_seed(case)
        ours = GdasRelaxation(GdasOptions(tau_min=1.0, estimator="reinmax"), spec=spec).double()
        ours.tau.fill_(tau)
        with torch.no_grad():
            ours.alphas["normal"].copy_(torch.randn(EDGES, OPS, generator=gen) * (1 + 2 * (case >= 3)))
        upstream = torch.randn(EDGES, OPS, generator=gen)
        mix = ours.weights(ours.sample(gen))
        (g_ours,) = torch.autograd.grad((mix["normal"] * upstream).sum(), ours.alphas["normal"])

        index = torch.tensor(mix.chosen["normal"])[:, None]
        torch.multinomial = lambda probs, num_samples, replacement=False, index=index: index.clone()  # ours
        try:
            logits = ours.alphas["normal"].detach().clone().requires_grad_(True)
            hard, _ = reinmax(logits, tau)
        finally:
            torch.multinomial = multinomial
        (g_theirs,) = torch.autograd.grad((hard * upstream).sum(), logits)
        scale = "x3" if case >= 3 else "x1"
        report.add(f"tau {tau}, alpha N(0,1){scale}: forward one-hot samples (max |diff|)",
                   float((mix["normal"].detach() - hard.detach()).abs().max()))
        report.add(f"tau {tau}, alpha N(0,1){scale}: alpha gradient", rel(g_ours, g_theirs))
    return report.verdict()


if __name__ == "__main__":
    sys.exit(main())
