"""The options of the NAS-Bench-201 components: their config keys. Kept apart from the components so
that registering them (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs

from nas_core import Component, component_field, operations_field

FAMILY = "nb201"  # the operations the nb201 space builds: factory(c_in, c_out, stride, affine, track_running_stats)
# the order of the authors' NAS_BENCH_201 list (xautodl/models/cell_operations.py), so alpha columns
# line up with theirs
NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
PARAMETER_FREE: tuple[str, ...] = ("none", "skip_connect", "avg_pool_3x3")


@attrs.frozen
class Nb201Options:
    """The NAS-Bench-201 cell and network (Dong & Yang, ICLR 2020, section 2.1). The ``space``
    section holds the supernet's options, ``network`` the discrete network's (same keys)."""

    cells: int = attrs.field(default=5, validator=attrs.validators.ge(1))  # N: cells per stage (3 stages)
    channels: int = attrs.field(default=16, validator=attrs.validators.ge(1))  # C of the first stage; 2C, 4C after
    # the nodes after the input (the authors' max_nodes - 1)
    nodes: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    ops: tuple[str, ...] = operations_field(FAMILY, NB201_OPS)  # the candidates, from the registered ops
    # search only: the kind of mixed edge (nas_register_mixed_edges), with its options
    edge: Component = component_field("mixed_edges", "weighted_sum")
    # search only: the BN of the supernet's cell ops. The authors' searches build them affine-free
    # (as DARTS) and track running statistics (their scripts' BN=1); the discrete network's BN,
    # as their TinyNetwork's, always has both
    affine: bool = False
    track_running_stats: bool = True


@attrs.frozen
class ArgmaxEdgeOptions:
    # NAS-Bench-201 keeps every edge; the authors' genotype() of their search models takes the argmax
    # over all ops, the zero op included (an edge may end up "none"); False skips the zero op
    zero: bool = True
