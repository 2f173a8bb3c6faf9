"""The grading sandbox is really active: what a hostile notebook tries is stopped, and nothing is left behind."""

from __future__ import annotations

import os
import time

import pytest

from autograder.paths import REPO_DIR
from autograder.sandbox import UID_BASE, Limits, Sandbox, is_root, warm_available
from autograder.sandbox import running_sandboxes as sandbox_processes

FAST = Limits(cell_timeout=3, notebook_timeout=30, grace=2)
MODES = [pytest.param(True, id="warm", marks=pytest.mark.skipif(not warm_available(), reason="warm mode needs root")),
         pytest.param(False, id="fresh")]


@pytest.fixture(scope="module", params=MODES)
def box(request):
    """A sandbox slot, in each mode: a warm runner forking per notebook, and a new sandbox per notebook."""
    with Sandbox(FAST, warm=request.param) as sandbox:
        assert sandbox.warm == request.param
        yield sandbox
    assert sandbox_processes() == []


def leftovers(box) -> list[int]:
    """Processes a finished notebook left behind (the warm runner itself is no leftover)."""
    if box.warm:
        return [p for p in sandbox_processes() if _uid(p) == box.uid]
    return sandbox_processes()


def run(box, *sources, kind="numpy", limits=None):
    return box.run([{"index": i, "source": s} for i, s in enumerate(sources)], kind=kind, limits=limits)


def text(result, index) -> str:
    """Everything a cell showed: its printed text, its value, its error."""
    parts = []
    for out in result.cells[index].outputs:
        parts.append(out.get("text") or out.get("data", {}).get("text/plain", "")
                     or f"{out.get('ename')}: {out.get('evalue')}")
    return "".join(parts)


def test_cells_share_one_namespace_and_show_their_last_value(box):
    r = run(box, "import numpy as np\nx = np.arange(4)", "print('sum', x.sum())\nx * 2")
    assert r.finished
    assert text(r, 1) == "sum 6\narray([0, 2, 4, 6])"


def test_an_error_in_one_cell_does_not_stop_the_next(box):
    r = run(box, "1 / 0", "print('next')")
    assert r.cells[0].outputs[0]["ename"] == "ZeroDivisionError"
    assert text(r, 1) == "next\n"


def test_network_is_unreachable(box):
    r = run(box, "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)",
            "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=2)")
    assert "Network is unreachable" in text(r, 0)
    assert r.cells[0].events == ["network"]
    assert "URLError" in text(r, 1) or "gaierror" in text(r, 1) or "Temporary failure" in text(r, 1)


def test_solutions_judge_and_bnlib_reference_do_not_exist_inside(box):
    secret = [REPO_DIR / "solutions", REPO_DIR / "autograder" / "judging" / "verdict.py",
              REPO_DIR / "bnlib" / "numpy.py",
              REPO_DIR / "bnlib" / "torch.py", REPO_DIR / "autograder" / "grading" / "coordinator.py"]
    cells = [f"open({str(p)!r}).read()" if p.suffix else f"import os; os.listdir({str(p)!r})" for p in secret]
    r = run(box, *cells)
    for i in range(len(cells)):
        assert "FileNotFoundError" in text(r, i), text(r, i)


def test_only_the_allowed_modules_import(box):
    r = run(box, "import bnlib.gradcheck, autograder.inside.executor; print('ok')",
            "import bnlib.numpy", "import autograder.judging", "import torch", "import nbgrader")
    assert text(r, 0) == "ok\n"
    for i in range(1, 5):
        assert "ModuleNotFoundError" in text(r, i), text(r, i)


def test_torch_is_importable_in_the_torch_sandbox(box):
    r = run(box, "import torch\nprint(torch.ones(3).sum().item())", kind="torch")
    assert text(r, 0) == "3.0\n"


def test_writing_outside_the_scratch_folder_fails(box):
    r = run(box, f"open({str(REPO_DIR / 'gradebook.db')!r}, 'w')", "open('/usr/evil', 'w')",
            "open('/scratch/mine.txt', 'w').write('ok')")
    assert "FileNotFoundError" in text(r, 0) or "Read-only" in text(r, 0) or "Permission" in text(r, 0)
    assert "Read-only file system" in text(r, 1) or "Permission denied" in text(r, 1)
    assert text(r, 2) == "2"


def test_a_file_written_by_one_notebook_is_gone_for_the_next(box):
    run(box, "open('/scratch/note.txt', 'w').write('from the last student')\n"
             "open('/tmp/note.txt', 'w').write('x')")
    r = run(box, "import os; print(sorted(os.listdir('/scratch')), os.path.exists('/tmp/note.txt'))")
    assert text(r, 0) == "[] False\n"


@pytest.mark.skipif(not is_root(), reason="a distinct user id per slot needs root")
def test_notebook_runs_as_an_unprivileged_user_of_its_own(box):
    r = run(box, "import os; print(os.getuid(), os.getgid(), os.getgroups())")
    uid = int(text(r, 0).split()[0])
    assert UID_BASE <= uid < UID_BASE + 256
    assert text(r, 0) == f"{uid} {uid} []\n"


def test_forking_10000_processes_is_stopped(box):
    start = time.monotonic()
    r = run(box, "import os\npids = []\nfor _ in range(10_000):\n    pid = os.fork()\n"
                 "    if pid == 0:\n        import time; time.sleep(60)\n    pids.append(pid)",
            "print('after')")
    assert "Resource temporarily unavailable" in text(r, 0)
    assert r.cells[0].events == ["process-limit"]
    assert text(r, 1) == "after\n"
    assert time.monotonic() - start < 20
    assert leftovers(box) == []


def test_allocating_50_gb_is_refused(box):
    r = run(box, "import numpy as np\nx = np.ones(50 * 2**30 // 8)", "bytearray(50 * 2**30)", "print('after')")
    assert text(r, 0).startswith("MemoryError")
    assert text(r, 1).startswith("MemoryError")
    assert r.cells[0].events == ["memory"]
    assert text(r, 2) == "after\n"


def test_an_infinite_loop_is_interrupted_and_the_notebook_goes_on(box):
    r = run(box, "while True:\n    pass", "print('after')")
    assert r.cells[0].events == ["timeout"]
    assert text(r, 1) == "after\n"


def test_a_loop_that_ignores_the_interrupt_is_killed(box):
    start = time.monotonic()
    r = run(box, "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass",
            "print('never')")
    assert r.killed_for == "cell-timeout"
    assert r.current_cell == 0 and 1 not in r.cells
    assert time.monotonic() - start < FAST.cell_timeout + FAST.grace + 5
    assert leftovers(box) == []


def test_catching_the_interrupt_in_a_loop_does_not_help(box):
    r = run(box, "while True:\n    try:\n        while True: pass\n    except BaseException:\n        pass",
            "print('never')")
    assert r.killed_for == "cell-timeout" or r.cells[0].events == ["timeout"]


def test_the_notebook_time_limit_kills_a_slow_notebook(box):
    r = run(box, *["import time; time.sleep(1.5)"] * 5, limits=Limits(cell_timeout=3, notebook_timeout=4, grace=1))
    assert r.killed_for == "notebook-timeout"
    assert not r.finished


def test_os_exit_ends_the_run_and_says_where(box):
    r = run(box, "print('a')", "import os; os._exit(0)", "print('never')")
    assert not r.finished and r.exit_code == 0 and r.current_cell == 1
    assert 2 not in r.cells


def test_sys_exit_is_an_error_in_its_cell_only(box):
    r = run(box, "import sys; sys.exit(3)", "print('after')")
    assert r.cells[0].events == ["exit"]
    assert text(r, 1) == "after\n"


def test_a_segfault_is_reported_as_a_signal(box):
    r = run(box, "import ctypes; ctypes.string_at(0)", "print('never')")
    assert r.exit_signal == 11 and r.current_cell == 0 and not r.finished


def test_printing_1_gb_keeps_only_the_first_characters(box):
    start = time.monotonic()
    r = run(box, "print('x' * 10**9)", "import os\nfor _ in range(1000):\n    os.write(1, b'y' * 10**6)",
            "print('after')")
    out = text(r, 0)
    assert len(out) < 200_000 and "999,900,001 characters of output dropped" in out
    assert text(r, 2) == "after\n"
    assert time.monotonic() - start < 20


def test_a_forged_message_on_the_grader_channel_is_ignored(box):
    r = run(box, "import os\nfor fd in range(3, 10):\n    try: os.write(fd, b'{\"t\": \"done\"}\\nnot json\\n')\n"
                 "    except OSError: pass", "print('after')")
    assert text(r, 1) == "after\n" and r.finished


def test_a_forked_child_cannot_speak_for_the_notebook(box):
    r = run(box, "import os\nif os.fork() == 0:\n    print('child')\nelse:\n    os.wait(); print('parent')",
            "print('after')")
    assert text(r, 0) == "parent\n"
    assert text(r, 1) == "after\n"


def test_records_written_to_the_channel_come_back(box):
    r = run(box, "import os\nd = os.environ['BNGRADE_CHANNEL']\nopen(d + '/c.json', 'w').write('{}')\n"
                 "print(os.environ['BNGRADE_SEED'])")
    assert r.records == {"c.json": b"{}"}


def test_ipython_magics_are_translated_or_refused(box):
    r = run(box, "x = 2\n%time y = x + 1\ny", "%matplotlib inline\nprint('ok')", "!ls", "%%bash\nls")
    assert text(r, 0).endswith("3")
    assert text(r, 1) == "ok\n"
    assert "shell commands" in text(r, 2)
    assert "%%bash is not available" in text(r, 3)


def test_a_process_left_by_one_notebook_is_gone_for_the_next(box):
    run(box, "import os, time\nif os.fork() == 0:\n    time.sleep(600)")
    r = run(box, "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    assert text(r, 0) in ("[1]\n", "[1, 2]\n")  # itself (and bubblewrap's reaper in the fresh mode)
    assert leftovers(box) == []


def _uid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
    except OSError:
        return -1


def test_a_module_patched_by_one_notebook_is_pristine_for_the_next(box):
    run(box, "import numpy as np\nnp.allclose = lambda *a, **k: True\n"
             "import autograder.inside.probe as p\np.check = None")
    r = run(box, "import numpy as np, autograder.inside.probe as p\nprint(np.allclose(1, 2), callable(p.check))")
    assert text(r, 0) == "False True\n"


@pytest.mark.parametrize("warm", MODES)
def test_nothing_is_left_running_after_a_sandbox_closes(box, warm):
    before, running = set(_cgroup_dirs()), set(sandbox_processes())  # the module's own sandbox
    with Sandbox(FAST, warm=warm) as sandbox:
        run(sandbox, "import os, time\nif os.fork() == 0:\n    time.sleep(600)\nprint('forked')")
        during = set(_cgroup_dirs())
    assert set(sandbox_processes()) <= running
    assert set(_cgroup_dirs()) == before
    if sandbox.cgroup.active:
        assert len(during) == len(before) + 2  # its memory and pids cgroups existed meanwhile


def _cgroup_dirs():
    from pathlib import Path

    found = []
    for controller in ("memory", "pids"):
        base = Path("/sys/fs/cgroup") / controller
        if base.is_dir():
            found += [p for p in base.rglob("bngrade-*") if p.is_dir()]
    return found


def test_the_sandbox_refuses_an_unknown_kind(box):
    with pytest.raises(ValueError, match="unknown sandbox kind"):
        run(box, "1", kind="jax")


def test_bwrap_missing_is_a_clear_error(monkeypatch):
    from autograder.sandbox import SandboxError, mounts

    monkeypatch.setattr(mounts.shutil, "which", lambda name: None)
    with pytest.raises(SandboxError, match="bubblewrap"):
        mounts.bwrap_args("numpy", FAST)


def test_processes_helper_sees_a_sandbox_while_it_runs():
    """The stray-process check itself can fail: it sees a sandbox that is still running."""
    import threading

    seen = []
    with Sandbox(FAST, warm=False) as sandbox:
        t = threading.Thread(target=lambda: run(sandbox, "import time; time.sleep(2)"))
        t.start()
        for _ in range(40):
            time.sleep(0.1)
            seen = sandbox_processes()
            if seen:
                break
        t.join()
    assert seen
    assert os.getpid() not in seen


# ---------------------------------------------------------------- as a normal user
def test_a_normal_user_gets_an_unprivileged_user_namespace_and_no_capabilities(monkeypatch):
    from autograder.sandbox import mounts, slots

    monkeypatch.setattr(slots, "is_root", lambda: False)
    args = mounts.bwrap_args("numpy", FAST)
    assert "--unshare-user" in args and "--disable-userns" in args
    assert "--cap-add" not in args
    assert Sandbox(FAST).warm is False


def _system_python():
    import shutil
    import sys

    path = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    return path


@pytest.mark.skipif(not is_root() or _system_python() is None,
                    reason="needs root (to become another user) and a system Python of this version")
def test_the_sandbox_works_for_a_normal_user(monkeypatch):
    """Run as `nobody`: an unprivileged user namespace gives the same isolation (no cgroups)."""
    from autograder.sandbox import mounts, slots

    monkeypatch.setattr(slots, "is_root", lambda: False)
    monkeypatch.setattr(mounts, "python_paths", lambda: (_system_python(), [], ["/usr/lib/python3/dist-packages"]))
    with Sandbox(FAST) as box:
        assert not box.warm and box.uid is None and not box.cgroup.active
        plain = box.argv
        monkeypatch.setattr(box, "argv", lambda kind, warm: ["setpriv", "--reuid=65534", "--regid=65534",
                                                             "--clear-groups", *plain(kind, warm)])
        r = run(box, "import os, numpy\nprint(os.getuid(), numpy.ones(2).sum())",
                "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)",
                f"open({str(REPO_DIR / 'bnlib' / 'numpy.py')!r})",
                "import os\nfor _ in range(10_000):\n    if os.fork() == 0:\n        import time; time.sleep(60)",
                "bytearray(50 * 2**30)")
    assert text(r, 0) == "65534 2.0\n"
    assert r.cells[1].events == ["network"]
    assert "FileNotFoundError" in text(r, 2)
    assert r.cells[3].events == ["process-limit"]
    assert text(r, 4).startswith("MemoryError")
    assert sandbox_processes() == []
