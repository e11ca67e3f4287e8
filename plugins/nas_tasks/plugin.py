"""Registers the classification task, the image datasets and the SGD trainer through the same
hooks any third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable

from nas_core import hookimpl


@hookimpl
def nas_register_tasks(register: Callable[..., None]) -> None:
    from nas_tasks.classification import ClassificationOptions, ClassificationTask

    register("classification", ClassificationTask, options=ClassificationOptions,
             doc="Images -> classes: cross-entropy (+ auxiliary head), top-1/top-5 error, cutout")


@hookimpl
def nas_register_datasets(register: Callable[..., None]) -> None:
    from nas_tasks import image_datasets as d

    register("digits", d.digits)
    register("cifar10", d.cifar10, options=d.CifarOptions)
    register("cifar100", d.cifar100, options=d.CifarOptions)
    register("imagefolder", d.imagefolder, options=d.ImageFolderOptions)


@hookimpl
def nas_register_trainers(register: Callable[..., None]) -> None:
    from nas_tasks.sgd import SgdOptions, SgdTrainer

    register("sgd", SgdTrainer, options=SgdOptions,
             doc="SGD with momentum, cosine or step schedule, gradient clipping (DARTS evaluation)")
