"""A complete, tiny set of components that is not DARTS: a two-op recurrent toy space on a
synthetic sequence task whose hidden state is carried from batch to batch. Core tests drive
the engine with it alone (``autoload=False``), so they prove the core names no algorithm."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas_core import (ArchSpec, BilevelOptimizer, Catalog, Cell, ConfigError, DataInfo, Discretizer, Genotype, MixingWeights,
                      Outcome, Relaxation, RunContext, SearchSpace, StepResult, Supernet, Task, Trainer, hookimpl)

CELL = "cell"
OPS = ("identity", "tanh")
EDGES = ((0, 1), (0, 2), (1, 2))
HIDDEN = 4


# -- data and task ------------------------------------------------------------------------------

@attrs.frozen
class SeriesOptions:
    length: int = 600


def series(options: SeriesOptions, *, root: Any = None) -> Tensor:
    """A noisy sine wave: next-value prediction has something to learn."""
    t = torch.arange(options.length, dtype=torch.float32)
    return torch.sin(t / 5) + 0.1 * torch.sin(t * 1.7)


@attrs.frozen
class SequenceOptions:
    window: int = 5  # steps per batch (BPTT length)
    columns: int = 4  # parallel sequences: the batch dimension


class SequenceTask(Task):
    """Next-value regression over a long series, cut into ``columns`` parallel streams and read
    window by window in order, the hidden state carried across windows. Records the state it is
    handed, so tests can check that the engine carries and resets it."""

    def __init__(self, options: SequenceOptions, *, data: Any):
        if not isinstance(data, Tensor) or data.dim() != 1:
            raise ValueError(f"reads a 1-D series, got {type(data).__name__}")
        self.options, self.info = options, DataInfo((), 1)
        n = len(data)
        cuts = {"weights": (0, n // 2), "arch": (n // 2, n), "train": (0, n // 2), "valid": (n // 2, 3 * n // 4),
                "test": (3 * n // 4, n)}
        self.data = {k: data[a:b] for k, (a, b) in cuts.items()}
        self.seen: list[tuple[str, int]] = []  # (stream, batches since the state was reset)

    def streams(self, phase: str) -> tuple[str, ...]:
        return ("weights", "arch") if phase == "search" else ("train", "valid", "test")

    def loader(self, stream: str, *, batch_size: int, run: RunContext, evaluation: bool = False) -> list:
        x = self.data[stream]
        cols = batch_size
        usable = (len(x) - 1) // cols * cols
        inputs = x[:usable].view(cols, -1).t()  # [time, columns]
        targets = x[1:usable + 1].view(cols, -1).t()
        w = self.options.window
        share = slice(run.rank * cols // run.world_size, (run.rank + 1) * cols // run.world_size)  # this rank's columns
        return [(stream, inputs[i:i + w, share].to(run.device), targets[i:i + w, share].to(run.device))
                for i in range(0, len(inputs) - w + 1, w)]

    def forward(self, model: Callable[..., Any], batch: Any, state: Any) -> Outcome:
        stream, x, y = batch
        count = 0 if state is None else state[1]
        self.seen.append((stream, count))
        pred, h = model(x, None if state is None else state[0])
        loss = F.mse_loss(pred, y)
        return Outcome(loss, (h.detach(), count + 1), {"loss": loss.detach()}, y.numel())

    def example_inputs(self, device: torch.device) -> tuple[Tensor, None]:
        return (torch.zeros(self.options.window, 1, device=device), None)

    def report(self, means: Mapping[str, float]) -> dict[str, float]:
        return {**means, "rmse": math.sqrt(means["loss"])}

    def check_batch_size(self, phase: str, batch_size: int, key: str) -> None:
        if batch_size > len(self.data["weights"]) // self.options.window:
            raise ConfigError(f"{key}={batch_size} is too large for the series")


# -- space ----------------------------------------------------------------------------------------

@attrs.frozen
class ToySpaceOptions:
    hidden: int = HIDDEN


def _op(name: str, x: Tensor) -> Tensor:
    return x if name == "identity" else torch.tanh(x)


class ToyCell(nn.Module):
    """Node 0 = W [x_t, h]; nodes 1, 2 sum their edges; h_t = mean of nodes 1, 2."""

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.inp = nn.Linear(1 + hidden, hidden)
        self.edge = nn.ModuleList(nn.Linear(hidden, hidden) for _ in EDGES)
        self.out = nn.Linear(hidden, 1)

    def run(self, x: Tensor, h: Tensor | None, edge_fn: Callable[[int, Tensor], Tensor]) -> tuple[Tensor, Tensor]:
        h = torch.zeros(x.shape[1], self.hidden, device=x.device) if h is None else h
        outs = []
        for t in range(x.shape[0]):
            nodes = [self.inp(torch.cat([x[t, :, None], h], 1))]
            for dst in (1, 2):
                nodes.append(sum(edge_fn(row, self.edge[row](nodes[src])) for row, (src, d) in enumerate(EDGES)
                                 if d == dst))
            h = (nodes[1] + nodes[2]) / 2
            outs.append(self.out(h)[:, 0])
        return torch.stack(outs), h


class ToySupernet(Supernet):
    def __init__(self, hidden: int):
        super().__init__()
        self.cell = ToyCell(hidden)

    def forward(self, x: Tensor, h: Tensor | None, *, arch_weights: MixingWeights) -> tuple[Tensor, Tensor]:
        w = arch_weights[CELL]
        return self.cell.run(x, h, lambda row, v: sum(w[row, i] * _op(op, v) for i, op in enumerate(OPS)))


class ToyNetwork(nn.Module):
    """The discrete cell; counts the epochs it was told about (a component with its own hook)."""

    def __init__(self, hidden: int, genotype: Genotype):
        super().__init__()
        self.cell = ToyCell(hidden)
        chosen = {}
        for j, node in enumerate(genotype.cells[CELL].nodes):
            for op, src in node:
                chosen[EDGES.index((src, j + 1))] = op
        self.ops = [chosen.get(row) for row in range(len(EDGES))]
        self.epochs_started: list[int] = []

    @hookimpl
    def nas_epoch_start(self, run: RunContext) -> None:
        self.epochs_started.append(run.epoch)
        run.epoch_metrics["epochs_started"] = float(len(self.epochs_started))

    def forward(self, x: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.cell.run(x, h, lambda row, v: _op(self.ops[row], v) if self.ops[row] else 0 * v)


class ToySpace(SearchSpace):
    def __init__(self, options: ToySpaceOptions, *, catalog: Catalog):
        self.options = options

    def arch_spec(self) -> ArchSpec:
        return ArchSpec(ops=OPS, edges={CELL: EDGES}, num_inputs=1, inputs_per_node=1, zero_op=None)

    def build_supernet(self, data: DataInfo) -> ToySupernet:
        return ToySupernet(self.options.hidden)

    def build_network(self, genotype: Genotype, data: DataInfo) -> ToyNetwork:
        genotype.validate(OPS, 1)
        return ToyNetwork(self.options.hidden, genotype)


# -- relaxation, optimizer, discretizer, trainer --------------------------------------------------

class ToySoftmax(Relaxation):
    def __init__(self, options: None, *, spec: ArchSpec):
        super().__init__()
        self.alpha = nn.Parameter(1e-3 * torch.randn(spec.shape(CELL)))

    def weights(self, sample: Any = None) -> MixingWeights:
        return MixingWeights({CELL: torch.softmax(self.alpha, -1)})

    def strengths(self) -> dict[str, Tensor]:
        return {CELL: torch.softmax(self.alpha, -1).detach()}


@attrs.frozen
class ToyOptimizerOptions:
    lr: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))
    arch_lr: float = 0.1


class ToyFirstOrder(BilevelOptimizer):
    """Alternating first-order steps: alpha on the arch batch, then weights on the train batch."""

    def __init__(self, options: ToyOptimizerOptions, *, supernet: Supernet, relaxation: Relaxation, task: Task,
                 epochs: int):
        self.net, self.relax, self.task = supernet, relaxation, task
        self.w_opt = torch.optim.SGD(supernet.parameters(), lr=options.lr)
        self.a_opt = torch.optim.SGD(relaxation.parameters(), lr=options.arch_lr)

    def _pass(self, batch: Any, state: Any, mix: MixingWeights, params: list[Tensor], opt: Any, run: RunContext):
        out = self.task.forward(lambda *inputs: self.net(*inputs, arch_weights=mix), batch, state)
        for p, g in zip(params, run.reduce(torch.autograd.grad(out.loss, params))):
            p.grad = g
        opt.step()
        return out

    def step(self, train_batch: Any, val_batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        arch = self._pass(val_batch, state.get("arch"), self.relax.weights(), list(self.relax.parameters()),
                          self.a_opt, run)
        with torch.no_grad():
            mix = self.relax.weights()
        train = self._pass(train_batch, state.get("weights"), mix, list(self.net.parameters()), self.w_opt, run)
        return StepResult({"train": train.stats, "arch": arch.stats}, {"weights": train.state, "arch": arch.state})

    def end_epoch(self, run: RunContext) -> dict[str, float]:
        return {"lr": self.w_opt.param_groups[0]["lr"]}

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w_opt.state_dict(), "a": self.a_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_opt.load_state_dict(state["w"])
        self.a_opt.load_state_dict(state["a"])


class ToyArgmax(Discretizer):
    """Each node keeps its strongest incoming edge with that edge's strongest op."""

    def __init__(self, options: None):
        pass

    def derive(self, strengths: Mapping[str, Tensor], spec: ArchSpec, run: RunContext | None = None) -> Genotype:
        s = strengths[CELL]
        nodes = []
        for dst in (1, 2):
            rows = [r for r, (_, d) in enumerate(spec.edges[CELL]) if d == dst]
            best = max(rows, key=lambda r: float(s[r].max()))
            nodes.append(((spec.ops[int(s[best].argmax())], spec.edges[CELL][best][0]),))
        return Genotype({CELL: Cell(tuple(nodes), (1, 2))})


class ToySgd(Trainer):
    def __init__(self, options: ToyOptimizerOptions, *, network: nn.Module, task: Task, epochs: int):
        self.network, self.task = network, task
        self.opt = torch.optim.SGD(network.parameters(), lr=options.lr)
        self.valid_seen: list[float] = []

    def step(self, batch: Any, state: Mapping[str, Any], run: RunContext) -> StepResult:
        out = self.task.forward(self.network, batch, state.get("train"))
        params = list(self.network.parameters())
        for p, g in zip(params, run.reduce(torch.autograd.grad(out.loss, params))):
            p.grad = g
        self.opt.step()
        return StepResult({"train": out.stats}, {"train": out.state})

    def end_epoch(self, run: RunContext, metrics: Mapping[str, float]) -> dict[str, float]:
        self.valid_seen.append(metrics["valid_loss"])  # validation comes before end_epoch
        return {"lr": self.opt.param_groups[0]["lr"]}

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])


# -- the plugin -----------------------------------------------------------------------------------

@attrs.frozen
class GreetingSettings:
    greeting: str = "hello"


TOY_PRESET = {
    "task": {"name": "sequence"}, "dataset": {"name": "series"}, "space": {"name": "toy"},
    "relaxation": {"name": "toy_softmax"}, "optimizer": {"name": "toy_first_order"},
    "discretizer": {"name": "toy_argmax"}, "trainer": {"name": "toy_sgd"},
    "search": {"epochs": 3, "batch_size": 4}, "train": {"epochs": 3, "batch_size": 4},
}


class ToyPlugin:
    """Registers every toy component; ``tasks`` keeps the tasks built, for inspection."""

    def __init__(self) -> None:
        self.tasks: list[SequenceTask] = []

    def _task(self, options: SequenceOptions, *, data: Any) -> SequenceTask:
        task = SequenceTask(options, data=data)
        self.tasks.append(task)
        return task

    @hookimpl
    def nas_register_tasks(self, register):
        register("sequence", self._task, options=SequenceOptions, doc="next-value regression, state carried")

    @hookimpl
    def nas_register_datasets(self, register):
        register("series", series, options=SeriesOptions)

    @hookimpl
    def nas_register_spaces(self, register):
        register("toy", ToySpace, options=ToySpaceOptions)

    @hookimpl
    def nas_register_relaxations(self, register):
        register("toy_softmax", ToySoftmax)

    @hookimpl
    def nas_register_optimizers(self, register):
        register("toy_first_order", ToyFirstOrder, options=ToyOptimizerOptions)

    @hookimpl
    def nas_register_discretizers(self, register):
        register("toy_argmax", ToyArgmax)

    @hookimpl
    def nas_register_trainers(self, register):
        register("toy_sgd", ToySgd, options=ToyOptimizerOptions)

    @hookimpl
    def nas_register_presets(self, register):
        register("toy", TOY_PRESET, doc="the toy components", default=True)

    @hookimpl
    def nas_register_settings(self, register):
        register("greeting", GreetingSettings, doc="what toy-hello says")

    @hookimpl
    def nas_register_commands(self, register):
        def configure(parser):
            parser.add_argument("--name", default="world")
            parser.add_argument("--set", action="append", default=[])

        def run(args, toolkit):
            from nas_core.config import Layer, parse_set, resolve

            config = resolve(toolkit.registries, [Layer(parse_set(args.set), "--set")],
                             preset=toolkit.registries.default_preset())
            print(f"{config.settings['greeting'].greeting}, {args.name}")
            return 0

        register("toy-hello", run, configure=configure, help="greet someone")


class StopAfter:
    """Stops a run once ``epoch`` has ended."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    @hookimpl
    def nas_should_stop(self, run, epoch, metrics):
        return f"enough after epoch {epoch + 1}" if epoch == self.epoch else None


class InterruptAfter:
    def __init__(self, epoch: int):
        self.epoch = epoch

    @hookimpl
    def nas_epoch_end(self, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt
