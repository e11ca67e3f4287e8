"""The options of the tasks' components: their config keys. Kept apart from the components so
that registering them (every time ``nas`` starts) imports no torch."""

from __future__ import annotations

import attrs


def _fraction(low_inclusive: bool):  # noqa: ANN202 (an attrs validator)
    def check(_: object, attribute: attrs.Attribute, value: float) -> None:
        if not ((0 <= value if low_inclusive else 0 < value) and value < 1):
            bound = "[0, 1)" if low_inclusive else "(0, 1)"
            raise ValueError(f"{attribute.name} must be in {bound}, got {value}")
    return check


@attrs.frozen
class ClassificationOptions:
    search_split: float = attrs.field(default=0.5, validator=_fraction(False))  # share of train for weights in search
    valid_split: float = attrs.field(default=0.1, validator=_fraction(True))  # held out from train when training
    cutout: int = attrs.field(default=0, validator=attrs.validators.ge(0))  # side of the cutout square, training only
    aux_weight: float = attrs.field(default=0.4, validator=attrs.validators.ge(0))  # auxiliary head's loss weight
    label_smoothing: float = attrs.field(default=0.0, validator=[attrs.validators.ge(0), attrs.validators.lt(1)])
    workers: int = attrs.field(default=0, validator=attrs.validators.ge(0))  # DataLoader worker processes


@attrs.frozen
class CifarOptions:
    augment: bool = True  # random crop (padding 4) and horizontal flip on the training set
    verify_md5: bool = True  # check the files against the official checksums


@attrs.frozen
class ImageFolderOptions:
    train_dir: str = "train"  # class folders of training images under --data-root
    test_dir: str = "val"  # class folders of test images (ImageNet's validation set)
    image_size: int = attrs.field(default=224, validator=attrs.validators.ge(1))  # training crop, test centre crop
    resize: int = attrs.field(default=256, validator=attrs.validators.ge(1))  # test images: resized, then cropped
    # brightness/contrast/saturation jitter of training images (0: off; torchvision's ColorJitter
    # takes no negative factor)
    color_jitter: float = attrs.field(default=0.4, validator=attrs.validators.ge(0))


@attrs.frozen
class SgdOptions:
    lr: float = attrs.field(default=0.025, validator=attrs.validators.gt(0))
    lr_min: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))  # the cosine schedule ends here
    lr_schedule: str = attrs.field(default="cosine", validator=attrs.validators.in_(("cosine", "step")))
    lr_gamma: float = attrs.field(default=0.97, validator=attrs.validators.gt(0))  # "step": lr *= lr_gamma per epoch
    momentum: float = attrs.field(default=0.9, validator=attrs.validators.ge(0))
    nesterov: bool = False  # Nesterov momentum (NAS-Bench-201's training protocol)
    weight_decay: float = attrs.field(default=3e-4, validator=attrs.validators.ge(0))
    grad_clip: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))  # max L2 norm of the gradient (0: off)

    def __attrs_post_init__(self) -> None:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum: set momentum > 0 or nesterov false")


@attrs.frozen
class LanguageModelOptions:
    bptt: int = attrs.field(default=35, validator=attrs.validators.ge(1))  # the nominal window (time steps)
    eval_batch_size: int = attrs.field(default=10, validator=attrs.validators.ge(1))  # columns when validating
    # columns when testing: 1 as the DARTS RNN evaluation code (one hidden state through the whole test text)
    test_batch_size: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    # training windows vary in length as in the public code (fixed bptt when false)
    variable_bptt: bool = True
    max_seq_len_delta: int = attrs.field(default=20, validator=attrs.validators.ge(0))  # cap: bptt + this (training)
    tar_beta: float = attrs.field(default=1e-3, validator=attrs.validators.ge(0))  # temporal activation regularisation
    ar_alpha: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))  # activation regularisation


@attrs.frozen
class TextFolderOptions:
    folder: str = ""  # the folder under --data-root holding train.txt, valid.txt, test.txt ("": --data-root itself)


@attrs.frozen
class PydocTopicsOptions:
    min_count: int = attrs.field(default=2, validator=attrs.validators.ge(1))  # rarer training words become <unk>


@attrs.frozen
class NtAsgdOptions:
    lr: float = attrs.field(default=20.0, validator=attrs.validators.gt(0))
    weight_decay: float = attrs.field(default=8e-7, validator=attrs.validators.ge(0))
    grad_clip: float = attrs.field(default=0.25, validator=attrs.validators.ge(0))  # max L2 norm of the gradient (0: off)
    # switch to averaged SGD when the validation loss is worse than the best of the epochs before the last nonmono
    nonmono: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    # scale each step's lr by its window length / bptt, as the public code does (windows that say so)
    scale_lr_by_window: bool = True
