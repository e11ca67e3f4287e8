"""The ``language_model`` task: word-level next-token prediction over batchified text, the
hidden state carried from window to window, perplexity as the metric (Liu et al., ICLR 2019, appendix A).

Streams. Search: ``weights`` reads the training text, ``arch`` the validation text, as the public
code does (its ``search_data``). Training: ``train``, ``valid`` (every epoch) and ``test`` (once).

Batches. Each split is cut into ``batch_size`` columns (``[rows, columns]``, the remainder
dropped, as the public ``batchify``) and read window by window, top to bottom:

* training windows (``weights``, ``train``): from row ``i``, ``seq_len`` rows, then ``i += seq_len``
  while ``i < rows - 2``. With ``variable_bptt`` the length is drawn per window from
  ``run.generator(stream)``: ``bptt`` with probability 0.95, else ``bptt / 2``; a search keeps that
  (``int``, as the public ``train_search.py``), training then draws ``max(5, int(N(that, 5)))``
  capped at ``bptt + max_seq_len_delta`` (the public ``train.py``, AWD-LSTM's rule).
* the search's ``arch`` windows pair with the weight windows: the same offsets ``i`` taken modulo
  the validation rows, ``bptt`` long (the public ``get_batch(search_data, i % ...)``); both come
  from one plan drawn from a copy of ``run.generator("weights")``'s state, so they agree in any order.
* evaluation: ``eval_batch_size`` columns (``test_batch_size`` for the test: the public code's
  ``train.py`` reads the test text as one column, one hidden state through all of it), fixed
  ``bptt`` windows from row 0, every token once.

A window is a :class:`Window` ``(inputs, targets, lr_scale)``; ``lr_scale = seq_len / bptt`` is
what the public code multiplies the learning rate by for that step (the ``nt_asgd`` trainer and
the search's weight step do). ``seq_len`` is the drawn length: the public code scales the rate
before ``get_batch`` cuts the epoch's last window short at the end of the text, so that window
keeps the scale of its drawn length.

The model contract: ``model(tokens [T, B] long, hidden [B, H] or None)`` returns ``(logits
[T, B, V], hidden [B, H], raw_output [T, B, H], dropped_output [T, B, H])`` where ``raw_output``
are the cell's outputs (temporal activation regularisation: ``tar_beta * mean((h_t - h_{t-1})^2)``)
and ``dropped_output`` the same after the output dropout (activation regularisation:
``ar_alpha * mean(h^2)``). The loss is the mean cross-entropy over the window plus both; the
reported ``loss`` is the cross-entropy alone, and ``ppl = exp(loss)`` of the epoch mean (weighted
by tokens when evaluating). The hidden state comes back detached in ``Outcome.state``; the engine
hands ``None`` at the start of each epoch and of each evaluation, and the model starts from zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nas_core import ConfigError, Outcome, RunContext, Task
from nas_tasks.options import LanguageModelOptions
from nas_tasks.text_datasets import TokenCorpus

SOURCES = {"weights": "train", "arch": "valid", "train": "train", "valid": "valid", "test": "test"}
TRAINING_STREAMS = ("weights", "train")


class Window(NamedTuple):
    inputs: Tensor  # [T, B] token ids
    targets: Tensor  # [T, B]: the next tokens
    lr_scale: float = 1.0  # drawn length / bptt for training windows (the public code scales the step's lr by it)


def batchify(ids: Tensor, columns: int) -> Tensor:
    """``[rows, columns]``: the token stream cut into ``columns`` parallel streams (remainder dropped)."""
    rows = len(ids) // columns
    return ids[:rows * columns].view(columns, rows).t().contiguous()


class Windows:
    """The windows of one stream for one epoch, made on the device as they are read. ``drawn``:
    each window's length as drawn, before the end of the text cut it (the lr scale's; default: its length)."""

    def __init__(self, data: Tensor, spans: list[tuple[int, int]], bptt: int, device: torch.device,
                 drawn: list[int] | None = None):
        self.data, self.spans, self.bptt, self.device = data, spans, bptt, device
        self.drawn = drawn if drawn is not None else [length for _, length in spans]

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self) -> Iterator[Window]:
        for (start, length), drawn in zip(self.spans, self.drawn):
            chunk = self.data[start:start + length + 1].to(self.device, non_blocking=True)
            yield Window(chunk[:-1], chunk[1:], drawn / self.bptt)


class LanguageModelTask(Task):
    """Word-level language modelling: cross-entropy plus activation regularisers, perplexity."""

    def __init__(self, options: LanguageModelOptions, *, data: Any):
        if not isinstance(data, TokenCorpus):
            raise ValueError(f"reads word-level text (pydoc_topics, ptb, wikitext2), but the chosen dataset gives "
                             f"{type(data).__name__}")
        self.options, self.corpus, self.info = options, data, data.info
        self._columns: dict[tuple[str, int], Tensor] = {}

    def streams(self, phase: str) -> tuple[str, ...]:
        return ("weights", "arch") if phase == "search" else ("train", "valid", "test")

    def columns(self, stream: str, batch_size: int) -> Tensor:
        key = (SOURCES[stream], batch_size)
        if key not in self._columns:
            self._columns[key] = batchify(getattr(self.corpus, key[0]), batch_size)
        return self._columns[key]

    def plan(self, rows: int, run: RunContext, search: bool) -> list[tuple[int, int, int]]:
        """(start row, length, drawn length) of each training window of the epoch, drawn from a copy
        of ``run.generator("weights" or "train")`` (the generator itself is not advanced)."""
        o = self.options
        gen = torch.Generator().set_state(run.generator("weights" if search else "train").get_state())
        spans, i = [], 0
        while i < rows - 2:
            length = o.bptt
            if o.variable_bptt:
                bptt = o.bptt if float(torch.rand((), generator=gen)) < 0.95 else o.bptt / 2
                if search:
                    length = int(bptt)
                else:
                    length = max(5, int(bptt + 5 * float(torch.randn((), generator=gen))))
                    length = min(length, o.bptt + o.max_seq_len_delta)
            cut = max(1, min(length, rows - 1 - i))  # the text's end shortens the last window
            spans.append((i, cut, length))
            i += cut
        return spans

    def loader(self, stream: str, *, batch_size: int, run: RunContext, evaluation: bool = False) -> Windows:
        o = self.options
        if evaluation:
            data = _share(self.columns(stream, o.test_batch_size if stream == "test" else o.eval_batch_size), run)
            spans = [(i, min(o.bptt, len(data) - 1 - i)) for i in range(0, len(data) - 1, o.bptt)]
            return Windows(data, spans if data.shape[1] else [], o.bptt, run.device)
        if batch_size % run.world_size:
            raise ConfigError(f"batch size {batch_size} does not split evenly over {run.world_size} processes")
        data = self.columns(stream, batch_size)
        if stream == "arch":  # paired with the weight windows: same offsets, modulo the validation rows
            train_rows = len(self.columns("weights", batch_size))
            wrap = len(data) - 1
            spans = [(i % wrap, min(o.bptt, wrap - i % wrap)) for i, _, _ in self.plan(train_rows, run, True)]
            return Windows(_share(data, run), spans, o.bptt, run.device)
        plan = self.plan(len(data), run, stream == "weights")
        return Windows(_share(data, run), [(i, n) for i, n, _ in plan], o.bptt, run.device,
                       drawn=[drawn for _, _, drawn in plan])

    def check_batch_size(self, phase: str, batch_size: int, key: str) -> None:
        """Every stream must fill two rows of its columns; a training window must fit its text."""
        o = self.options
        evaluation = (o.eval_batch_size, "task.eval_batch_size")
        if phase == "search" and batch_size < 2:  # batch-normalised search cells need 2 values per channel
            raise ConfigError(f"{key}={batch_size}: a search reads at least 2 columns a batch (the search cell "
                              f"batch-normalises its nodes over the batch)")
        if phase == "search":
            checks = [("weights", batch_size, key), ("arch", batch_size, key), ("arch", *evaluation)]
        else:
            checks = [("train", batch_size, key), ("valid", *evaluation),
                      ("test", o.test_batch_size, "task.test_batch_size")]
        for stream, columns, setting in checks:
            source = SOURCES[stream]
            tokens = len(getattr(self.corpus, source))
            rows = tokens // columns
            if rows < 2:
                raise ConfigError(f"{setting}={columns} is too large for the {tokens} tokens of the {source} text of "
                                  f"{self.corpus.name!r}: each of its columns needs 2 tokens or more")
            if stream in TRAINING_STREAMS and rows - 1 < o.bptt:
                raise ConfigError(f"task.bptt={o.bptt} is longer than the {source} text of {self.corpus.name!r}: "
                                  f"{tokens} tokens in {columns} columns ({setting}) give {rows - 1} time steps; "
                                  f"lower task.bptt or {setting}")

    def forward(self, model: Callable[..., Any], batch: Any, state: Any) -> Outcome:
        inputs, targets = batch[0], batch[1]
        logits, hidden, raw, dropped = model(inputs, state)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss = nll
        o = self.options
        if o.ar_alpha > 0:
            loss = loss + o.ar_alpha * dropped.pow(2).mean()
        if o.tar_beta > 0 and raw.shape[0] > 1:
            loss = loss + o.tar_beta * (raw[1:] - raw[:-1]).pow(2).mean()
        return Outcome(loss=loss, state=hidden.detach(), stats={"loss": nll.detach()}, count=targets.numel())

    def report(self, means: Mapping[str, float]) -> dict[str, float]:
        out = dict(means)
        if "loss" in means:
            out["ppl"] = math.exp(min(means["loss"], 700.0))
        return out

    def example_inputs(self, device: torch.device) -> tuple[Tensor, None]:
        """One token (batch 1) and no hidden state: parameters, and multiply-adds per token."""
        return (torch.zeros(1, 1, dtype=torch.long, device=device), None)


def _share(data: Tensor, run: RunContext) -> Tensor:
    """This rank's contiguous share of the columns (all of them on one process): every rank reads
    the same windows of its own columns, as a torchrun job splits the global batch."""
    columns = data.shape[1]
    return data[:, run.rank * columns // run.world_size:(run.rank + 1) * columns // run.world_size]
