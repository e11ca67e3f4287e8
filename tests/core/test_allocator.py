"""nas_core.allocator: the memory a step frees is kept for the next step (glibc), and left alone where
the user set malloc up or another C library runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from nas_core import allocator, cli

# 40 tensors of 8 MiB made, written and freed at once, three times (as a step's activations are), in a
# fresh process: whether malloc was set up, and the page faults of a second three rounds
ROUNDS = textwrap.dedent("""
    import resource, torch
    from nas_core.allocator import reuse_freed_memory
    reused = reuse_freed_memory()
    def rounds():
        for _ in range(3):
            tensors = [torch.empty(2 << 20).fill_(1.0) for _ in range(40)]
            del tensors
    rounds()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds()
    print(reused, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def rounds(**user_variables: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k not in allocator.USER_VARIABLES} | user_variables
    out = subprocess.run([sys.executable, "-c", ROUNDS], env=env, capture_output=True, text=True, check=True)
    reused, faults = out.stdout.split()[-2:]
    return reused, int(faults)


@pytest.mark.skipif(not allocator.on_glibc(), reason="glibc's malloc only")
def test_memory_freed_by_a_round_of_tensors_is_reused_without_page_faults():
    reused, faults = rounds()
    assert reused == "True" and faults < 1_000
    # glibc's fixed default threshold, set by the user: every tensor gets its own mapping, handed back when
    # freed and faulted in again when made (2,048 pages each); the user's setting is left as it is
    reused, faults = rounds(MALLOC_MMAP_THRESHOLD_="131072")
    assert reused == "False" and faults > 3 * 40 * 2048 * 0.9


class FakeLibc:
    def __init__(self):
        self.calls = []

        def mallopt(param, value):
            self.calls.append((param, value))
            return 1

        self.mallopt = mallopt


@pytest.fixture
def libc(monkeypatch) -> FakeLibc:
    fake = FakeLibc()
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: fake)
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    for name in allocator.USER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return fake


def test_both_thresholds_are_set_trimming_off(libc):
    assert allocator.reuse_freed_memory()
    assert libc.calls == [(-1, -1), (-3, 32 << 20)]  # M_TRIM_THRESHOLD off, M_MMAP_THRESHOLD 32 MiB


@pytest.mark.parametrize("name", allocator.USER_VARIABLES)
def test_malloc_set_up_by_the_user_is_left_alone(libc, monkeypatch, name):
    monkeypatch.setenv(name, "131072")
    assert not allocator.reuse_freed_memory()
    assert libc.calls == []


def test_other_c_libraries_are_left_alone(libc, monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert not allocator.reuse_freed_memory()
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert not allocator.reuse_freed_memory()
    assert libc.calls == []


def test_a_refused_value_is_reported(libc):
    libc.mallopt = lambda param, value: 0
    assert not allocator.reuse_freed_memory()


def test_the_nas_program_sets_it_when_it_starts(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(allocator, "reuse_freed_memory", lambda: calls.append(True) or True)
    assert cli.main(["list"], autoload=False) == 0
    assert calls == [True]
