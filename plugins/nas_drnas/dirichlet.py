"""DrNAS's Dirichlet relaxation (Chen et al., ICLR 2021, sections 3.1-3.2): each edge's mixing weights
are a sample of Dir(elu(alpha) + 1), differentiated pathwise (rsample), with an L2 or KL regulariser
on the architecture loss, and per-edge masks for the ops its progressive search pruned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Dirichlet, kl_divergence

from nas_core import ArchSpec, MixingWeights, Relaxation, brief
from nas_drnas.options import DirichletOptions


def kept_masks(kept: Any, spec: ArchSpec) -> dict[str, Tensor]:
    """``DirichletOptions.kept`` as a boolean [edges, ops] mask per cell type (empty: nothing pruned).
    Raises ValueError naming the first entry that does not fit ``spec``."""
    if kept is None:
        return {}
    if not isinstance(kept, Mapping) or set(kept) != set(spec.edges):
        raise ValueError(f"relaxation.kept must map each cell type {sorted(spec.edges)} to a list of op lists, one "
                         f"per edge; got {brief(kept)}")
    masks = {}
    for cell_type, rows in kept.items():
        edges = spec.edges[cell_type]
        if not isinstance(rows, list | tuple) or len(rows) != len(edges):
            raise ValueError(f"relaxation.kept.{cell_type} must list the kept ops of each of its {len(edges)} "
                             f"edges; got {brief(rows)}")
        for i, names in enumerate(rows):
            if (not isinstance(names, list | tuple) or not names
                    or any(not isinstance(n, str) or n not in spec.ops for n in names)
                    or len(set(names)) != len(names)):
                raise ValueError(f"relaxation.kept.{cell_type}[{i}] must be distinct op names of the space "
                                 f"({', '.join(spec.ops)}), at least one; got {brief(names)}")
        masks[cell_type] = torch.tensor([[op in names for op in spec.ops] for names in rows])
    return masks


class DirichletRelaxation(Relaxation):
    """``alphas.<cell type>`` of shape [edges, ops]; concentration elu(alpha) + 1. ``sample`` draws a
    seed from the run's stream, so every pass given it sees the same draw, and a resumed run too."""

    def __init__(self, options: DirichletOptions, *, spec: ArchSpec):
        super().__init__()
        self.options = options
        self.alphas = nn.ParameterDict({t: nn.Parameter(options.init_std * torch.randn(spec.shape(t)))
                                        for t in spec.edges})
        for cell_type, mask in kept_masks(options.kept, spec).items():  # buffers follow the relaxation's device
            self.register_buffer(f"mask_{cell_type}", mask, persistent=False)

    def mask(self, cell_type: str) -> Tensor | None:
        """The ops edge by edge still searched (bool [edges, ops]), or None where none was pruned."""
        return getattr(self, f"mask_{cell_type}", None)

    def concentration(self) -> dict[str, Tensor]:
        return {t: F.elu(a) + 1 for t, a in self.alphas.items()}

    def sample(self, generator: torch.Generator) -> int:
        return int(torch.randint(2**62, (), generator=generator))

    def weights(self, sample: int | None = None) -> MixingWeights:
        conc = self.concentration()
        if sample is not None:
            raw = _draw(sample, conc)
        elif self.options.eval_weights == "softmax":
            raw = {t: torch.softmax(a, dim=-1) for t, a in self.alphas.items()}
        else:  # the Dirichlet mean
            raw = {t: c / c.sum(-1, keepdim=True) for t, c in conc.items()}
        return MixingWeights({t: self._masked(t, w) for t, w in raw.items()})

    def _masked(self, cell_type: str, w: Tensor) -> Tensor:
        """The pruned ops' weights set to 0 and each row renormalised over the kept ones (as DrNAS)."""
        mask = self.mask(cell_type)
        if mask is None:
            return w
        w = w * mask
        return w / w.sum(-1, keepdim=True)

    def strengths(self) -> dict[str, Tensor]:
        with torch.no_grad():
            return {t: w.detach() for t, w in self.weights(None).items()}

    def loss_terms(self, objective: str, mix: MixingWeights) -> Mapping[str, Tensor]:
        reg, scale = self.options.regularizer, self.options.reg_scale
        if objective != "arch" or reg == "none":
            return {}
        if reg == "l2":  # the gradient reg_scale * alpha: what Adam's weight decay adds in DrNAS's code
            return {"l2": scale / 2 * sum(a.pow(2).sum() for a in self.alphas.values())}
        # every entry counts, pruned ones too, as in DrNAS's _get_kl_reg
        kl = sum(kl_divergence(Dirichlet(c), Dirichlet(torch.ones_like(c))).sum()
                 for c in self.concentration().values())
        return {"kl": scale * kl}


def _draw(seed: int, concentration: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """One Dirichlet sample per edge (rsample: pathwise gradients), cell types in order, from a
    generator seeded with ``seed``. The global generator is forked, so the run's own streams are
    untouched; torch's Dirichlet sampler takes no generator argument."""
    device = next(iter(concentration.values())).device
    accelerator = ([] if device.type == "cpu" else
                   [device.index if device.index is not None else getattr(torch, device.type).current_device()])
    with torch.random.fork_rng(devices=accelerator, device_type="cuda" if device.type == "cpu" else device.type):
        torch.manual_seed(seed)
        return {t: Dirichlet(c).rsample() for t, c in concentration.items()}
