"""The grading sandbox: run one notebook's cells under bubblewrap, and watch it from outside.

Every submission is hostile until graded. Each one runs in a sandbox of its own, made with
`bubblewrap <https://github.com/containers/bubblewrap>`_ (Debian's ``bwrap``): a new
bubblewrap sandbox per notebook, or, as root, a warm runner per slot that forks each notebook
into new namespaces (see :class:`Sandbox`). Either way the notebook:

- has no network (its own, empty network namespace), no IPC or process view of the host
  (its own IPC and PID namespaces: when it ends, every process it started ends with it);
- sees a read-only file system made of the system's ``/usr``, the Python interpreter's
  standard library (its ``site-packages`` hidden), the packages its assignment may import
  (NumPy; PyTorch for ``bn-torch`` only) and exactly these project files:
  ``bnlib/__init__.py``, ``bnlib/gradcheck.py``, ``autograder/__init__.py`` and the package
  ``autograder/inside/`` (the probe, the scenarios and the cell runner), mounted whole.
  Not ``solutions/``, not the judge, not the gradebook, not other submissions: they do not
  exist inside;
- can write only two small private RAM disks, ``/scratch`` (its working folder) and ``/tmp``;
- runs under limits: wall time per cell (interrupted, then killed) and per notebook
  (killed), address space (``RLIMIT_AS``), processes (``RLIMIT_NPROC``), output kept.

Run as root, the sandboxed process also drops to an unprivileged user id of its own
(61000 + slot by default; one per concurrently running sandbox, reserved across processes
with an abstract socket), so that the process limit counts its processes alone; and where the
cgroup v1 memory/pids controllers are writable, each slot gets a cgroup that caps the memory
and processes of everything it starts together. Run as a normal user, bubblewrap uses an
unprivileged user namespace (the process limit then counts per namespace) and cgroups are
skipped: the other limits still hold.

The notebook's code runs in :mod:`autograder.inside.executor`, which speaks the protocol of
:mod:`autograder.inside.protocol` on its standard output; :class:`Sandbox` reads it with
deadlines and caps, kills the whole sandbox when a limit is passed, and returns a
:class:`RunResult`.

One module per concern:

- :mod:`~autograder.sandbox.limits`: :class:`Limits`, every limit, cap and grace;
- :mod:`~autograder.sandbox.mounts`: what the sandbox sees, and the bubblewrap command line;
- :mod:`~autograder.sandbox.slots`: the user id and cgroups of each slot (root only);
- :mod:`~autograder.sandbox.monitor`: reading a run's messages with deadlines and caps;
- :mod:`~autograder.sandbox.zygote`: the warm runner's client;
- :mod:`~autograder.sandbox.box`: :class:`Sandbox`, a slot that runs one notebook at a time;
- :mod:`~autograder.sandbox.result`: :class:`RunResult` and :class:`SandboxError`.

This package is the public API: import from ``autograder.sandbox``.
"""

from autograder.sandbox.box import Sandbox, preflight, running_sandboxes, warm_available
from autograder.sandbox.limits import Limits
from autograder.sandbox.result import Killed, RunResult, SandboxError
from autograder.sandbox.slots import UID_BASE, is_root

__all__ = ["Sandbox", "SandboxError", "Limits", "RunResult", "Killed", "preflight", "running_sandboxes",
           "warm_available", "is_root", "UID_BASE"]
