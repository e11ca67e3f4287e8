"""Every command of the README and the docs runs as written, in document order, for a new user
(issue 24).

The ```bash blocks of README.md, docs/*.md and the example plugin's README are cut into simple
commands (comments stripped, ``\\`` continuations joined, ``&&``/``;`` sequences split, the
README's ``for ... & done; wait`` loop expanded into commands run at once). Every ``nas ...``
and ``torchrun ... -m nas_core.cli ...`` command then runs, in order, in one fresh working
directory per document, on tiny budgets (TINY_*) and tiny files in each dataset's documented
on-disk layout. What cannot exist on this machine is replaced (TOKEN_SUBSTITUTIONS,
PLACEHOLDERS) and what cannot run here at all is SKIPPED with its reason. A command that is
neither run nor skipped fails the fast test, so a new documented command cannot go untested.

``pytest -m slow tests/docs -s`` prints one report line per command (also written to
``documented-commands.txt`` under pytest's base temporary directory; each command's output is
kept beside it).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import numpy as np
import pytest
import yaml

from cifar_files import write_cifar10, write_cifar100
from conftest import OWN_PLUGINS, REPO

EXAMPLE = REPO / "docs" / "examples" / "nas-example-plugin"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), EXAMPLE / "README.md"]
COMMAND_TIMEOUT_S = 900  # one command; a hung one fails its document instead of the session

# ---------------------------------------------------------------------------------------------
# What the docs say -> what runs here, and why; applied to each argument in this order.
# `pip install -e docs/examples/nas-example-plugin` installs into a folder of the document's
# (on PYTHONPATH; NAS_ONLY_PLUGINS, the suite's filter, gains 'example'), not the shared venv.
# ~ is a fake home holding tiny copies of the datasets the docs name, in their documented
# layouts: ~/data/cifar-10-batches-py and ~/data/cifar-100-python (the official python-version
# pickles, tests/cifar_files.py), ~/data/penn and ~/data/wikitext-2 (train/valid/test.txt) and
# ~/imagenet (an ImageFolder tree with train/ and val/).
TOKEN_SUBSTITUTIONS: list[tuple[str | None, str, str, str]] = [
    # (only after this option, regex over one argument, replacement ("": dropped), why)
    (None, r"^~(?=/|$)", "{home}", "tiny datasets in the documented layouts"),
    (None, r"^\.venv/bin/nas$", "nas", "the nas of the interpreter running the tests"),
    ("--device", r"^cuda(:\d+)?$", "cpu", "no GPU here"),
    (None, r"^--device=cuda(:\d+)?$", "--device=cpu", "no GPU here"),
    (None, r"^CUDA_VISIBLE_DEVICES=", "", "no GPU here"),
    (None, r"^--nproc_per_node=\d+$", "--nproc_per_node=2", "two gloo processes on CPU"),
    (None, r"^\.\.\.$", "", "`nas --traceback run ...`: '...' stands for any options"),
]
# Names a user replaces with their own run directory: the newest run directory (marked by its
# .nas-run file) that earlier commands of the same document created under the glob.
PLACEHOLDERS: list[tuple[str, str]] = [  # (regex, glob)
    (r"runs/([\w-]*)\.\.\.", r"runs/\1*"),  # runs/darts_rnn-..., runs/darts_cnn-train-...
    (r"runs/<[^>]*>", "runs/*"),  # runs/<the search's directory>
    (r"(?<![\w/])RUN_DIR\b", "runs/*"),
]
#: Files a user writes before running a command that names them (their content is not shown).
USER_FILES = {"my.yaml": "search:\n  epochs: 1\n"}
SKIPPED: list[tuple[str, str]] = [  # (regex over the command, why it does not run here)
    (r"^python3? -m venv ", "creates the virtualenv the tests already run in"),
    (r"pip install -e '?\.\[test\]", "installs the toolkit under test; the installed one runs here"),
    (r" -m pytest\b", "the test suite that holds this test"),
    (r"--rdzv[_-]endpoint[= ](?!localhost|127\.0\.0\.1)", "needs a second machine at the rendezvous address"),
    (r"^(?:\S*/)?tensorboard\b", "a web server that runs until stopped"),
    (r"^(?:sudo )?(?:apt-get|apt|brew) ", "installs system packages"),
    (r"^nas nb201-lookup --benchmark ~/", "reads the published 4.7 GB NAS-Bench-201 file; tests/plugins/test_nb201.py "
                                          "reads small files in its format"),
]
#: Commands the docs say fail, with where they say so (none today).
EXPECTED_TO_FAIL: list[tuple[str, str]] = []

# Tiny budgets, appended as --set to run/train/transfer/select/random (which apply --set to every
# stage) but not to --resume, which continues the run as configured.
TINY_BUDGET = {"search.epochs": 1, "search.max_steps_per_epoch": 2, "train.epochs": 1,
               "train.max_steps_per_epoch": 2}
TINY_SIZE = {  # per space: the keys are its options, so they must match the space the command uses
    "darts_cnn": {"space.cells": 3, "space.channels": 4, "network.cells": 3, "network.channels": 4,
                  "search.batch_size": 8, "train.batch_size": 8},
    "darts_rnn": {"space.emb": 8, "space.hid": 8, "network.emb": 8, "network.hid": 8,
                  "search.batch_size": 4, "train.batch_size": 4},  # tiny texts: BPTT 35 needs few columns
}
TINY_DATA = {  # per dataset, applied last
    "cifar10": {"dataset.verify_md5": "false"},  # the tiny copies are not the official files
    "cifar100": {"dataset.verify_md5": "false"},
    "nb201": {"space.cells": 1, "space.channels": 4, "network.cells": 1, "network.channels": 4,
              "search.batch_size": 8, "train.batch_size": 8},
}
# Which space and dataset a command uses, from its flags (the command's --set must fit them).
PRESET_SPACE = {"rnn_demo": "darts_rnn", "rnn_paper": "darts_rnn", "nb201_demo": "nb201", "nb201_paper": "nb201",
                "nb201_train": "nb201"}
GENOTYPE_SPACE = {"darts_rnn": "darts_rnn"}
TARGET_SPACE = {"wikitext2": "darts_rnn"}
PRESET_DATASET = {"paper": "cifar10", "random_short_paper": "cifar10", "rnn_paper": "ptb",
                  **{f"{m}_paper": "cifar10" for m in ("pcdarts", "gdas", "drnas", "fairdarts", "nb201", "darts_minus",
                                                       "sdarts_rs", "sdarts_adv", "robust_darts", "darts_pt",
                                                       "pdarts", "snas", "rdarts_s1", "rdarts_s2", "rdarts_s3",
                                                       "rdarts_s4", "no_skip", "deep")},
                  "nb201_train": "cifar10"}
TARGET_DATASET = {"imagenet": "imagefolder", "cifar100": "cifar100", "wikitext2": "wikitext2"}
TUNABLE = {"run", "train", "transfer", "select", "random"}
# ---------------------------------------------------------------------------------------------

LOOP = re.compile(r"for (\w+) in ([^;]+); do (.+?) & done; wait\s*(?:#.*)?")
NEWEST = re.compile(r"NEWEST\(([^)]*)\)")
ENV_PREFIX = re.compile(r"[A-Za-z_]\w*=.*")


@attrs.frozen
class Command:
    doc: str
    line: int
    tokens: tuple[str, ...]  # as the docs write them, placeholders marked NEWEST(glob)
    group: int  # the commands of one line, run together if it is a `for ... & done; wait` loop

    @property
    def text(self) -> str:  # quoted as a shell needs it (not for ~, which the shell expands)
        return " ".join(t if re.fullmatch(r"[\w@%+=:,./~-]+", t) else shlex.quote(t) for t in self.tokens)


@attrs.frozen
class Outcome:
    command: Command
    status: str  # "ok", "skipped (why)" or "FAILED (...): the first error line"
    seconds: float = 0.0
    ran: str = ""


def bash_lines(doc: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of the doc's ```bash blocks, continuations joined."""
    in_block, pending, start = False, "", 0
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        fence = line.strip()
        if fence.startswith("```"):
            in_block = not in_block and fence == "```bash"
            continue
        if not in_block:
            continue
        start = start if pending else number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text, pending = (pending + line).strip(), ""
        if text:
            yield start, text


def split_sequence(text: str) -> list[list[str]]:
    """The simple commands of ``a && b; c``, comments dropped. Other shell syntax (``|``, ``&``)
    stays in the tokens: such a command is not runnable here and fails the coverage test."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", ";"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def documented_commands(doc: Path) -> list[Command]:
    commands: list[Command] = []
    for group, (line, text) in enumerate(bash_lines(doc)):
        for pattern, glob in PLACEHOLDERS:
            text = re.sub(pattern, f"NEWEST({glob})", text)
        if loop := LOOP.fullmatch(text):  # expanded: one command per value, run at once
            variable, values, body = loop.groups()
            sequences = [split_sequence(re.sub(rf"\$\{{?{variable}\b\}}?", v, body)) for v in values.split()]
        else:
            sequences = [split_sequence(text)]
        commands += [Command(str(doc.relative_to(REPO)), line, tuple(c), group) for s in sequences for c in s]
    return commands


def skip_reason(command: Command) -> str | None:
    return next((why for pattern, why in SKIPPED if re.search(pattern, command.text)), None)


def substituted(tokens: tuple[str, ...], home: Path) -> list[str]:
    """The tokens with TOKEN_SUBSTITUTIONS applied; dropped ones removed."""
    out: list[str] = []
    for i, token in enumerate(tokens):
        for after, pattern, replacement, _ in TOKEN_SUBSTITUTIONS:
            if (after is None or (i > 0 and tokens[i - 1] == after)) and re.search(pattern, token):
                token = re.sub(pattern, replacement.replace("{home}", str(home)), token) if replacement else ""
        if token:
            out.append(token)
    return out


def program(tokens: list[str]) -> str | None:
    """What runs the command here: 'nas', 'torchrun', 'install-example', or None (not handled)."""
    if not tokens or ENV_PREFIX.fullmatch(tokens[0]):
        return None  # an environment variable TOKEN_SUBSTITUTIONS does not cover
    if tokens[0] == "nas":
        return "nas"
    if tokens[0] == "torchrun" and "nas_core.cli" in tokens:
        return "torchrun"
    if tokens[:2] == ["pip", "install"] and tokens[-1].rstrip("/") == str(EXAMPLE.relative_to(REPO)):
        return "install-example"
    return None


def option(args: list[str], flag: str) -> str:
    """The value of the last ``flag VALUE`` or ``flag=VALUE`` in ``args`` ("" if none)."""
    value = ""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def space_of(args: list[str], cwd: Path) -> str:
    config = cwd / option(args, "--genotype") / "config.yaml"
    if option(args, "--genotype") and config.is_file():  # a run directory trains in the space it was found in
        return yaml.safe_load(config.read_text())["space"]["name"]
    return (option(args, "--space") or PRESET_SPACE.get(option(args, "--preset"))
            or TARGET_SPACE.get(option(args, "--target")) or GENOTYPE_SPACE.get(option(args, "--genotype"))
            or "darts_cnn")


def dataset_of(args: list[str]) -> str:
    return (option(args, "--dataset") or TARGET_DATASET.get(option(args, "--target"))
            or PRESET_DATASET.get(option(args, "--preset")) or PRESET_DATASET.get(option(args, "--short-preset"), ""))


def tiny_overrides(args: list[str], cwd: Path) -> list[str]:
    """TINY_* as --set options for ``nas ARGS`` (none for commands that take no --set)."""
    subcommand = next((a for a in args if not a.startswith("-")), None)
    if subcommand not in TUNABLE or "--resume" in args:
        return []
    settings = {**TINY_BUDGET, **TINY_SIZE.get(space_of(args, cwd), {}), **TINY_DATA.get(dataset_of(args), {})}
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def newest_run_dir(glob: str, cwd: Path) -> str:
    """The directory matching ``glob`` that earlier commands created last (by its .nas-run
    marker, written first and never again)."""
    def created(p: Path) -> int:
        return ((p / ".nas-run") if (p / ".nas-run").exists() else p).stat().st_mtime_ns

    dirs = [p for p in cwd.glob(glob) if p.is_dir()]
    if not dirs:
        raise LookupError(f"no directory matches {glob}: no earlier command of this document created one")
    return str(max(dirs, key=created).relative_to(cwd))


def first_error_line(stderr: str, stdout: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    nas_errors = [line for line in lines if line.startswith("nas: error:")]
    return (nas_errors or lines[-1:] or stdout.splitlines()[-1:] or [""])[0][:300]


class DocumentRun:
    """One document's commands, in order, in one working directory, as one user would run them."""

    def __init__(self, home: Path, scratch: Path):
        self.home, self.scratch, self.cwd, self.logs = home, scratch, scratch / "work", scratch / "logs"
        self.cwd.mkdir(parents=True)
        self.logs.mkdir()
        for name, content in USER_FILES.items():
            (self.cwd / name).write_text(content)
        # as a new user runs them: every built-in plugin, the monitor (and `nas report`) included
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "NAS_DISABLE_PLUGINS": "", "NAS_ONLY_PLUGINS": OWN_PLUGINS}
        self.started = 0

    def argv(self, command: Command) -> list[str]:
        """What runs for ``command``: substituted, placeholders resolved, tiny budgets added."""
        tokens = [NEWEST.sub(lambda m: newest_run_dir(m.group(1), self.cwd), t)
                  for t in substituted(command.tokens, self.home)]
        kind, args = program(tokens), tokens[1:]
        if kind == "install-example":  # into a folder of this document's, not the shared venv
            site, source = self.scratch / "site", self.scratch / "example-source"
            shutil.copytree(EXAMPLE, source, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), self.env.get("PYTHONPATH")]))
            self.env["NAS_ONLY_PLUGINS"] = OWN_PLUGINS + ",example"  # the suite's filter, widened to it
            return [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "--disable-pip-version-check", "--target", str(site), str(source)]
        if kind == "torchrun":
            nas_args = args[args.index("nas_core.cli") + 1:]
            return [str(Path(sys.executable).parent / "torchrun"), *args, *tiny_overrides(nas_args, self.cwd)]
        script = Path(sys.executable).parent / "nas"
        nas = [str(script)] if script.exists() else [sys.executable, "-m", "nas_core.cli"]
        return [*nas, *args, *tiny_overrides(args, self.cwd)]

    def run_group(self, commands: list[Command]) -> list[Outcome]:
        """Start the commands of one line together (all of a `for ... & done; wait` loop), wait for all."""
        running, outcomes = [], {}
        for command in commands:
            if why := skip_reason(command):
                outcomes[command] = Outcome(command, f"skipped ({why})")
                continue
            try:
                argv = self.argv(command)
            except LookupError as e:
                outcomes[command] = Outcome(command, f"FAILED (placeholder): {e}")
                continue
            self.started += 1
            log = self.logs / f"{self.started:03d}-line{command.line}"
            with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
                process = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=out, stderr=err)
            running.append((command, argv, process, log, time.monotonic()))
        for command, argv, process, log, start in running:
            try:
                code = process.wait(timeout=COMMAND_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            outcomes[command] = self.outcome(command, argv, code, log, time.monotonic() - start)
        return [outcomes[c] for c in commands]

    @staticmethod
    def outcome(command: Command, argv: list[str], code: int, log: Path, seconds: float) -> Outcome:
        expected_failure = any(re.search(pattern, command.text) for pattern, _ in EXPECTED_TO_FAIL)
        if (code == 0) != expected_failure:
            return Outcome(command, "ok", seconds, shlex.join(argv))
        line = first_error_line(Path(f"{log}.err").read_text(), Path(f"{log}.out").read_text())
        return Outcome(command, f"FAILED (exit {code}): {line}  [{log}.err]", seconds, shlex.join(argv))


def report(outcomes: list[Outcome]) -> str:
    lines = []
    for o in outcomes:
        lines.append(f"{o.status.split()[0]:8} {o.seconds:6.1f}s  {o.command.doc}:{o.command.line}  {o.command.text}")
        if o.status != "ok":
            lines.append(f"{'':18}{o.status}")
        if o.status.startswith("FAILED") and o.ran:
            lines.append(f"{'':18}ran: {o.ran}")
    return "\n".join(lines)


def doc_id(doc: Path) -> str:
    return str(doc.relative_to(REPO))


def test_every_documented_command_is_run_or_skipped() -> None:
    """Fast: each command of the docs is one this test runs or one SKIPPED names (with a reason)."""
    commands = [c for doc in DOCS for c in documented_commands(doc)]
    assert len(commands) > 30, "the docs' ```bash blocks were not found"
    unhandled = [f"{c.doc}:{c.line}: {c.text}" for c in commands
                 if not skip_reason(c) and program(substituted(c.tokens, Path.home())) is None]
    assert not unhandled, "documented commands neither run nor SKIPPED:\n" + "\n".join(unhandled)


def write_text_corpus(folder: Path, seed: int) -> None:
    """train.txt, valid.txt, test.txt as PTB ships them: one sentence a line, a leading space;
    valid and test use only words of train (the first line holds every word)."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(30)]
    folder.mkdir(parents=True)
    for name, n in (("train", 300), ("valid", 100), ("test", 100)):
        lines = [words] if name == "train" else []
        lines += [list(rng.choice(words, size=rng.integers(4, 13))) for _ in range(n)]
        (folder / f"{name}.txt").write_text("".join(" " + " ".join(line) + " \n" for line in lines))


def write_imagefolder(root: Path, classes: int = 3, per_class: int = 4) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake ``~`` (TOKEN_SUBSTITUTIONS): tiny copies of every dataset the docs read."""
    home = tmp_path_factory.mktemp("home")
    write_cifar10(home / "data", per_batch=10, n_test=10)
    write_cifar100(home / "data", n_train=20, n_test=10)
    write_text_corpus(home / "data" / "penn", seed=0)
    write_text_corpus(home / "data" / "wikitext-2", seed=1)
    write_imagefolder(home / "imagenet")
    return home


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_documented_commands_run_in_order(doc: Path, home: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    run = DocumentRun(home, tmp_path_factory.mktemp(doc.stem))
    commands = documented_commands(doc)
    outcomes: list[Outcome] = []
    for group in dict.fromkeys(c.group for c in commands):
        outcomes += run.run_group([c for c in commands if c.group == group])
    text = f"== {doc_id(doc)} (working directory {run.cwd})\n{report(outcomes)}\n"
    with open(tmp_path_factory.getbasetemp() / "documented-commands.txt", "a") as file:
        file.write(text)
    print("\n" + text)
    failed = [o for o in outcomes if o.status.startswith("FAILED")]
    assert not failed, f"{len(failed)} documented command(s) failed:\n" + report(failed)
