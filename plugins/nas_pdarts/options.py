"""The options of the P-DARTS components and its ``pdarts`` config section: their config keys. Kept apart
from the components so that registering them (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

from typing import Any

import attrs

from nas_darts.options import DartsOptions

#: the op P-DARTS drops out in the mixed edge and caps in the final normal cell
SKIP_OP = "skip_connect"


def _probability(_: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value}")


def _each_at_least_one(_: object, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if any(n < 1 for n in value):
        raise ValueError(f"{attribute.name}: every stage keeps at least 1 op per edge, got {list(value)}")


# ``kept`` (edge and relaxation): the ops each edge still searches, {cell type: [[op names] per edge,
# in the space's edge order]}; None: every op. Written by the staged search between stages
# (pdarts.keep) into both, which must agree.


@attrs.frozen
class PdartsEdgeOptions:
    # Dropout(p) after the identity (skip_connect at stride 1), p scheduled per epoch from this rate
    # (Chen et al., ICCV 2019, section 3.3; rates 0.1, 0.4, 0.7 in stages 1-3 of their README command)
    skip_dropout: float = attrs.field(default=0.0, validator=_probability)
    # epochs of the linear fall of p (rate * (E - e - 1) / E); then rate * exp(-decay * (e - warmup)).
    # None: the optimizer's freeze_alpha_epochs, one knob as in their train_search.py (eps_no_arch)
    warmup: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    decay: float = attrs.field(default=0.2, validator=attrs.validators.ge(0))  # their scale_factor
    kept: Any = None  # the edge builds and computes only its kept ops (see above)


@attrs.frozen
class MaskedSoftmaxOptions:
    init_std: float = attrs.field(default=1e-3, validator=attrs.validators.ge(0))  # alpha ~ init_std * N(0, 1)
    kept: Any = None  # softmax over each edge's kept ops; the others' weights are exactly 0 (see above)


@attrs.frozen
class PdartsOptimizerOptions(DartsOptions):
    # the L2 norm the architecture gradient is clipped to (0: off); P-DARTS clips it with the weights'
    # grad_clip (5), torch.nn.utils.clip_grad_norm_ over both alphas
    arch_grad_clip: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))


@attrs.frozen
class PdartsDiscretizerOptions:
    # at most this many skip_connect in the normal cell (P-DARTS section 3.3: M = 2); None: no cap
    max_skip: int | None = attrs.field(default=2, validator=attrs.validators.optional(attrs.validators.ge(0)))


@attrs.frozen
class PdartsSettings:
    """P-DARTS's staged search (Chen et al., ICCV 2019, section 3.2) when the relaxation is
    ``masked_softmax``: after stage s every edge keeps its ``keep[s-1]`` ops of highest weight."""

    # ops kept per edge after stage 1, 2, ... (P-DARTS: [5, 3]; the last stage's 1 op per edge is the
    # discretizer's); a stage boundary past the list keeps the previous op sets
    keep: tuple[int, ...] = attrs.field(default=(), validator=_each_at_least_one)
