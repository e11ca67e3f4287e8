"""The discretizer of DARTS-ES (Zela et al., ICLR 2020, section 5.1): any base discretizer's cells, except
that a search stopped by the eigenvalue rule returns the cell derived at the epoch the rule looked back to
(the authors' ``EVLocalAvg.stop_genotype``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from torch import Tensor

from nas_core import ArchSpec, Component, Discretizer, Genotype, Phase, RunContext, Toolkit
from nas_robust_darts.early_stop import stopped_genotype
from nas_robust_darts.options import EarlyStoppedOptions

log = logging.getLogger("nas")


class EarlyStoppedDiscretizer(Discretizer):
    def __init__(self, options: EarlyStoppedOptions):
        self.base: Discretizer = _build(options.base)

    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        return self.base.derive(strengths, spec, run)

    def final_phases(self, run: RunContext) -> Sequence[Phase]:
        # a stopped search has its result already; the base's selection on the supernet is not run
        return () if stopped_genotype(run.dir) else self.base.final_phases(run)

    def final(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext) -> Genotype | None:
        stopped = stopped_genotype(run.dir)
        if stopped is None:
            return self.base.final(strengths, spec, run)
        genotype, epoch = stopped
        log.info("RobustDARTS early stop: the search's result is the cell derived at epoch %d", epoch + 1)
        return genotype


def _build(choice: Component) -> Discretizer:
    """The base discretizer from the installed plugins' registry (a discretizer's factory is given its
    options only); the config has checked its name and options already."""
    if choice.name == "robust_darts_es":
        raise ValueError("base cannot be robust_darts_es itself; choose the discretizer that derives the cells")
    base = Toolkit.load().registries.discretizers.get(choice.name).factory(choice.options)
    if not isinstance(base, Discretizer):
        raise ValueError(f"base {choice.name!r} built a {type(base).__name__}, not a Discretizer")
    return base
