"""Issue 16: unbounded input. Every case is one `nas: error:` line naming the problem, exit 2,
nothing written and the user's files byte-identical; memory bombs run in a subprocess under a
memory limit, so that a regression fails instead of eating the machine."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY
from nas_core import cli
from nas_core.errors import MAX_ECHO, MAX_MESSAGE, brief, one_line

RUN = ["run", *TINY, "--set", "search.epochs=1"]
# A limit on the data segment (heap and private mappings: what a memory bomb grows), not on the
# address space: importing torch maps about 3.5 GB of libraries and reservations but uses about
# 1 GB of data, and a tiny search about the same.
MEMORY_LIMIT = 2 * 2**30

# -- inputs ---------------------------------------------------------------------------------------

REDUCE_JSON = '"reduce": {"nodes": [[["max_pool_3x3", 0], ["max_pool_3x3", 1]]], "concat": [2]}'
REDUCE_TEXT = "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2]"


def genotype_json(normal_nodes: str, concat: str = "[2]") -> str:
    return f'{{"normal": {{"nodes": {normal_nodes}, "concat": {concat}}}, {REDUCE_JSON}}}'


def genotype_text(first_index: str = "0", concat: str = "[2]") -> str:
    return (f"Genotype(normal=[('sep_conv_3x3', {first_index}), ('sep_conv_3x3', 1)], normal_concat={concat}, "
            f"{REDUCE_TEXT})")


def many_nodes(n: int = 10_000) -> str:  # 0.5 MB; Graphviz took 23 GB to draw it
    nodes = [[["sep_conv_3x3", i], ["sep_conv_3x3", i + 1]] for i in range(n)]
    return json.dumps({"normal": {"nodes": nodes, "concat": [2, 3]}, "reduce": {"nodes": nodes, "concat": [2, 3]}})


def billion_laughs(key: str) -> str:
    """481 bytes of YAML under ``key`` that stand for 9**9 strings once expanded."""
    lines = ['  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"  - &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return f"{key}:\n" + "\n".join(lines) + "\n"


def ptb_folder(train: str | None) -> dict[str, str | None]:
    return {"ptb/train.txt": train, "ptb/valid.txt": " the cat\n", "ptb/test.txt": " the cat\n"}


# -- checking ------------------------------------------------------------------------------------

def write_files(root: Path, files: dict[str, str | None]) -> None:
    """``files``: path -> text, or None for a folder."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            path.mkdir()
        else:
            path.write_text(text)


def snapshot(root: Path) -> dict[str, str | None]:
    """Every file and folder under ``root``: a file's sha256, None for a folder."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def expand(args: list[str], root: Path) -> list[str]:
    """``args`` with {tmp} filled in, and an --out under ``root`` (nothing may appear there)."""
    out = root / ("cells/x" if args[0] == "show" else "out")
    return [*(a.replace("{tmp}", str(root)) for a in args), "--out", str(out)]


def assert_one_error_line(status: int, err: str, message: str) -> None:
    assert status == 2, err[:2000]
    assert err.startswith("nas: error: ") and err.count("\n") == 1, err[:2000]
    assert message in err, err[:2000]
    assert len(err) < MAX_MESSAGE + 100  # no echoed value makes the line long


def run_limited(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`nas ARGS` in a subprocess whose data segment may not grow past MEMORY_LIMIT."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {**os.environ, "NAS_DISABLE_PLUGINS": "tensorboard", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nas_core.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300, preexec_fn=limit)


# -- memory bombs: a subprocess under a memory limit -----------------------------------------------

BOMBS = [
    # (id, the files (made when the case runs), args, the message's part)
    ("genotype of 10000 nodes, show", lambda: {"big.json": many_nodes()}, ["show", "{tmp}/big.json"],
     "cell 'normal' has 10000 intermediate nodes; a cell may have at most 64"),
    ("genotype of 10000 nodes, train", lambda: {"big.json": many_nodes()},
     ["train", "--genotype", "{tmp}/big.json", *TINY], "cell 'normal' has 10000 intermediate nodes"),
    ("text form, range(2, 10000000000)", lambda: {"g.txt": genotype_text(concat="range(2, 10000000000)")},
     ["show", "{tmp}/g.txt"], "normal_concat at line 1, column 84: 10000000000 is not a node index"),
    ("text form, 50000 minus signs", lambda: {"g.txt": genotype_text(first_index="-" * 50_000 + "1")},
     ["show", "{tmp}/g.txt"], "not of the form Genotype(...): nested far too deeply"),
    ("YAML alias bomb in --config", lambda: {"bomb.yaml": billion_laughs("seed")},
     [*RUN, "--config", "{tmp}/bomb.yaml"],
     "config file {tmp}/bomb.yaml: more than 100000 values once its aliases are expanded"),
    ("YAML alias bomb in --set", dict, [*RUN, "--set", billion_laughs("seed").replace("seed:", "seed=", 1)],
     "more than 100000 values once its aliases are expanded"),
    ("PTB train.txt of one 50 MB line", lambda: ptb_folder("the " * 12_500_000),
     ["run", "--preset", "rnn_demo", "--dataset", "ptb", "--data-root", "{tmp}/ptb", "--no-progress"],
     "dataset 'ptb': {tmp}/ptb/train.txt line 1 is longer than 1000000 characters"),
]


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_DATA bounds mmap'd memory on Linux only")
@pytest.mark.parametrize("files, args, message", [case[1:] for case in BOMBS], ids=[case[0] for case in BOMBS])
def test_memory_bombs_are_refused_within_bounded_memory(tmp_path, files, args, message):
    write_files(tmp_path, files())
    before = snapshot(tmp_path)
    proc = run_limited(expand(args, tmp_path), tmp_path)
    assert_one_error_line(proc.returncode, proc.stderr, message.replace("{tmp}", str(tmp_path)))
    assert snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("search") / "run"
    assert cli.main([*RUN, "--optimizer", "darts_1st", "--out", str(run)]) == 0
    return run


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_DATA bounds mmap'd memory on Linux only")
def test_a_yaml_alias_bomb_in_a_runs_config_is_refused_on_resume(search_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(search_run, run)
    (run / "config.yaml").write_text(billion_laughs("seed"))
    before = snapshot(tmp_path)
    proc = run_limited(["run", "--resume", str(run), "--no-progress"], tmp_path)
    assert_one_error_line(proc.returncode, proc.stderr, f"{run / 'config.yaml'}: more than 100000 values")
    assert snapshot(tmp_path) == before


# -- everything else: in this process --------------------------------------------------------------

LONG_OP = "x" * 900_000
BAD = [
    # genotypes: malformed JSON and text that were bug lines
    ("nodes is a number", {"g.json": genotype_json("5")}, ["show", "{tmp}/g.json"],
     "cell 'normal': 'nodes' must be a list of nodes, each a list of [op, input] pairs, got 5"),
    ("nodes is null", {"g.json": genotype_json("null")}, ["show", "{tmp}/g.json"], "'nodes' must be a list of nodes"),
    ("an index of 5000 digits", {"g.json": genotype_json(f'[[["sep_conv_3x3", {"9" * 5000}], ["sep_conv_3x3", 1]]]')},
     ["show", "{tmp}/g.json"], "(5000 characters) is not a node index (at most 10000)"),
    ("JSON nested 100000 deep", {"g.json": "[" * 100_000 + "]" * 100_000}, ["show", "{tmp}/g.json"],
     "not a genotype: nested far deeper than the five levels of one"),
    ("text form, 0x and 4000 hex digits", {"g.txt": genotype_text(first_index="0x" + "f" * 4000)},
     ["show", "{tmp}/g.txt"],
     "input index at line 1, column 35: <an integer of about 4817 digits> is not a node index"),
    ("text form, range(2, 10**10)", {"g.txt": genotype_text(concat="range(2, 10**10)")}, ["show", "{tmp}/g.txt"],
     "normal_concat at line 1, column 84: expected an integer, got '10**10'"),
    ("genotype file of 2 MB", {"g.json": genotype_json("[]") + " " * 2_000_000}, ["show", "{tmp}/g.json"],
     "is larger than 1000000 bytes; a genotype is a few kB"),
    ("an op name of 900 kB", {"g.json": genotype_json(f'[[["{LONG_OP}", 0], ["sep_conv_3x3", 1]]]')},
     ["show", "{tmp}/g.json"], f"unknown op {brief(LONG_OP)}; valid ops: none"),
    ("a genotype name of 100 kB", {}, ["show", "y" * 100_000],
     f"genotype {brief('y' * 100_000)} is neither a file, a run directory nor a registered name;"),
    # YAML
    ("--config nested 5000 deep", {"deep.yaml": "seed: " + "[" * 5000 + "]" * 5000 + "\n"},
     [*RUN, "--config", "{tmp}/deep.yaml"], "config file {tmp}/deep.yaml: nested deeper than 32 levels"),
    ("--config with a recursive alias", {"rec.yaml": "seed: &a [1, *a]\n"}, [*RUN, "--config", "{tmp}/rec.yaml"],
     "config file {tmp}/rec.yaml: the alias '*a' is inside the value it names"),
    ("--config with a seed of 5000 digits", {"seed.yaml": f"seed: {'9' * 5000}\n"},
     [*RUN, "--config", "{tmp}/seed.yaml"],
     "config file {tmp}/seed.yaml: the integer '9999"),
    # options
    ("--seed 2**70", {}, [*RUN, "--seed", str(2**70)],
     "command line: seed must be in -2**63..2**64-1, the seeds torch.manual_seed accepts, got 1180591620717411303424"),
    ("--seed -2**63-1", {}, [*RUN, "--seed", str(-2**63 - 1)], "seed must be in -2**63..2**64-1"),
    ("--set seed of 5000 digits", {}, [*RUN, "--set", f"seed={'9' * 5000}"], "' (5000 characters) is too large"),
    ("--set seed of 4000 digits", {}, [*RUN, "--set", f"seed={'9' * 4000}"],
     "--set: seed must be in -2**63..2**64-1, the seeds torch.manual_seed accepts, "
     "got <an integer of about 4001 digits>"),
    ("--seed of 5000 digits", {}, [*RUN, "--seed", "9" * 5000], "--seed must be an integer, got '99999"),
    ("--seed abc", {}, [*RUN, "--seed", "abc"], "--seed must be an integer, got 'abc'"),
    ("--threads 1.5", {}, [*RUN, "--threads", "1.5"], "--threads must be an integer, got '1.5'"),
    ("rnn_demo search.batch_size=1", {}, ["run", "--preset", "rnn_demo", "--set", "search.batch_size=1",
                                          "--no-progress", "--out", "{tmp}/run"],
     "search.batch_size=1: a search reads at least 2 columns a batch"),
    ("--threads 99999999999", {}, [*RUN, "--threads", "99999999999"],
     "command line: threads must be in 1..4096, got 99999999999"),
    ("arch_lr=inf", {}, [*RUN, "--set", "optimizer.arch_lr=inf"],
     "--set: optimizer.arch_lr must be a finite number, got 'inf'"),
    ("arch_lr=1e309", {}, [*RUN, "--set", "optimizer.arch_lr=1e309"],
     "optimizer.arch_lr must be a finite number, got '1e309'"),
    ("arch_lr=1e400 as an int", {}, [*RUN, "--set", f"optimizer.arch_lr=1{'0' * 400}"],
     "optimizer.arch_lr must be a finite number, got <an integer of about 401 digits>"),
    ("init_std=nan", {}, [*RUN, "--set", "relaxation.init_std=nan"], "relaxation.init_std must be a finite number"),
    ("init_std=.nan", {}, [*RUN, "--set", "relaxation.init_std=.nan"], "relaxation.init_std must be a finite number"),
    ("xi=.inf (float or None)", {}, [*RUN, "--set", "optimizer.xi=.inf"], "optimizer.xi must be a finite number"),
    ("arch_betas with inf", {}, [*RUN, "--set", "optimizer.arch_betas=[0.5, .inf]"],
     "optimizer.arch_betas[1] must be a finite number"),
    ("a 100 kB --set value", {}, [*RUN, "--set", f"search.epochs={'z' * 100_000}"],
     "--set: search.epochs must be int, got str 'zzz"),
    # datasets
    ("train.txt is a folder", ptb_folder(None),
     ["run", "--preset", "rnn_demo", "--dataset", "ptb", "--data-root", "{tmp}/ptb", "--no-progress"],
     "dataset 'ptb': {tmp}/ptb/train.txt is a directory; expected a text file"),
    ("imagefolder color_jitter=-1", {}, [*RUN, "--dataset", "imagefolder", "--data-root", "{tmp}",
                                         "--set", "dataset.color_jitter=-1"],
     "invalid dataset option: 'color_jitter' must be >= 0"),
    ("imagefolder image_size=0", {}, [*RUN, "--dataset", "imagefolder", "--data-root", "{tmp}",
                                      "--set", "dataset.image_size=0"],
     "invalid dataset option: 'image_size' must be >= 1"),
]


@pytest.mark.parametrize("files, args, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_is_one_short_error_line_and_writes_nothing(tmp_path, capsys, files, args, message):
    write_files(tmp_path, files)
    before = snapshot(tmp_path)
    status = cli.main(expand(args, tmp_path))
    assert_one_error_line(status, capsys.readouterr().err, message.replace("{tmp}", str(tmp_path)))
    assert snapshot(tmp_path) == before


# -- the helpers that keep messages short ----------------------------------------------------------

def test_brief_quotes_short_values_as_repr_and_shortens_long_ones():
    assert brief("sep_conv_3x3") == "'sep_conv_3x3'" and brief(7) == "7" and brief(None) == "None"
    long = brief("x" * 2_000_000)
    assert long.endswith("' (2000000 characters)") and len(long) < 2 * MAX_ECHO
    assert brief(16**4000) == "<an integer of about 4817 digits>"  # Python writes no int of > 4300 digits
    assert len(brief([["y" * 10_000, 16**4000]] * 1000)) <= 2 * MAX_ECHO + 3


def test_one_line_joins_lines_and_caps_the_length():
    assert one_line("a\nb\r\nc") == "a b c"
    capped = one_line("z" * 10 * MAX_MESSAGE)
    assert capped.endswith(f"... ({9 * MAX_MESSAGE} more characters)") and len(capped) < MAX_MESSAGE + 40


def test_the_bounds_admit_every_valid_value(capsys):
    assert cli.main(["config", "show", "--seed", str(2**64 - 1), "--threads", "4096", "--set",
                     "optimizer.arch_lr=3e-4", "--set", f"relaxation.init_std={1e308}"]) == 0
    out = capsys.readouterr().out
    assert f"seed: {2**64 - 1}\n" in out and "threads: 4096\n" in out and "arch_lr: 0.0003\n" in out
    assert cli.main(["config", "show", "--seed", str(-2**63)]) == 0
