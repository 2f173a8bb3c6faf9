"""What a sandbox sees: the interpreter, the allowed packages, the project's files, and the bwrap command line.

A notebook sees a read-only file system made of the system's ``/usr``, the Python
interpreter's standard library (its ``site-packages`` hidden), the packages its kind of
assignment may import (:data:`PACKAGES`, with everything they require: :func:`package_dirs`)
and exactly the project files of :func:`project_files`: :data:`SANDBOX_FILES` and the package
:mod:`autograder.inside`, mounted whole. It writes only to private RAM disks.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path

from autograder.inside import executor
from autograder.paths import REPO_DIR
from autograder.sandbox import slots
from autograder.sandbox.limits import Limits
from autograder.sandbox.result import SandboxError

__all__ = ["SANDBOX_FILES", "INSIDE", "LIB", "SITE", "SCRATCH", "CHANNEL", "PACKAGES", "PRELOAD",
           "python_paths", "requirement_closure", "package_dirs", "project_files", "bwrap_path", "bwrap_args"]

#: Files of this project that a sandbox may read (relative to the repository), beyond the
#: package :mod:`autograder.inside`, which is mounted whole.
SANDBOX_FILES = ("bnlib/__init__.py", "bnlib/gradcheck.py", "autograder/__init__.py")
#: The sandbox-side package: everything in it runs in the student's process.
INSIDE = "autograder/inside"
#: Where those files and the allowed packages appear inside the sandbox.
LIB, SITE = "/sandbox/lib", "/sandbox/site"
#: The notebook's working folder and the private RAM disks (the executor mounts them anew in
#: each child of a warm runner).
SCRATCH, RAM_DISKS = executor.SCRATCH, executor.RAM_DISKS
#: The probe's channel folder inside the sandbox.
CHANNEL = "/tmp/bngrade-channel"
#: Distributions a notebook may import, per kind of assignment (with what they require to run:
#: PyTorch needs sympy, networkx, jinja2... for autograd functions and modules).
PACKAGES = {
    "numpy": ("numpy",),
    "torch": ("numpy", "torch"),
}
#: Requirements left out: build tools PyTorch lists but a notebook never needs.
NOT_NEEDED = {"setuptools", "pip", "wheel"}
#: What the warm runner imports once, per kind of assignment.
PRELOAD = {"numpy": ("numpy", "autograder.inside.probe"),
           "torch": ("numpy", "torch", "torch._dynamo", "sympy", "autograder.inside.probe")}
#: The environment a notebook runs in (nothing of the grader's).
ENVIRONMENT = {"HOME": SCRATCH, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TMPDIR": "/tmp",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8"}


def python_paths() -> tuple[str, list[str], list[str]]:
    """The base interpreter, the folders it needs, and its site-packages folders to hide."""
    exe = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    prefix = os.path.realpath(sys.base_prefix)
    stdlib = sysconfig.get_path("stdlib", vars={"installed_base": prefix, "base": prefix})
    needed = [prefix] if not prefix.startswith("/usr") else []
    hide = []
    for scheme in ("posix_prefix", "posix_local", "deb_system"):
        try:
            for key in ("purelib", "platlib"):
                p = sysconfig.get_path(key, scheme, vars={"base": prefix, "platbase": prefix})
                if p and os.path.isdir(p) and p not in hide and not p.startswith(os.path.realpath(sys.prefix) + "/"):
                    hide.append(os.path.realpath(p))
        except KeyError:
            continue
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for p in ("/usr/lib/python3/dist-packages", f"/usr/local/lib/python{version}/dist-packages",
              f"/usr/local/lib/python{version}/site-packages"):
        if os.path.isdir(p) and p not in hide:
            hide.append(p)
    if not os.path.isdir(stdlib):
        raise SandboxError(f"cannot find the standard library of {exe}")
    return exe, needed, hide


def requirement_closure(names: tuple[str, ...]) -> list[str]:
    """The top-level modules of distributions `names` and of everything they require (no extras)."""
    seen, modules, todo = set(), [], list(names)
    while todo:
        dist_name = re.split(r"[\s;<>=!~\[]", todo.pop(0), maxsplit=1)[0].lower().replace("_", "-")
        if dist_name in seen or dist_name in NOT_NEEDED:
            continue
        seen.add(dist_name)
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            raise SandboxError(f"{dist_name!r} is not installed in {sys.prefix}") from None
        for top in _top_level(dist):
            if top not in modules:
                modules.append(top)
        todo += [r for r in (dist.requires or []) if "extra ==" not in r]
    return modules


def _top_level(dist: md.Distribution) -> list[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return [t for t in text.split() if t and not t.startswith("_")] or text.split()
    tops = []
    for f in dist.files or []:
        first = f.parts[0]
        if first.endswith((".dist-info", ".data", ".libs")) or first in ("..", "__pycache__"):
            continue
        name = first[:-3] if first.endswith(".py") and len(f.parts) == 1 else first
        if name.isidentifier() and name not in tops:
            tops.append(name)
    return tops


def package_dirs(names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(host path, name inside SITE) for each package, plus its auditwheel `.libs` folder."""
    out = []
    for name in requirement_closure(names):
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise SandboxError(f"package {name!r} is not installed in {sys.prefix}")
        if spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0])
            out.append((str(path), name))
            libs = path.parent / f"{name}.libs"
            if libs.is_dir():
                out.append((str(libs), libs.name))
        else:
            out.append((str(spec.origin), Path(str(spec.origin)).name))
    return out


def project_files() -> list[tuple[str, str]]:
    """(host path, path inside LIB) for the project files a notebook may import."""
    files = list(SANDBOX_FILES)
    files += sorted(str(p.relative_to(REPO_DIR)) for p in (REPO_DIR / INSIDE).rglob("*.py")
                    if "__pycache__" not in p.parts)
    return [(str(REPO_DIR / f), f) for f in files if (REPO_DIR / f).is_file()]


def _root_symlinks() -> list[str]:
    """Mirror the host's /bin, /lib, ... (symlinks into /usr on merged-/usr systems, or folders)."""
    args = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if not path:
        raise SandboxError("bubblewrap (`bwrap`) is not installed: run `make setup`, or "
                           "`apt-get install bubblewrap` as root")
    return path


def bwrap_args(kind: str, limits: Limits, warm: bool = False) -> list[str]:
    """The bubblewrap command line for a notebook of `kind` ('numpy' or 'torch').

    With `warm`, the command is the warm runner (:func:`autograder.inside.executor.zygote`), which
    keeps the capabilities it needs to give each notebook new namespaces (root only).
    """
    exe, needed, hide = python_paths()
    args = [bwrap_path(), "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    if warm:
        for cap in ("CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID"):
            args += ["--cap-add", cap]
    elif slots.is_root():
        # bubblewrap runs privileged and keeps only what the executor needs to drop to its
        # own unprivileged user before any student code runs.
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--disable-userns"]
    for key, value in ENVIRONMENT.items():
        args += ["--setenv", key, value]
    args += ["--ro-bind", "/usr", "/usr", *_root_symlinks()]
    for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime"):
        args += ["--ro-bind-try", path, path]
    for path in needed:
        args += ["--ro-bind", path, path]
    for path in hide:
        args += ["--tmpfs", path]
    for src, name in package_dirs(PACKAGES[kind]):
        args += ["--ro-bind", src, f"{SITE}/{name}"]
    for src, rel in project_files():
        args += ["--ro-bind", src, f"{LIB}/{rel}"]
    # bubblewrap copies the host's mode onto the folders it creates above a bind (e.g. /root,
    # 0700): open them up, or the unprivileged sandbox user could not reach what is bound.
    dests = [args[i + 2] for i, a in enumerate(args) if a == "--ro-bind"]
    parents = sorted({str(p) for d in dests for p in Path(d).parents if str(p) != "/"}
                     - {d for d in dests})
    for path in parents:
        if not any(path == d or path.startswith(d + "/") for d in dests):
            args += ["--chmod", "0755", path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for path in RAM_DISKS:
        args += ["--perms", "1777", "--size", str(limits.disk), "--tmpfs", path]
    start = (f"from {executor.__name__} import zygote; zygote({list(PRELOAD[kind])!r})" if warm
             else f"from {executor.__name__} import main; main()")
    args += ["--chdir", SCRATCH, "--", exe, "-I", "-S", "-B", "-c",
             f"import sys; sys.path[:0] = [{LIB!r}, {SITE!r}]; {start}"]
    return args
