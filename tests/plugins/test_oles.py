"""OLES (plugin nas_oles): the gradient-matching score against a hand computation; a constructed case
(hand-made gradients) freezes exactly the ops whose mean score is under the threshold, with the
authors' window in their mode; frozen ops then never move while the others do, and their alpha trains
on; the scores of real steps read the validation gradient and the kept (clipped) training gradient,
first and second order; a tiny search interrupted and resumed is bit-identical (frozen set, kept
gradients, window sums); a tiny search and training end to end; presets; bad input. The side-by-side
check against the authors' code is benchmarks/fidelity/oles.py."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, StepRun, image_task, refused
from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
from nas_darts.options import SoftmaxOptions
from nas_darts.softmax import SoftmaxRelaxation
from nas_oles.optimizer import OlesOptimizer, op_scores
from nas_oles.options import OlesOptions
from torch.func import functional_call

from nas_core import DataInfo, Toolkit, cli, hookimpl
from nas_core.checkpoint import load_checkpoint

INFO = DataInfo((1, 8, 8), 10)
CONVS = {"sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"}


class SpecRun(StepRun):
    """A step's run that also tells the spec (which ops are parameter-free)."""

    def __init__(self, spec, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec


def tiny(second_order: bool = False, **options):
    torch.manual_seed(0)
    space = DartsCnnSpace(DartsCnnOptions(cells=3, channels=4, nodes=2))
    net = space.build_supernet(INFO).double()
    relax = SoftmaxRelaxation(SoftmaxOptions(init_std=1.0), spec=space.arch_spec()).double()
    opt = OlesOptimizer(OlesOptions(**options), supernet=net, relaxation=relax, task=image_task(INFO), epochs=5,
                        second_order=second_order)
    return opt, SpecRun(space.arch_spec())


def batches(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (4,), generator=g))
            for _ in range(n)]


def test_the_score_against_a_hand_computation():
    """Per tensor, the mean over the positions of dims 1.. of the cosine of the two gradients' columns
    along dim 0; per op, the mean over its tensors (shapes shared between ops, and a 1-D tensor)."""
    g = torch.Generator().manual_seed(0)
    shapes = [[(4, 1, 3, 3), (4, 4, 1, 1), (4, 1, 3, 3)], [(4, 4, 1, 1)], [(6, 2, 5), (3,)]]
    now = [[torch.randn(s, generator=g, dtype=torch.float64) for s in op] for op in shapes]
    kept = [[torch.randn(s, generator=g, dtype=torch.float64) for s in op] for op in shapes]

    def by_hand(a, b):
        a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        columns = [float(a[:, j] @ b[:, j] / (a[:, j].norm() * b[:, j].norm())) for j in range(a.shape[1])]
        return sum(columns) / len(columns)

    expected = [sum(by_hand(a, b) for a, b in zip(ops_now, ops_kept)) / len(ops_now)
                for ops_now, ops_kept in zip(now, kept)]
    assert op_scores(now, kept).tolist() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert op_scores([[2.5 * t for t in op] for op in now], kept).tolist() == pytest.approx(expected, rel=1e-12)


def test_only_the_convolutions_of_mixed_edges_score():
    """Pools, skip (FactorizedReduce on the reduction cell's stride-2 edges has weights), the zero op and
    the cells' preprocessing never score, hence never freeze."""
    opt, run = tiny()
    opt.bind(run.spec)
    names = {opt.names_of[i] for i in opt.eligible}
    assert names == CONVS and len(opt.eligible) == 3 * 5 * 4  # cells x edges x conv ops
    assert {opt.names_of[i] for i in set(range(len(opt.candidates))) - set(opt.eligible)} == {"skip_connect"}
    in_candidates = {id(p) for c in opt.candidates for p in c.params}
    for name, p in opt.net.named_parameters():
        assert (id(p) in in_candidates) == (".edges." in name), name


def test_a_supernet_without_mixed_edges_of_listed_ops_is_refused():
    from nas_oles.optimizer import candidate_ops
    from torch import nn

    from nas_core import MixedEdge

    class Opaque(MixedEdge):  # keeps its ops to itself
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

    with pytest.raises(ValueError, match="the Opaque edge at 1 does not"):
        candidate_ops(nn.Sequential(nn.Conv2d(2, 2, 1), Opaque()))
    with pytest.raises(ValueError, match="this supernet has none"):
        candidate_ops(nn.Sequential(nn.Conv2d(2, 2, 1)))


def _hand_made(opt, i: int, score: float):
    """For candidate ``i``: a kept gradient and a validation gradient whose cosine along dim 0 is
    ``score`` at every position (e0 and score * e0 + sqrt(1 - score^2) * e1 in each column)."""
    kept, now = [], []
    for p in opt.candidates[i].params:
        e0, e1 = torch.zeros_like(p), torch.zeros_like(p)
        e0[0], e1[1] = 1.0, 1.0
        kept.append(e0)
        now.append(score * e0 + math.sqrt(1 - score ** 2) * e1)
    return kept, now


# per op, its scores over a window of 2 (cycled over the eligible ops): mean under 0.4 freezes
PATTERNS = [((1.0, 0.6), False), ((0.7, 0.0), True), ((0.9, 0.0), False), ((-1.0, 1.0), True), ((0.39, 0.39), True),
            ((0.41, 0.41), False)]


def test_a_constructed_case_freezes_exactly_the_ops_under_the_threshold_and_they_stop_moving():
    opt, run = tiny(frequency=2, threshold=0.4)
    (xt1, xt2), (xv1, xv2) = batches(2), batches(2, seed=2)
    opt.step(xt1, xv1, {}, run)  # a real step first: every weight has a momentum buffer
    expected = set()
    for step in range(2):
        opt.kept, validation = {}, {}
        for n, i in enumerate(opt.eligible):
            (scores, frozen) = PATTERNS[n % len(PATTERNS)]
            kept, now = _hand_made(opt, i, scores[step])
            opt.kept[i] = kept
            validation.update(zip(opt.candidates[i].params, now))
            if frozen:
                expected.add(i)
        decided = opt.judge(validation)
        assert decided == ([] if step == 0 else [i for i in opt.eligible if i in expected])
    assert set(opt.frozen) == expected and opt.scored == 0 and float(opt.sums.abs().max()) == 0
    frozen = [p for i in expected for p in opt.candidates[i].params]
    training = [p for i in set(opt.eligible) - expected for p in opt.candidates[i].params]
    assert not any(p.requires_grad for p in frozen) and all(p.requires_grad for p in training)

    # a real step (its score opens the next window): frozen ops do not move at all, despite their momentum
    # and weight decay, every other op does, and alpha trains on
    before = {id(p): p.detach().clone() for p in opt.net.parameters()}
    buffers = {id(p): opt.w_opt.state[p]["momentum_buffer"].clone() for p in frozen}
    alphas = [a.detach().clone() for a in opt.alphas]
    opt.step(xt2, xv2, {}, run)
    assert opt.scored == 1 and set(opt.frozen) == expected
    assert all(p.grad is None and torch.equal(p, before[id(p)]) for p in frozen)
    assert all(torch.equal(opt.w_opt.state[p]["momentum_buffer"], buffers[id(p)]) for p in frozen)
    assert all(not torch.equal(p, before[id(p)]) for p in training)
    assert all(not torch.equal(a, b) for a, b in zip(opt.alphas, alphas))
    # a frozen op still runs in the forward: changing its weights changes the loss
    batch = batches(1, seed=3)[0]

    def loss() -> float:
        with torch.no_grad():
            return float(opt.forward_pass(opt.weights, opt.relax.weights(), batch, None, "arch").loss)

    reference = loss()
    with torch.no_grad():
        for p in opt.candidates[min(expected)].params:
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(4), dtype=p.dtype))
    assert abs(loss() - reference) > 1e-6


def test_the_authors_window_adds_the_kept_gradient_and_averages_one_score_more():
    """Theirs: the validation side is kept + validation, and a decision sums frequency + 1 scores but
    divides by frequency."""
    opt, run = tiny(frequency=2, threshold=0.6, score="authors")
    opt.bind(run.spec)
    i, j = opt.eligible[:2]
    # cos(e0 + v, e0) for v = s e0 + c e1: (1 + s) / sqrt((1 + s)^2 + c^2)
    s_i, s_j = -0.8, 0.0
    seen = {i: (1 + s_i) / math.sqrt((1 + s_i) ** 2 + 1 - s_i ** 2), j: 1 / math.sqrt(2)}
    for step in range(3):
        opt.kept, validation = {}, {}
        for k, s in ((i, s_i), (j, s_j)):
            kept, now = _hand_made(opt, k, s)
            opt.kept[k] = kept
            validation.update(zip(opt.candidates[k].params, now))
        if step < 2:
            assert opt.judge(validation) == []
            assert float(opt.sums[i]) == pytest.approx(seen[i] * (step + 1), rel=1e-12)
        else:  # 3 scores / 2: op j's 3 * 0.707 / 2 = 1.06 stays; op i's 3 * 0.316 / 2 = 0.47 < 0.6 freezes
            assert opt.judge(validation) == [i]


@pytest.mark.parametrize("score", ["clean", "authors"])
def test_real_steps_score_the_validation_gradient_against_the_clipped_training_gradient(score):
    opt, run = tiny(frequency=1000, score=score, grad_clip=0.5)
    (xt1, xt2), (xv1, xv2) = batches(2), batches(2, seed=2)

    def grads(batch, params, weights=None):
        mix = opt.relax.weights()
        out = opt.task.forward(lambda x: functional_call(opt.net, weights or {}, (x,), {"arch_weights": mix}), batch,
                               None)
        return torch.autograd.grad(out.loss, params)

    params = [p for c in opt.candidates for p in c.params]
    start = {n: p.detach().clone().requires_grad_(True) for n, p in opt.net.named_parameters()}
    opt.step(xt1, xv1, {}, run)
    # its weight step: at the starting weights, under the alphas its architecture step had just updated
    train = grads(xt1, list(start.values()), start)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in train]))
    assert float(norm) > 0.5  # so the clipping shows
    clipped = dict(zip(opt.net.parameters(), (g * 0.5 / (norm + 1e-6) for g in train)))
    live = opt.eligible
    assert opt.sums is None and all(torch.allclose(g, clipped[p], rtol=1e-12, atol=1e-15)
                                    for i in live for g, p in zip(opt.kept[i], opt.candidates[i].params))
    kept = [opt.kept[i] for i in live]
    validation = dict(zip(params, grads(xv2, params)))  # before the second step, at its weights
    now = [[validation[p] for p in opt.candidates[i].params] for i in live]
    if score == "authors":
        now = [[v + k for v, k in zip(vs, ks)] for vs, ks in zip(now, kept)]
    opt.step(xt2, xv2, {}, run)
    assert opt.scored == 1
    assert torch.allclose(opt.sums[live], op_scores(now, kept), rtol=1e-10, atol=1e-13)


def test_second_order_scores_the_validation_gradient_at_the_unrolled_weights(monkeypatch):
    from nas_darts.architect import DartsOptimizer

    seen = []
    hvp = DartsOptimizer.hessian_vector_product

    def spy(self, v, *args, **kwargs):
        seen.append(list(v))
        return hvp(self, v, *args, **kwargs)

    monkeypatch.setattr(DartsOptimizer, "hessian_vector_product", spy)
    opt, run = tiny(second_order=True, frequency=1000)
    (xt1, xt2), (xv1, xv2) = batches(2), batches(2, seed=2)
    opt.step(xt1, xv1, {}, run)
    kept = [opt.kept[i] for i in opt.eligible]
    opt.step(xt2, xv2, {}, run)
    v = dict(zip(opt.weights, seen[-1]))  # grad_w' L_val(w', alpha), as the hypergradient took it
    now = [[v[p] for p in opt.candidates[i].params] for i in opt.eligible]
    assert torch.allclose(opt.sums[opt.eligible], op_scores(now, kept), rtol=1e-10, atol=1e-13)


class StopAsEpochThreeStarts:
    @hookimpl
    def nas_epoch_start(self, run):
        if run.epoch == 2:
            raise KeyboardInterrupt


# a decision every 2 scores (TINY has 2 steps an epoch: at steps 3 and 5), a clean score whose threshold
# freezes some ops at each decision, not all
FORCED = ["--set", "optimizer.frequency=2", "--set", "optimizer.score=clean", "--set", "optimizer.threshold=0.05"]


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes (issue 20)
def test_an_interrupted_search_resumes_bit_identically_with_its_frozen_ops(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    args = ["run", "--preset", "oles_demo", *TINY, *FORCED, "--set", "search.epochs=3"]
    assert cli.main([*args, "--out", str(whole)]) == 0
    assert cli.main([*args, "--out", str(broken)], plugins=[StopAsEpochThreeStarts()]) == 130
    first = load_checkpoint(broken / "checkpoint.pt")["optimizer"]["oles"]
    # what the resume needs: ops frozen at step 3, a window holding step 4's score, step 4's kept gradients
    assert first["scored"] == 1 and any(first["sums"].values()) and first["kept"]
    assert cli.main(["run", "--resume", str(broken), "--no-progress"]) == 0
    a, b = (load_checkpoint(d / "checkpoint.pt") for d in (whole, broken))
    eligible = 3 * 14 * 4
    assert 0 < len(first["frozen"]) < len(a["optimizer"]["oles"]["frozen"]) < eligible
    for part in ("supernet", "relaxation"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    oa, ob = a["optimizer"], b["optimizer"]
    assert oa["oles"]["frozen"] == ob["oles"]["frozen"] and oa["oles"]["scored"] == ob["oles"]["scored"]
    assert oa["oles"]["sums"] == ob["oles"]["sums"] and oa["oles"]["kept"].keys() == ob["oles"]["kept"].keys()
    ka, kb = oa["oles"]["kept"], ob["oles"]["kept"]
    assert all(torch.equal(x, y) for k in ka for x, y in zip(ka[k], kb[k]))
    buffers = [(oa["w_opt"]["state"][k]["momentum_buffer"], ob["w_opt"]["state"][k]["momentum_buffer"])
               for k in oa["w_opt"]["state"]]
    assert buffers and all(torch.equal(x, y) for x, y in buffers)
    assert (whole / "genotype.json").read_text() == (broken / "genotype.json").read_text()
    # each freezing logged once, also across the resume; the count is an epoch metric (so TensorBoard
    # plots it as every epoch metric: tests/plugins/test_tensorboard.py)
    for run in (whole, broken):
        assert (run / "log.txt").read_text().count("OLES: froze ") == len(oa["oles"]["frozen"])
    assert a["metrics"]["oles_frozen"] == len(oa["oles"]["frozen"])


@pytest.mark.slow  # the first-order search runs end to end above, resumed
def test_a_tiny_second_order_search_then_training_end_to_end(tmp_path):
    run = tmp_path / "search"
    assert cli.main(["run", "--preset", "oles_demo", *TINY, *FORCED, "--set", "optimizer.name=oles_2nd",
                     "--set", "search.epochs=2", "--out", str(run)]) == 0
    record = Toolkit.load().load_search(run)
    assert record.complete and record.metrics["oles_frozen"] > 0
    assert cli.main(["train", "--preset", "oles_demo", "--genotype", str(run / "genotype.json"),
                     "--set", "network.cells=3", "--set", "network.channels=8", "--set", "train.epochs=1",
                     "--set", "train.max_steps_per_epoch=2", "--set", "train.batch_size=16", "--no-progress",
                     "--out", str(tmp_path / "train")]) == 0


def test_the_presets(registries):
    from nas_core.config import resolve

    demo = resolve(registries, [], preset="oles_demo")
    o = demo.optimizer.options
    assert (demo.optimizer.name, o.frequency, o.threshold, o.score, o.w_lr, o.arch_lr) == (
        "oles", 20, 0.4, "authors", 0.05, 3e-3)
    assert (demo.dataset.name, demo.relaxation.name, demo.discretizer.name) == ("digits", "softmax", "topk")
    paper = resolve(registries, [], preset="oles_paper")
    o = paper.optimizer.options
    assert (paper.optimizer.name, o.frequency, o.threshold, o.score) == ("oles", 20, 0.4, "authors")
    assert (o.w_lr, o.w_lr_min, o.w_momentum, o.w_weight_decay, o.grad_clip) == (0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (o.arch_lr, o.arch_betas, o.arch_weight_decay, o.freeze_alpha_epochs) == (3e-4, (0.5, 0.999), 1e-3, 0)
    assert (paper.search.epochs, paper.search.batch_size, paper.dataset.name) == (50, 64, "cifar10")
    assert (paper.space.options.cells, paper.space.options.channels, len(paper.space.options.ops)) == (8, 16, 8)


BAD = [
    (["--set", "optimizer.threshold=1.5"], "invalid optimizer option: 'threshold' must be <= 1.0"),
    (["--set", "optimizer.frequency=0"], "invalid optimizer option: 'frequency' must be >= 1"),
    (["--set", "optimizer.score=paper"], "invalid optimizer option: 'score' must be in"),
    (["--set", "optimizer.name=oles_2nd", "--set", "optimizer.score=authors"],
     "optimizer 'oles_2nd': score: authors reproduces the authors' first-order search"),
    (["--set", "relaxation.name=gdas"], "optimizer 'oles': OLES scores every candidate op at every step"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[a[-1] for a, _ in BAD])
def test_bad_oles_input_is_one_line(tmp_path, capsys, args, message):
    err = refused(capsys, ["run", "--preset", "oles_demo", *TINY, *args], tmp_path / "out")
    assert err.startswith(f"nas: error: {message}"), err
