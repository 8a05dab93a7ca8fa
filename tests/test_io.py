"""attngan_fast.io: atomic writes replace the file whole or leave it untouched."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from attngan_fast.io import atomic_open, atomic_pickle_dump, atomic_torch_save, atomic_write_json, atomic_write_text


def test_roundtrips(tmp_path):
    atomic_write_json(tmp_path / "sub" / "a.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "sub" / "a.json").read_text()) == {"x": [1, 2]}
    atomic_pickle_dump([1, "b"], tmp_path / "b.pickle")
    assert pickle.loads((tmp_path / "b.pickle").read_bytes()) == [1, "b"]
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "c.pth")
    assert torch.equal(torch.load(tmp_path / "c.pth", weights_only=True)["w"], torch.arange(3))
    atomic_write_text(tmp_path / "d.txt", "one")
    atomic_write_text(tmp_path / "d.txt", "two")
    assert (tmp_path / "d.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.pickle", "c.pth", "d.txt", "sub"]  # no temp files


def test_failure_leaves_the_old_file(tmp_path):
    path = tmp_path / "state.pth"
    atomic_write_text(path, "complete")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_open(path, "w") as f:
            f.write("half")
            raise RuntimeError("crash")
    assert path.read_text() == "complete" and [p.name for p in tmp_path.iterdir()] == ["state.pth"]
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(path, "a"):
            pass
