"""Fused mixed operations: the weighted sums of several DARTS edges that read the same input, computed
with a few large operator calls instead of every op of every edge one by one (docs/performance.md).

The ops keep their own parameters and BN buffers (checkpoints, OLES's per-op freezing and the per-op
path read them there); at each call they are stacked so that one call computes every edge:

- an op with no parameters that reads ``x`` alone (a pooling, with its affine-free BN, or the
  identity) gives the same output on every edge: it is computed once, and its BN's batch
  statistics update every edge's running statistics;
- a ReLU-Conv-BN chain (``PreActivated``: sep and dil convs) is run for all edges at once, the
  depthwise convs as one grouped conv over the input repeated per edge, the pointwise ones as one
  grouped 1x1, the BNs as one BN over the concatenated channels; chains of every kind advance in
  lockstep, so a layer that is alike in all (the pointwise convs, the BNs, the ReLUs) is one call;
- ``FactorizedReduce`` (the stride-2 skip) is one stride-2 2x2 conv whose taps (0, 0) and (1, 1)
  hold its two 1x1 convs, and one BN;
- any other op (a plugin's) runs per edge;
- the weighted sum is one multiply-add per column over all edges.

Where the chains run faster per edge (:func:`fuse_chains`: large cells on CPU, where their
convolutions are bound by arithmetic, and GPUs until measured there), they do, and the rest is still
computed once per state: the poolings and identity cost neither time nor memory per edge.

Only the arithmetic's order changes: outputs match the per-op path to rounding (tests compare both
in float64).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas_darts.layers import (BatchNorm2d, MaxPool2d, RoutedConv2d, conv2d, normalize, relu_conv2d,
                              sharing_subsamples)
from nas_darts.ops import Chain, FactorizedReduce, PreActivated, relu_in_conv

POOLS = (nn.MaxPool2d, MaxPool2d, nn.AvgPool2d)

# Elements of a cell's input up to which the chains are fused by default on CPU (docs/performance.md):
# on 2 cores the demo's cells (32 768: 64 x 8 x 8 x 8) ran faster fused, the paper config's (1 M: 64 x
# 16 x 32 x 32) slower, their convolutions being compute-bound there. Not yet the default on GPUs,
# where it is built to win (a step there is bound by kernel launches) but no GPU has measured it yet:
# benchmarks/gpu_check.sh is the check that would make it one.
FUSE_ON_CPU_UP_TO = 1 << 17


def fuse_chains(option: bool | None, x: Tensor) -> bool:
    """Whether a group's ReLU-Conv-BN chains run fused across its edges: ``space.fused_edges``, or when
    None, on CPU for small inputs."""
    if option is not None:
        return option
    return x.device.type == "cpu" and x.numel() <= FUSE_ON_CPU_UP_TO


def _conv_key(m: nn.Module) -> tuple | None:
    if type(m) not in (nn.Conv2d, RoutedConv2d) or m.bias is not None or m.padding_mode != "zeros":
        return None
    return ("conv", type(m), m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups)


def _bn_key(m: nn.Module | None) -> tuple | None:
    """A BN's key without its mode (which the callers add, read at each call)."""
    # momentum None (a cumulative average) reads each module's own count: not fused
    if type(m) not in (nn.BatchNorm2d, BatchNorm2d) or m.momentum is None:
        return None
    return ("bn", m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)


# A module's key reads what is fixed when it is built (types, sizes, options), so it is made once per
# module: a demo step asks for thousands, and making them was a tenth of its Python time. Only the
# modes of the BNs, which .train() and .eval() change, are read at every call.
_LAYER_KEYS: weakref.WeakKeyDictionary[nn.Module, tuple | None] = weakref.WeakKeyDictionary()
_OP_KEYS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple | None, tuple[nn.Module, ...]]] = weakref.WeakKeyDictionary()
_UNSET = object()


def _once(cache: weakref.WeakKeyDictionary, m: nn.Module, make: Callable[[nn.Module], object]):
    value = cache.get(m, _UNSET)
    if value is _UNSET:
        value = cache[m] = make(m)
    return value


def _static_layer_key(m: nn.Module) -> tuple | None:
    return ("relu",) if type(m) is nn.ReLU else _conv_key(m) or _bn_key(m)


def _layer_key(m: nn.Module) -> tuple | None:
    key = _once(_LAYER_KEYS, m, _static_layer_key)
    return (*key, m.training) if key is not None and key[0] == "bn" else key


def _op_key_and_bns(op: nn.Module) -> tuple[tuple | None, tuple[nn.Module, ...]]:
    """``op``'s key without modes, and the BNs whose modes complete it."""
    if type(op) is nn.Identity:
        return ("identity",), ()
    if type(op) in POOLS:
        return ("shared", repr(op), None), ()
    if type(op) is nn.Sequential and len(op) == 2 and type(op[0]) in POOLS:
        bn = _bn_key(op[1])
        if bn is None or op[1].affine:  # an affine BN's output differs per edge
            return None, ()
        return ("shared", repr(op[0]), bn), (op[1],)
    if type(op) is FactorizedReduce:
        keys = (_conv_key(op.conv_1), _conv_key(op.conv_2), _bn_key(op.bn))
        return (None, ()) if None in keys else (("reduce", *keys), (op.bn,))
    if type(op) is PreActivated and type(op.body) in (nn.Sequential, Chain) and len(op.body) and _conv_key(op.body[0]):
        layers = list(op.body)
        keys = tuple(_static_layer_key(m) for m in layers)
        if None in keys:
            return None, ()
        return ("chain", keys), tuple(m for m, key in zip(layers, keys) if key[0] == "bn")
    return None, ()


def op_key(op: nn.Module) -> tuple | None:
    """How an op can be fused, with everything two ops must share to be fused together (their BNs'
    modes included); None: it runs on its own."""
    key, bns = _once(_OP_KEYS, op, _op_key_and_bns)
    return key if not bns else (*key, tuple(bn.training for bn in bns))


def _batch_norm(y: Tensor, mean: Tensor | None, var: Tensor | None, weight: Tensor | None, bias: Tensor | None,
                training: bool, momentum: float, eps: float) -> Tensor:
    """``F.batch_norm``; affine-free from batch statistics through ``normalize``, which keeps its
    output for backward (the weighted sum keeps it too) instead of its input."""
    if weight is None and (training or mean is None):
        return normalize(y, mean, var, momentum, eps)
    return F.batch_norm(y, mean, var, weight, bias, training, momentum, eps)


class _RunningStats:
    """The running-statistics updates of one fused group's BNs, written back together at the end."""

    def __init__(self) -> None:
        self.dst: list[Tensor] = []
        self.src: list[Tensor] = []
        self.lerp: dict[float, tuple[list[Tensor], list[Tensor]]] = {}
        self.counts: list[Tensor] = []

    def batch_norm(self, y: Tensor, bns: Sequence[nn.BatchNorm2d]) -> Tensor:
        """Every module of ``bns`` normalizing its own consecutive channels of ``y``."""
        bn = bns[0]
        weight = concat([b.weight for b in bns]) if bn.affine else None
        bias = concat([b.bias for b in bns]) if bn.affine else None
        if not bn.track_running_stats:
            return _batch_norm(y, None, None, weight, bias, True, 0.0, bn.eps)
        running = [*(b.running_mean for b in bns), *(b.running_var for b in bns)]
        both = torch.cat(running)  # batch norm updates its two halves in place
        mean, var = both.chunk(2)
        out = _batch_norm(y, mean, var, weight, bias, bn.training, bn.momentum, bn.eps)
        if bn.training:
            self.dst += running
            self.src += both.split([t.shape[0] for t in running])
            self.counts += [b.num_batches_tracked for b in bns]
        return out

    def shared_batch_norm(self, y: Tensor, bns: Sequence[nn.BatchNorm2d], sources: int = 1) -> Tensor:
        """Affine-free ``bns`` all normalizing the same ``y`` (the outputs of ``sources`` inputs on
        consecutive channels, as many modules normalizing each, in order): one output in training mode
        (the batch's statistics), one per module in eval mode (each module's running statistics)."""
        bn = bns[0]
        if not bn.training and bn.track_running_stats:
            return F.batch_norm(_Repeat.apply(y, len(bns) // sources, sources),
                                torch.cat([b.running_mean for b in bns]),
                                torch.cat([b.running_var for b in bns]), None, None, False, 0.0, bn.eps)
        if not bn.track_running_stats:
            return normalize(y, None, None, 0.0, bn.eps)
        # momentum 1 leaves the batch's mean and unbiased variance in these, as the BN computes them
        # for its own running statistics: no second pass over y to find them
        mean, var = y.new_zeros(2, y.shape[1]).unbind(0)
        out = normalize(y, mean, var, 1.0, bn.eps)
        means, variances = self.lerp.setdefault(bn.momentum, ([], []))
        means += [b.running_mean for b in bns] + [b.running_var for b in bns]
        variances += _per_edge(mean, sources, len(bns)) + _per_edge(var, sources, len(bns))
        self.counts += [b.num_batches_tracked for b in bns]
        return out

    def write(self) -> None:
        with torch.no_grad():
            if self.dst:
                torch._foreach_copy_(self.dst, self.src)
            for momentum, (running, batch) in self.lerp.items():
                torch._foreach_lerp_(running, batch, momentum)
            if self.counts:
                torch._foreach_add_(self.counts, 1)


# forward(ctx, ...), not setup_context: see layers.py
class _Concat(torch.autograd.Function):
    """``torch.cat(tensors, dim)``, whose backward is one split into views (torch's is a slice per
    input): the backward of stacking every op's parameters runs in every backward pass."""

    @staticmethod
    def forward(ctx, dim: int, *tensors: Tensor) -> Tensor:
        out = torch.cat(tensors, dim)
        ctx.dim, ctx.sizes = dim, [t.shape[dim] for t in tensors]
        ctx.channels_last = dim == 1 and _layout(out)[1] == torch.channels_last
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        parts = grad.split(ctx.sizes, ctx.dim)  # differentiable: double backward (hvp: exact) goes through it
        if ctx.channels_last:  # channel slices of a channels-last gradient: copied whole for the layers they reach
            parts = [p.contiguous(memory_format=torch.channels_last) for p in parts]
        return None, *parts


def _layout(x: Tensor) -> tuple[torch.Size, torch.memory_format]:
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return x.shape, torch.channels_last if channels_last else torch.contiguous_format


def _sum_blocks(blocks: Tensor, like: tuple[torch.Size, torch.memory_format], dims: int | tuple[int, ...] = 1
                ) -> Tensor:
    """``blocks.sum(dims)``, the dims left after the first flattened back into channels, in the shape and
    memory format ``like`` names (a reduction's output is contiguous)."""
    shape, memory_format = like
    if torch.is_grad_enabled():  # a double backward: out= is not differentiable
        out = blocks.sum(dims)
        return (out if out.dim() == len(shape) else out.flatten(1, -3)).contiguous(memory_format=memory_format)
    out = torch.empty(shape, dtype=blocks.dtype, device=blocks.device, memory_format=memory_format)
    summed = (dims,) if isinstance(dims, int) else dims
    kept = [size for d, size in enumerate(blocks.shape[:-2]) if d not in summed]
    torch.sum(blocks, dims, out=out if len(kept) == 2 else out.view(*kept, *shape[-2:]))
    return out


class _Repeat(torch.autograd.Function):
    """The input of ``times`` runs of ``sources * n`` edges: each of the ``sources`` inputs that ``x`` holds
    on consecutive channels repeated ``n`` times, all of it ``times`` times, in ``x``'s memory format
    (``Tensor.repeat`` returns a contiguous tensor, which turns a channels-last convolution into a much
    slower one)."""

    @staticmethod
    def forward(ctx, x: Tensor, n: int, sources: int = 1, times: int = 1) -> Tensor:
        if sources == 1:  # one input: n * times copies of it, summed back as one block
            n, times = n * times, 1
        ctx.blocks, ctx.like = (times, sources, n), _layout(x)
        return torch.cat(_per_edge(x, sources, sources * n) * times, 1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        times, sources, n = ctx.blocks
        if sources == times == 1:
            return _sum_blocks(grad.unflatten(1, (n, -1)), ctx.like), None, None, None
        return _sum_blocks(grad.unflatten(1, (times, sources, n, -1)), ctx.like, (1, 3)), None, None, None


def _per_edge(x: Tensor, sources: int, edges: int) -> list[Tensor]:
    """Each edge's block of ``x``, which holds ``sources`` blocks on its first dim after the batch's (or
    on its only dim), read by ``edges // sources`` consecutive edges each: views, no call for one."""
    parts = x.chunk(sources, 1 if x.dim() > 1 else 0) if sources > 1 else (x,)
    return [part for part in parts for _ in range(edges // sources)]


def concat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    return tensors[0] if len(tensors) == 1 else _Concat.apply(dim, *tensors)


def _stacked(modules: Sequence[nn.Module], name: str) -> Tensor:
    """The ``name`` parameters of ``modules`` concatenated on their first dimension."""
    return concat([getattr(m, name) for m in modules])


def _run_key(m: nn.Module, merge: bool) -> tuple | None:
    """``_layer_key``, without the kernel size of a depthwise conv with "same" padding when ``merge``:
    such convs of several sizes run as one call (:func:`_merged_weight`)."""
    key = _layer_key(m)
    if not merge or key is None or key[0] != "conv":
        return key
    _, kind, c_in, c_out, kernel, stride, padding, dilation, groups = key
    if not (groups == c_in == c_out and all(k % 2 == 1 and p == d * (k - 1) // 2
                                            for k, p, d in zip(kernel, padding, dilation))):
        return key
    return ("conv", kind, c_in, c_out, None, stride, None, dilation, groups)


def _merged_weight(convs: Sequence[nn.Conv2d]) -> tuple[Tensor, tuple[int, int]]:
    """The stacked weights of depthwise convs of odd kernel sizes, each padded with zeros around it to
    the largest, and that size: one call computes them all, exactly (a zero tap adds zero; the pad's
    backward drops its gradient). Fewer, larger kernels: on GPUs and small CPU maps, where a step is
    bound by its calls, a sep conv's 3x3 costs no more as a 5x5 beside the 5x5s (docs/performance.md)."""
    k_h, k_w = max(m.kernel_size[0] for m in convs), max(m.kernel_size[1] for m in convs)
    blocks: list[Tensor] = []
    start = 0
    for i in range(1, len(convs) + 1):
        if i < len(convs) and convs[i].kernel_size == convs[start].kernel_size:
            continue
        run = convs[start:i]
        h, w = run[0].kernel_size
        if (h, w) == (k_h, k_w):
            blocks += [m.weight for m in run]
        else:
            blocks.append(F.pad(_stacked(run, "weight"), ((k_w - w) // 2,) * 2 + ((k_h - h) // 2,) * 2))
        start = i
    return concat(blocks), (k_h, k_w)


def _conv(x: Tensor, convs: Sequence[nn.Conv2d], shared_input: bool, repeat: dict[int, Tensor],
          relu: bool = False, sources: int = 1, edges: int = 1) -> Tensor:
    """Every conv of ``convs`` on its own consecutive channels of ``x`` (or, when ``shared_input``, the
    convs of ``edges`` edges in turn, each on its edge's input: ``x`` holds ``sources`` on consecutive
    channels, read by as many edges each), outputs concatenated in order; of ``relu(x)`` when ``relu``.
    Depthwise convs of several kernel sizes with "same" padding run as one (:func:`_merged_weight`)."""
    c, n = convs[0], len(convs)
    padding = c.padding
    if any(m.kernel_size != c.kernel_size for m in convs):
        weight, (k_h, k_w) = _merged_weight(convs)
        padding = (c.dilation[0] * (k_h - 1) // 2, c.dilation[1] * (k_w - 1) // 2)
    else:
        weight = _stacked(convs, "weight")
    groups = c.groups
    if shared_input and (c.groups > 1 or sources > 1):  # a grouped conv over a copy of x per conv
        x, groups = _repeated(x, n, edges, sources, repeat), c.groups * n
    elif not shared_input:
        groups = c.groups * n
    if relu:
        return relu_conv2d(x, weight, c.stride, padding, groups)
    return conv2d(x, weight, c.stride, padding, c.dilation, groups, c.training)


def _repeated(x: Tensor, convs: int, edges: int, sources: int, memo: dict[int, Tensor]) -> Tensor:
    """``x`` as the input of ``convs`` convs, ``edges`` per chain (``_Repeat``), made once per group."""
    if convs == sources:
        return x
    if convs not in memo:
        memo[convs] = _Repeat.apply(x, edges // sources, sources, convs // edges)
    return memo[convs]


def _chains(chains: list[list[PreActivated]], r: Tensor, stats: _RunningStats, sources: int) -> list[Tensor]:
    """The outputs of ReLU-Conv-BN chains (``chains[i]``: one op per edge, all alike) that all read
    ``r = relu(x)`` (``sources`` inputs, as many edges reading each in turn): per chain, its edges' outputs
    concatenated on channels."""
    bodies = [[list(op.body) for op in chain] for chain in chains]  # per chain, per edge: its layers
    order = sorted(range(len(chains)), key=lambda i: -len(bodies[i][0]))  # ending chains leave last
    active = [bodies[i] for i in order]
    width = [0] * len(active)  # channels of each active chain's block in y
    outs: dict[int, Tensor] = {}
    repeat: dict[int, Tensor] = {}
    y, depth = r, 0
    relu_next = [False] * len(active)
    # in training passes, depthwise convs of several kernel sizes run as one (_merged_weight); elsewhere
    # each runs its own kernel, so that a count of multiply-adds (eval mode, no_grad) sees the architecture's
    merge = torch.is_grad_enabled() and chains[0][0].training
    while active:
        layers = [[body[depth] for body in chain] for chain in active]
        # a deferred ReLU (as per op: ops.relu_in_conv) passes its block on as it is, for the conv
        # after it to apply
        relu_here = relu_next[:len(active)]
        relu_next = [relu_in_conv(chain[0], depth) for chain in active]
        keys = [(_run_key(layer[0], merge), relu_next[i], relu_here[i]) for i, layer in enumerate(layers)]
        runs: list[tuple[int, int]] = []  # consecutive chains whose layers are alike: one call each
        for i, key in enumerate(keys):
            if runs and key == keys[runs[-1][0]]:
                runs[-1] = (runs[-1][0], i + 1)
            else:
                runs.append((i, i + 1))
        parts = [y] if depth == 0 or len(runs) == 1 else list(y.split([sum(width[a:b]) for a, b in runs], 1))
        results = []
        for (a, b), part in zip(runs, parts * len(runs) if depth == 0 else parts):
            mods = [m for layer in layers[a:b] for m in layer]
            if relu_next[a]:
                results.append(part)
            elif type(mods[0]) is nn.ReLU:
                results.append(F.relu(part))
            elif isinstance(mods[0], nn.BatchNorm2d):
                results.append(stats.batch_norm(part, mods))
            else:
                results.append(_conv(part, mods, depth == 0, repeat, relu_here[a], sources, len(layers[a])))
                width[a:b] = [m.out_channels * len(layers[i]) for i in range(a, b) for m in layers[i][:1]]
        y = concat(results, 1)
        depth += 1
        ending = len(active)
        while ending and len(active[ending - 1][0]) == depth:
            ending -= 1
        if ending < len(active):  # the last blocks of y are done
            blocks = y.split(width, 1) if ending == 0 else y.split([sum(width[:ending]), *width[ending:]], 1)
            for i, block in zip(range(ending, len(active)), blocks[len(blocks) - len(active) + ending:]):
                outs[order[i]] = block
            y = blocks[0]
            del active[ending:], width[ending:]
    return [outs[i] for i in range(len(chains))]


def _factorized_reduce(ops: Sequence[FactorizedReduce], r: Tensor, stats: _RunningStats, sources: int) -> Tensor:
    """FactorizedReduce for every edge: its 1x1 convs at offsets (0, 0) and (1, 1) of a stride-2 input
    are the taps of one 2x2 stride-2 conv (for even heights and widths, which it needs anyway). With
    several inputs, as many edges reading each in turn, a grouped conv: one group per input."""
    half = ops[0].conv_1.out_channels
    first = _stacked([op.conv_1 for op in ops], "weight").unflatten(0, (len(ops), half))  # (edges, C/2, C_in, 1, 1)
    second = _stacked([op.conv_2 for op in ops], "weight").unflatten(0, (len(ops), half))
    weight = torch.cat([F.pad(first, (0, 1, 0, 1)), F.pad(second, (1, 0, 1, 0))], 1).flatten(0, 1)
    return stats.batch_norm(F.conv2d(r, weight, stride=2, groups=sources), [op.bn for op in ops])


class _MixedSum(torch.autograd.Function):
    """``out[:, e] = sum_k weights[e, columns[k]] * terms[k][:, e]`` for every edge ``e`` (channel blocks
    of ``out``), where a shared term (``shared[k]``) is one output per input (``sources`` of them, as many
    edges reading each in turn). One function so that the sum is a multiply-add per term, in place, not an
    autograd node per product and sum, and so that its gradients come back in the terms' memory
    format (the head's pooling hands back contiguous ones, on which a channels-last convolution or BN
    runs several times slower). It keeps each term once for backward, as the products would."""

    @staticmethod
    def forward(ctx, weights: Tensor, columns: tuple[int, ...], shared: tuple[bool, ...],
                memory_format: torch.memory_format, sources: int, *terms: Tensor) -> Tensor:
        ctx.columns, ctx.shared, ctx.memory_format, ctx.sources = columns, shared, memory_format, sources
        ctx.save_for_backward(weights, *terms)
        edges = weights.shape[0]
        if edges == 1:  # one edge's sum (the chains run per edge): no channel blocks, fewer calls
            scale = weights.unbind(1)
            out = torch.mul(terms[0], scale[columns[0]])
            for col, term in zip(columns[1:], terms[1:]):
                out.addcmul_(term, scale[col])
            return out.contiguous(memory_format=memory_format)  # a no-op (no call) when it is already
        # channel blocks as (edges, C), or (sources, edges per source, C): a shared term broadcasts over
        # the edges
        blocks = _blocks(edges, sources)
        scale = weights.t().reshape(weights.shape[1], 1, *blocks, 1, 1, 1).unbind(0)
        like = terms[0]
        n, c, h, w = like.shape
        c = c // (sources if shared[0] else edges)
        dtype = like.dtype if like.dtype == weights.dtype else torch.promote_types(weights.dtype, like.dtype)
        if memory_format == torch.channels_last:
            out = like.new_empty(n, h, w, *blocks, c, dtype=dtype).permute(0, *range(3, 4 + len(blocks)), 1, 2)
        else:
            out = like.new_empty(n, *blocks, c, h, w, dtype=dtype)
        for k, (col, term) in enumerate(zip(columns, terms)):
            term = _shared_view(term, sources) if shared[k] else term.unflatten(1, (*blocks, c))
            if k == 0:
                torch.mul(term, scale[col], out=out)
            else:
                out.addcmul_(term, scale[col])
        return out.flatten(1, len(blocks) + 1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        weights, *terms = ctx.saved_tensors
        edges, width = weights.shape
        sources = ctx.sources
        if not grad.is_contiguous(memory_format=ctx.memory_format):
            grad = grad.contiguous(memory_format=ctx.memory_format)
        if edges == 1:
            scale = weights.unbind(1)
            by_column = dict(zip(ctx.columns, terms))
            zero = None if len(by_column) == width else weights.new_zeros(())
            per_edge = torch.stack([(grad * by_column[col]).sum() if col in by_column else zero
                                    for col in range(width)])
            return per_edge.unsqueeze(0), None, None, None, None, *(grad * scale[col] for col in ctx.columns)
        shape = _blocks(edges, sources)
        blocks = grad.unflatten(1, (*shape, -1))
        scale = weights.t().reshape(width, 1, *shape, 1, 1, 1).unbind(0)
        dims = (0, *range(len(shape) + 1, blocks.dim()))  # all but the blocks'
        per_column: list[Tensor | None] = [None] * width
        grads = []
        for col, shared, term in zip(ctx.columns, ctx.shared, terms):
            if shared:
                per_column[col] = (blocks * _shared_view(term, sources)).sum(dims)
                grads.append(_sum_blocks(blocks * scale[col], _layout(term), len(shape)))
            else:
                per_column[col] = (blocks * term.unflatten(1, (*shape, -1))).sum(dims)
                grads.append((blocks * scale[col]).flatten(1, len(shape) + 1))
        if any(g is None for g in per_column):
            zero = weights.new_zeros(shape)
            per_column = [zero if g is None else g for g in per_column]
        alpha = torch.stack(per_column, -1)
        return alpha if sources == 1 else alpha.flatten(0, 1), None, None, None, None, *grads


def _blocks(edges: int, sources: int) -> tuple[int, ...]:
    return (edges,) if sources == 1 else (sources, edges // sources)


def _shared_view(term: Tensor, sources: int) -> Tensor:
    """A shared term's channels as blocks that broadcast over the edges reading each input."""
    return term.unsqueeze(1) if sources == 1 else term.unflatten(1, (sources, 1, -1))


@sharing_subsamples()  # the stride-2 convs of a group's edges share their subsampled input
def weighted_sums(ops: Sequence[Sequence[nn.Module]], columns: Sequence[int], x: Tensor, weights: Tensor,
                  relu_x: Tensor | None, run_op, chains_fused: bool = True, sources: int = 1) -> list[Tensor]:
    """``sum_k weights[e, columns[k]] * ops[e][k](x_e)`` for every edge ``e``: the mixed outputs of edges
    whose ``k``-th ops are alike, ``x`` holding ``sources`` inputs of one shape on consecutive channels,
    as many edges reading each in turn. ``run_op(e, k)`` runs an op that is not fused, and
    every chain unless ``chains_fused``; the ops that read an input alone are computed once either way."""
    edges = len(ops)
    r = F.relu(x) if relu_x is None else relu_x
    stats = _RunningStats()
    even = x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0
    # a term is (True, s) for a shared output s (one per input), or (False, t) with t every edge's
    # output, on consecutive channels or (unfused) as a list
    terms: list[tuple[bool, Tensor | list[Tensor]] | None] = [None] * len(columns)
    chains: list[tuple[int, list[nn.Module]]] = []
    for k in range(len(columns)):
        column = [edge_ops[k] for edge_ops in ops]
        keys = {op_key(op) for op in column}
        key = keys.pop() if len(keys) == 1 else None
        kind = key[0] if key is not None else None
        if kind == "identity":
            terms[k] = (True, x)
        elif kind == "shared":
            op = column[0]
            pooled = (op if type(op) in POOLS else op[0])(x)
            if key[2] is None:
                terms[k] = (True, pooled)
            else:
                normed = stats.shared_batch_norm(pooled, [o[1] for o in column], sources)
                terms[k] = (normed.shape[1] == pooled.shape[1], normed)
        elif kind == "reduce" and even:
            terms[k] = (False, _factorized_reduce(column, r, stats, sources))
        elif kind == "chain" and chains_fused:
            chains.append((k, column))
        else:
            outs = [run_op(e, k) for e in range(edges)]
            terms[k] = (False, outs if not chains_fused else torch.cat(outs, 1))
    if chains:
        for (k, _), out in zip(chains, _chains([column for _, column in chains], r, stats, sources)):
            terms[k] = (False, out)
    stats.write()
    shared = tuple(shared for shared, _ in terms)
    memory_format = _layout(x)[1]
    if chains_fused:
        channels = next(t.shape[1] // (sources if s else edges) for s, t in terms)
        out = _MixedSum.apply(weights, tuple(columns), shared, memory_format, sources, *(t for _, t in terms))
        return list(out.split(channels, 1))
    # per edge: its own terms, with its input's shared ones; a fused term's channel blocks are views
    per_edge = [t if isinstance(t, list) else _per_edge(t, sources if s else edges, edges) for s, t in terms]
    return [_MixedSum.apply(row, tuple(columns), shared, memory_format, 1, *(t[e] for t in per_edge))
            for e, row in enumerate(weights.split(1))]
