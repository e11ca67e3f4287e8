"""Pictures and numbers of the architecture weights, shared by the TensorBoard monitor and ``nas
report``: labelled heatmaps (matplotlib), edge labels, entropy and the collapse count."""

from __future__ import annotations

import io

import torch
from torch import Tensor

from nas_core import ArchSpec, Genotype


def node_label(node: int, spec: ArchSpec) -> str:
    """How the DARTS papers name a node: the inputs ``c_{k-2}``, ``c_{k-1}`` of a CNN cell (``x_t,
    h_{t-1}`` of a recurrent one, ``in_i`` otherwise), the intermediate nodes by number."""
    if node >= spec.num_inputs:
        return str(node)
    if spec.num_inputs == 2:
        return ("c_{k-2}", "c_{k-1}")[node]
    if spec.num_inputs == 1:
        return "x_t, h_{t-1}"
    return f"in_{node}"


def edge_labels(spec: ArchSpec, cell_type: str) -> list[str]:
    """``c_{k-2} -> 2``, ...: one per row of the cell type's weight matrix."""
    return [f"{node_label(src, spec)} -> {dst}" for src, dst in spec.edges[cell_type]]


def edge_tag(src: int, dst: int) -> str:
    """The edge's part of a TensorBoard tag (tags keep to letters, digits and ``_-/.``)."""
    return f"edge_{src}_{dst}"


def alpha_tag(cell_type: str, src: int, dst: int, op: str) -> str:
    """The TensorBoard scalar of one op's strength on one edge: ``alpha/normal/edge_0_2/skip_connect``."""
    return f"alpha/{cell_type}/{edge_tag(src, dst)}/{op}"


def alpha_charts(spec: ArchSpec, cell_type: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """The edges whose op strengths compete, drawn as one chart, with its title: each edge alone
    (``c_{k-2} -> 2``) where a node keeps several inputs (a CNN cell keeps the best op of each chosen
    edge), else every edge into a node (``into 3``): with one input per node (the recurrent cell)
    all (input, op) pairs of the node compete."""
    edges = spec.edges[cell_type]
    if spec.inputs_per_node != 1:
        return [(label, [edge]) for label, edge in zip(edge_labels(spec, cell_type), edges)]
    return [(f"into {dst}", [e for e in edges if e[1] == dst]) for dst in sorted({d for _, d in edges})]


def entropy(values: Tensor) -> float:
    """Mean over edges of the entropy (nats) of each edge's op distribution: log(#ops) when
    uniform, 0 when each edge has decided."""
    p = values.detach().double().clamp_min(0)
    p = p / p.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return float(-(p * p.clamp_min(1e-30).log()).sum(dim=-1).mean())


def parameter_free_count(genotype: Genotype, cell_type: str, spec: ArchSpec) -> int:
    """How many inputs of ``cell_type`` in ``genotype`` use a parameter-free op (the collapse that
    fills DARTS cells with skip connections and pooling)."""
    cell = genotype.cells.get(cell_type)
    free = set(spec.parameter_free)
    return 0 if cell is None else sum(op in free for node in cell.nodes for op, _ in node)


def heatmap_png(values: Tensor, spec: ArchSpec, cell_type: str, *, value_range: tuple[float, float] | None = None,
                title: str = "") -> bytes:
    """softmax(alpha) of one cell type as a PNG: rows labelled by edge, columns by op, a colour bar,
    and the value in each square. ``value_range`` fixes the colour scale (the same one across
    epochs makes a slider show change: softmax weights lie in (0, 1)); None uses the matrix's own range."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    from matplotlib.figure import Figure

    v = values.detach().float().cpu().numpy()
    rows, cols = v.shape
    lo, hi = value_range if value_range is not None else (float(v.min()), float(v.max()))
    fig = Figure(figsize=(1.2 + 0.75 * cols, 0.9 + 0.32 * rows), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(v, cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1e-9, aspect="auto")
    ax.set_xticks(range(cols), labels=list(spec.ops), rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(rows), labels=edge_labels(spec, cell_type), fontsize=8)
    middle = (lo + hi) / 2
    for r in range(rows):
        for c in range(cols):
            ax.text(c, r, f"{v[r, c]:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if v[r, c] > middle else "white")
    ax.set_title(title or f"softmax(alpha), {cell_type} cell", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.05)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def png_to_chw(png: bytes) -> Tensor:
    """A PNG as the CHW uint8 tensor ``SummaryWriter.add_image`` takes."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)

