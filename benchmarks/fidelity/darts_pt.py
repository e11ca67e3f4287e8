"""nas_darts_pt side by side with the authors' DARTS-PT code (Wang et al., ICLR 2021;
https://github.com/ruocwang/darts-pt): their sota/cnn/projection.py (`project_op`, `project_edge`),
model_search_darts_proj.py (`DartsNetworkProj`: the projected mixing weights) and
nasbench201/architect_ig.py (the first-order architecture step of the fine-tuning) against the
`darts_pt` discretizer's phase over a `darts_cnn` supernet (space s5, no `none`), in float64 on one
thread, from identical weights, alphas and validation batches.

    DARTSPT_SRC=/path/to/darts-pt python benchmarks/fidelity/darts_pt.py

Compared, for one decision of each kind (normal, then reduction cell, as their pt_project): the
validation accuracy and loss with each op of the chosen edge masked, and the op kept; then, with
every edge decided, the accuracy and loss with each input of a node masked and the inputs kept; then
one fine-tuning step (architecture step on a validation batch, weight step at lr/10 with momentum,
weight decay and clipping on a training batch): the weights, the undecided edges' alphas, the loss.
Their code is imported, never copied; `.cuda()` is made a no-op in memory. Their `infer` (in
train_search.py, which parses its arguments and creates folders on import) and the body of
`pt_project`'s tuning loop are written out below, calling their functions. Exits 0 with a message
when DARTSPT_SRC is not set. The figures are in benchmarks/fidelity/darts_pt.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pcdarts import Report, catalog, copy_state, name_map, rel, setup, source  # noqa: E402

C, CELLS, BATCH, SIZE, CLASSES = 8, 3, 16, 8, 10
VAL_BATCHES = 3
LR, LR_MIN, MOMENTUM, WD, CLIP, ARCH_LR, ARCH_WD = 0.025, 0.001, 0.9, 3e-4, 5.0, 3e-4, 1e-3  # train_search.py


class FakeRun:
    """What the phase reads from its run outside the engine: seeded generators, the identity reduction."""

    def __init__(self, components: dict, epoch: int) -> None:
        self.seed, self.epoch, self.rank, self.world_size = 0, epoch, 0, 1
        self.device, self.components, self.generators = torch.device("cpu"), components, {}

    def generator(self, stream: str) -> torch.Generator:
        return self.generators.setdefault(stream, torch.Generator().manual_seed(self.epoch))

    def reduce(self, tensors):
        return list(tensors)


def their_infer(ig_utils, queue, model, weights_dict, record: list) -> tuple[float, float]:
    """train_search.py's infer(..., log=False, _eval=False, weights_dict=...): training mode (batch
    statistics), no gradients, every batch; top-1 accuracy in percent and the loss, per-example means."""
    objs, top1 = ig_utils.AvgrageMeter(), ig_utils.AvgrageMeter()
    model.train()
    with torch.no_grad():
        for x, y in queue:
            logits = model(x, weights_dict=weights_dict)
            loss = model._criterion(logits, y)
            (prec1,) = ig_utils.accuracy(logits, y, topk=(1,))
            objs.update(loss.item(), x.size(0))
            top1.update(prec1.item(), x.size(0))
    record.append((top1.avg, objs.avg))
    return top1.avg, objs.avg


def main() -> int:
    root = source("DARTSPT_SRC", "sota/cnn/projection.py", "https://github.com/ruocwang/darts-pt")
    setup(root)
    import nasbench201.utils as ig_utils  # theirs
    from nasbench201.architect_ig import Architect  # theirs
    from sota.cnn import projection  # theirs
    from sota.cnn.model_search_darts_proj import DartsNetworkProj  # theirs
    from sota.cnn.spaces import spaces_dict  # theirs

    from nas_core import DataInfo
    from nas_darts import plugin as darts_plugin
    from nas_darts.cnn_space import DartsCnnSpace
    from nas_darts.options import DartsCnnOptions, SoftmaxOptions
    from nas_darts.softmax import SoftmaxRelaxation
    from nas_darts_pt.options import DartsPtOptions
    from nas_darts_pt.selection import DartsPtPhase
    from nas_tasks.classification import ClassificationOptions, ClassificationTask
    from nas_tasks.image_datasets import LabelledImages
    from torch.utils.data import TensorDataset

    s5 = spaces_dict["s5"]
    ops = tuple(s5["primitives_normal"][0])
    args = SimpleNamespace(learning_rate=LR, learning_rate_min=LR_MIN, momentum=MOMENTUM, weight_decay=WD,
                           grad_clip=CLIP, arch_learning_rate=ARCH_LR, arch_weight_decay=ARCH_WD,
                           method="darts-proj", edge_decision="random",
                           proj_crit={"normal": "acc", "reduce": "acc"})
    torch.manual_seed(0)
    theirs = DartsNetworkProj(C, CLASSES, CELLS, nn.CrossEntropyLoss(), s5, args)
    space = DartsCnnSpace(DartsCnnOptions(cells=CELLS, channels=C, nodes=4, ops=ops),
                          catalog=catalog(("darts", darts_plugin)))
    info = DataInfo((3, SIZE, SIZE), CLASSES)
    ours = space.build_supernet(info)
    spec = space.arch_spec()
    relax = SoftmaxRelaxation(SoftmaxOptions(), spec=spec)
    mapping = name_map(theirs, ours)
    copy_state(theirs, ours, mapping)
    print(f"name map: {len(mapping)} tensors; ops {ops}")
    with torch.no_grad():  # alphas of unit scale, so that masks differ clearly
        for cell_type in ("normal", "reduce"):
            alpha = getattr(theirs, f"alphas_{cell_type}")
            alpha.copy_(torch.randn(alpha.shape))
            relax.alphas[cell_type].copy_(alpha)

    # the data: the validation half is the task's `arch` stream, read in order in batches of BATCH
    gen = torch.Generator().manual_seed(1)
    n = VAL_BATCHES * BATCH
    x = torch.randn(2 * n, 3, SIZE, SIZE, generator=gen)
    y = torch.randint(CLASSES, (2 * n,), generator=gen)
    data = TensorDataset(x, y)
    task = ClassificationTask(ClassificationOptions(search_split=0.5), data=LabelledImages(data, data, info))
    val_queue = [(x[n + i * BATCH:n + (i + 1) * BATCH], y[n + i * BATCH:n + (i + 1) * BATCH])
                 for i in range(VAL_BATCHES)]
    components = {"task": task, "supernet": ours, "relaxation": relax}
    options = DartsPtOptions(criterion="acc", edge_decision="random", tune_lr=LR / 10, tune_momentum=MOMENTUM,
                             tune_weight_decay=WD, grad_clip=CLIP, arch_lr=ARCH_LR, arch_weight_decay=ARCH_WD)
    phase = DartsPtPhase(options, task=task, supernet=ours, relaxation=relax, spec=spec, components=components,
                         batch_size=BATCH)
    report = Report()
    ok = True

    def compare(label: str, our_scores: dict, their_stats: list, our_pick, their_pick) -> None:
        nonlocal ok
        accs = [(s["acc"] * 100, t[0]) for s, t in zip(our_scores.values(), their_stats)]
        losses = [(s["loss"], t[1]) for s, t in zip(our_scores.values(), their_stats)]
        print(f"{label}: masked {list(our_scores)}")
        print("    accuracy % ours   " + " ".join(f"{a:7.3f}" for a, _ in accs))
        print("    accuracy % theirs " + " ".join(f"{b:7.3f}" for _, b in accs))
        print("    loss ours         " + " ".join(f"{a:7.4f}" for a, _ in losses))
        print(f"    kept: ours {our_pick}, theirs {their_pick}")
        report.add(f"{label}: accuracy with each masked ({len(accs)})",
                   max(rel(torch.tensor(a), torch.tensor(b)) for a, b in accs))
        report.add(f"{label}: loss with each masked ({len(losses)})",
                   max(rel(torch.tensor(a), torch.tensor(b)) for a, b in losses))
        ok = ok and our_pick == their_pick

    # one op decision per cell type: ours draws the edge, theirs is told it (their draw is numpy's)
    run = FakeRun(components, epoch=0)
    generator = run.generator("darts_pt")
    for cell_type in ("normal", "reduce"):
        record = phase.decide_op(cell_type, generator, run)
        stats: list = []
        eid, opid = projection.project_op(theirs, val_queue, args,
                                          lambda q, m, log, _eval, weights_dict: their_infer(ig_utils, q, m,
                                                                                           weights_dict, stats),
                                          cell_type, selected_eid=record["edge"])
        theirs.project_op(eid, opid, cell_type)
        compare(f"{cell_type} edge {record['edge']} op", record["masked"], stats, record["chosen"], ops[opid])

    # one fine-tuning step: theirs as pt_project's loop body (reset SGD at lr/10, architect.step, model.step)
    theirs.reset_optimizer(LR / 10, MOMENTUM, WD)
    architect = Architect(theirs, args)
    xt, yt = x[:BATCH], y[:BATCH]
    xv, yv = val_queue[0]
    theirs.train()
    theirs.optimizer.zero_grad()
    architect.optimizer.zero_grad()
    architect.step(xt, yt, xv, yv, return_logits=True)
    theirs.optimizer.zero_grad()
    architect.optimizer.zero_grad()
    _, their_loss = theirs.step(xt, yt, args)
    result = phase.step(((xt, yt), (xv, yv)), {}, FakeRun(components, epoch=0))
    report.add("tuning step: training loss", rel(result.metrics["train"]["loss"], their_loss))
    frozen = [k for k, v in theirs.named_parameters() if v.grad is None]  # ops of weight 0: skipped by theirs
    ours_state = ours.state_dict()
    live = [(ours_state[mapping[k]], v) for k, v in theirs.named_parameters() if k not in frozen]
    report.add(f"tuning step: weights of the ops that compute ({len(live)})", max(rel(a, b) for a, b in live))
    skipped = [(ours_state[mapping[k]], v) for k, v in theirs.named_parameters() if k in frozen]
    report.add(f"tuning step: weights of ops of weight 0 ({len(skipped)}; decay in ours)",
               max(rel(a, b) for a, b in skipped), explained=True)
    for cell_type in ("normal", "reduce"):
        report.add(f"tuning step: {cell_type} alphas", rel(relax.alphas[cell_type],
                                                             getattr(theirs, f"alphas_{cell_type}")))
    # every other edge decided alike (their op choice copied into both), then one node's inputs
    for cell_type in ("normal", "reduce"):
        for row in phase.projection.undecided_edges(cell_type):
            col = int(relax.alphas[cell_type][row].argmax())
            phase.projection.ops[cell_type][row] = col
            theirs.project_op(row, col, cell_type)
    run = FakeRun(components, epoch=phase.op_epochs)
    generator = run.generator("darts_pt")
    for cell_type in ("normal", "reduce"):
        record = phase.decide_edges(cell_type, generator, run)
        nid = record["node"] - 3  # their node ids count the nodes with more than two inputs
        stats = []
        args.proj_crit = {"normal": "acc", "reduce": "acc"}
        flags = theirs.candidate_flags_edge[cell_type]
        others = [i for i in range(len(flags)) if i != nid and bool(flags[i])]
        flags[others] = False  # only this node left: their random pick is it
        sel, eids = projection.project_edge(theirs, val_queue, args,
                                            lambda q, m, log, _eval, weights_dict: their_infer(ig_utils, q, m,
                                                                                             weights_dict, stats),
                                            cell_type)
        theirs.project_edge(sel, eids, cell_type)
        flags[others] = True
        n_in = len(record["masked"])
        their_inputs = sorted(spec.edges[cell_type][e][0] for e in eids)
        # their loop measures the remaining edges again after each drop: the first round holds every input
        compare(f"{cell_type} node {record['node']} inputs", record["masked"], stats[:n_in], record["kept_inputs"],
                their_inputs)

    genotype = theirs.genotype()
    ours_genotype = phase.genotype()
    same = all([(op, src) for op, src in getattr(genotype, t)] ==
               [(op, src) for node in ours_genotype.cells[t].nodes for op, src in node] for t in ("normal", "reduce"))
    print(f"genotype after the decisions: {'identical' if same else 'DIFFERENT'} ({genotype.normal})")
    print(f"decisions: {'identical' if ok else 'DIFFERENT'}")
    return report.verdict() if same and ok else 1


if __name__ == "__main__":
    sys.exit(main())
