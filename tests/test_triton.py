"""bnlib.triton: the Triton kernels against nn.BatchNorm1d, on CUDA or in Triton's interpreter on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

# Without a GPU, Triton's interpreter runs the kernels: it is chosen when they are defined
# (this import), and must stay on while they run (the fixture below turns it off after).
_BEFORE = os.environ.get("TRITON_INTERPRET")
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import bnlib.triton as bt  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module", autouse=True)
def interpreter_for_this_module_only():
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
    yield
    if _BEFORE is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _BEFORE
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_kernels_run_here():
    assert bt.INTERPRETED or torch.cuda.is_available()


# The interpreter runs each program in NumPy: small shapes, several tiles each. (The layer over
# every option, against nn.BatchNorm1d: tests/test_conformance.py.)
@pytest.mark.parametrize("shape", [(300, 70), (3, 70, 9)], ids=str)
def test_compare_with_torch_reports_every_quantity_and_they_agree(shape):
    errors = bt.compare_with_torch(shape, torch.float64, device=DEVICE)
    assert set(errors) == {"y", "dx", "dgamma", "dbeta", "running_mean", "running_var"}
    assert max(errors.values()) < 1e-12, errors


def test_half_precision_input_is_normalized_with_float32_statistics():
    x = (torch.randn(64, 4) * 0.5 + 3).half().to(DEVICE)
    ours, ref = bt.BatchNorm1d(4).to(DEVICE), nn.BatchNorm1d(4).to(DEVICE)
    y_ours, y_ref = ours(x), ref(x)
    assert y_ours.dtype == torch.float16
    torch.testing.assert_close(y_ours, y_ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_non_contiguous_input_is_made_contiguous():
    x = torch.randn(5, 12).t().to(DEVICE)  # (12, 5), strided
    torch.testing.assert_close(bt.BatchNorm1d(5).to(DEVICE)(x), nn.BatchNorm1d(5).to(DEVICE)(x))


def test_tiles_cover_the_batch():
    block_m, block_c = bt.tile_sizes(65536, 256)
    assert block_c == 64 and block_m * block_c == 4096
    assert bt.tile_sizes(3, 3) == (4, 4)  # never much larger than the batch


def test_merge_stats_counts_the_short_last_tile():
    x = torch.randn(10, 3, dtype=torch.float64)
    tiles = x.split(4)  # 4, 4, 2 rows
    mean = torch.stack([t.mean(0) for t in tiles])
    m2 = torch.stack([((t - t.mean(0)) ** 2).sum(0) for t in tiles])
    mu, var = bt.merge_stats(mean, m2, 10, 4)
    torch.testing.assert_close(mu, x.mean(0))
    torch.testing.assert_close(var, x.var(0, correction=0))


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
        env={**os.environ, **env},
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU without the interpreter")
def test_cpu_tensors_without_the_interpreter_get_a_clear_error():
    out = _python(
        """
        import torch, bnlib.triton as bt
        try:
            bt.BatchNorm1d(3)(torch.randn(4, 3))
        except RuntimeError as e:
            print("RuntimeError:", e)
        """,
        {"TRITON_INTERPRET": "0"},
    )
    assert "RuntimeError:" in out.stdout and "TRITON_INTERPRET=1" in out.stdout, out.stdout + out.stderr


def test_bnlib_works_without_triton_installed():
    # A finder that makes `import triton` fail, as on a machine without the optional extra.
    out = _python(
        """
        import sys, importlib.abc
        class NoTriton(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ImportError(f"No module named {name!r}")
        sys.meta_path.insert(0, NoTriton())
        import numpy as np, torch
        import bnlib, bnlib.numpy, bnlib.torch, bnlib.gradcheck, bnlib.fused_numpy, bnlib.fused_torch, bnlib.bench
        bnlib.fused_numpy.BatchNorm1d(3)(np.random.randn(4, 3).astype(np.float32))
        bnlib.fused_torch.BatchNorm1d(3, compiled=False)(torch.randn(4, 3))
        triton_row = [k for k in bnlib.bench.builtin_kernels("cuda") if k.name == "triton"][0]
        print("bench says:", triton_row.unavailable)
        try:
            import bnlib.triton
        except ImportError as e:
            print("ImportError:", e)
        """,
        {},
    )
    assert out.returncode == 0, out.stderr
    assert "bench says: bnlib.triton needs Triton" in out.stdout, out.stdout
    assert "ImportError: bnlib.triton needs Triton" in out.stdout, out.stdout
    assert "pip install -e '.[triton]'" in out.stdout, out.stdout


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(65536, 256), (4096, 1000), (64, 256, 128)], ids=str)
def test_cuda_training_step_matches_pytorch_at_size(shape):
    errors = bt.compare_with_torch(shape, torch.float32, device="cuda")
    assert max(errors.values()) < 1e-4, errors
