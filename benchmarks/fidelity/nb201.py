"""The nb201 space against the NAS-Bench-201 authors' code, side by side (docs/successors/nb201.md).

    NB201_SRC=/path/to/AutoDL-Projects [NB201_API_SRC=/path/to/NAS-Bench-201] python benchmarks/fidelity/nb201.py

NB201_SRC is a checkout of D-X-Y/AutoDL-Projects (xautodl: TinyNetwork, InferCell, TinyNetworkDarts,
NAS201SearchCell); NB201_API_SRC, optional, one of D-X-Y/NAS-Bench-201 (nas_201_api). In float64
on one thread it compares:

1. discrete networks, for several cells: parameter counts at the benchmark's size (C=16, N=5, 10
   classes), and at a small size with their state dict loaded into ours (the module names are
   theirs): logits in training and evaluation mode, the loss and every weight gradient;
2. the supernet (their TinyNetworkDarts, affine-free BN with running statistics, as their DARTS-V1
   search on NAS-Bench-201) with their weights and alphas copied into ours by an explicit name map:
   every mixed edge's output of the first cell, the cell's output, the logits, the loss, the alpha
   gradient and every weight gradient;
3. with NB201_API_SRC: a small benchmark file written with their ArchResults/ResultsCount (numpy
   float64 parameter counts, string seeds, (dataset, seed) keys, in both torch.save formats),
   read by their API and by ours (nas nb201-lookup's reader): every accuracy, parameter and FLOP count.

Prints the max relative differences; exits 1 if one exceeds 1e-10. Nothing of theirs is copied:
their modules are imported from the checkout.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

TOLERANCE = 1e-10
CELLS = (  # the example of the benchmark's README, its ResNet cell, a cell of every op, one that reads zeros
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|",
    "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|nor_conv_1x1~1|none~2|",
)


def rel(a, b) -> float:
    """max |a - b| / max |b| (0 when both are 0)."""
    a, b = a.detach(), b.detach()
    scale = float(b.abs().max())
    return float((a - b).abs().max()) / scale if scale else float((a - b).abs().max())


def report(name: str, value: float, worst: list[float]) -> None:
    worst.append(value)
    print(f"  {name:44s} {value:.2e}")


def check_networks(torch, nn, ours, theirs, worst: list[float]) -> None:
    print("discrete networks (their TinyNetwork / InferCell):")
    for arch in CELLS:
        genotype = ours["parse_cell_string"](arch)
        counts = []
        for c, n, shape in ((16, 5, (3, 32, 32)), (4, 2, (3, 8, 8))):
            mine = ours["network"](genotype, c, n, shape)
            their = theirs["TinyNetwork"](c, n, theirs["Structure"].str2structure(arch), 10)
            counts.append((sum(p.numel() for p in mine.parameters()), sum(p.numel() for p in their.parameters())))
        (mine_16, their_16), _ = counts
        print(f" {arch}\n  parameters at C=16, N=5: ours {mine_16}, theirs {their_16}")
        assert mine_16 == their_16, "parameter counts differ"
        assert set(mine.state_dict()) == set(their.state_dict()), "state dict names differ"
        mine.load_state_dict(their.state_dict())
        x, y = torch.randn(4, *shape), torch.tensor([0, 3, 5, 9])
        for mode in ("train", "eval"):
            mine.train(mode == "train"), their.train(mode == "train")
            logits_m, (_, logits_t) = mine(x), their(x)
            report(f"logits ({mode} mode)", rel(logits_m, logits_t), worst)
            if mode == "train":
                loss_m, loss_t = (nn.functional.cross_entropy(l, y) for l in (logits_m, logits_t))
                report("loss", rel(loss_m, loss_t), worst)
                loss_m.backward(), loss_t.backward()
                grads = dict(their.named_parameters())
                report("weight gradients (all tensors)",
                       max(rel(p.grad, grads[k].grad) for k, p in mine.named_parameters() if p.grad is not None
                           and bool(grads[k].grad.abs().max() > 0)), worst)


def edge_map(mine_keys, edges, ops, zero) -> dict[str, str]:
    """Our supernet's state names -> theirs: our edge row r of a cell is their key "dst<-src"; our op k
    of an edge is their column of the k-th non-zero op (the zero op has no module of ours)."""
    live = [col for col, op in enumerate(ops) if op not in zero]
    out = {}
    for key in mine_keys:
        parts = key.split(".")
        if len(parts) > 4 and parts[2] == "edges":
            src, dst = edges[int(parts[3])]
            parts[3:6] = [f"{dst}<-{src}", str(live[int(parts[5])])]  # drop our "ops" level
        out[key] = ".".join(parts)
    return out


def check_supernet(torch, nn, ours, theirs, worst: list[float]) -> None:
    print("supernet (their TinyNetworkDarts: NAS201SearchCell, affine-free BN tracking running statistics):")
    c, n, shape, ops = 4, 2, (3, 8, 8), theirs["ops"]
    their = theirs["TinyNetworkDarts"](c, n, 4, 10, ops, False, True)
    mine, relaxation, space = ours["supernet"](c, n, shape)
    names = edge_map(mine.state_dict(), ours["cell_edges"](3), ops, {"none"})
    their_state = their.state_dict()
    unmapped = set(their_state) - set(names.values()) - {"arch_parameters"}
    assert not unmapped, f"their tensors without ours: {sorted(unmapped)[:5]}"
    print(f"  {len(names)} tensors mapped by name, e.g. {next(k for k in names if '.edges.' in k)} <- "
          f"{names[next(k for k in names if '.edges.' in k)]}")
    mine.load_state_dict({k: their_state[v] for k, v in names.items()})
    with torch.no_grad():
        their.arch_parameters.normal_()  # alphas far from uniform, so every op's weight differs
        relaxation.alphas["cell"].copy_(their.arch_parameters)
    x, y = torch.randn(4, *shape), torch.tensor([1, 2, 7, 9])
    weights = relaxation.weights()
    alphas_t = torch.softmax(their.arch_parameters, dim=-1)
    # every mixed edge of the first cell, each on its input node as their cell computes it
    stem = their.stem(x)
    cell_t, cell_m = their.cells[0], mine.cells[0]
    nodes, edge_rel = [stem], 0.0
    for row, (src, dst) in enumerate(ours["cell_edges"](3)):
        theirs_out = sum(layer(nodes[src]) * w for layer, w in zip(cell_t.edges[f"{dst}<-{src}"], alphas_t[row]))
        edge_rel = max(edge_rel, rel(cell_m.edges[row](nodes[src], weights["cell"][row]), theirs_out))
        if src == 0:
            nodes.append(theirs_out)
        else:
            nodes[dst] = nodes[dst] + theirs_out
    report("mixed-edge outputs (all 6 edges, cell 0)", edge_rel, worst)
    report("cell output (cell 0)", rel(cell_m(stem, weights["cell"], None), cell_t(stem, alphas_t)), worst)
    logits_m = mine(x, arch_weights=relaxation.weights())
    _, logits_t = their(x)
    report("logits", rel(logits_m, logits_t), worst)
    loss_m, loss_t = (nn.functional.cross_entropy(l, y) for l in (logits_m, logits_t))
    report("loss", rel(loss_m, loss_t), worst)
    loss_m.backward(), loss_t.backward()
    report("alpha gradient", rel(relaxation.alphas["cell"].grad, their.arch_parameters.grad), worst)
    grads = dict(their.named_parameters())
    report("weight gradients (all tensors)", max(rel(p.grad, grads[names[k]].grad)
                                               for k, p in mine.named_parameters()), worst)


def check_step(torch, nn, ours, theirs, worst: list[float]) -> None:
    """One step of their DARTS-V1 search loop (search_func of exps/NAS-Bench-201-algos/DARTS-V1.py: the
    weight step on the training batch, then the alpha step on the validation batch, at the new
    weights) against our darts_1st with the nb201_paper settings, its two updates called in their
    order (our step() takes the alpha step first, as DARTS's code: docs/successors/nb201.md).

    Their weight step clips the gradient norm over network.parameters(), which holds alpha, whose
    gradient of the training loss is there at that moment: the norm counts it. The second line of
    each case switches that term on in our step (a copy of clip_grad_norm_ that adds it)."""
    import types

    from nas_darts.architect import darts_first_order
    from nas_darts.options import DartsOptions

    print("one DARTS-V1 step (their search_func, nb201_paper's optimizer settings; updates in their order):")
    torch.Tensor.cuda = lambda self, *a, **k: self  # their loop moves the targets to the GPU
    c, n, shape = 4, 2, (3, 8, 8)
    xb, yb = torch.randn(4, *shape), torch.tensor([1, 2, 7, 9])
    xa, ya = torch.randn(4, *shape), torch.tensor([0, 2, 3, 9])
    logger = types.SimpleNamespace(log=lambda *a: None)
    real_clip = torch.nn.utils.clip_grad_norm_
    for clip in (5.0, 0.0):  # nb201_paper's bound (the step reaches it), then none
        their = theirs["TinyNetworkDarts"](c, n, 4, 10, theirs["ops"], False, True)
        with torch.no_grad():
            their.arch_parameters.normal_()
        start = {k: v.clone() for k, v in their.state_dict().items()}
        mine, relaxation, _ = ours["supernet"](c, n, shape)
        names = edge_map(mine.state_dict(), ours["cell_edges"](3), theirs["ops"], {"none"})

        def our_start():
            net, relax, _ = ours["supernet"](c, n, shape)
            net.load_state_dict({k: start[v] for k, v in names.items()})
            with torch.no_grad():
                relax.alphas["cell"].copy_(start["arch_parameters"])
            return net.train(), relax

        w_opt, w_sched, criterion = theirs["get_optim_scheduler"](their.get_weights(), theirs["config"])
        a_opt = torch.optim.Adam(their.get_alphas(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        w_sched.update(0, 0.0)
        base_loss = theirs["search_func"]([(xb, yb, xa, ya)], their, criterion, w_sched, w_opt, a_opt, "000-050",
                                          200, logger, clip)[0]
        their_state = their.state_dict()
        net, relax = our_start()  # alpha's gradient of the training loss at the start, on a copy
        loss = ours["task"](shape).forward(lambda x: net(x, arch_weights=relax.weights()), (xb, yb), None).loss
        g_alpha, *g_weights = torch.autograd.grad(loss, [relax.alphas["cell"], *net.parameters()])
        alpha_norm, weights_norm = g_alpha.norm().detach(), torch.sqrt(sum(g.norm() ** 2 for g in g_weights))
        if clip:
            print(f"  gradient norms of the training loss: weights {float(weights_norm):.3f}, alpha "
                  f"{float(alpha_norm):.3f}: they clip by {clip:g} / {float(torch.hypot(weights_norm, alpha_norm)):.3f}"
                  f", we by {clip:g} / {float(weights_norm):.3f}")

        def clip_with_alpha(params, max_norm, *a, **k):
            params = list(params)
            total = torch.sqrt(sum(p.grad.norm() ** 2 for p in params) + alpha_norm ** 2)
            coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
            for p in params:
                p.grad.mul_(coef)
            return total

        for variant in ("ours", "ours + alpha's gradient in the clipping norm"):
            if clip == 0 and variant != "ours":
                continue
            net, relax = our_start()
            options = DartsOptions(w_lr=0.025, w_lr_min=0.001, w_momentum=0.9, w_nesterov=True, w_weight_decay=5e-4,
                                   grad_clip=clip, arch_lr=3e-4, arch_betas=(0.5, 0.999), arch_weight_decay=1e-3)
            optimizer = darts_first_order(options, supernet=net, relaxation=relax, task=ours["task"](shape), epochs=50)
            torch.nn.utils.clip_grad_norm_ = real_clip if variant == "ours" else clip_with_alpha
            out = optimizer.weight_step((xb, yb))
            torch.nn.utils.clip_grad_norm_ = real_clip
            _, grads = optimizer.arch_gradient((xb, yb), (xa, ya))
            relax.alphas["cell"].grad = grads[0]
            optimizer.a_opt.step()
            # the figures the clipping term explains are shown, not counted
            keep = worst if variant != "ours" or clip == 0 else []
            print(f" clip {clip:g}, {variant}:" + ("" if keep is worst else " (differs by the term below)"))
            report("training loss", abs(float(out.loss.detach()) - base_loss) / abs(base_loss), keep)
            report("alpha gradient (validation loss, new weights)", rel(grads[0], their.arch_parameters.grad), keep)
            report("alphas after the step", rel(relax.alphas["cell"], their.arch_parameters), keep)
            report("weights and BN statistics after the step",
                   max(rel(v, their_state[names[k]]) for k, v in net.state_dict().items() if v.is_floating_point()),
                   keep)


def check_benchmark_file(torch, api_src: str, worst: list[float]) -> None:
    import numpy as np

    from nas_201_api import ArchResults, NASBench201API, ResultsCount

    from nas_nb201.benchmark import Benchmark, load_plain

    print("benchmark file (their ArchResults/ResultsCount written, read by their API and by ours):")
    rng = np.random.default_rng(0)
    evals = {"cifar10-valid": ("x-valid", "ori-test"), "cifar10": ("ori-test",),
             "cifar100": ("x-valid", "x-test", "ori-test"), "ImageNet16-120": ("x-valid", "x-test", "ori-test")}

    def trial(dataset: str, seed: str, epochs: int) -> ResultsCount:
        curve = {e: float(rng.uniform(10, 100)) for e in range(epochs)}
        result = ResultsCount(dataset, None, curve, dict(curve), np.float64(rng.uniform(0.1, 1.5)),
                              np.float64(rng.uniform(10, 200)), {"arch_str": "x"}, seed, epochs, [0.01])
        metric = {f"{name}@{e}": float(rng.uniform(10, 100)) for name in evals[dataset] for e in range(epochs)}
        result.update_eval(metric, dict(metric), {k: 1.0 for k in metric})
        return result

    archs = list(CELLS)
    infos = {}
    for index, arch in enumerate(archs[:3]):
        hp = {}
        for key, epochs in (("full", 4), ("less", 2)):
            record = ArchResults(index, arch)
            for dataset in evals:
                for seed in ("777", "888", "999")[: 1 + (index + len(dataset)) % 3]:
                    record.update(dataset, seed, trial(dataset, seed, epochs))
            hp[key] = record.state_dict()
        infos[index] = hp
    data = {"meta_archs": archs, "arch2infos": infos, "evaluated_indexes": set(infos)}
    with tempfile.TemporaryDirectory() as tmp:
        for zipped in (True, False):
            path = Path(tmp) / f"bench-{zipped}.pth"
            torch.save(data, path, _use_new_zipfile_serialization=zipped)
            api = NASBench201API(torch.load(path, weights_only=False), verbose=False)  # our own file: trusted
            bench = Benchmark(load_plain(path), str(path))
            diff = 0.0
            for arch in archs[:3]:
                for epochs in ("200", "12"):
                    index, rows = bench.results(arch, epochs)
                    theirs = api.query_meta_info_by_index(index, hp=epochs)
                    for row in rows:
                        costs = theirs.get_compute_costs(row["dataset"])
                        diff = max(diff, abs(row["params"] - costs["params"]), abs(row["flops"] - costs["flops"]))
                        for setname, value in row["accuracy"].items():
                            diff = max(diff, abs(value - theirs.get_metrics(row["dataset"], setname)["accuracy"]))
            report(f"max abs difference ({'zip' if zipped else 'legacy'} format)", diff, worst)


def main() -> int:
    src = os.environ.get("NB201_SRC")
    if not src or not Path(src, "xautodl").is_dir():
        print("skipped: set NB201_SRC=/path/to/AutoDL-Projects (a checkout of D-X-Y/AutoDL-Projects); "
              "NB201_API_SRC=/path/to/NAS-Bench-201 adds the benchmark-file check")
        return 0
    import torch
    from torch import nn

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sys.path.insert(0, src)
    from xautodl.models.cell_infers.tiny_network import TinyNetwork
    from xautodl.models.cell_operations import SearchSpaceNames
    from xautodl.models.cell_searchs.genotypes import Structure
    from xautodl.models.cell_searchs.search_model_darts import TinyNetworkDarts
    from xautodl.config_utils import load_config
    from xautodl.procedures import get_optim_scheduler
    import importlib.util
    import types
    if os.environ.get("NB201_API_SRC"):
        sys.path.insert(0, os.environ["NB201_API_SRC"])
    else:  # DARTS-V1.py imports the benchmark's API for its main() alone, which is not run here
        sys.modules.setdefault("nas_201_api", types.SimpleNamespace(NASBench201API=None))
    loop = importlib.util.spec_from_file_location("darts_v1", Path(src, "exps", "NAS-Bench-201-algos", "DARTS-V1.py"))
    darts_v1 = importlib.util.module_from_spec(loop)
    loop.loader.exec_module(darts_v1)  # defines search_func; its main() is not run
    # its accuracy logging calls .view(-1) on a transposed tensor, which torch >= 1.? refuses; the
    # step does not use it, so the shim (in memory) returns zeros
    darts_v1.obtain_accuracy = lambda output, target, topk=(1,): [torch.zeros(1) for _ in topk]

    from nas_core import Component, DataInfo, installed_catalog, parse_cell_string
    from nas_darts.softmax import SoftmaxOptions, SoftmaxRelaxation
    from nas_nb201.options import Nb201Options
    from nas_nb201.space import Nb201Space, cell_edges
    from nas_tasks.classification import ClassificationOptions, ClassificationTask
    from nas_tasks.image_datasets import LabelledImages
    from torch.utils.data import TensorDataset

    catalog = installed_catalog()

    def space(c: int, n: int) -> Nb201Space:
        return Nb201Space(Nb201Options(cells=n, channels=c, edge=Component("weighted_sum", None)), catalog=catalog)

    def network(genotype, c: int, n: int, shape) -> nn.Module:
        return space(c, n).build_network(genotype, DataInfo(shape, 10))

    def supernet(c: int, n: int, shape):
        built = space(c, n)
        return (built.build_supernet(DataInfo(shape, 10)), SoftmaxRelaxation(SoftmaxOptions(), spec=built.arch_spec()),
                built)

    def task(shape) -> ClassificationTask:
        data = TensorDataset(torch.zeros(20, *shape), torch.zeros(20, dtype=torch.long))  # shapes only
        return ClassificationTask(ClassificationOptions(), data=LabelledImages(data, data, DataInfo(shape, 10)))

    ours = {"parse_cell_string": parse_cell_string, "network": network, "supernet": supernet, "cell_edges": cell_edges,
            "task": task}
    theirs = {"TinyNetwork": TinyNetwork, "Structure": Structure, "TinyNetworkDarts": TinyNetworkDarts,
              "ops": SearchSpaceNames["nas-bench-201"], "search_func": darts_v1.search_func,
              "get_optim_scheduler": get_optim_scheduler,
              "config": load_config(str(Path(src, "configs", "nas-benchmark", "algos", "DARTS.config")),
                                    {"class_num": 10, "xshape": (1, 3, 8, 8)}, None)}
    worst: list[float] = []
    check_networks(torch, nn, ours, theirs, worst)
    check_supernet(torch, nn, ours, theirs, worst)
    check_step(torch, nn, ours, theirs, worst)
    if os.environ.get("NB201_API_SRC"):
        check_benchmark_file(torch, os.environ["NB201_API_SRC"], worst)
    else:
        print("benchmark file: skipped (set NB201_API_SRC=/path/to/NAS-Bench-201)")
    print(f"max relative difference {max(worst):.2e} (tolerance {TOLERANCE:.0e})")
    return 0 if max(worst) <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
