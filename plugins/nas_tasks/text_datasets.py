"""Word-level text datasets for the ``language_model`` task.

``ptb`` and ``wikitext2`` read ``train.txt``, ``valid.txt`` and ``test.txt`` (the layout both
corpora ship in, e.g. the AWD-LSTM/DARTS ``data/penn`` and ``data/wikitext-2`` folders) from
``--data-root`` (or its sub-folder ``dataset.folder``). Tokenisation is the public code's: every
line is split on whitespace and ends with ``<eos>`` (an empty line gives a lone ``<eos>``). The
vocabulary is that of ``train.txt``, ids in order of first appearance; these corpora already
replace rare words by ``<unk>``, so a word of ``valid.txt`` or ``test.txt`` missing from it
means mismatched files and is an error naming the word, the file and the line. Files are read a
line at a time, as the public code reads them, into int64 arrays (8 bytes a token), so that a
large corpus (WikiText-103's train.txt is 540 MB) never sits in memory as text or word lists;
a line may be at most MAX_LINE_CHARS long.

``pydoc_topics`` (the default, embedded: no download) is the English text of CPython's
``pydoc_data.topics.topics`` (the help topics of the running Python; Python 3.11: 79 topics,
about 65k words, 8.8k distinct). Rule, fixed and documented:

* topics in sorted key order, their lines concatenated; blank lines dropped;
* tokens: whitespace split, case kept, punctuation left attached; ``<eos>`` ends every line;
* split by lines: the first 80 % train, the next 10 % valid, the last 10 % test;
* vocabulary: ``<unk>``, then the training words seen at least ``min_count`` (2) times, in
  order of first appearance (``<eos>`` among them); any other word, in any split, is ``<unk>``.

The text follows the Python version (its help topics change between releases), so runs compare
exactly only on the same Python minor version; the log line of the task names the token counts.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import attrs
import torch
from torch import Tensor

from nas_core import DataError, DataInfo, brief
from nas_tasks.options import PydocTopicsOptions, TextFolderOptions

EOS, UNK = "<eos>", "<unk>"
PARTS = ("train", "valid", "test")
# These corpora hold one sentence (PTB) or one paragraph (WikiText) a line, far shorter than
# this. Splitting a line holds all its words at once (about 45 bytes each): one 50 MB line took
# 2.25 GB.
MAX_LINE_CHARS = 1_000_000


@attrs.frozen
class TokenCorpus:
    """What a text dataset's factory returns: the three splits as 1-D token-id tensors and the
    vocabulary (id -> word). The ``language_model`` task batchifies them itself."""

    name: str
    vocab: tuple[str, ...]
    train: Tensor
    valid: Tensor
    test: Tensor

    @property
    def info(self) -> DataInfo:
        return DataInfo(input_shape=(), num_classes=len(self.vocab))


def _line_tokens(lines: Iterable[str]) -> list[list[str]]:
    return [line.split() + [EOS] for line in lines]


def _check_file(name: str, path: Path) -> None:
    if path.is_dir():
        raise DataError(f"dataset {name!r}: {path} is a directory; expected a text file")
    if not path.is_file():
        raise DataError(f"dataset {name!r}: missing {path} (expected train.txt, valid.txt and test.txt in "
                        f"{path.parent})")


def _file_words(name: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, the line's words and ``<eos>``) for each line of ``path``, read a line at a time."""
    blank = True
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(iter(lambda: f.readline(MAX_LINE_CHARS + 1), ""), 1):
                if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
                    raise DataError(f"dataset {name!r}: {path} line {number} is longer than {MAX_LINE_CHARS} "
                                    f"characters (these corpora hold one sentence or paragraph a line)")
                words = line.split()
                blank = blank and not words
                yield number, words + [EOS]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"dataset {name!r}: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if blank:
        raise DataError(f"dataset {name!r}: {path} is empty")


def _ids(values: array) -> Tensor:
    """An int64 tensor of ``values`` (an ``array('q')``: 8 bytes a token, where a list takes 36)."""
    return torch.frombuffer(values, dtype=torch.int64) if len(values) else torch.zeros(0, dtype=torch.int64)


def text_folder(name: str, options: TextFolderOptions, root: Path | None) -> TokenCorpus:
    if root is None:
        raise DataError(f"dataset {name!r} needs --data-root: the directory holding train.txt, valid.txt and "
                        f"test.txt (word-level, one sentence per line)")
    folder = Path(root) / options.folder if options.folder else Path(root)
    if not folder.is_dir():
        raise DataError(f"dataset {name!r}: {folder} is not a directory (dataset.folder={brief(options.folder)})")
    for part in PARTS:  # all three, before reading a large train.txt
        _check_file(name, folder / f"{part}.txt")
    index: dict[str, int] = {}
    train = array("q")
    for _, words in _file_words(name, folder / "train.txt"):
        train.extend(index.setdefault(w, len(index)) for w in words)
    ids = {"train": _ids(train)}
    for part in ("valid", "test"):
        out = array("q")
        path = folder / f"{part}.txt"
        for number, words in _file_words(name, path):
            for w in words:
                i = index.get(w)
                if i is None:
                    raise DataError(f"dataset {name!r}: {path} line {number}: word {brief(w)} is not in the "
                                    f"vocabulary of train.txt (the three files must share one vocabulary; rare "
                                    f"words are written {UNK})")
                out.append(i)
        ids[part] = _ids(out)
    return TokenCorpus(name, tuple(index), ids["train"], ids["valid"], ids["test"])


def ptb(options: TextFolderOptions, *, root: Path | None = None) -> TokenCorpus:
    """Penn Treebank (Mikolov's word-level version): train.txt, valid.txt, test.txt under --data-root."""
    return text_folder("ptb", options, root)


def wikitext2(options: TextFolderOptions, *, root: Path | None = None) -> TokenCorpus:
    """WikiText-2 (tokenised, wiki.*.tokens renamed train.txt, valid.txt, test.txt) under --data-root."""
    return text_folder("wikitext2", options, root)


def pydoc_lines() -> list[str]:
    """The non-blank lines of CPython's help topics, in sorted topic order."""
    from pydoc_data.topics import topics

    return [line for key in sorted(topics) for line in topics[key].splitlines() if line.strip()]


def split_lines(lines: Sequence[str]) -> dict[str, Sequence[str]]:
    a, b = int(len(lines) * 0.8), int(len(lines) * 0.9)
    return {"train": lines[:a], "valid": lines[a:b], "test": lines[b:]}


def pydoc_topics(options: PydocTopicsOptions, *, root: Path | None = None) -> TokenCorpus:
    """CPython's pydoc help topics as word-level text (embedded, no download); split 80/10/10 by line."""
    parts = {k: _line_tokens(v) for k, v in split_lines(pydoc_lines()).items()}
    counts = Counter(w for words in parts["train"] for w in words)
    index = {UNK: 0}
    for words in parts["train"]:
        for w in words:
            if counts[w] >= options.min_count:
                index.setdefault(w, len(index))
    ids = {k: torch.tensor([index.get(w, 0) for words in v for w in words]) for k, v in parts.items()}
    return TokenCorpus("pydoc_topics", tuple(index), ids["train"], ids["valid"], ids["test"])
