"""The ``classification`` task: its streams and splits, cutout, the loss with an auxiliary head,
top-1/top-5 error, batch-size checks and the per-epoch loaders."""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import pytest
import torch
from torch.utils.data import TensorDataset

from nas_core import DataInfo, Outcome, RunContext, Task
from nas_core.components import build
from nas_core.config import Layer, resolve
from nas_core.errors import ConfigError
from nas_tasks.classification import ClassificationOptions, ClassificationTask
from nas_tasks.image_datasets import LabelledImages

STREAMS = ("weights", "arch", "train", "valid", "test")


def ids_data(n: int, n_test: int = 6) -> LabelledImages:
    """``n`` training examples whose input and label are their index in file order; the test
    examples are numbered from 1000."""
    ids, test = torch.arange(n), torch.arange(1000, 1000 + n_test)
    return LabelledImages(train=TensorDataset(ids, ids), test=TensorDataset(test, test),
                          info=DataInfo(input_shape=(), num_classes=n))


def ones_images(n: int, n_test: int = 4, side: int = 8) -> LabelledImages:
    """All-ones images: whatever is zero in a batch was cut out."""
    return LabelledImages(train=TensorDataset(torch.ones(n, 1, side, side), torch.zeros(n, dtype=torch.int64)),
                          test=TensorDataset(torch.ones(n_test, 1, side, side), torch.zeros(n_test, dtype=torch.int64)),
                          info=DataInfo(input_shape=(1, side, side), num_classes=10))


@pytest.fixture(scope="module")
def demo(registries):
    return resolve(registries, [], preset="demo")


def make_run(config, *, seed: int | None = None, epoch: int = 0, device: str = "cpu") -> RunContext:
    """A run context as the engine builds one, at the start of ``epoch``."""
    if seed is not None:
        config = attrs.evolve(config, seed=seed)
    run = RunContext(dir=Path("unused"), config=config, phase="train", device=torch.device(device),
                     plugin_manager=None, epochs=epoch + 1)
    run.start_epoch_state(epoch)
    return run


def read(task: ClassificationTask, stream: str, run: RunContext) -> list[int]:
    """The example ids of ``stream``, every one, in file order."""
    return [int(v) for x, _ in task.loader(stream, batch_size=1000, run=run, evaluation=True) for v in x]


# ---------------------------------------------------------------------------------------------
# streams and splits
# ---------------------------------------------------------------------------------------------

def test_streams_per_phase_with_and_without_valid_split(demo):
    with_valid = ClassificationTask(ClassificationOptions(valid_split=0.25), data=ids_data(20))
    without = ClassificationTask(ClassificationOptions(valid_split=0.0), data=ids_data(20))
    for task in (with_valid, without):
        assert task.streams("search") == ("weights", "arch")
        assert isinstance(task, Task) and task.info == DataInfo(input_shape=(), num_classes=20)
    assert with_valid.streams("train") == ("train", "valid", "test")
    assert without.streams("train") == ("train", "test")
    run = make_run(demo)
    # without validation the whole training set trains; the test set is the dataset's own
    assert read(without, "train", run) == list(range(20))
    assert read(without, "test", run) == read(with_valid, "test", run) == list(range(1000, 1006))
    with pytest.raises(KeyError, match="valid"):
        without.loader("valid", batch_size=1, run=run)
    # the search split ignores valid_split: it halves the whole training set either way
    for task in (with_valid, without):
        assert read(task, "weights", run) == list(range(10)) and read(task, "arch", run) == list(range(10, 20))


@pytest.mark.parametrize("n, valid_split, n_valid", [(20, 0.25, 5), (10, 0.1, 1), (1437, 0.1, 144)])
def test_valid_split_is_the_last_share_and_disjoint_from_train(demo, n, valid_split, n_valid):
    task = ClassificationTask(ClassificationOptions(valid_split=valid_split), data=ids_data(n))
    run = make_run(demo)
    train, valid = read(task, "train", run), read(task, "valid", run)
    assert valid == list(range(n - n_valid, n))  # the last share, in file order
    assert train == list(range(n - n_valid))
    assert not set(train) & set(valid)
    # shuffled for training, the train stream still never reads a validation example
    shuffled = [int(v) for x, _ in task.loader("train", batch_size=1, run=run) for v in x]
    assert sorted(shuffled) == train


@pytest.mark.parametrize("options, key", [(dict(valid_split=0.01), "task.valid_split"),
                                          (dict(search_split=0.05), "task.search_split"),
                                          (dict(search_split=0.95), "task.search_split")])
def test_a_split_with_an_empty_part_is_a_config_error(options, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ClassificationTask(ClassificationOptions(**options), data=ids_data(5))


@pytest.mark.parametrize("key, value", [("valid_split", 1.0), ("valid_split", -0.1), ("search_split", 0.0),
                                        ("cutout", -1), ("aux_weight", -0.5), ("label_smoothing", 1.0)])
def test_out_of_range_options_are_config_errors_naming_the_key(registries, key, value):
    with pytest.raises(ConfigError, match=key):
        resolve(registries, [Layer({"task": {key: value}}, "test")], preset="demo")


# ---------------------------------------------------------------------------------------------
# cutout
# ---------------------------------------------------------------------------------------------

def _zeros_per_image(task: ClassificationTask, stream: str, run: RunContext, evaluation: bool) -> list[int]:
    return [int((x == 0).sum()) for xs, _ in task.loader(stream, batch_size=4, run=run, evaluation=evaluation)
            for x in xs]


@pytest.mark.parametrize("valid_split", [0.0, 0.25])
def test_cutout_applies_to_the_train_stream_only(demo, valid_split):
    task = ClassificationTask(ClassificationOptions(cutout=4, valid_split=valid_split), data=ones_images(16))
    run = make_run(demo)
    torch.manual_seed(0)
    cut = _zeros_per_image(task, "train", run, False)
    assert len(cut) == (12 if valid_split else 16)
    # a 4x4 square centred on a random pixel, clipped at the border: 2x2 to 4x4 pixels
    assert all(4 <= z <= 16 for z in cut), cut
    for evaluation in (False, True):
        for stream in ("weights", "arch", *task.streams("train")[1:]):
            assert set(_zeros_per_image(task, stream, run, evaluation)) == {0}, stream


def test_cutout_zeroes_one_square(demo):
    task = ClassificationTask(ClassificationOptions(cutout=4, valid_split=0.0), data=ones_images(32, side=16))
    torch.manual_seed(3)
    for xs, _ in task.loader("train", batch_size=8, run=make_run(demo)):
        for x in xs:
            rows, cols = torch.nonzero(x[0] == 0, as_tuple=True)
            assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a full rectangle
            assert 2 <= int(rows.max() - rows.min() + 1) <= 4 and 2 <= int(cols.max() - cols.min() + 1) <= 4


def test_no_cutout_leaves_the_train_stream_alone(demo):
    task = ClassificationTask(ClassificationOptions(cutout=0, valid_split=0.0), data=ones_images(16))
    assert set(_zeros_per_image(task, "train", make_run(demo), False)) == {0}


# ---------------------------------------------------------------------------------------------
# the loss and the metrics
# ---------------------------------------------------------------------------------------------

# One probability vector, permuted per row: its logarithms as logits give cross-entropy -log p[label].
P = (0.4, 0.2, 0.15, 0.1, 0.08, 0.05, 0.02)  # sums to 1; 7 classes, so top-5 is meaningful
# per row: the classes from the most to the least likely
ORDERS = ((0, 1, 2, 3, 4, 5, 6), (6, 5, 4, 3, 2, 1, 0), (3, 0, 6, 1, 5, 2, 4), (1, 2, 3, 4, 5, 6, 0))
# row 0: the label has p=0.4 (rank 1); row 1: p=0.15 (rank 3); row 2: p=0.02 (rank 7); row 3: p=0.2 (rank 2)
LABELS = torch.tensor([0, 4, 4, 2])
LOGITS = torch.tensor([[math.log(P[order.index(c)]) for c in range(7)] for order in ORDERS])
MAIN_LOSS = -(math.log(0.4) + math.log(0.15) + math.log(0.02) + math.log(0.2)) / 4
# the auxiliary head is sure and right: p=1/2 on the label, 1/12 on each other class
AUX = torch.full((4, 7), math.log(1 / 12)).scatter(1, LABELS[:, None], math.log(1 / 2))
AUX_LOSS = math.log(2)


def test_hand_built_logits_rank_as_described():
    probs = LOGITS.softmax(1)
    ranks = [int((probs[i] > probs[i, LABELS[i]]).sum()) + 1 for i in range(4)]
    assert ranks == [1, 3, 7, 2]
    assert torch.allclose(torch.nn.functional.cross_entropy(LOGITS, LABELS), torch.tensor(MAIN_LOSS))
    assert torch.allclose(AUX.exp().sum(1), torch.ones(4))


@pytest.mark.parametrize("aux_weight", [0.4, 1.5])
def test_aux_loss_is_added_with_aux_weight_and_errors_come_from_the_main_logits(aux_weight):
    task = ClassificationTask(ClassificationOptions(aux_weight=aux_weight), data=ids_data(10))
    seen = []

    def model(x):
        seen.append(x)
        return LOGITS, AUX

    inputs = torch.zeros(4, 3)
    out = task.forward(model, (inputs, LABELS), None)
    assert isinstance(out, Outcome) and seen == [inputs]
    assert out.loss.item() == pytest.approx(MAIN_LOSS + aux_weight * AUX_LOSS, rel=1e-6)
    assert out.count == 4 and out.state is None
    assert set(out.stats) == {"loss", "top1_error", "top5_error"}
    assert out.stats["loss"].item() == pytest.approx(out.loss.item())
    # the auxiliary head is right on every example: these are the main head's errors
    assert out.stats["top1_error"].item() == pytest.approx(0.75)
    assert out.stats["top5_error"].item() == pytest.approx(0.25)
    assert not out.stats["loss"].requires_grad and not out.stats["top1_error"].requires_grad


def test_loss_without_aux_output_or_with_aux_weight_zero_is_the_main_loss():
    for options, output in ((ClassificationOptions(aux_weight=0.4), LOGITS),
                            (ClassificationOptions(aux_weight=0.0), (LOGITS, AUX))):
        out = ClassificationTask(options, data=ids_data(10)).forward(lambda x, o=output: o, (None, LABELS), None)
        assert out.loss.item() == pytest.approx(MAIN_LOSS, rel=1e-6)
        assert out.stats["top1_error"].item() == pytest.approx(0.75)


def test_loss_gradient_reaches_both_heads():
    task = ClassificationTask(ClassificationOptions(aux_weight=0.5), data=ids_data(10))
    logits, aux = LOGITS.clone().requires_grad_(), AUX.clone().requires_grad_()
    task.forward(lambda x: (logits, aux), (None, LABELS), None).loss.backward()
    assert logits.grad.abs().sum() > 0 and aux.grad.abs().sum() > 0
    # d(CE)/d(logits) = (softmax - onehot) / batch, scaled by aux_weight for the auxiliary head
    onehot = torch.nn.functional.one_hot(LABELS, 7).float()
    assert torch.allclose(logits.grad, (LOGITS.softmax(1) - onehot) / 4, atol=1e-6)
    assert torch.allclose(aux.grad, 0.5 * (AUX.softmax(1) - onehot) / 4, atol=1e-6)


def test_label_smoothing_applies_to_the_loss():
    task = ClassificationTask(ClassificationOptions(label_smoothing=0.1, aux_weight=0.0), data=ids_data(10))
    out = task.forward(lambda x: LOGITS, (None, LABELS), None)
    smooth = -(LOGITS.log_softmax(1).mean(1)).mean().item()  # cross-entropy with the uniform target
    assert out.loss.item() == pytest.approx(0.9 * MAIN_LOSS + 0.1 * smooth, rel=1e-6)


def test_top5_error_only_with_more_than_five_classes():
    task = ClassificationTask(ClassificationOptions(), data=ids_data(10))
    logits = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    out = task.forward(lambda x: logits, (None, torch.tensor([0, 2])), None)
    assert set(out.stats) == {"loss", "top1_error"}
    assert out.stats["top1_error"].item() == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# what the task accepts
# ---------------------------------------------------------------------------------------------

def test_a_non_image_dataset_is_a_value_error_naming_the_readable_datasets(registries, demo):
    for data in (object(), TensorDataset(torch.arange(4)), {"train": [], "test": []}):
        with pytest.raises(ValueError) as info:
            ClassificationTask(ClassificationOptions(), data=data)
        message = str(info.value)
        for name in ("digits", "cifar10", "cifar100", "imagefolder"):
            assert name in message
        assert type(data).__name__ in message
    # every dataset the message names is one the registry offers
    assert {"digits", "cifar10", "cifar100", "imagefolder"} <= set(registries.datasets.names())
    # built as the engine builds it, the user sees a ConfigError naming the task
    with pytest.raises(ConfigError, match="task 'classification'.*digits"):
        build(registries.tasks, demo.task, Task, data=object())


@pytest.mark.parametrize("phase, key, search_split, valid_split, fits, too_large, stream", [
    ("search", "search.batch_size", 0.5, 0.1, 10, 11, "weights"),
    ("search", "search.batch_size", 0.3, 0.1, 6, 7, "weights"),
    ("search", "search.batch_size", 0.7, 0.1, 6, 7, "arch"),
    ("train", "train.batch_size", 0.5, 0.1, 18, 19, "train"),
    ("train", "train.batch_size", 0.5, 0.0, 20, 21, "train"),
])
def test_check_batch_size_raises_a_config_error_naming_the_key(phase, key, search_split, valid_split, fits,
                                                               too_large, stream):
    task = ClassificationTask(ClassificationOptions(search_split=search_split, valid_split=valid_split),
                              data=ids_data(20))
    task.check_batch_size(phase, fits, key)
    with pytest.raises(ConfigError) as info:
        task.check_batch_size(phase, too_large, key)
    message = str(info.value)
    assert f"{key}={too_large}" in message and f"the {stream} stream" in message


# ---------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------

DEVICES = ["cpu", "meta", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("evaluation", [False, True])
def test_loader_yields_batches_on_the_run_device(demo, device, evaluation):
    task = ClassificationTask(ClassificationOptions(valid_split=0.25), data=ids_data(20))
    run = make_run(demo, device=device)
    for stream in STREAMS:
        loader = task.loader(stream, batch_size=2, run=run, evaluation=evaluation)
        batches = list(loader)
        assert len(batches) == len(loader) > 0
        for x, y in batches:
            assert x.device.type == y.device.type == torch.device(device).type
            assert x.shape == y.shape and 1 <= len(x) <= 2


def _order(task, stream, config, **kw) -> list[int]:
    return [int(v) for x, _ in task.loader(stream, batch_size=4, run=make_run(config, **kw)) for v in x]


def test_loader_order_depends_on_seed_epoch_and_stream(demo):
    task = ClassificationTask(ClassificationOptions(valid_split=0.0, search_split=0.5), data=ids_data(80))
    first = _order(task, "train", demo, seed=1, epoch=3)
    assert sorted(first) == list(range(80)) and first != list(range(80))
    torch.manual_seed(123)  # the global RNG plays no part
    assert _order(task, "train", demo, seed=1, epoch=3) == first
    assert _order(task, "train", demo, seed=1, epoch=4) != first
    assert _order(task, "train", demo, seed=2, epoch=3) != first
    # the two search halves are as large: the same generator would shuffle them alike
    weights, arch = _order(task, "weights", demo, seed=1, epoch=3), _order(task, "arch", demo, seed=1, epoch=3)
    assert [i - 40 for i in arch] != weights


def test_a_resumed_epoch_reads_the_same_batches(demo):
    task = ClassificationTask(ClassificationOptions(valid_split=0.0), data=ids_data(40))
    through = make_run(demo, seed=5)
    epoch0 = [int(v) for x, _ in task.loader("train", batch_size=4, run=through) for v in x]
    again = [int(v) for x, _ in task.loader("train", batch_size=4, run=through) for v in x]
    assert again != epoch0  # the same generator all epoch long: a second pass is a new order
    through.start_epoch_state(1)
    epoch1 = [int(v) for x, _ in task.loader("train", batch_size=4, run=through) for v in x]
    assert epoch1 == _order(task, "train", demo, seed=5, epoch=1) != epoch0


def test_train_keeps_its_last_partial_batch_search_streams_drop_it_and_evaluation_reads_all(demo):
    task = ClassificationTask(ClassificationOptions(valid_split=0.0), data=ids_data(10, n_test=5))
    run = make_run(demo)
    assert [len(x) for x, _ in task.loader("train", batch_size=4, run=run)] == [4, 4, 2]  # as the DARTS code
    assert [len(x) for x, _ in task.loader("weights", batch_size=4, run=run)] == [4]  # the search's 5 images
    assert [len(x) for x, _ in task.loader("train", batch_size=3, run=run)] == [3, 3, 3]  # a batch of 1: dropped
    assert [len(x) for x, _ in task.loader("train", batch_size=4, run=run, evaluation=True)] == [4, 4, 2]
    assert [len(x) for x, _ in task.loader("test", batch_size=4, run=run, evaluation=True)] == [4, 1]


def test_example_inputs(demo):
    task = ClassificationTask(ClassificationOptions(), data=ones_images(8))
    (x,) = task.example_inputs(torch.device("cpu"))
    assert x.shape == (1, 1, 8, 8) and x.device.type == "cpu"
