"""DARTS-PT (plugin nas_darts_pt): on a constructed supernet whose ops' effect on accuracy is known, the
selection keeps the op whose masking hurts most (not the largest alpha) and, per node, the k inputs
whose masking hurts most; masking sets one mixing weight to 0 without renormalising; decided edges
read their decision in every pass of the fine-tuning, a perturbation included; the tie rules equal
the authors' loops; a tiny search end to end, and --resume in the middle of the selection ending
with the same genotype and supernet; bad input. The side-by-side check against the authors' code is
benchmarks/fidelity/darts_pt.py."""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from conftest import TINY, refused
from nas_core import ArchSpec, ConfigError, DataInfo, MixingWeights, Perturbation, Relaxation, Supernet, cli, top_k_genotype
from nas_core.checkpoint import load_checkpoint
from nas_core.config import resolve
from nas_darts_pt.options import DartsPtOptions
from nas_darts_pt.selection import (DartsPtPhase, Projection, Score, most_harmful, most_harmful_k)
from nas_tasks.classification import ClassificationOptions, ClassificationTask
from nas_tasks.image_datasets import LabelledImages

# A constructed supernet: logits = x @ T^T with T = sum over edges e and ops j of w[e, j] * M_j, so each
# op's share of the accuracy is known. "signal" adds the identity (the true class), "decoy" a
# permutation (a wrong class), "idle" nothing; "none" is the zero op.
OPS = ("none", "idle", "signal", "decoy")
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # node 3 has three inputs: one is pruned
CLASSES = 5
SPEC = ArchSpec(ops=OPS, edges={"normal": EDGES}, num_inputs=1, inputs_per_node=2)


class KnownSupernet(Supernet):
    def __init__(self) -> None:
        super().__init__()
        eye = torch.eye(CLASSES)
        self.register_buffer("maps", torch.stack([0 * eye, 0 * eye, eye, eye[torch.arange(CLASSES).roll(1)]]))
        self.scale = nn.Parameter(torch.ones(()))  # something for the fine-tuning to train

    def forward(self, x: torch.Tensor, *, arch_weights: MixingWeights) -> torch.Tensor:
        total = torch.einsum("ej,jab->ab", arch_weights["normal"], self.maps)
        return self.scale * x @ total.T


class Alphas(Relaxation):
    def __init__(self, alphas: torch.Tensor) -> None:
        super().__init__()
        self.alpha = nn.Parameter(alphas.clone())

    def weights(self, sample=None) -> MixingWeights:
        return MixingWeights({"normal": torch.softmax(self.alpha, -1)})

    def strengths(self):
        return {"normal": torch.softmax(self.alpha.detach(), -1)}


class FakeRun:
    """What the phase reads from its run outside the engine."""

    def __init__(self, components: dict, epoch: int = 0) -> None:
        self.seed, self.epoch, self.rank, self.world_size = 0, epoch, 0, 1
        self.device, self.components, self.generators = torch.device("cpu"), components, {}

    def generator(self, stream: str) -> torch.Generator:
        return self.generators.setdefault(stream, torch.Generator().manual_seed(self.epoch))

    def reduce(self, tensors):
        return list(tensors)


def known_task(n: int = 400) -> ClassificationTask:
    """Noisy one-hot features of their class: a smaller true-class coefficient in T costs accuracy."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(CLASSES, (n,), generator=g)
    x = nn.functional.one_hot(y, CLASSES).float() + 0.6 * torch.randn(n, CLASSES, generator=g)
    data = TensorDataset(x, y)
    return ClassificationTask(ClassificationOptions(search_split=0.5), data=LabelledImages(data, data,
                                                                                        DataInfo((CLASSES,), CLASSES)))


def known_phase(alphas: torch.Tensor, criterion: str = "acc", **options) -> tuple[DartsPtPhase, FakeRun]:
    task, net, relax = known_task(), KnownSupernet(), Alphas(alphas)
    components = {"task": task, "supernet": net, "relaxation": relax}
    phase = DartsPtPhase(DartsPtOptions(criterion=criterion, edge_decision="fixed", **options), task=task,
                         supernet=net, relaxation=relax, spec=SPEC, components=components, batch_size=50)
    return phase, FakeRun(components)


@pytest.mark.parametrize("criterion", ["acc", "loss"])
def test_the_op_whose_masking_hurts_most_is_kept_not_the_largest_alpha(criterion):
    alphas = torch.tensor([[0.0, 2.0, 0.0, 0.0]]).repeat(len(EDGES), 1)  # the other edges lean to idle
    alphas[0] = torch.tensor([0.0, 0.0, 1.5, 2.0])  # edge 0: the decoy has the largest alpha, the signal the next
    phase, run = known_phase(alphas, criterion)
    baseline = phase.score(("normal", 1, 0), run)  # masking "none" changes nothing
    record = phase.decide_op("normal", run.generator("darts_pt"), run)
    assert record["edge"] == 0 and record["chosen"] == "signal"
    assert phase.projection.ops["normal"] == {0: OPS.index("signal")}
    masked = {op: Score(**s) for op, s in record["masked"].items()}
    assert set(masked) == {"idle", "signal", "decoy"}  # the zero op is never a candidate
    # the signal's mask costs accuracy, the decoy's gains some: the largest alpha is the op least needed
    assert masked["signal"].acc < baseline.acc < masked["decoy"].acc
    assert masked["signal"].loss > baseline.loss > masked["decoy"].loss
    assert masked["idle"] == baseline  # a weight of 0 contributes 0: the others are not renormalised
    assert top_k_genotype(phase.relaxation.strengths(), SPEC, 2).cells["normal"].nodes[0] == (("decoy", 0),)


def test_the_mask_zeroes_one_weight_without_renormalising_and_decisions_are_one_hot():
    alphas = torch.randn(len(EDGES), len(OPS), requires_grad=True)
    soft = torch.softmax(alphas, -1)
    projection = Projection(SPEC)
    projection.ops["normal"][2] = 3
    projection.pruned["normal"].add(4)
    with projection.masked(("normal", 0, 1)):
        w = projection.apply({"normal": soft})["normal"]
    expected = soft.detach().clone()
    expected[0, 1] = 0
    expected[2] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    expected[4] = 0
    assert torch.equal(w.detach(), expected)
    assert torch.equal(projection.apply({"normal": expected})["normal"], expected)  # idempotent
    # gradients reach only the undecided entries
    probe = torch.randn(soft.shape)
    (grad,) = torch.autograd.grad((projection.apply({"normal": soft})["normal"] * probe).sum(), alphas)
    assert torch.all(grad[[2, 4]] == 0) and torch.any(grad[0] != 0)


@pytest.mark.parametrize("criterion", ["acc", "loss"])
def test_edge_pruning_keeps_the_k_inputs_whose_masking_hurts_most(criterion):
    alphas = torch.zeros(len(EDGES), len(OPS))
    alphas[4, 3] = 5.0  # node 3's input from node 1 has the strongest op of the node: a decoy
    phase, run = known_phase(alphas, criterion)
    decided = {0: "signal", 1: "signal", 2: "idle", 3: "signal", 4: "decoy", 5: "idle"}
    phase.projection.ops["normal"] = {row: OPS.index(op) for row, op in decided.items()}
    run.epoch = phase.op_epochs  # the second part
    record = phase.decide_edges("normal", run.generator("darts_pt"), run)
    assert record["node"] == 3 and record["kept_inputs"] == [0, 2]
    masked = {int(src): Score(**s) for src, s in record["masked"].items()}
    assert masked[0].harm(criterion) > masked[2].harm(criterion) > masked[1].harm(criterion)
    assert phase.projection.pruned["normal"] == {4}
    assert phase.crowded("normal") == [3] and phase.epochs == len(EDGES) + 1
    genotype = top_k_genotype(phase.projection.apply(phase.relaxation.strengths()), SPEC, 2)
    assert genotype.cells["normal"].nodes == ((("signal", 0),), (("signal", 0), ("idle", 1)),
                                              (("signal", 0), ("idle", 2)))
    # DARTS's rule on the same alphas would keep the decoy
    assert ("decoy", 1) in top_k_genotype(phase.relaxation.strengths(), SPEC, 2).cells["normal"].nodes[2]


def their_op(accs: list[float]) -> int:
    """projection.py project_op with criterion acc: a strictly lower accuracy replaces the best."""
    best, extreme = 0, None
    for i, acc in enumerate(accs):
        if extreme is None or acc < extreme:
            best, extreme = i, acc
    return best


def their_edges(accs: list[float], k: int) -> list[int]:
    """projection.py project_edge with criterion acc: drop the edge whose masking leaves the highest
    accuracy (ties: the later one, `not compare`), each measured with only itself masked."""
    eids = list(range(len(accs)))
    while len(eids) > k:
        todel, extreme = None, None
        for e in eids:
            if extreme is None or not accs[e] < extreme:
                todel, extreme = e, accs[e]
        eids.remove(todel)
    return eids


@pytest.mark.parametrize("seed", range(20))
def test_tie_rules_equal_the_authors_loops(seed):
    rng = random.Random(seed)
    accs = [rng.choice([0.5, 0.6, 0.7]) for _ in range(rng.randint(2, 7))]
    scores = [Score(loss=0.0, acc=a) for a in accs]
    assert most_harmful(scores, "acc") == their_op(accs)
    assert most_harmful_k(scores, 2, "acc") == their_edges(accs, 2)


class Nudge(Perturbation):
    """Moves every mixing weight of the weight pass by +0.5, recording what it was given."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def perturb(self, mix, loss_of, generator, run):
        self.seen.append(mix["normal"].clone())
        return MixingWeights({k: w + 0.5 for k, w in mix.items()})


def test_fine_tuning_reads_the_decisions_in_every_pass_and_trains_only_undecided_alphas():
    alphas = torch.randn(len(EDGES), len(OPS), generator=torch.Generator().manual_seed(0))
    phase, run = known_phase(alphas, arch_weight_decay=0.0)
    phase.projection.ops["normal"][1] = OPS.index("signal")
    nudge = Nudge()
    run.components["perturbation"] = nudge
    seen: list[torch.Tensor] = []
    phase.supernet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["arch_weights"]["normal"].detach()),
                                             with_kwargs=True)
    batch = next(iter(phase.task.loader("arch", batch_size=50, run=run, evaluation=True)))
    before = phase.relaxation.alpha.detach().clone()
    phase.step((batch, batch), {}, run)
    one_hot = torch.nn.functional.one_hot(torch.tensor(OPS.index("signal")), len(OPS)).float()
    assert len(seen) == 2  # the architecture pass, then the weight pass
    assert all(torch.equal(w[1], one_hot) for w in seen)  # the perturbed pass too: decisions applied after
    assert torch.equal(nudge.seen[0][1], one_hot) and len(nudge.seen) == 1  # the weight pass alone
    assert not torch.allclose(seen[1][0], seen[0][0])  # ... which it did perturb
    after = phase.relaxation.alpha.detach()
    assert torch.equal(after[1], before[1]) and not torch.equal(after[0], before[0])
    assert float(phase.supernet.scale.detach()) != 1.0


def test_a_relaxation_drawing_one_op_per_edge_is_refused():
    class Hard(Alphas):
        def weights(self, sample=None):
            return MixingWeights({"normal": torch.eye(len(OPS))[[1] * len(EDGES)]}, chosen={"normal": (1,) * len(EDGES)})

    task, net = known_task(), KnownSupernet()
    with pytest.raises(ConfigError, match="hard sampling"):
        DartsPtPhase(DartsPtOptions(), task=task, supernet=net, relaxation=Hard(torch.zeros(6, 4)), spec=SPEC,
                     components={}, batch_size=8)


def test_the_paper_preset_is_their_script(registries):
    config = resolve(registries, [], preset="darts_pt_paper")
    assert "none" not in config.space.options.ops and len(config.space.options.ops) == 7  # s5
    opts = config.discretizer.options
    assert (config.discretizer.name, opts.criterion, opts.edge_decision, opts.proj_intv) == ("darts_pt", "acc",
                                                                                             "random", 5)
    assert opts.tune_lr == pytest.approx(config.optimizer.options.w_lr / 10)
    assert (config.optimizer.name, config.search.epochs, config.search.batch_size) == ("darts_1st", 50, 64)
    assert config.optimizer.options.arch_lr == 3e-4


SMALL = [*TINY, "--set", "space.nodes=2", "--set", "space.ops=[none, skip_connect, sep_conv_3x3, avg_pool_3x3]",
         "--set", "search.epochs=1", "--optimizer", "darts_1st", "--discretizer", "darts_pt",
         "--set", "discretizer.proj_intv=2", "--set", "discretizer.max_eval_batches=1",
         "--set", "discretizer.max_tune_steps=1"]


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes (issue 20)
def test_a_tiny_search_selects_by_masking_and_resumes_mid_selection(tmp_path, monkeypatch):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert cli.main(["run", "--preset", "demo", *SMALL, "--out", str(whole)]) == 0
    phase_dir = whole / "final" / "darts_pt"
    decisions = json.loads((phase_dir / "decisions.json").read_text())
    # nodes=2: 5 edges per cell type, then node 3's three inputs pruned to 2: 6 decisions of 2 cells each
    assert [d["decision"] for d in decisions] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    genotype = json.loads((whole / "genotype.json").read_text())
    for cell_type in ("normal", "reduce"):
        chosen = {(d["input"], d["node"]): d["chosen"] for d in decisions if d["cell"] == cell_type and "chosen" in d}
        kept = next(d["kept_inputs"] for d in decisions if d["cell"] == cell_type and "kept_inputs" in d)
        nodes = genotype[cell_type]["nodes"]
        assert [len(n) for n in nodes] == [2, 2]
        assert sorted(src for _, src in nodes[1]) == kept
        assert all(chosen[(src, node + 2)] == op for node, pairs in enumerate(nodes) for op, src in pairs)
    assert json.loads((whole / "results.json").read_text())["genotype"] == genotype
    assert "none" not in json.dumps(genotype)  # the zero op is never a candidate
    assert load_checkpoint(phase_dir / "checkpoint.pt")["epoch"] == 5

    real_step = DartsPtPhase.step

    def interrupted(self, batch, state, run):
        if run.epoch == 3:  # in the fourth decision's fine-tuning
            raise KeyboardInterrupt
        return real_step(self, batch, state, run)

    monkeypatch.setattr(DartsPtPhase, "step", interrupted)
    assert cli.main(["run", "--preset", "demo", *SMALL, "--out", str(broken)]) == 130
    assert load_checkpoint(broken / "final" / "darts_pt" / "checkpoint.pt")["epoch"] == 2
    assert not (broken / "results.json").exists()
    monkeypatch.setattr(DartsPtPhase, "step", real_step)
    assert cli.main(["run", "--resume", str(broken), "--no-progress"]) == 0
    assert (broken / "genotype.json").read_text() == (whole / "genotype.json").read_text()
    assert (broken / "final" / "darts_pt" / "decisions.json").read_text() == (phase_dir / "decisions.json").read_text()
    tuned = load_checkpoint(broken / "final" / "darts_pt" / "checkpoint.pt")
    expected = load_checkpoint(phase_dir / "checkpoint.pt")
    for part in ("supernet", "relaxation"):
        assert all(torch.equal(tuned[part][k], expected[part][k]) for k in expected[part])


BAD = [
    (["--set", "discretizer.criterion=top5"], "invalid discretizer option: 'criterion' must be in ('acc', 'loss')"),
    (["--set", "discretizer.edge_decision=sgas"],
     "invalid discretizer option: 'edge_decision' must be in ('random', 'fixed')"),
    (["--set", "discretizer.proj_intv=0"], "invalid discretizer option: 'proj_intv' must be >= 1"),
    (["--set", "discretizer.max_eval_batches=0"], "invalid discretizer option: 'max_eval_batches' must be >= 1"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[a[-1] for a, _ in BAD])
def test_bad_darts_pt_options_are_one_line(tmp_path, capsys, args, message):
    err = refused(capsys, ["run", "--preset", "darts_pt_demo", *TINY, "--set", "search.epochs=1", *args],
                  tmp_path / "out")
    assert err.startswith(f"nas: error: {message}"), err


@pytest.mark.slow  # compositions; the selection itself is tested end to end above, in the default suite
@pytest.mark.parametrize("args", [["--perturbation", "sdarts_rs"], ["--set", "space.edge.name=darts_minus"]],
                         ids=["sdarts_rs", "darts_minus"])
def test_the_selection_runs_over_other_supernets(tmp_path, args):
    """SDARTS-RS's perturbed weight pass and DARTS-'s edge (its auxiliary skip at 0 in a final phase)."""
    out = tmp_path / "run"
    assert cli.main(["run", "--preset", "demo", *SMALL, *args, "--out", str(out)]) == 0
    decisions = json.loads((out / "final" / "darts_pt" / "decisions.json").read_text())
    assert len(decisions) == 12
    genotype = json.loads((out / "genotype.json").read_text())
    assert all(len(node) == 2 for cell in genotype.values() for node in cell["nodes"])
