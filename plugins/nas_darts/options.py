"""The options of the DARTS components: their config keys. Kept apart from the components so
that registering them (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs

from nas_core import Component, component_field, operations_field

CNN_OPS: tuple[str, ...] = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)  # the order of DARTS' PRIMITIVES, so alpha rows line up with published alphas
# ops with no weights in a normal cell (skip_connect is the identity there): the ops of the
# "collapse" the DARTS successors fight; recurrent ops all have weights (the highway's W)
PARAMETER_FREE: tuple[str, ...] = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect")


@attrs.frozen
class DartsCnnOptions:
    cells: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    channels: int = attrs.field(default=16, validator=attrs.validators.ge(2))  # C of the first cell
    nodes: int = attrs.field(default=4, validator=attrs.validators.ge(1))  # intermediate nodes per cell
    stem_multiplier: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    ops: tuple[str, ...] = operations_field("darts_cnn", CNN_OPS)  # the candidates, from the registered ops
    # search only: the kind of mixed edge (nas_register_mixed_edges), with its options
    edge: Component = component_field("mixed_edges", "weighted_sum")
    # channels-last activations: about 2x faster CPU convolutions and pooling here; None = on CPU only
    channels_last: bool | None = None
    # search only: recompute each edge's ops during backward instead of keeping their activations
    # (paper config on CPU: about 0.2x the peak memory of keeping them, for about 1.4x the time)
    recompute_edges: bool = False
    # search only: compute the edges leaving each state together (nas_darts.fused), their conv ops fused
    # too; false: op by op, edge by edge (the reference path); None: the ops that read the state alone
    # once per state, the conv ops fused where that measured faster (docs/performance.md)
    fused_edges: bool | None = None
    # search only: drop-path on every mixed edge's output in training mode, constant (SNAS's search: 0.3)
    search_drop_path: float = attrs.field(default=0.0, validator=[attrs.validators.ge(0), attrs.validators.lt(1)])
    # "cifar": one 3x3 conv; "imagenet": three stride-2 3x3 convs (224 px -> 28 px before the cells)
    stem: str = attrs.field(default="cifar", validator=attrs.validators.in_(("cifar", "imagenet")))
    # discrete networks only: an auxiliary classifier after the cell at 2/3 depth (training mode)
    auxiliary: bool = False
    # discrete networks only: drop-path probability of the last epoch, ramped linearly from 0 at the first
    drop_path: float = attrs.field(default=0.0, validator=[attrs.validators.ge(0), attrs.validators.lt(1)])


RNN_OPS: tuple[str, ...] = ("none", "tanh", "relu", "sigmoid", "identity")  # the public code's PRIMITIVES order


def _dropout(_: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value}")


@attrs.frozen
class DartsRnnOptions:
    """The DARTS recurrent cell and its language model (Liu et al., ICLR 2019, appendix A, and its
    public code). The ``space`` section holds the search network's options, ``network`` the evaluation network's (same keys)."""

    emb: int = attrs.field(default=300, validator=attrs.validators.ge(1))  # embedding size (ninp)
    hid: int = attrs.field(default=300, validator=attrs.validators.ge(1))  # hidden size (nhid); must equal emb (tied)
    nodes: int = attrs.field(default=8, validator=attrs.validators.ge(1))  # intermediate nodes per cell
    ops: tuple[str, ...] = operations_field("darts_rnn", RNN_OPS)  # the candidates, from the registered activations
    dropout: float = attrs.field(default=0.75, validator=_dropout)  # on the cell's output (locked, per sequence)
    dropouth: float = attrs.field(default=0.25, validator=_dropout)  # on the hidden nodes' inputs (per sequence)
    dropoutx: float = attrs.field(default=0.75, validator=_dropout)  # on the cell's input x_t (per sequence)
    dropouti: float = attrs.field(default=0.2, validator=_dropout)  # on the embedded input (locked)
    dropoute: float = attrs.field(default=0.0, validator=_dropout)  # whole words of the embedding (eval: 0.1)
    init_range: float = attrs.field(default=0.04, validator=attrs.validators.gt(0))  # weights ~ U(-r, r)

    def __attrs_post_init__(self) -> None:
        if self.emb != self.hid:
            raise ValueError(f"emb ({self.emb}) must equal hid ({self.hid}): the decoder is tied to the embedding")


@attrs.frozen
class DartsOptions:
    w_lr: float = attrs.field(default=0.025, validator=attrs.validators.gt(0))
    w_lr_min: float = attrs.field(default=0.001, validator=attrs.validators.ge(0))  # cosine schedule ends here
    w_momentum: float = attrs.field(default=0.9, validator=attrs.validators.ge(0))
    # Nesterov momentum on the weights (the NAS-Bench-201 and GDAS searches); the virtual step follows it
    w_nesterov: bool = False
    w_weight_decay: float = attrs.field(default=3e-4, validator=attrs.validators.ge(0))
    grad_clip: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))  # max L2 norm of the weight gradient (0: off)
    arch_lr: float = attrs.field(default=3e-4, validator=attrs.validators.gt(0))
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = attrs.field(default=1e-3, validator=attrs.validators.ge(0))
    # virtual step size; None: the current weight lr (darts_2nd only)
    xi: float | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    fd_eps: float = attrs.field(default=0.01, validator=attrs.validators.gt(0))  # the step is fd_eps / ||grad_w' L_val||
    # darts_2nd: the Hessian-vector product grad^2_{alpha,w} L_train . v as the paper's central finite
    # difference (two forward and backward passes, fd_eps above), or exact by double backward (one
    # forward, a backward that keeps its graph, and a second backward); benchmarks/hvp_error.py measures both
    hvp: str = attrs.field(default="finite_difference", validator=attrs.validators.in_(("finite_difference", "exact")))
    # darts_2nd: clip the virtual step's gradient to grad_clip as the weight step does, so w' is the
    # clipped SGD iterate (the public RNN code does; at its lr of 20 an unclipped w' lands far away)
    clip_virtual_step: bool = False
    # darts_2nd: clip grad_w' L_val(w', alpha), the finite difference's direction, to grad_clip before
    # the Hessian-vector product, as the public RNN code does; this scales the second-order term by
    # min(1, grad_clip / ||grad_w' L_val||) (the points w +- eps*v do not move: eps = fd_eps / ||v||)
    clip_hessian_vector: bool = False
    # scale the weight step's lr, and so xi, by the training batch's ``lr_scale`` (language_model:
    # its window's drawn length / bptt), as the public RNN code does; batches without one (images): 1
    scale_lr_by_window: bool = True
    # darts_2nd: the virtual step moves tied weights (the RNN's embedding, also its decoder) like
    # every other weight: the paper's w'. False leaves them at w, which is what the public RNN code
    # computes in effect (its copy of the network reloads the tied matrix from the decoder's stale
    # entry after the stepped embedding's): only to reproduce its gradients exactly. docs/architecture.md
    step_tied_weights: bool = True
    # a weights-only warm-up: alpha (all architecture parameters) stays frozen for the first N epochs
    # and only the weight step runs (PC-DARTS: 15, DrNAS and P-DARTS: 10 per stage)
    freeze_alpha_epochs: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    # the relaxation's random draw: one per step, shared by every pass (DARTS, SNAS), or one per
    # forward pass (GDAS); the finite difference's two passes always share one
    sample: str = attrs.field(default="step", validator=attrs.validators.in_(("step", "pass")))


@attrs.frozen
class SoftmaxOptions:
    init_std: float = 1e-3  # alpha ~ init_std * N(0, 1)


@attrs.frozen
class TopKOptions:
    k: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(1)))
    # None: the space's own k (2 for DARTS CNN cells, 1 for RNN cells)
