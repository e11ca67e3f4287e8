"""FairDARTS (plugin nas_fairdarts) side by side with the authors' code, xiaomi-automl/FairDARTS:

1. one search step: their supernet (fairdarts/model_search.py), their ``train()`` of
   fairdarts/train_search.py on one batch (their Architect's step with the zero-one loss, then the
   weight step), against ours built from the ``fairdarts_paper`` preset (``darts_1st`` over the
   ``sigmoid`` relaxation), in float64 on a tiny network (5 cells, C=4, 8x8 inputs, batch 4) with
   identical weights, alphas and batches, for both zero-one losses (l2 and l1);
2. the derivation: their ``parse(..., 'threshold_sparse')`` and evaluation network (``DCOCell``,
   which drops isolated nodes) against our ``threshold`` discretizer and darts_cnn's network built
   from its genotype, with identical weights: the genotypes node for node and the networks' outputs.

    FAIRDARTS_SRC=/path/to/FairDARTS python benchmarks/fidelity/fairdarts.py [-v]

Their code is imported from the checkout, never copied; the shims only make it run on a CPU with
today's torch. The figures are in benchmarks/fidelity/fairdarts.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
CELLS, CHANNELS = 5, 4


def main() -> int:
    src = os.environ.get("FAIRDARTS_SRC")
    if not src:
        print("skipped: set FAIRDARTS_SRC=<a checkout of https://github.com/xiaomi-automl/FairDARTS>")
        return 0
    import torch

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    theirs = import_theirs(Path(src))
    worst = 0.0
    for kind in ("l2", "l1"):
        print(f"\n== one search step, zero-one loss {kind} ==")
        worst = max(worst, search_step(theirs, kind, verbose="-v" in sys.argv))
    print("\n== the threshold derivation and the network of its genotype ==")
    worst = max(worst, derivation(theirs))
    print(f"\nmax relative difference of everything compared: {worst:.2e}")
    return 0


def import_theirs(src: Path) -> types.SimpleNamespace:
    """Their fairdarts/ modules. ``.cuda()`` is the identity; train_search.py parses its (default)
    command line and makes its log folder when imported, so it is imported inside a temporary
    folder; its logged accuracy is computed without a ``.view`` that today's torch refuses."""
    import logging
    import warnings

    import torch

    # their code's own warnings under today's torch (F.sigmoid, clip_grad_norm, a broadcast 0.5 target)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Using a target size")

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.path.insert(0, str(src / "fairdarts"))
    here, argv = os.getcwd(), sys.argv
    os.chdir(tempfile.mkdtemp(prefix="fairdarts-"))
    sys.argv = ["train_search.py"]
    try:
        import genotypes
        import model as eval_model
        import train_search
        import utils
    finally:
        os.chdir(here)
        sys.argv = argv
    logging.getLogger().setLevel(logging.WARNING)  # their per-step log lines
    from gdas import accuracy

    train_search.utils.accuracy = accuracy
    return types.SimpleNamespace(script=train_search, utils=utils, eval_model=eval_model, genotypes=genotypes)


def search_step(t: types.SimpleNamespace, kind: str, verbose: bool) -> float:
    import torch

    from gdas import max_rel

    args = t.script.args
    loss_class = t.script.ConvSeparateLoss if kind == "l2" else t.script.TriSeparateLoss
    criterion = Recorder(loss_class(weight=args.aux_loss_weight))
    torch.manual_seed(0)
    net_t = t.script.Network(CHANNELS, 10, CELLS, criterion, steps=4, multiplier=4, stem_multiplier=3,
                             parse_method=args.parse_method, op_threshold=args.op_threshold)
    ours = build_ours(kind)
    zero = all(not a.any() for a in [*net_t.arch_parameters(), *ours.relax.parameters()])
    print(f"  alphas start at 0 (every weight 0.5) in both: {zero}")
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # away from their initial 0, where the zero-one loss has no gradient
        for a in net_t.arch_parameters():
            a.copy_(torch.randn(a.shape, generator=gen))
    check_settings(args, ours.config)
    copy_supernet(net_t, ours.net, verbose)
    with torch.no_grad():
        ours.relax.alphas["normal"].copy_(net_t.alphas_normal)
        ours.relax.alphas["reduce"].copy_(net_t.alphas_reduce)
    train = (torch.randn(4, 3, 8, 8, generator=gen), torch.randint(0, 10, (4,), generator=gen))
    val = (torch.randn(4, 3, 8, 8, generator=gen), torch.randint(0, 10, (4,), generator=gen))

    # theirs: train_search.py's optimisers and its train() on one batch
    model_opt = torch.optim.SGD(net_t.parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    architect = t.script.Architect(net_t, args)
    edges_t, grads_t = record_edges([e for c in net_t.cells for e in c._ops]), []
    arch_step = architect.optimizer.step
    architect.optimizer.step = lambda: (grads_t.extend(a.grad.clone() for a in net_t.arch_parameters()), arch_step())
    t.script.train([train], [val], net_t, architect, criterion, model_opt, None)
    edges_t.stop()

    # ours: darts_1st's step (the architecture step, then the weight step, as theirs)
    edges_o, grads_o = record_edges([e for c in ours.net.cells for e in c.edges]), []
    a_step = ours.opt.a_opt.step
    ours.opt.a_opt.step = lambda: (grads_o.extend(a.grad.clone() for a in ours.opt.alphas), a_step())
    result = ours.opt.step(train, val, {}, StepRun())
    edges_o.stop()

    arch, weight = result.metrics["arch"], result.metrics["train"]
    (ce_a, sep_a), (ce_w, _) = [(torch.tensor(ce), torch.tensor(sep)) for ce, sep in criterion.parts]  # .item()s
    n = len(edges_t.outputs) // 2
    rows = [(f"mixed-edge outputs, architecture pass ({n})", max_rel(edges_t.outputs[:n], edges_o.outputs[:n])),
            (f"mixed-edge outputs, weight pass ({n})", max_rel(edges_t.outputs[n:], edges_o.outputs[n:])),
            ("architecture pass: cross-entropy", max_rel([ce_a], [arch["loss"]])),
            (f"architecture pass: {args.aux_loss_weight:g} x zero-one loss",
             max_rel([args.aux_loss_weight * sep_a], [arch["zero_one"]])),
            ("weight pass: cross-entropy", max_rel([ce_w], [weight["loss"]])),
            ("alpha gradients", max_rel(grads_t, grads_o)),
            ("alphas after the Adam step", max_rel(net_t.arch_parameters(), ours.opt.alphas)),
            ("weights after the SGD step", max_rel([p for _, p in pairs_of(net_t, ours.net)],
                                                   [q for q, _ in pairs_of(net_t, ours.net)]))]
    for name, value in rows:
        print(f"  {name:<58} {value:.2e}")
    print(f"  (their weight pass also adds the weighted zero-one loss, {args.aux_loss_weight * float(criterion.parts[1][1]):.6f}, "
          f"to its loss: no weight's gradient depends on it; ours reports the cross-entropy alone)")
    return max(v for _, v in rows)


class Recorder:
    """Their loss, recording (cross-entropy, zero-one loss) of each call."""

    def __init__(self, loss):
        self.loss, self.parts = loss, []

    def __call__(self, logits, target, sigmas):
        total, ce, sep = self.loss(logits, target, sigmas)
        self.parts.append((ce, sep))
        return total, ce, sep


def record_edges(modules):
    rec = types.SimpleNamespace(outputs=[])
    hooks = [m.register_forward_hook(lambda m, a, y: rec.outputs.append(y.detach().clone())) for m in modules]
    rec.stop = lambda: [h.remove() for h in hooks]
    return rec


class StepRun:
    """What our optimizer's step reads from a run: a seeded generator per stream, the identity
    reduction (one process), the epoch and no extra components."""

    epoch, components = 0, {}

    def generator(self, stream):
        import torch

        return torch.Generator().manual_seed(0)

    def reduce(self, tensors):
        return list(tensors)


def build_ours(kind: str) -> types.SimpleNamespace:
    import torch

    from nas_core import BilevelOptimizer, DataInfo, Relaxation, Toolkit, build_space
    from nas_core.config import Layer, resolve
    from nas_core.registry import build
    from nas_tasks.classification import ClassificationOptions, ClassificationTask
    from nas_tasks.image_datasets import LabelledImages

    toolkit = Toolkit.load()
    layer = Layer({"space": {"cells": CELLS, "channels": CHANNELS}, "relaxation": {"zero_one": kind}}, "fidelity check")
    config = resolve(toolkit.registries, [layer], preset="fairdarts_paper")
    space = build_space(toolkit.registries, config.space)
    info = DataInfo((3, 8, 8), 10)
    net = space.build_supernet(info)
    relax = build(toolkit.registries.relaxations, config.relaxation, Relaxation, spec=space.arch_spec())
    data = torch.utils.data.TensorDataset(torch.zeros(8, 3, 8, 8), torch.zeros(8, dtype=torch.long))
    task = ClassificationTask(ClassificationOptions(), data=LabelledImages(data, data, info))
    opt = build(toolkit.registries.optimizers, config.optimizer, BilevelOptimizer, supernet=net, relaxation=relax,
                task=task, epochs=config.search.epochs)
    return types.SimpleNamespace(config=config, space=space, net=net, relax=relax, opt=opt, toolkit=toolkit)


def check_settings(args, config) -> None:
    """Our preset's search settings against train_search.py's defaults (README: the same values)."""
    o, r, d = config.optimizer.options, config.relaxation.options, config.discretizer.options
    pairs = [("weight lr", args.learning_rate, o.w_lr), ("lr at the end (cosine)", args.learning_rate_min, o.w_lr_min),
             ("momentum", args.momentum, o.w_momentum), ("weight decay", args.weight_decay, o.w_weight_decay),
             ("grad clip", args.grad_clip, o.grad_clip), ("epochs", args.epochs, config.search.epochs),
             ("batch size", args.batch_size, config.search.batch_size),
             ("cells", args.layers, 8), ("channels", args.init_channels, 16),
             ("search split", args.train_portion, config.task.options.search_split),
             ("cutout", args.cutout, config.task.options.cutout > 0),
             ("arch lr", args.arch_learning_rate, o.arch_lr), ("arch betas", (args.arch_lr_gamma, 0.999), tuple(o.arch_betas)),
             ("arch weight decay", args.arch_weight_decay, o.arch_weight_decay),
             ("zero-one weight", args.aux_loss_weight, r.zero_one_weight), ("zero-one loss", args.sep_loss, "l2"),
             ("threshold", args.op_threshold, d.threshold), ("first order", not args.single_level,
                                                             config.optimizer.name == "darts_1st")]
    bad = [(n, a, b) for n, a, b in pairs if a != b]
    print(f"  settings (theirs = ours): {'all ' + str(len(pairs)) + ' equal' if not bad else f'DIFFER: {bad}'}"
          f" (cells and channels: the paper preset's; this check runs at {CELLS} and {CHANNELS})")


def copy_supernet(net_t, net_o, verbose: bool) -> None:
    """Their search network's weights and buffers into ours, op by op (explicit name map)."""
    copy_modules(net_t, net_o, supernet_modules(net_t, net_o), verbose)


def supernet_modules(net_t, net_o) -> list:
    mods = [(net_t.stem, net_o.stem), (net_t.classifier, net_o.classifier)]
    for ct, co in zip(net_t.cells, net_o.cells, strict=True):
        mods += [(ct.preprocess0, co.pre0), (ct.preprocess1, co.pre1)]
        for edge_t, edge_o in zip(ct._ops, co.edges, strict=True):
            mods += list(zip(edge_t._ops, edge_o.ops, strict=True))  # both in the op order of OPS
    return mods


def copy_modules(net_t, net_o, mods: list, verbose: bool) -> None:
    import torch

    from gdas import tensors

    names_t = {id(v): k for k, v in [*net_t.named_parameters(), *net_t.named_buffers()]}
    names_o = {id(v): k for k, v in [*net_o.named_parameters(), *net_o.named_buffers()]}
    mapped = {}
    with torch.no_grad():
        for mt, mo in mods:
            tt, to = tensors(mt), tensors(mo)
            assert len(tt) == len(to), (type(mt).__name__, type(mo).__name__)
            for a, b in zip(tt, to):
                assert a.shape == b.shape, (names_t[id(a)], names_o[id(b)])
                b.copy_(a)
                mapped[names_o[id(b)]] = names_t[id(a)]
                if verbose:
                    print(f"    {names_t[id(a)]:<40} -> {names_o[id(b)]}")
    assert set(mapped) == set(names_o.values()), set(names_o.values()) - set(mapped)
    net_o.fidelity_names = mapped
    print(f"  weights: all {len(mapped)} tensors of ours mapped from theirs (-v prints the map)")


def pairs_of(net_t, net_o) -> list:
    """(our parameter, their parameter) by the name map of the last copy."""
    params_t = dict(net_t.named_parameters())
    return [(p, params_t[net_o.fidelity_names[n]]) for n, p in net_o.named_parameters()]


def derivation(t: types.SimpleNamespace) -> float:
    """Their threshold_sparse genotype and DCOCell network against our threshold discretizer and
    darts_cnn's network, for alphas whose genotype has isolated nodes and one-input nodes."""
    import torch

    from gdas import max_rel
    from nas_core import DataInfo, Genotype
    from nas_core.registry import build

    ours = build_ours("l2")
    spec = ours.space.arch_spec()
    discretizer = build(ours.toolkit.registries.discretizers, ours.config.discretizer, object)
    for seed in range(1000):  # the first alphas whose normal cell shows every case (and that their cell builds)
        gen = torch.Generator().manual_seed(seed)
        alphas = {c: 1.5 * torch.randn(14, len(OPS), generator=gen) for c in ("normal", "reduce")}
        sigma = {c: torch.sigmoid(a) for c, a in alphas.items()}
        triples = {c: t.utils.parse(s.numpy(), list(OPS), 0.85, "threshold_sparse", 4) for c, s in sigma.items()}
        expected = {c: dco_cell(triples[c]) for c in sigma}
        if all(e is not None for e in expected.values()) and interesting(triples["normal"], expected["normal"]):
            break
    else:
        raise SystemExit("no alphas found that show isolated nodes")
    genotype = discretizer.derive(sigma, spec)
    same = all(genotype.cells[c].nodes == expected[c] for c in sigma)
    reads_isolated = any(f >= 2 and f not in {n for _, n, _ in triples["normal"]} for _, _, f in triples["normal"])
    print(f"  alphas seed {seed}: their genotype {triples['normal']} (normal; an input read from an isolated "
          f"node: {reads_isolated})")
    print(f"  ours: {genotype.cells['normal'].nodes}, concat {genotype.cells['normal'].concat}")
    print(f"  our genotypes are their cells' nodes renumbered, isolated nodes dropped: {same}")
    assert same

    concat = range(2, 6)
    g_t = t.genotypes.Genotype(normal=triples["normal"], normal_concat=concat, reduce=triples["reduce"],
                               reduce_concat=concat)
    torch.manual_seed(0)
    net_t = t.eval_model.NetworkCIFAR(CHANNELS, 10, CELLS, False, g_t, parse_method="threshold")
    from nas_darts.cnn_space import DartsCnnOptions, DartsCnnSpace

    net_o = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=CHANNELS)).build_network(
        Genotype(genotype.cells), DataInfo((3, 8, 8), 10))
    mods = [(net_t.stem, net_o.stem), (net_t.classifier, net_o.classifier)]
    for ct, co in zip(net_t.cells, net_o.cells, strict=True):
        mods += [(ct.preprocess0, co.pre0), (ct.preprocess1, co.pre1)]
        kind = "reduce" if co.reduction else "normal"
        kept = kept_nodes(triples[kind])
        for j, to in enumerate(kept):
            live = [f for op, node, f in triples[kind] if node == to and (f < 2 or f in kept)]
            mods += [(ct._ops[str(to)][str(f)][0], co.ops[j][p]) for p, f in enumerate(live)]
    copy_modules(net_t, net_o, mods, verbose=False)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    rows = []
    for mode in ("train", "eval"):
        net_t.train(mode == "train"), net_o.train(mode == "train")
        rows.append((f"network outputs ({mode} mode)", max_rel([net_t(x)[0]], [net_o(x)])))
    params = (sum(p.numel() for p in net_t.parameters() if p.requires_grad),
              sum(p.numel() for p in net_o.parameters()))
    print(f"  parameters: theirs {params[0]} (with the ops of inputs that read isolated nodes), ours {params[1]}")
    for name, value in rows:
        print(f"  {name:<58} {value:.2e}")
    return max(v for _, v in rows)


def kept_nodes(triples) -> list[int]:
    """The nodes their DCOCell computes from something: it skips inputs that are not computed."""
    kept: list[int] = []
    for to in dict.fromkeys(node for _, node, _ in triples):
        if any(f < 2 or f in kept for _, node, f in triples if node == to):
            kept.append(to)
    return kept


def dco_cell(triples):
    """Their cell as our genotype's nodes (renumbered), or None where their DCOCell would fail: a
    node whose every input is isolated gives ``sum([]) = 0``, which it cannot concatenate."""
    kept = kept_nodes(triples)
    if len(kept) != len(dict.fromkeys(node for _, node, _ in triples)) or not kept:
        return None
    index = {0: 0, 1: 1, **{to: 2 + j for j, to in enumerate(kept)}}
    return tuple(tuple((op, index[f]) for op, node, f in triples if node == to and f in index) for to in kept)


def interesting(triples, nodes) -> bool:
    """A node isolated, a later node renumbered, and a node with one input."""
    built = [node for node in dict.fromkeys(node for _, node, _ in triples)]
    isolated = [node for node in range(2, 6) if node not in built]
    return bool(isolated) and max(built) > min(isolated) and any(len(n) == 1 for n in nodes)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # gdas.py's helpers: max_rel, tensors, accuracy
    sys.exit(main())
