"""`nas alphas RUN_DIR`: a finished search read back through the core, softmax(alpha) per edge."""

from __future__ import annotations

from typing import Any

import torch


def print_alphas(toolkit: Any, run_dir: str) -> int:
    record = toolkit.load_search(run_dir)
    for cell_type, edges in record.spec.edges.items():
        alpha = dict(record.relaxation.named_parameters())[f"alphas.{cell_type}"]
        for (src, dst), row in zip(edges, torch.softmax(alpha.detach(), dim=-1)):
            print(f"{cell_type} {src}->{dst} " + " ".join(f"{op}={p:.6f}" for op, p in zip(record.spec.ops, row)))
    return 0
