"""GDAS (plugin nas_gdas) side by side with the authors' code, D-X-Y/AutoDL-Projects: their
NASNet-space GDAS supernet (``NASNetworkGDAS``) and their search step (``search_func`` of
exps/NAS-Bench-201-algos/GDAS.py, run on one batch), against ours built from the ``gdas_paper``
preset, in float64 on a tiny network (6 cells as theirs, C=4, 8x8 inputs, batch 4), with identical
weights, alphas, batches and Gumbel draws. Their code is imported from the checkout, never copied;
the shims below only make it run on a CPU with today's torch and record what it computes.

    GDAS_SRC=/path/to/AutoDL-Projects python benchmarks/fidelity/gdas.py [-v]

Prints the max relative difference of the draws, the sampled ops, every mixed-edge output of both
passes, both losses, the weights after the weight step, the alpha gradients and the alphas after
the architecture step; -v also prints the weight name map. The figures and the differences that
are explained rather than equal are in benchmarks/fidelity/gdas.md.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# their op order (xautodl/models/cell_operations.py DARTS_SPACE) and our names for the same ops
THEIR_OPS = ("none", "skip_connect", "dua_sepc_3x3", "dua_sepc_5x5", "dil_sepc_3x3", "dil_sepc_5x5",
             "avg_pool_3x3", "max_pool_3x3")
OUR_OPS = ("none", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
           "avg_pool_3x3", "max_pool_3x3")
SEED = 11
# where their step differs from ours, switched on one by one in a copy of ours to measure each
TERMS = {"clip": "clipping norm (which counts the weight pass's alpha gradients too)",
         "idle": "SGD skipping the weights of the ops not sampled (no gradient rather than a zero one)"}


def main() -> int:
    src = os.environ.get("GDAS_SRC")
    if not src:
        print("skipped: set GDAS_SRC=<a checkout of https://github.com/D-X-Y/AutoDL-Projects>")
        return 0
    import torch

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    theirs = import_theirs(Path(src))
    worst = 0.0
    for tau in (10.0, 0.1):  # the first and the last epoch's temperature
        print(f"\n== one search step at tau = {tau} ==")
        worst = max(worst, compare(theirs, tau, verbose="-v" in sys.argv))
    print(f"\nmax relative difference of everything compared: {worst:.2e}")
    return 0


def import_theirs(src: Path) -> types.SimpleNamespace:
    """Their modules, made to run on a CPU: ``.cuda()`` is the identity, the NAS-Bench-201 API that
    GDAS.py imports (for an optional benchmark query) is a stub, and its logged accuracy is computed
    without a ``.view`` that today's torch refuses."""
    import torch

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    sys.modules.setdefault("nas_201_api", types.SimpleNamespace(NASBench201API=None))
    sys.path.insert(0, str(src))
    from xautodl.config_utils import load_config
    from xautodl.models import get_cell_based_tiny_net
    from xautodl.models.cell_searchs import search_cells
    from xautodl.procedures.optimizers import get_optim_scheduler

    spec = importlib.util.spec_from_file_location("gdas_search", src / "exps" / "NAS-Bench-201-algos" / "GDAS.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.obtain_accuracy = accuracy  # theirs calls .view on a transposed tensor, which torch >= 1.13 refuses
    return types.SimpleNamespace(src=src, load_config=load_config, build=get_cell_based_tiny_net,
                                 cells=search_cells, optim=get_optim_scheduler, search_func=script.search_func)


def compare(t: types.SimpleNamespace, tau: float, verbose: bool) -> float:
    import copy

    import torch
    from torch import nn

    # -- theirs: the GDAS-NASNet-CIFAR supernet at C=4 and the GDAS-NASNet-CIFAR optimiser --------------
    arch_cfg = t.load_config(t.src / "configs/search-archs/GDAS-NASNet-CIFAR.config",
                             {"num_classes": 10, "space": list(THEIR_OPS), "affine": False, "track_running_stats": True},
                             None)
    opt_cfg = t.load_config(t.src / "configs/search-opts/GDAS-NASNet-CIFAR.config", None, None)
    torch.manual_seed(0)
    net_t = t.build(arch_cfg._replace(C=4))
    net_t.lastact = nn.Identity()  # a BN-ReLU before the pooling that darts_cnn's network has not (see gdas.md)
    net_t.set_tau(tau)
    for m in net_t.modules():  # conv biases (bias = not affine): ours have none, and the BN after each cancels it
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.zeros_(m.bias)
    start = copy.deepcopy(net_t)
    w_opt_t, sched_t, crit_t = t.optim(net_t.get_weights(), opt_cfg)
    sched_t.update(0, 0.0)
    a_opt_t = torch.optim.Adam(net_t.get_alphas(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)  # GDAS.py's
    gen = torch.Generator().manual_seed(1)
    bx, ax = (torch.randn(4, 3, 8, 8, generator=gen) for _ in range(2))
    by, ay = (torch.randint(0, 10, (4,), generator=gen) for _ in range(2))

    # -- their step, recorded: Gumbel draws, mixed-edge outputs, losses, the clipped norm ----------------
    rec = record_theirs(t, crit_t)
    torch.manual_seed(SEED)
    t.search_func([(bx, by, ax, ay)], net_t, rec.criterion, sched_t, w_opt_t, a_opt_t, "000-001", 10**9, rec)
    rec.restore()
    after_t = dict(net_t.named_parameters())

    worst = 0.0
    for terms in ((), ("clip",), ("idle",), ("clip", "idle")):
        print("ours, as it is:" if not terms else f"ours with their {' and '.join(TERMS[t] for t in terms)}:")
        ours = build_ours(start, tau, cells=3 * arch_cfg.N, verbose=verbose and not terms, announce=not terms)
        if not terms:
            check_settings(opt_cfg, ours.config)
        w0 = {n: p.detach().clone() for n, p in ours.net.named_parameters()}
        out = step_ours(ours, (bx, by), (ax, ay), terms)

        rows = []
        noise_t = [-e.log() for e in rec.draws]
        rows.append(("Gumbel draws (4 tensors)", max_rel(noise_t, [out.draw_w["normal"], out.draw_w["reduce"],
                                                                    out.draw_a["normal"], out.draw_a["reduce"]])))
        chosen = [out.mix_w.chosen["normal"], out.mix_w.chosen["reduce"],
                  out.mix_a.chosen["normal"], out.mix_a.chosen["reduce"]]
        n = out.n_edges
        rows.append((f"mixed-edge outputs, weight pass ({n})", max_rel(rec.edges[:n], out.edges[:n])))
        rows.append((f"mixed-edge outputs, arch pass ({len(out.edges) - n})", max_rel(rec.edges[n:], out.edges[n:])))
        rows.append(("weight-pass loss", max_rel([rec.losses[0]], [out.loss_w])))
        rows.append(("arch-pass loss", max_rel([rec.losses[1]], [out.loss_a])))
        sampled = sampled_params(ours.net, out.mix_w)
        params_o = dict(ours.net.named_parameters())
        trained = [n for n in params_o if ".edges." not in n or n in sampled]  # stem, preprocessing, classifier too
        rows.append((f"weights after the step: shared and sampled ops ({len(trained)})",
                     max_rel([after_t[ours.names[n]] for n in trained], [params_o[n] for n in trained])))
        rows.append(("alpha gradients", max_rel([a.grad for a in net_t.get_alphas()], out.g_alpha)))
        rows.append(("alphas after the Adam step", max_rel(net_t.get_alphas(), ours.opt.alphas)))
        print(f"  sampled ops identical in both passes: {[tuple(i.view(-1).tolist()) for i in rec.indices] == chosen}")
        for name, value in rows:
            print(f"  {name:<58} {value:.2e}")
        if terms:
            worst = max(v for _, v in rows) if len(terms) == len(TERMS) else worst
            continue
        # the ops the weight pass did not sample: their SGD skips them (their zero_grad leaves no gradient
        # under torch >= 2.0); ours gets a zero gradient, so weight decay and momentum move them
        idle = [n for n in params_o if ".edges." in n and n not in sampled]
        lr, m, wd = opt_cfg.LR, opt_cfg.momentum, opt_cfg.decay
        expected = [w0[n] * (1 - lr * (1 + m) * wd) for n in idle]  # Nesterov's first step on a zero gradient
        print(f"  not-sampled op weights ({len(idle)}): theirs unchanged "
              f"{max_rel([after_t[ours.names[n]] for n in idle], [w0[n] for n in idle]):.1e}, "
              f"ours w * (1 - lr (1 + m) wd) to {max_rel(expected, [params_o[n] for n in idle]):.1e}")
        print(f"  weight gradient norm (clipped to 5): theirs {float(rec.norms[0]):.6f} (weights and alphas), "
              f"ours {float(out.norms[0]):.6f} (weights)")
    same = same_genotype(net_t, ours)
    print(f"derivation: gdas_topk on their alphas gives their genotype() (top-2 (op, input) pairs): {same}")
    return worst if same else float("inf")


def same_genotype(net_t, ours: types.SimpleNamespace) -> bool:
    """Their ``genotype()`` (per node the top-2 non-zero (op, input) pairs by softmax(alpha)) against
    our ``gdas_topk`` discretizer on the same alphas, their op names mapped to ours."""
    import torch

    from nas_core import Discretizer
    from nas_core.registry import build

    discretizer = build(ours.registries.discretizers, ours.config.discretizer, Discretizer)
    with torch.no_grad():
        strengths = {"normal": torch.softmax(net_t.arch_normal_parameters, -1),
                     "reduce": torch.softmax(net_t.arch_reduce_parameters, -1)}
    genotype = discretizer.derive(strengths, ours.space.arch_spec())
    theirs = net_t.genotype()
    names = dict(zip(THEIR_OPS, OUR_OPS))
    return all(genotype.cells[c].nodes == tuple(tuple((names[op], j) for op, j, _ in node) for node in theirs[c])
               and list(genotype.cells[c].concat) == theirs[f"{c}_concat"] for c in ("normal", "reduce"))


def step_ours(ours: types.SimpleNamespace, train: tuple, val: tuple, terms: tuple[str, ...]) -> types.SimpleNamespace:
    """Our optimizer's two passes in their order (see gdas.md): the weight step on one draw, then
    the architecture step on a fresh draw, recording what the comparison reads. ``terms`` switches
    on their behaviour where ours differs (see TERMS)."""
    import torch
    import torch.nn.functional as F

    out = types.SimpleNamespace(edges=[], norms=[])
    hooks = [e.register_forward_hook(lambda m, a, y: out.edges.append(y.detach()))
             for c in ours.net.cells for e in c.edges]
    clip = torch.nn.utils.clip_grad_norm_
    generator = torch.Generator().manual_seed(SEED)
    out.draw_w = ours.relax.sample(generator)
    out.mix_w = ours.relax.weights(out.draw_w)
    alpha_grads = torch.autograd.grad(F.cross_entropy(ours.net(train[0], arch_weights=out.mix_w), train[1]),
                                      ours.opt.alphas) if "clip" in terms else None
    del out.edges[:]
    if "idle" in terms:  # their SGD skips the weights without a gradient: those of the ops not sampled
        sampled = sampled_params(ours.net, out.mix_w)
        idle = [p for n, p in ours.net.named_parameters() if ".edges." in n and n not in sampled]
        step = ours.opt.w_opt.step

        def skip_idle(*a, **k):
            for p in idle:
                p.grad = None
            return step(*a, **k)

        ours.opt.w_opt.step = skip_idle

    def recorded_clip(params, max_norm, *a, **k):
        params = list(params)
        if alpha_grads is not None:
            for alpha, g in zip(ours.opt.alphas, alpha_grads):
                alpha.grad = g.clone()
            params += ours.opt.alphas
        out.norms.append(clip(params, max_norm, *a, **k))
        return out.norms[-1]

    torch.nn.utils.clip_grad_norm_ = recorded_clip
    try:
        out.loss_w = ours.opt.weight_step(train, None, sample=out.draw_w).loss.detach()
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    out.n_edges = len(out.edges)
    out.draw_a = ours.relax.sample(generator)
    out.mix_a = ours.relax.weights(out.draw_a)
    val_out, out.g_alpha = ours.opt.arch_gradient(train, val, sample=out.draw_a)
    out.loss_a = val_out.loss.detach()
    for alpha, g in zip(ours.opt.alphas, out.g_alpha):
        alpha.grad = g
    ours.opt.a_opt.step()
    for h in hooks:
        h.remove()
    return out


def build_ours(start, tau: float, cells: int, verbose: bool, announce: bool) -> types.SimpleNamespace:
    """Our components from the gdas_paper preset at their size and op order, holding their weights
    and alphas. ``names`` maps our parameter names to theirs."""
    import torch
    from torch import nn

    from nas_core import BilevelOptimizer, DataInfo, Relaxation, Toolkit, build_space
    from nas_core.config import Layer, resolve
    from nas_core.registry import build
    from nas_tasks.classification import ClassificationOptions, ClassificationTask
    from nas_tasks.image_datasets import LabelledImages

    toolkit = Toolkit.load()
    config = resolve(toolkit.registries, [Layer({"space": {"cells": cells, "channels": 4, "ops": list(OUR_OPS)}},
                                                "fidelity check")], preset="gdas_paper")
    space = build_space(toolkit.registries, config.space)
    info = DataInfo((3, 8, 8), 10)
    torch.manual_seed(0)
    net = space.build_supernet(info)
    relax = build(toolkit.registries.relaxations, config.relaxation, Relaxation, spec=space.arch_spec())
    relax.tau.fill_(tau)
    data = torch.utils.data.TensorDataset(torch.zeros(8, 3, 8, 8), torch.zeros(8, dtype=torch.long))
    task = ClassificationTask(ClassificationOptions(), data=LabelledImages(data, data, info))
    for cell in net.cells:  # our search pools end in a BN (DARTS's code); their NASNet space's do not
        for edge in cell.edges:
            for i, op in enumerate(edge.ops):
                if isinstance(op, nn.Sequential) and isinstance(op[0], (nn.MaxPool2d, nn.AvgPool2d)):
                    edge.ops[i] = op[0]
    names = copy_weights(start, net, verbose, announce)
    with torch.no_grad():
        relax.alphas["normal"].copy_(start.arch_normal_parameters)
        relax.alphas["reduce"].copy_(start.arch_reduce_parameters)
    opt = build(toolkit.registries.optimizers, config.optimizer, BilevelOptimizer, supernet=net, relaxation=relax,
                task=task, epochs=config.search.epochs)
    return types.SimpleNamespace(config=config, net=net, relax=relax, opt=opt, names=names, space=space,
                                 registries=toolkit.registries)


def check_settings(opt_cfg, config) -> None:
    """Our preset's search settings against their config file and GDAS.py's command line."""
    o, r = config.optimizer.options, config.relaxation.options
    pairs = [("weight lr", opt_cfg.LR, o.w_lr), ("lr at the end (cosine)", opt_cfg.eta_min, o.w_lr_min),
             ("momentum", opt_cfg.momentum, o.w_momentum), ("Nesterov", bool(opt_cfg.nesterov), o.w_nesterov),
             ("weight decay", opt_cfg.decay, o.w_weight_decay), ("epochs", opt_cfg.epochs, config.search.epochs),
             ("batch size", opt_cfg.batch_size, config.search.batch_size), ("grad clip (search_func)", 5.0, o.grad_clip),
             ("arch lr (script)", 3e-4, o.arch_lr), ("arch betas (GDAS.py)", (0.5, 0.999), tuple(o.arch_betas)),
             ("arch weight decay (script)", 1e-3, o.arch_weight_decay), ("tau max (script)", 10.0, r.tau_max),
             ("tau min (script)", 0.1, r.tau_min), ("first order", True, config.optimizer.name == "darts_1st"),
             ("a draw per forward pass", True, o.sample == "pass")]
    bad = [(n, a, b) for n, a, b in pairs if a != b]
    print("settings (theirs = ours): " + ("all " + str(len(pairs)) + " equal" if not bad else f"DIFFER: {bad}"))


def record_theirs(t: types.SimpleNamespace, criterion) -> types.SimpleNamespace:
    """A logger for search_func that also records their Gumbel draws (every ``exponential_`` call),
    each mixed edge's output, the losses and the clipped gradient norm, until ``restore()``."""
    import torch

    rec = types.SimpleNamespace(draws=[], edges=[], losses=[], norms=[], indices=[], log=lambda *a: None)
    exponential, forward_gdas, clip = torch.Tensor.exponential_, t.cells.MixedOp.forward_gdas, torch.nn.utils.clip_grad_norm_
    argmax = torch.Tensor.max

    def record_exponential(self, *a, **k):
        out = exponential(self, *a, **k)
        rec.draws.append(out.detach().clone())
        return out

    def record_max(self, *a, **k):  # get_gumbel_prob's probs.max(-1, keepdim=True)[1]: the sampled ops
        out = argmax(self, *a, **k)
        if a == (-1,) and k == {"keepdim": True}:
            rec.indices.append(out[1].detach().clone())
        return out

    def record_edge(self, x, weights, index):
        out = forward_gdas(self, x, weights, index)
        rec.edges.append(out.detach())
        return out

    def record_clip(*a, **k):
        rec.norms.append(clip(*a, **k))
        return rec.norms[-1]

    def record_loss(logits, targets):
        loss = criterion(logits, targets)
        rec.losses.append(loss.detach())
        return loss

    torch.Tensor.exponential_, torch.Tensor.max = record_exponential, record_max
    t.cells.MixedOp.forward_gdas, torch.nn.utils.clip_grad_norm_ = record_edge, record_clip

    def restore():
        torch.Tensor.exponential_, torch.Tensor.max = exponential, argmax
        t.cells.MixedOp.forward_gdas, torch.nn.utils.clip_grad_norm_ = forward_gdas, clip

    rec.criterion, rec.restore = record_loss, restore
    return rec


def copy_weights(net_t, net_o, verbose: bool, announce: bool) -> dict[str, str]:
    """Every weight and buffer of their supernet into ours, op by op, by an explicit name map (their
    conv biases, zero, have no counterpart). Returns our parameter names -> theirs."""
    import torch

    mods = [(net_t.stem, net_o.stem), (net_t.classifier, net_o.classifier)]
    for ct, co in zip(net_t.cells, net_o.cells):
        mods += [(ct.preprocess0, co.pre0), (ct.preprocess1, co.pre1)]
        row = 0
        for node in range(4):
            for src in range(2 + node):
                edge_t, edge_o = ct.edges[f"{node}<-{src}"], co.edges[row]
                for col, op_t in enumerate(edge_t._ops):
                    if col in edge_o.columns:
                        mods.append((op_t, edge_o.ops[edge_o.columns.index(col)]))
                row += 1
    names_t = {id(v): k for k, v in [*net_t.named_parameters(), *net_t.named_buffers()]}
    names_o = {id(v): k for k, v in [*net_o.named_parameters(), *net_o.named_buffers()]}
    mapped: dict[str, str] = {}
    with torch.no_grad():
        for mt, mo in mods:
            tt, to = tensors(mt), tensors(mo)
            assert len(tt) == len(to), (type(mt).__name__, type(mo).__name__, len(tt), len(to))
            for a, b in zip(tt, to):
                assert a.shape == b.shape, (names_t[id(a)], names_o[id(b)], a.shape, b.shape)
                b.copy_(a)
                mapped[names_o[id(b)]] = names_t[id(a)]
                if verbose:
                    print(f"  {names_t[id(a)]:<44} -> {names_o[id(b)]}")
    unmapped = [k for k in names_o.values() if k not in mapped]
    assert not unmapped, unmapped
    if announce:
        print(f"  weights: all {len(mapped)} tensors of ours mapped from theirs (-v prints the map)")
    return mapped


def tensors(module) -> list:
    """Parameters and buffers in module order: conv weights, BN weight, bias and running statistics."""
    from torch import nn

    out = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            out.append(m.weight)
        elif isinstance(m, nn.Linear):
            out += [m.weight, m.bias]
        elif isinstance(m, nn.BatchNorm2d):
            out += [p for p in (m.weight, m.bias) if p is not None]
            out += [m.running_mean, m.running_var, m.num_batches_tracked]
    return out


def sampled_params(net, mix) -> set[str]:
    """Names of the op weights of ``net`` that the hard sample ``mix`` runs."""
    names = set()
    for i, cell in enumerate(net.cells):
        chosen = mix.chosen["reduce" if cell.reduction else "normal"]
        for row, edge in enumerate(cell.edges):
            if chosen[row] in edge.columns:
                k = edge.columns.index(chosen[row])
                names |= {f"cells.{i}.edges.{row}.ops.{k}.{n}" for n, _ in edge.ops[k].named_parameters()}
    return names


def accuracy(output, target, topk=(1,)):
    """Top-k accuracy in percent, as theirs logs it (it only reports; nothing compared reads it)."""
    pred = output.topk(max(topk), 1, True, True)[1]
    return [(pred[:, :k] == target[:, None]).any(1).float().sum(0, keepdim=True) * (100.0 / len(target))
            for k in topk]


def max_rel(a, b) -> float:
    """The largest over the pairs of max|a - b| / max|b|."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        x, y = x.detach().double(), y.detach().double()
        worst = max(worst, float((x - y).abs().max() / y.abs().max().clamp_min(1e-300)))
    return worst


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
