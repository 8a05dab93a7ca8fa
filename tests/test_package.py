"""The package, its compiled extension, the backend switch and the first op (GLU)."""
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import attngan_fast
from attngan_fast.ops import _dispatch, glu
from kernel_checks import assert_close


def test_version_and_extension_info():
    info = attngan_fast.extension_info()
    assert attngan_fast.__version__ == info["version"]
    assert set(info) >= {"cpu", "cuda", "cuda_archs", "triton", "torch", "cuda_available"}
    assert info["cpu"], f"attngan_fast._C did not load: {info['error']}"
    if info["cuda"]:
        assert "9.0" in info["cuda_archs"] or info["cuda_archs"]


def test_kernels_ship_inside_the_package():
    import attngan_fast.kernels as kernels

    assert kernels.__name__ == "attngan_fast.kernels"
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('kernels') is not None)"
    assert subprocess.run([sys.executable, "-c", code], cwd="/").returncode == 0, "a top-level `kernels` module is importable"


def test_backend_switch():
    assert attngan_fast.get_backend() == "fast"
    with attngan_fast.backend("reference"):
        assert attngan_fast.get_backend() == "reference"
        with attngan_fast.backend("fast"):
            assert attngan_fast.get_backend() == "fast"
        assert attngan_fast.get_backend() == "reference"
    assert attngan_fast.get_backend() == "fast"
    with pytest.raises(ValueError, match="backend"):
        attngan_fast.set_backend("turbo")


def test_import_without_extension_warns_once_and_works():
    code = (
        "import sys, warnings; sys.modules['attngan_fast._C'] = None\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    import attngan_fast, torch\n"
        "    y = attngan_fast.ops.glu(torch.randn(2, 4))\n"
        "    y = attngan_fast.ops.glu(torch.randn(2, 4))\n"
        "msgs = [str(x.message) for x in w if 'attngan_fast' in str(x.message)]\n"
        "assert not attngan_fast.extension_info()['cpu']\n"
        "assert len([m for m in msgs if '_C could not be loaded' in m]) == 1, msgs\n"
        "assert len([m for m in msgs if 'glu' in m]) == 1, msgs\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("shape", [(1, 2), (3, 8, 5, 7), (2, 6, 4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_glu_matches_reference(shape, dtype):
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    y = glu(x)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    x_ref = x.detach().float().requires_grad_()
    y_ref = F.glu(x_ref, 1)
    (gx_ref,) = torch.autograd.grad(y_ref, x_ref, g.float())
    assert_close(y, y_ref.to(dtype), dtype)
    assert_close(gx, gx_ref.to(dtype), dtype)


def test_glu_channels_last_and_noncontiguous():
    x = torch.randn(2, 8, 5, 7).to(memory_format=torch.channels_last)
    assert_close(glu(x), F.glu(x, 1))
    x = torch.randn(2, 7, 8).transpose(1, 2)
    assert_close(glu(x), F.glu(x, 1))


def test_glu_gradcheck_and_opcheck():
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(glu, (x,))
    for sample in (torch.randn(2, 4, 3), torch.randn(3, 6, 2, 5, requires_grad=True)):
        torch.library.opcheck(torch.ops.attngan_fast.glu.default, (sample,))
    torch.library.opcheck(torch.ops.attngan_fast.glu_backward.default, (torch.randn(2, 2, 3), torch.randn(2, 4, 3)))


def test_glu_compiles_without_graph_breaks():
    x = torch.randn(2, 8, 5)
    compiled = torch.compile(lambda t: glu(t) * 2, fullgraph=True, backend="aot_eager")
    assert_close(compiled(x), F.glu(x, 1) * 2)


def test_glu_reference_backend_bypasses_the_op(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.ops.attngan_fast, "glu", lambda x: calls.append(x))
    with attngan_fast.backend("reference"):
        glu(torch.randn(2, 4))
    assert not calls


@pytest.mark.parametrize("bad, error, match", [
    (torch.randn(2, 3), ValueError, "even"),
    (torch.randn(4), ValueError, r"\(N, 2C"),
    (torch.ones(2, 4, dtype=torch.int64), TypeError, "floating"),
])
def test_glu_bad_input(bad, error, match):
    with pytest.raises(error, match=match):
        glu(bad)


def test_fallback_warns_once_for_a_device_without_kernel(monkeypatch):
    monkeypatch.setattr(_dispatch, "_devices", {"glu": frozenset({"cuda"})})
    monkeypatch.setattr(_dispatch, "_warned", set())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        x = torch.randn(2, 4)
        assert_close(glu(x), F.glu(x, 1))
        glu(x)
    assert len([m for m in w if "glu" in str(m.message)]) == 1
