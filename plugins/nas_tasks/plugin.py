"""Registers the classification task, the image datasets and the SGD trainer through the same
hooks any third-party plugin uses. Factories are imported on first use (lazy), so that
`nas list` and `nas --help` load no torch."""

from __future__ import annotations

from collections.abc import Callable

from nas_core import hookimpl, lazy
from nas_tasks.options import (ClassificationOptions, CifarOptions, ImageFolderOptions, LanguageModelOptions,
                               NtAsgdOptions, PydocTopicsOptions, SgdOptions, TextFolderOptions)


@hookimpl
def nas_register_tasks(register: Callable[..., None]) -> None:
    register("classification", lazy("nas_tasks.classification:ClassificationTask"), options=ClassificationOptions,
             doc="Images -> classes: cross-entropy (+ auxiliary head), top-1/top-5 error, cutout")
    register("language_model", lazy("nas_tasks.language_model:LanguageModelTask"), options=LanguageModelOptions,
             doc="Word-level text -> next word: variable BPTT, carried hidden state, AR/TAR, perplexity")


@hookimpl
def nas_register_datasets(register: Callable[..., None]) -> None:
    register("digits", lazy("nas_tasks.image_datasets:digits"),
             doc="scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes); no download.")
    register("cifar10", lazy("nas_tasks.image_datasets:cifar10"), options=CifarOptions,
             doc="CIFAR-10 (torchvision, python version) from --data-root; never downloads.")
    register("cifar100", lazy("nas_tasks.image_datasets:cifar100"), options=CifarOptions,
             doc="CIFAR-100 (torchvision, python version) from --data-root; never downloads.")
    register("imagefolder", lazy("nas_tasks.image_datasets:imagefolder"), options=ImageFolderOptions,
             doc="Any ImageFolder tree (ImageNet layout: ROOT/train/CLASS/*.jpg, ROOT/val/CLASS/*.jpg), via torchvision.")
    register("pydoc_topics", lazy("nas_tasks.text_datasets:pydoc_topics"), options=PydocTopicsOptions,
             doc="CPython's pydoc help topics as word-level text (about 65k words, split 80/10/10); no download.")
    register("ptb", lazy("nas_tasks.text_datasets:ptb"), options=TextFolderOptions,
             doc="Penn Treebank, word level: train.txt, valid.txt, test.txt from --data-root.")
    register("wikitext2", lazy("nas_tasks.text_datasets:wikitext2"), options=TextFolderOptions,
             doc="WikiText-2, word level: train.txt, valid.txt, test.txt from --data-root.")


@hookimpl
def nas_register_trainers(register: Callable[..., None]) -> None:
    register("sgd", lazy("nas_tasks.sgd:SgdTrainer"), options=SgdOptions,
             doc="SGD with momentum, cosine or step schedule, gradient clipping (DARTS evaluation)")
    register("nt_asgd", lazy("nas_tasks.asgd:NtAsgdTrainer"), options=NtAsgdOptions,
             doc="SGD switching to averaged SGD on the non-monotone validation trigger (DARTS RNN evaluation)")
