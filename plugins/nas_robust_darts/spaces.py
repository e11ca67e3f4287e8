"""RobustDARTS's reduced spaces S1-S4 (Zela et al., "Understanding and Robustifying Differentiable
Architecture Search", ICLR 2020, section 3 and appendix; the authors' src/spaces.py ``spaces_dict``),
DARTS's space without skip_connect and a deeper supernet, as config layers of ``darts_cnn``: what the
presets of this plugin name. Torch-free (read every time ``nas`` starts).

S2-S4 give every edge the same ops: they are ``space.ops``. S1 gives each edge of each cell type its
own two ops; the ``pdarts`` mixed edge builds only an edge's ``kept`` ops and the ``masked_softmax``
relaxation mixes only them (a disallowed op weighs exactly 0, so DARTS's top-k never derives it):
P-DARTS's per-edge op sets (docs/successors/pdarts.md), named here as a fixed table."""

from __future__ import annotations

from typing import Any

# the darts_cnn op names (nas_darts.options.CNN_OPS; DARTS's PRIMITIVES order); "noise" is this plugin's
SKIP, SEP3, NONE, NOISE = "skip_connect", "sep_conv_3x3", "none", "noise"
MAX, AVG, DIL3, DIL5 = "max_pool_3x3", "avg_pool_3x3", "dil_conv_3x3", "dil_conv_5x5"
DARTS_OPS = (NONE, MAX, AVG, SKIP, SEP3, "sep_conv_5x5", DIL3, DIL5)

# S1: each edge's two ops, in DARTS's edge order (node 2 from inputs 0, 1; node 3 from 0, 1, 2; ...),
# verbatim from their spaces.py primitives_1
S1 = {
    "normal": ((SKIP, DIL3), (SKIP, DIL5), (SKIP, DIL5), (SKIP, SEP3), (SKIP, DIL3), (MAX, SKIP), (SKIP, SEP3),
               (SKIP, SEP3), (SKIP, DIL3), (SKIP, SEP3), (MAX, SKIP), (SKIP, DIL3), (DIL3, DIL5), (DIL3, DIL5)),
    "reduce": ((MAX, AVG), (MAX, DIL3), (MAX, AVG), (MAX, AVG), (SKIP, DIL5), (MAX, AVG), (MAX, SEP3),
               (SKIP, DIL3), (SKIP, DIL5), (MAX, AVG), (MAX, AVG), (SKIP, DIL5), (SKIP, DIL5), (SKIP, DIL5)),
}
# the space's ops under S1: every op some edge allows, in DARTS's order (alpha's columns)
S1_OPS = tuple(op for op in DARTS_OPS if any(op in pair for rows in S1.values() for pair in rows))
# S2-S4: the same ops on all 14 edges of both cell types, in their order (alpha's columns)
UNIFORM = {"s2": (SKIP, SEP3), "s3": (NONE, SKIP, SEP3), "s4": (NOISE, SEP3)}
NO_SKIP = tuple(op for op in DARTS_OPS if op != SKIP)


def space_layer(name: str) -> dict[str, Any]:
    """The config layer that turns ``darts_cnn`` into RobustDARTS's space ``name`` (s1 ... s4)."""
    if name in UNIFORM:
        return {"space": {"ops": list(UNIFORM[name])}}
    if name != "s1":
        raise KeyError(name)
    kept = {cell_type: [list(pair) for pair in rows] for cell_type, rows in S1.items()}
    return {"space": {"ops": list(S1_OPS), "edge": {"name": "pdarts", "skip_dropout": 0.0, "kept": kept}},
            "relaxation": {"name": "masked_softmax", "init_std": 1.0e-3, "kept": kept}}


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """The layers deep-merged, later ones winning (to add settings to a space's layer)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out
