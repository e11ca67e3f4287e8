"""The ``op_pruning`` config section. Torch-free, so that registering it imports no torch."""

from __future__ import annotations

import attrs


def _increasing(_: object, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if any(n < 1 for n in value) or list(value) != sorted(set(value)):
        raise ValueError(f"{attribute.name} must list epoch counts >= 1 in increasing order, got {list(value)}")


def _decreasing(_: object, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if any(n < 1 for n in value) or list(value) != sorted(set(value), reverse=True):
        raise ValueError(f"{attribute.name} must list op counts >= 1 in decreasing order, got {list(value)}")


@attrs.frozen
class OpPruningSettings:
    """Scheduled op pruning: after ``after[i]`` epochs of the search, every edge keeps its ``keep[i]``
    strongest ops (by the relaxation's strengths) for the rest of the run."""

    after: tuple[int, ...] = attrs.field(default=(), validator=_increasing)
    keep: tuple[int, ...] = attrs.field(default=(), validator=_decreasing)
    # the zero op ("none") means "no edge": it is not a candidate a pruning counts, and stays unless
    # this drops it at the first pruning (as P-DARTS's last stage does)
    drop_zero: bool = False

    def __attrs_post_init__(self) -> None:
        if len(self.after) != len(self.keep):
            raise ValueError(f"after and keep must have one entry per pruning; got {len(self.after)} and "
                             f"{len(self.keep)}")
