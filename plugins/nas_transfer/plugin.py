"""Evaluators that re-stack a searched cell for a new task (Liu et al., ICLR 2019, section 3.4).

Each evaluator contributes the target's settings as a config layer (dataset, evaluation network,
training schedule) and trains with the core train engine. Command-line flags still win, so
``nas transfer --target imagenet --dataset cifar100`` trains the ImageNet network on CIFAR-100.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nas_core import hookimpl

# Liu et al., ICLR 2019, section 3.4 and appendix A: the mobile-setting ImageNet network and its schedule
IMAGENET = {
    "dataset": {"name": "imagefolder"},
    "task": {"name": "classification", "valid_split": 0.0, "cutout": 0, "aux_weight": 0.4, "label_smoothing": 0.1},
    "network": {"cells": 14, "channels": 48, "auxiliary": True, "stem": "imagenet", "drop_path": 0.0},
    "trainer": {"name": "sgd", "lr": 0.1, "lr_schedule": "step", "lr_gamma": 0.97, "momentum": 0.9,
                "weight_decay": 3.0e-5, "grad_clip": 5.0},
    "train": {"epochs": 250, "batch_size": 128},
}
CIFAR100 = {
    "dataset": {"name": "cifar100"},
    "task": {"name": "classification", "valid_split": 0.0, "cutout": 16, "aux_weight": 0.4},
    "network": {"cells": 20, "channels": 36, "auxiliary": True, "stem": "cifar", "drop_path": 0.2},
    "trainer": {"name": "sgd", "lr": 0.025, "lr_min": 0.0, "momentum": 0.9, "weight_decay": 3.0e-4, "grad_clip": 5.0},
    "train": {"epochs": 600, "batch_size": 96},
}

# Liu et al., ICLR 2019, section 3.4 and appendix A: PTB -> WikiText-2, the same cell in the rnn_paper evaluation
# network and schedule (a new vocabulary: the embedding follows the target's)
WIKITEXT2 = {
    "dataset": {"name": "wikitext2"},
    "task": {"name": "language_model", "bptt": 35, "eval_batch_size": 10, "variable_bptt": True,
             "max_seq_len_delta": 20, "tar_beta": 1.0e-3, "ar_alpha": 0.0},
    "space": {"name": "darts_rnn"},
    "network": {"emb": 850, "hid": 850, "dropout": 0.75, "dropouth": 0.25, "dropoutx": 0.75, "dropouti": 0.2,
                "dropoute": 0.1, "init_range": 0.04},
    "trainer": {"name": "nt_asgd", "lr": 20.0, "weight_decay": 8.0e-7, "grad_clip": 0.25, "nonmono": 5},
    "train": {"epochs": 8000, "batch_size": 64},
}


def restacked(layer: Mapping[str, Any]) -> Callable[[None], Any]:
    """A factory of the evaluator that trains the cell in the network and schedule of ``layer``."""
    def factory(options: None) -> Any:
        from nas_core import Evaluator  # imported here: registering must not load torch

        class RestackedCell(Evaluator):
            def config_layer(self) -> Mapping[str, Any]:
                return layer

        return RestackedCell()
    return factory


@hookimpl
def nas_register_evaluators(register: Callable[..., None]) -> None:
    register("imagenet", restacked(IMAGENET),
             doc="CIFAR cell -> ImageNet-style network: 14 cells, C=48, reducing stem, label smoothing 0.1")
    register("cifar100", restacked(CIFAR100),
             doc="CIFAR-10 cell -> CIFAR-100: the paper's 20-cell, C=36 evaluation network")
    register("wikitext2", restacked(WIKITEXT2),
             doc="PTB recurrent cell -> WikiText-2: emb = hid = 850, NT-ASGD, the rnn_paper evaluation settings")
