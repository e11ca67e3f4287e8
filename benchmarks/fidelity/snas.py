"""nas_snas side by side with the authors' SNAS code (Xie et al., ICLR 2019;
https://github.com/SNAS-Series/SNAS-Series, SNAS/): their model_search.Network and the update of
train_search.py's ``train()`` (run as it is, on a one-batch queue) against darts_cnn with the
``snas`` relaxation and the ``snas`` optimizer, in float64 on one thread, from identical weights,
alphas, batch and Gumbel draws (their ``uniform_`` is made to return the uniforms our draw came from).

    SNAS_SRC=/path/to/SNAS-Series/SNAS python benchmarks/fidelity/snas.py

Compared, at tau 1 - 0.97/150 (their first epoch) and 0.03 (their last): every mixed edge's output,
the loss, alpha's gradient (after their clipping to norm 10), then after their one single-level
step every weight and BN statistic and both alphas; then the genotype each derives
(``genotype_edge_all`` vs ``snas_argmax``), and the snas_paper preset against their README command
and train_search.py defaults. Their search runs with drop-path 0 (the README's 0.3 drops whole
edge outputs at random in the search; darts_cnn's supernet has no drop-path) and without the
resource term. Their code is imported, never copied; in memory, ``.cuda()`` is the identity, their
``torch.device("cuda")`` is the CPU, ``tensorboardX`` a stub, and the accuracy it logs is
computed without a ``.view`` that today's torch refuses (benchmarks/fidelity/gdas.py's). Figures in benchmarks/fidelity/snas.md.
"""

from __future__ import annotations

import logging
import shlex
import sys
import types
from pathlib import Path

import torch
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gdas import accuracy
from pcdarts import BATCH, CLASSES, SIZE, Report, StepRun, catalog, copy_state, image_task, name_map, rel, setup, source

ROOT = Path(__file__).resolve().parents[2]
C, CELLS = 4, 3
# their README's single-GPU search, less what is not built here (the resource term: --resource_efficient,
# --resource_lambda, --log_penalty, --method, --loss); drop-path set to 0 for the comparison (see above)
README = ("--snas --epochs 150 --seed 6 --layer 8 --init_channels 16 --temp 1 --temp_min 0.03 --nsample 1 "
          "--temp_annealing --drop_path_prob 3e-1")


def main() -> int:
    src = source("SNAS_SRC", "model_search.py", "https://github.com/SNAS-Series/SNAS-Series (its SNAS folder)")
    setup(src)
    sys.modules.setdefault("tensorboardX", types.SimpleNamespace(SummaryWriter=None))
    sys.argv = ["train_search.py", *shlex.split(README)]
    import model_search  # theirs
    import train_search  # theirs: parses sys.argv as it is imported

    cpu_torch = types.ModuleType("torch")  # their model's torch, with the GPU device it asks for being the CPU
    cpu_torch.__getattr__ = lambda name: getattr(torch, name)
    cpu_torch.device = lambda *a, **k: torch.device("cpu")
    model_search.torch = cpu_torch
    train_search.utils.accuracy = accuracy  # theirs .view()s a slice today's torch refuses; it only logs

    report = Report()
    check_settings(train_search.args, report)
    same = True
    for tau in (1 - 0.97 / 150, 0.03):
        print(f"one search step at tau = {tau:.4g}:")
        same &= compare(model_search, train_search, tau, report)
    return report.verdict() if same else 1


def check_settings(args, report: Report) -> None:
    """The snas_paper preset against their README command and train_search.py's defaults."""
    preset = yaml.safe_load((ROOT / "plugins/nas_snas/presets/snas_paper.yaml").read_text())
    o, r, s = preset["optimizer"], preset["relaxation"], preset["search"]
    pairs = [(o["w_lr"], args.learning_rate), (o["w_lr_min"], args.learning_rate_min),
             (o["w_momentum"], args.momentum), (o["w_weight_decay"], args.weight_decay),
             (o["grad_clip"], args.grad_clip), (o["arch_lr"], args.arch_learning_rate),
             (r["tau0"], args.temp), (r["tau_min"], args.temp_min), (r["init_mean"], args.loc_mean),
             (r["init_std"], args.loc_std), (s["epochs"], args.epochs), (s["batch_size"], args.batch_size),
             (preset["space"]["cells"], args.layers), (preset["space"]["channels"], args.init_channels)]
    bad = [p for p in pairs if p[0] != p[1]]
    print(f"settings: {len(pairs) - len(bad)} of {len(pairs)} preset values equal theirs" + (f"; differ: {bad}" if bad else ""))
    report.add("preset settings differing from theirs (count)", float(len(bad)))


def compare(model_search, train_search, tau: float, report: Report) -> bool:
    from nas_darts import plugin as darts_plugin
    from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace
    from nas_snas.argmax import SnasArgmaxDiscretizer
    from nas_snas.optimizer import SnasOptimizer
    from nas_snas.options import SnasArgmaxOptions, SnasOptimizerOptions, SnasOptions
    from nas_snas.relaxation import SnasRelaxation

    args = train_search.args
    args.layers, args.init_channels, args.drop_path_prob = CELLS, C, 0.0
    torch.manual_seed(0)
    theirs = model_search.Network(C, CLASSES, CELLS, nn.CrossEntropyLoss(), args, 0, 1)
    theirs._temp = tau
    space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=C), catalog=catalog(("darts", darts_plugin)))
    task, info = image_task()
    ours = space.build_supernet(info)
    spec = space.arch_spec()
    assert spec.ops == tuple(model_search.PRIMITIVES)
    mapping = name_map(theirs, ours)
    copy_state(theirs, ours, mapping)
    relax = SnasRelaxation(SnasOptions(), spec=spec)
    relax.tau.fill_(tau)
    with torch.no_grad():  # their alphas, drawn N(1, 0.01) as ours, spread out so that ops rank apart
        for t in ("normal", "reduce"):
            their_alpha = getattr(theirs, f"{t}_log_alpha")
            their_alpha.copy_(1 + torch.randn(their_alpha.shape))
            relax.alphas[t].copy_(their_alpha)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), torch.randint(CLASSES, (BATCH,), generator=gen)

    # the uniforms our draw is made of: the relaxation's generator, replayed (normal, then reduce)
    replay = torch.Generator().manual_seed(0)
    uniforms = [torch.rand(spec.shape(t), generator=replay) for t in ("normal", "reduce")]
    their_edges, our_edges = record(theirs.cells, "_ops"), record(ours.cells, "edges")

    # theirs: train_search.py's train() on a one-batch queue, its optimizers as its init_optimizer builds them
    nas = object.__new__(train_search.neural_architecture_search)
    nas.args, nas.model, nas.device, nas.rank, nas.world_size = args, theirs, torch.device("cpu"), 0, 1
    nas.criterion, nas.update_theta, nas.update_alpha = nn.CrossEntropyLoss(), True, True
    nas.logger = types.SimpleNamespace(add_scalar=lambda *a, **k: None)
    nas.init_optimizer()
    nas.train_queue = OneBatch([(x, y)])
    their_grads = recorded_grads(nas.arch_optimizer, theirs.arch_parameters())
    uniform = torch.Tensor.uniform_
    queue = list(uniforms)
    torch.Tensor.uniform_ = lambda self, *a, **k: self.copy_(queue.pop(0))
    try:
        theirs.train()
        _, _, their_loss, _ = nas.train(0, logging.getLogger("snas-theirs"))
    finally:
        torch.Tensor.uniform_ = uniform
    assert not queue, "their step drew other than one uniform per cell type"

    options = SnasOptimizerOptions(w_lr=args.learning_rate, w_lr_min=args.learning_rate_min, w_momentum=args.momentum,
                                   w_weight_decay=args.weight_decay, grad_clip=args.grad_clip, arch_optimizer="sgd",
                                   arch_lr=args.arch_learning_rate, arch_grad_clip=10.0, read_arch_stream=False)
    optimizer = SnasOptimizer(options, supernet=ours, relaxation=relax, task=task, epochs=args.epochs)
    our_grads = recorded_grads(optimizer.a_opt, list(relax.alphas.values()))
    ours.train()
    result = optimizer.step((x, y), (x, y), {}, StepRun())

    report.add("  mixed-edge outputs (3 cells x 14 edges)", max(rel(a, b) for a, b in zip(our_edges, their_edges, strict=True)))
    report.add("  loss", rel(result.metrics["train"]["loss"], their_loss))
    for t, a, b in zip(("normal", "reduce"), our_grads, their_grads):
        report.add(f"  alpha gradient, {t}", rel(a, b))
    # a few BN running means of the pools are rounding noise around zero (|theirs| < 1e-15): a relative
    # figure means nothing there, so they are reported apart, by their absolute difference
    o = ours.state_dict()
    noise = {k for k, v in theirs.state_dict().items() if v.is_floating_point() and float(v.abs().max()) < 1e-15}
    report.add("  weights and BN statistics after the step", max(
        rel(o[mapping[k]], v) for k, v in theirs.state_dict().items() if k not in noise))
    report.add(f"  {len(noise)} BN statistics at rounding level (< 1e-15): max ABSOLUTE difference",
               max([float((o[mapping[k]] - theirs.state_dict()[k]).abs().max()) for k in noise], default=0.0))
    report.add("  alphas after the step", max(rel(relax.alphas[t], getattr(theirs, f"{t}_log_alpha"))
                                              for t in ("normal", "reduce")))
    derived = SnasArgmaxDiscretizer(SnasArgmaxOptions()).derive(relax.strengths(), spec)
    g = theirs.genotype_edge_all()
    same = all([list(node) for node in derived.cells[t].nodes] == split(getattr(g, t)) and
               list(derived.cells[t].concat) == list(getattr(g, f"{t}_concat")) for t in ("normal", "reduce"))
    print(f"  genotype: snas_argmax {'derives' if same else 'does NOT derive'} their genotype_edge_all()")
    return same


class OneBatch(list):
    """Their train() reads ``len(self.train_queue.dataset)`` for its log's step numbers."""

    @property
    def dataset(self) -> list:
        return self


def split(gene: list) -> list[list[tuple[str, int]]]:
    """Their flat gene list, node by node (node i has i + 2 entries)."""
    nodes, start = [], 0
    for i in range(4):
        nodes.append([tuple(pair) for pair in gene[start:start + i + 2]])
        start += i + 2
    return nodes


def record(cells, attribute: str) -> list:
    """The outputs of every mixed edge, appended in the order the cells run them."""
    out: list = []
    for cell in cells:
        for edge in getattr(cell, attribute):
            edge.register_forward_hook(lambda module, inputs, output: out.append(output.detach().clone()))
    return out


def recorded_grads(optimizer: torch.optim.Optimizer, params: list) -> list:
    """The gradients ``params`` hold when ``optimizer`` steps (after clipping), appended in order."""
    out: list = []
    step = optimizer.step

    def recording(*a, **k):
        out.extend(p.grad.detach().clone() for p in params)
        return step(*a, **k)

    optimizer.step = recording
    return out


if __name__ == "__main__":
    sys.exit(main())
