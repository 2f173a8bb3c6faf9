"""bnlib.bench.memory: the environment of a run's fresh memory, and what it does to a process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from bnlib.bench import __main__ as cli
from bnlib.bench import memory

REUSE = memory.REUSE_MEMORY["GLIBC_TUNABLES"]


def test_no_option_needs_no_new_environment():
    assert memory.environment({"PATH": "/bin"}, huge_pages=False, reuse_memory=False) is None


def test_huge_pages_sets_pytorchs_variable_and_keeps_the_others():
    env = memory.environment({"PATH": "/bin"}, huge_pages=True, reuse_memory=False)
    assert env == {"PATH": "/bin", "THP_MEM_ALLOC_ENABLE": "1"}


def test_reuse_memory_adds_its_tunables_after_the_users_own():
    env = memory.environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, huge_pages=False, reuse_memory=True)
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{REUSE}"
    assert memory.mode(env) == "memory reused"


def test_an_environment_that_already_has_the_options_needs_no_new_one():
    environ = {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{REUSE}", "THP_MEM_ALLOC_ENABLE": "1"}
    assert memory.environment(environ, huge_pages=True, reuse_memory=True) is None
    assert memory.mode(environ) == "huge pages, memory reused"
    assert memory.reuses_memory(environ) and not memory.reuses_memory({"THP_MEM_ALLOC_ENABLE": "1"})


def test_a_later_tunable_of_the_users_overrides_ours():
    assert memory.mode({"GLIBC_TUNABLES": f"{REUSE}:glibc.malloc.trim_threshold=131072"}) == "default"


def test_reuse_is_refused_and_never_reported_where_the_c_library_is_not_glibc(monkeypatch):
    monkeypatch.setattr(memory, "_glibc", lambda: False)
    with pytest.raises(memory.ReuseUnavailable, match="needs glibc"):
        memory.environment({}, huge_pages=False, reuse_memory=True)
    assert memory.mode({"GLIBC_TUNABLES": REUSE}) == "default"
    assert not memory.reuses_memory({"GLIBC_TUNABLES": REUSE})
    assert memory.environment({}, huge_pages=True, reuse_memory=False) == memory.HUGE_PAGES


def test_half_of_the_tunables_is_not_reuse():
    assert memory.mode({"GLIBC_TUNABLES": REUSE.split(":")[0]}) == "default"
    assert memory.mode({"THP_MEM_ALLOC_ENABLE": "1"}) == "huge pages"


@pytest.mark.parametrize(("flag", "variable"),
                         [("--huge-pages", "THP_MEM_ALLOC_ENABLE"), ("--reuse-memory", "GLIBC_TUNABLES")])
def test_the_command_runs_again_in_a_process_with_the_environment(monkeypatch, flag, variable):
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 7)
    assert cli.main([flag, "--quick", "--no-plots"]) == 7  # the new process's exit status
    [(cmd, env)] = calls
    assert cmd == [sys.executable, "-m", "bnlib.bench", flag, "--quick", "--no-plots"]
    assert env[variable] == {**memory.HUGE_PAGES, **memory.REUSE_MEMORY}[variable]
    assert env["PATH"] == os.environ["PATH"] and env[memory.RERUN] == "1"


def _no_rerun(cmd, env):
    raise AssertionError(f"ran again: {cmd}")


def test_a_process_that_already_has_the_environment_runs_the_benchmark_itself(monkeypatch, capsys):
    monkeypatch.setenv("GLIBC_TUNABLES", REUSE)
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")
    monkeypatch.setattr(cli.subprocess, "call", _no_rerun)
    with pytest.raises(SystemExit):  # --threads 0 is refused after the decision to run again or not
        cli.main(["--huge-pages", "--reuse-memory", "--threads", "0"])
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_a_run_started_again_never_starts_a_third(monkeypatch, capsys):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setenv(memory.RERUN, "1")  # as if a wrapper had removed the tunables on the way
    monkeypatch.setattr(cli.subprocess, "call", _no_rerun)
    with pytest.raises(SystemExit):
        cli.main(["--reuse-memory", "--quick"])
    assert "the environment still lacks it" in capsys.readouterr().err


# What the variables do: a freed 64 MiB tensor goes back to the operating system, or stays.
_FREE_A_TENSOR = """
import json, os, torch
from bnlib.bench import core
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
t = torch.ones(2**24)  # 64 MiB, every page written
before = resident()
del t
print(json.dumps({"released_mib": (before - resident()) / 2**20, "memory": core.machine_info(1)["memory"]}))
"""


def _free_a_tensor(env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", _FREE_A_TENSOR], env=env, capture_output=True, text=True,
                          check=True, timeout=120)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not os.path.exists("/proc/self/statm"),
                    reason="glibc's malloc, and the resident memory from Linux's /proc")
def test_reused_memory_keeps_a_freed_tensor_for_the_process_and_the_default_gives_it_back():
    # Without anything else that changes malloc: other tunables, MALLOC_* variables, a preloaded allocator.
    base = {k: v for k, v in os.environ.items()
            if k not in ("GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE", "LD_PRELOAD", memory.RERUN)
            and not k.startswith("MALLOC_")}
    default = _free_a_tensor(base)
    reused = _free_a_tensor(memory.environment(base, huge_pages=False, reuse_memory=True))
    assert default == {"released_mib": pytest.approx(64, abs=8), "memory": "default"}
    assert reused["memory"] == "memory reused"
    assert reused["released_mib"] < 8, "glibc gave the freed tensor back: the tunables were not applied"
