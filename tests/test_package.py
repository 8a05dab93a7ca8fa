"""The package, its compiled extension and the backend switch."""
import subprocess
import sys

import pytest

import attngan_fast


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
        "    for _ in range(2):\n"
        "        y = attngan_fast.ops.upsample_conv3x3(torch.randn(1, 2, 3, 3), torch.randn(4, 2, 3, 3))\n"
        "msgs = [str(x.message) for x in w if 'attngan_fast' in str(x.message)]\n"
        "assert not attngan_fast.extension_info()['cpu']\n"
        "assert len([m for m in msgs if '_C could not be loaded' in m]) == 1, msgs\n"
        "assert len([m for m in msgs if 'upsample_conv3x3: the compiled extension is missing' in m]) == 1, msgs\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
