"""The DARTS CNN search space (Liu et al., ICLR 2019, sections 2.1 and 3.1.1, appendix A): cells of 2 input nodes, N
intermediate nodes and a concatenated output, stacked with reduction cells at 1/3 and 2/3."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from nas_core import (ArchSpec, Catalog, Cell, ConfigError, DataInfo, Genotype, GenotypeError, MixingWeights,
                      RunContext, SearchSpace, Supernet, hookimpl, installed_catalog)
from nas_darts.ops import FactorizedReduce, relu_conv_bn
from nas_darts.options import DartsCnnOptions

NUM_INPUTS = 2
CELL_TYPES = ("normal", "reduce")
FAMILY = "darts_cnn"  # the registered operations this space builds: factory(channels, stride, affine, search)


def reduction_layers(cells: int) -> set[int]:
    return {cells // 3, 2 * cells // 3}


def cell_edges(nodes: int) -> tuple[tuple[int, int], ...]:
    """(src, dst) for every edge, node by node: the row order of alpha in DARTS."""
    return tuple((src, NUM_INPUTS + j) for j in range(nodes) for src in range(NUM_INPUTS + j))


def _preprocess(c_pp: int, c_p: int, c: int, reduction_prev: bool, affine: bool) -> tuple[nn.Module, nn.Module]:
    pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else relu_conv_bn(c_pp, c, 1, 1, 0, affine)
    return pre0, relu_conv_bn(c_p, c, 1, 1, 0, affine)


class SearchCell(nn.Module):
    def __init__(self, opts: DartsCnnOptions, catalog: Catalog, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.nodes = opts.nodes
        self.drop_path = opts.search_drop_path
        self.pre0, self.pre1 = _preprocess(c_pp, c_p, c, reduction_prev, affine=False)
        zero = frozenset(op for op in opts.ops if catalog.operations.get(FAMILY, op).zero)

        def edge(row: int, stride: int) -> nn.Module:
            def make_op(name: str, channels: int) -> nn.Module:
                return catalog.operations.get(FAMILY, name).factory(channels, stride, False, True)

            return catalog.mixed_edge(opts.edge, ops=opts.ops, channels=c, stride=stride, make_op=make_op, zero=zero,
                                      cell_type="reduce" if reduction else "normal", row=row,
                                      fused_edges=opts.fused_edges)

        edges = cell_edges(opts.nodes)
        self.edges = nn.ModuleList(edge(row, 2 if reduction and src < NUM_INPUTS else 1)
                                   for row, (src, _) in enumerate(edges))
        self.fused = opts.fused_edges
        # the fused path computes the edges leaving each state together, state by state; their rows are
        # not consecutive in alpha, so the weights are read once in that order
        self.leaving = [[row for row, (src, _) in enumerate(edges) if src == state]
                        for state in range(NUM_INPUTS + opts.nodes - 1)]
        # the states whose edges are called together (MixedEdge.forward_groups): the two inputs, then each node
        self.read_together = [list(range(NUM_INPUTS)), *([state] for state in range(NUM_INPUTS, len(self.leaving)))]
        self.target = [dst - NUM_INPUTS for _, dst in edges]
        self.register_buffer("by_source", torch.tensor([row for rows in self.leaving for row in rows]),
                             persistent=False)

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, chosen: tuple[int, ...] | None,
                recompute_edges: bool = False) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        relus = [F.relu(s) for s in states]  # shared by every conv op reading the node
        if chosen is None and self.fused is not False:
            return self._fused(states, relus, weights, recompute_edges)
        row = 0
        for j in range(self.nodes):
            node = None
            for x, rx in zip(states, relus):
                args = (x, weights[row], None if chosen is None else chosen[row], rx)
                term = recompute(self.edges[row], *args) if recompute_edges else self.edges[row](*args)
                if self.training and self.drop_path > 0:  # SNAS's search drops whole edges of an example
                    term = drop_path(term, self.drop_path)
                node = term if node is None else node + term
                row += 1
            states.append(node)
            if j + 1 < self.nodes:
                relus.append(F.relu(node))
        return torch.cat(states[NUM_INPUTS:], dim=1)

    def _fused(self, states: list[Tensor], relus: list[Tensor], weights: Tensor, recompute_edges: bool) -> Tensor:
        """The same cell with the edges leaving each state computed together (``MixedEdge.forward_group``),
        those leaving the two inputs in one call (``forward_groups``): a node's inputs are added in the
        same order, source by source."""
        by_source = weights.index_select(0, self.by_source).split([len(rows) for rows in self.leaving])
        nodes: list[Tensor | None] = [None] * self.nodes
        for call in self.read_together:
            group = EdgeGroups([[self.edges[row] for row in self.leaving[state]] for state in call])
            args = [t for state in call for t in (states[state], by_source[state], relus[state])]
            outs = recompute(group, *args) if recompute_edges else group(*args)
            for state, state_outs in zip(call, outs):
                for row, out in zip(self.leaving[state], state_outs):
                    if self.training and self.drop_path > 0:
                        out = drop_path(out, self.drop_path)
                    j = self.target[row]
                    nodes[j] = out if nodes[j] is None else nodes[j] + out
                if state >= 1:  # node state - 1 has all its inputs
                    states.append(nodes[state - 1])
                    if state < self.nodes:
                        relus.append(F.relu(states[-1]))
        return torch.cat(states[NUM_INPUTS:], dim=1)


class EdgeGroups(nn.Module):
    """Groups of edges, each reading one state, called together: through their kind's
    ``forward_groups`` when they are all of one kind, else group by group (``forward_group`` where a
    group's edges are of one kind). A module so that ``recompute`` can take it."""

    def __init__(self, groups: list[list[nn.Module]]):
        super().__init__()
        self.groups = nn.ModuleList(nn.ModuleList(edges) for edges in groups)

    def forward(self, *args: Tensor) -> tuple[tuple[Tensor, ...], ...]:
        """``args``: per group, its state, its rows of weights and the state's ReLU."""
        calls = [(list(edges), args[3 * i], args[3 * i + 1], {"relu_x": args[3 * i + 2]})
                 for i, edges in enumerate(self.groups)]
        kinds = {type(edge) for edges in self.groups for edge in edges}
        if len(kinds) == 1:
            return tuple(map(tuple, kinds.pop().forward_groups(calls)))
        return tuple(self._group(*call) for call in calls)

    @staticmethod
    def _group(edges: list[nn.Module], x: Tensor, weights: Tensor, inputs: dict) -> tuple[Tensor, ...]:
        kind = type(edges[0])
        if all(type(edge) is kind for edge in edges):
            return tuple(kind.forward_group(edges, x, weights, **inputs))
        return tuple(edge(x, w, **inputs) for edge, w in zip(edges, weights))


class _Stack(nn.Module):
    """Stem, cells and classifier head shared by the search and the discrete network."""

    def _build(self, opts: DartsCnnOptions, data: DataInfo, make_cell, multiplier) -> None:
        if len(data.input_shape) != 3:
            raise ConfigError(f"darts_cnn networks read images (input shape (channels, height, width)), not "
                              f"inputs of shape {data.input_shape}: use an image dataset with the classification task")
        c, in_ch = opts.channels, data.input_shape[0]
        if opts.stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_ch, c // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(),
                nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c))
            self.stem1 = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(c))
            c_pp, c_p, reduction_prev = c, c, True  # s0 is at twice the resolution of s1
        else:
            c_stem = opts.stem_multiplier * c
            self.stem = nn.Sequential(nn.Conv2d(in_ch, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
            self.stem1 = None
            c_pp, c_p, reduction_prev = c_stem, c_stem, False
        c_cur, reduce_at = c, reduction_layers(opts.cells)
        self.aux_after = 2 * opts.cells // 3
        self.cells = nn.ModuleList()
        for i in range(opts.cells):
            reduction = i in reduce_at
            if reduction:
                c_cur *= 2
            self.cells.append(make_cell(c_pp, c_p, c_cur, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier(reduction) * c_cur
            if i == self.aux_after:
                self.aux_channels = c_p
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, data.num_classes)

    def _stems(self, x: Tensor, channels_last: bool | None) -> tuple[Tensor, Tensor]:
        s0 = self.stem(x)
        # converted after the stem: a one-channel input is already "channels last" in both layouts,
        # so converting it would not carry the format into the cells; later layers keep it
        if channels_last or (channels_last is None and x.device.type == "cpu"):
            s0 = s0.contiguous(memory_format=torch.channels_last)
        return (s0, self.stem1(s0)) if self.stem1 is not None else (s0, s0)

    def _head(self, s1: Tensor) -> Tensor:
        return self.classifier(self.global_pool(s1).flatten(1))



def recompute(module: nn.Module, *args: object) -> Tensor:
    """``module(*args)`` without keeping its activations: they are recomputed in the backward pass.

    The module's parameters go in as explicit inputs, so the recomputation uses the tensors of
    this call even under ``torch.func.functional_call``, which swaps them back before backward
    runs. Buffers are captured instead (BN updates them in place); their running statistics
    therefore see each batch twice, which only matters for eval-mode numbers.
    """
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    names = list(params)

    def run(*flat: object) -> Tensor:
        tensors = {**buffers, **dict(zip(names, flat[:len(names)]))}
        return functional_call(module, tensors, tuple(flat[len(names):]))

    return checkpoint(run, *params.values(), *args, use_reentrant=False)


class DartsCnnSupernet(Supernet, _Stack):
    def __init__(self, opts: DartsCnnOptions, data: DataInfo, catalog: Catalog):
        super().__init__()
        self.channels_last, self.recompute_edges = opts.channels_last, opts.recompute_edges
        self._build(opts, data, lambda *a: SearchCell(opts, catalog, *a), lambda reduction: opts.nodes)
        self.cell_types = tuple("reduce" if cell.reduction else "normal" for cell in self.cells)

    @hookimpl
    def nas_epoch_start(self, run: RunContext) -> None:
        for cell in self.cells:
            for edge in cell.edges:
                edge.start_epoch(run)

    def forward(self, x: Tensor, *, arch_weights: MixingWeights) -> Tensor:
        s0, s1 = self._stems(x, self.channels_last)
        kinds = self.cell_types
        seen = dict.fromkeys(kinds, 0)  # cells of each type so far
        for cell, kind in zip(self.cells, kinds):
            chosen = arch_weights.chosen[kind] if arch_weights.chosen is not None else None
            weights = arch_weights[kind]
            if weights.dim() == 3:  # per-cell weights (MixingWeights): the i-th cell of a type reads slice i
                if weights.shape[0] != kinds.count(kind):
                    raise ValueError(f"per-cell {kind} weights have {weights.shape[0]} slices for "
                                     f"{kinds.count(kind)} {kind} cells")
                weights = weights[seen[kind]]
            seen[kind] += 1
            s0, s1 = s1, cell(s0, s1, weights, chosen, self.recompute_edges and torch.is_grad_enabled())
        return self._head(s1)


def drop_path(x: Tensor, prob: float) -> Tensor:
    """Zero whole examples of a branch with probability ``prob``, rescaling the rest."""
    keep = 1.0 - prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class DiscreteCell(nn.Module):
    def __init__(self, cell: Cell, catalog: Catalog, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.pre0, self.pre1 = _preprocess(c_pp, c_p, c, reduction_prev, affine=True)
        self.inputs = [[src for _, src in node] for node in cell.nodes]
        self.ops = nn.ModuleList(
            nn.ModuleList(catalog.operations.get(FAMILY, op).factory(c, 2 if reduction and src < NUM_INPUTS else 1,
                                                                     True, False)
                          for op, src in node)
            for node in cell.nodes)
        self.concat = list(cell.concat)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for inputs, ops in zip(self.inputs, self.ops):
            node = None
            for src, op in zip(inputs, ops):
                h = op(states[src])
                if self.training and drop_prob > 0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                node = h if node is None else node + h
            states.append(node)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """The auxiliary classifier of the DARTS evaluation networks (on 8x8 CIFAR or 7x7 ImageNet maps).
    ``final_bn=False`` leaves out the BatchNorm2d(768) after the second convolution, as the official
    ImageNet head does."""

    def __init__(self, channels: int, num_classes: int, pool_stride: int, final_bn: bool = True):
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768) if final_bn else nn.Identity(), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        # maps smaller than the 5x5 window (tiny inputs such as digits) are pooled to 2x2 instead
        x = self.pool(x) if min(x.shape[-2:]) >= 5 else F.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))


def drop_path_probability(final: float, epoch: int, epochs: int) -> float:
    """Linear ramp from 0 at the first epoch towards ``final`` (as in DARTS)."""
    return final * epoch / epochs


class DartsCnnNetwork(_Stack):
    """The discrete network of a genotype. In training mode with ``auxiliary`` the forward returns
    ``(logits, auxiliary_logits)``. It ramps its own drop-path probability as epochs begin."""

    def __init__(self, opts: DartsCnnOptions, genotype: Genotype, data: DataInfo, catalog: Catalog):
        super().__init__()
        self.drop_path, self.drop_path_prob = opts.drop_path, 0.0
        self.channels_last = opts.channels_last
        self._build(opts, data,
                    lambda c_pp, c_p, c, red, red_prev: DiscreteCell(
                        genotype.cells["reduce" if red else "normal"], catalog, c_pp, c_p, c, red, red_prev),
                    lambda reduction: len(genotype.cells["reduce" if reduction else "normal"].concat))
        # The official DARTS ImageNet head (AuxiliaryHeadImageNet) comments its BatchNorm2d(768) out:
        # an earlier typo omitted it, and it stays omitted for consistency with the paper's
        # experiments. Its CIFAR head keeps it; so do we. (Identity keeps the module indices alike.)
        imagenet = opts.stem == "imagenet"
        self.auxiliary_head = (AuxiliaryHead(self.aux_channels, data.num_classes, 2 if imagenet else 3,
                                             final_bn=not imagenet)
                               if opts.auxiliary else None)

    @hookimpl
    def nas_epoch_start(self, run: RunContext) -> None:
        self.drop_path_prob = drop_path_probability(self.drop_path, run.epoch, run.epochs)
        run.epoch_metrics["drop_path_prob"] = self.drop_path_prob

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        s0, s1 = self._stems(x, self.channels_last)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_after and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self._head(s1)
        return (logits, aux) if aux is not None else logits


class DartsCnnSpace(SearchSpace):
    """DARTS CNN cells: 8 candidate ops, 2 inputs, 4 nodes, reduction cells at 1/3 and 2/3."""

    def __init__(self, options: DartsCnnOptions, *, catalog: Catalog | None = None):
        catalog = catalog or installed_catalog()  # built directly, outside a run: the installed plugins
        catalog.operations.check(FAMILY, options.ops)
        self.options, self.catalog = options, catalog

    def arch_spec(self) -> ArchSpec:
        edges = cell_edges(self.options.nodes)
        ops = [self.catalog.operations.get(FAMILY, op) for op in self.options.ops]
        return ArchSpec(ops=self.options.ops, edges={t: edges for t in CELL_TYPES},
                        num_inputs=NUM_INPUTS, inputs_per_node=2, zero_op=next((op.name for op in ops if op.zero), None),
                        parameter_free=tuple(op.name for op in ops if op.parameter_free))

    def validate(self, genotype: Genotype) -> None:
        """Any registered op of the family builds, not only the searched ones: a cell found with a
        plugin's op set trains under this space's default options."""
        if set(genotype.cells) != set(CELL_TYPES):
            raise GenotypeError(f"genotype has cells {sorted(genotype.cells)}; this space's cells are {list(CELL_TYPES)}")
        genotype.validate(self.catalog.operations.names(FAMILY), NUM_INPUTS)

    def build_supernet(self, data: DataInfo) -> DartsCnnSupernet:
        return DartsCnnSupernet(self.options, data, self.catalog)

    def op_costs(self, data: DataInfo, measure: Callable[[str, int, tuple[int, ...], Callable[[], nn.Module]], float]
                 ) -> dict[str, Tensor]:
        """Each edge's input shape is read from one forward of the search network (batch 1); every op
        is then built as the discrete network builds it (affine BN) at that edge's channels and stride."""
        spec = self.arch_spec()
        net = self.build_supernet(data).eval()
        for cell in net.cells:
            cell.fused = False  # so that every edge's forward runs, and its hook reads the edge's input
        shapes: dict[tuple[int, int], tuple[int, ...]] = {}

        def record(key: tuple[int, int]) -> Callable[..., None]:
            def hook(_: nn.Module, args: tuple) -> None:
                shapes[key] = (1, *args[0].shape[1:])
            return hook

        for i, cell in enumerate(net.cells):
            for row, edge in enumerate(cell.edges):
                edge.register_forward_pre_hook(record((i, row)))
        uniform = MixingWeights({t: torch.full(spec.shape(t), 1 / len(spec.ops)) for t in CELL_TYPES})
        with torch.no_grad():
            net(torch.zeros(1, *data.input_shape), arch_weights=uniform)
        costs = {t: torch.zeros(spec.shape(t), dtype=torch.float64) for t in CELL_TYPES}
        for i, (cell, cell_type) in enumerate(zip(net.cells, net.cell_types)):
            for row, (src, _) in enumerate(spec.edges[cell_type]):
                stride, shape = 2 if cell.reduction and src < NUM_INPUTS else 1, shapes[(i, row)]
                for col, name in enumerate(spec.ops):
                    op = self.catalog.operations.get(FAMILY, name)
                    if not op.zero:
                        costs[cell_type][row, col] += measure(
                            name, stride, shape, lambda f=op.factory, c=shape[1], s=stride: f(c, s, True, False))
        return costs

    def build_network(self, genotype: Genotype, data: DataInfo) -> DartsCnnNetwork:
        self.validate(genotype)
        return DartsCnnNetwork(self.options, genotype, data, self.catalog)
