"""A resource-aware search: the expected cost of the derived cells as a differentiable term of the
architecture loss, with a target (docs/resource.md).

The cost table comes from the space (``SearchSpace.op_costs``): per cell type and edge, each op's cost
summed over the search network's cells of that type. The expected cost mirrors what a discretizer
keeps: on each edge, the ops it may choose (the zero op aside) drawn by their renormalised mixing
weights, and each node keeping ``inputs_per_node`` of its incoming edges, so an edge counts with weight
``min(1, k / incoming edges)``. ``cell_cost(genotype)`` is the exact cost of a derived cell in the same
table, what ``results.json`` reports as ``cell_cost`` and ``nas compare`` shows.

The table is written to ``RUN_DIR/resource.json`` as the run starts, and a resumed run reads it back:
a latency measured anew would differ, and the search would not continue as it started.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nas_core import (ArchSpec, ConfigError, Genotype, MixingWeights, NasError, RunContext, SearchSpace,
                      read_json_object, write_json)
from nas_resource.costs import measure_with_cache
from nas_resource.options import METRICS, ResourceSettings

log = logging.getLogger("nas")
SECTION = "resource"
COSTS_FILE = "resource.json"


def edge_weights(spec: ArchSpec, cell_type: str) -> Tensor:
    """[edges, 1]: the chance that a derived cell keeps each edge, ``min(1, k / incoming edges)``."""
    edges = spec.edges[cell_type]
    incoming = {dst: sum(d == dst for _, d in edges) for _, dst in edges}
    return torch.tensor([[min(1.0, spec.inputs_per_node / incoming[dst])] for _, dst in edges], dtype=torch.float64)


class ResourcePenalty:
    """The run's component ``resource``: adds ``cost_penalty`` to the architecture loss (a metric
    ``arch_cost_penalty`` of every step)."""

    def __init__(self, settings: ResourceSettings, spec: ArchSpec, costs: Mapping[str, Tensor]):
        self.settings, self.spec = settings, spec
        self.costs = {t: c.to(torch.float64) for t, c in costs.items()}
        self.live = [i for i, op in enumerate(spec.ops) if op != spec.zero_op]
        # per cell type, [edges, live ops]: each op's cost times its edge's chance to be kept
        self.tables = {t: edge_weights(spec, t) * self.costs[t][:, self.live] for t in spec.edges}
        self._cast: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}  # the tables as the steps' weights

    def table(self, cell_type: str, like: Tensor) -> Tensor:
        """The cell type's table on ``like``'s device and dtype, converted once (not at every step)."""
        key = (cell_type, like.device, like.dtype)
        if key not in self._cast:
            self._cast[key] = self.tables[cell_type].to(like)
        return self._cast[key]

    def expected_cost(self, mix: Mapping[str, Tensor]) -> Tensor:
        total = None
        for cell_type, w in mix.items():
            live = w[..., self.live]
            chosen = live / live.sum(-1, keepdim=True)
            term = (chosen * self.table(cell_type, w)).sum()
            total = term if total is None else total + term
        return total

    def penalty(self, expected: Tensor) -> Tensor:
        s = self.settings
        if s.target is None:
            return s.weight * expected
        return s.weight * torch.relu(expected - s.target) / s.target

    def loss_terms(self, objective: str, mix: MixingWeights) -> dict[str, Tensor]:
        if objective != "arch":
            return {}
        return {"cost_penalty": self.penalty(self.expected_cost(mix))}

    def cell_cost(self, genotype: Genotype) -> float:
        """The cost of the derived cells: each chosen op at its edge, summed over the network's cells."""
        total = 0.0
        for cell_type, cell in genotype.cells.items():
            edges = self.spec.edges[cell_type]
            for j, node in enumerate(cell.nodes):
                for op, src in node:
                    total += float(self.costs[cell_type][edges.index((src, self.spec.num_inputs + j)),
                                                         self.spec.ops.index(op)])
        return total

    def report(self, genotype: Genotype) -> dict[str, Any]:
        s = self.settings
        return {"metric": s.metric, "unit": METRICS[s.metric][0], "value": self.cell_cost(genotype), "target": s.target}


def _settings(run: RunContext) -> ResourceSettings | None:
    settings = run.config.settings.get(SECTION)
    return settings if run.phase == "search" and settings is not None and settings.metric != "none" else None


def nas_check_run(run: RunContext) -> None:
    settings = _settings(run)
    if settings is None:
        return
    space = run.components["space"]
    if type(space).op_costs is SearchSpace.op_costs:
        raise ConfigError(f"resource.metric={settings.metric}: search space {run.config.space.name!r} does not report "
                          f"its ops' costs; use darts_cnn, or resource.metric=none")
    path = run.dir / COSTS_FILE
    if path.is_file():  # a resumed run: the table it started with, checked before the run writes anything
        run.extra[COSTS_FILE] = saved_costs(path, settings, run.spec)


def saved_costs(path: Path, settings: ResourceSettings, spec: ArchSpec) -> dict[str, Tensor]:
    """The cost table a run wrote as it started; a NasError naming the file if it is not one for this
    metric and space, with finite costs >= 0."""
    saved = read_json_object(path)
    costs = saved.get("costs")
    if saved.get("metric") != settings.metric or not isinstance(costs, dict) or set(costs) != set(spec.edges):
        raise NasError(f"{path} is not the {settings.metric} table of this search's cells; move it away to measure "
                       f"the ops again")
    out = {}
    for cell_type, rows in costs.items():
        try:
            table = torch.tensor(rows, dtype=torch.float64)
        except (TypeError, ValueError):
            table = None
        if table is None or tuple(table.shape) != spec.shape(cell_type) or not bool(
                (torch.isfinite(table) & (table >= 0)).all()):
            raise NasError(f"{path} is damaged: its {cell_type} costs are not {spec.shape(cell_type)[0]} rows of "
                           f"{spec.shape(cell_type)[1]} finite numbers >= 0; move it away to measure the ops again")
        out[cell_type] = table
    return out


def _costs(settings: ResourceSettings, run: RunContext) -> dict[str, Tensor]:
    if COSTS_FILE in run.extra:  # read and checked by nas_check_run
        return run.extra.pop(COSTS_FILE)
    measure = measure_with_cache(settings.metric, run.device, settings.latency_repeats)
    costs = run.components["space"].op_costs(run.components["task"].info, measure)
    if run.is_writer:
        write_json(run.dir / COSTS_FILE, {"metric": settings.metric, "unit": METRICS[settings.metric][0],
                                          "ops": list(run.spec.ops), "costs": {t: c.tolist() for t, c in costs.items()}})
    return costs


def nas_run_start(run: RunContext) -> None:
    settings = _settings(run)
    if settings is None or "resource" in run.components:
        return
    penalty = ResourcePenalty(settings, run.spec, _costs(settings, run))
    run.components["resource"] = penalty  # where the optimizers look for loss terms
    with torch.no_grad():
        expected = float(penalty.expected_cost(run.components["relaxation"].weights()))
    log.info("resource: %s, expected cell cost %.4g %s at the start, target %s", settings.metric, expected,
             METRICS[settings.metric][0], settings.target)


def nas_epoch_end(run: RunContext, epoch: int, genotype: Genotype | None) -> None:
    penalty = run.components.get("resource")
    if isinstance(penalty, ResourcePenalty) and genotype is not None:
        log.info("resource: the cells of epoch %d cost %.4g %s", epoch + 1, penalty.cell_cost(genotype),
                 METRICS[penalty.settings.metric][0])


def nas_search_results(run: RunContext, genotype: Genotype, results: dict) -> None:
    penalty = run.components.get("resource")
    if isinstance(penalty, ResourcePenalty):
        results["cell_cost"] = penalty.report(genotype)
