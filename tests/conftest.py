"""Shared test setup.

On a machine without CUDA, Triton kernels run in Triton's interpreter on CPU tensors: the
environment variable must be set before any kernel module is imported, hence here.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state (fresh random inputs, reproducible failures)."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def original_files(tmp_path):
    """Tiny files as the original AttnGAN saves them: ``tests.training_helpers.write_tiny_original_files``."""
    from tests.training_helpers import write_tiny_original_files

    return write_tiny_original_files(tmp_path)
