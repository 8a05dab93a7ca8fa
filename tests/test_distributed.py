"""DDP with the gloo backend on the CPU, 2 processes.

W processes x K accumulation steps x micro-batch b compute exactly what 1 process x W*K
accumulation steps x b computes: the same shards of the shuffled data, the same noise rows, the
same per-shard sorting, padding and BatchNorm statistics, the same in-shard wrong-caption pairs and
DAMSM negatives; only the order in which gradients are summed differs. With 2 terms the sum is
bitwise the same (a + b == b + a). With 4 terms ((g0 + g2) + (g1 + g3) across two processes vs
((g0 + g1) + g2) + g3 in one) the gradients agree to float32 rounding, but Adam's first steps
are close to sign(g) * lr: an element whose gradient cancels to rounding noise can move by up to
2 * lr (4e-4) differently, and the next losses differ at the 1e-5 level.

(A single process with one batch of W*K*b is *not* the same computation: BatchNorm statistics,
the wrong-caption pairs and the DAMSM in-batch negatives would span the whole batch.)
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from attngan_fast.training import load_snapshot
from tests.training_helpers import ddp_worker, single_worker, synthetic_run_files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(path):
    return [{k: v for k, v in json.loads(line).items() if k != "imgs_per_s"} for line in path.read_text().splitlines()]


def parameter_names(state: dict) -> list[str]:
    """The parameters of a state_dict (BatchNorm's running statistics are per rank under DDP)."""
    return [k for k in state if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]


# (processes, accumulation steps per process, micro-batch, loss rtol, parameter atol)
CASES = [(2, 1, 3, 0.0, 0.0), (2, 2, 2, 1e-4, 2 * 2e-4)]


@pytest.mark.parametrize("world_size, accum, batch, rtol, atol", CASES)
def test_ddp_matches_single_process_accumulation(tmp_path, world_size, accum, batch, rtol, atol):
    overrides = {"TRAIN.BATCH_SIZE": batch}
    options = {"max_epochs": 2, "snapshot_every": 1, "accum_steps": accum}
    mp.spawn(ddp_worker, args=(world_size, free_port(), str(tmp_path / "ddp"), options, overrides), nprocs=world_size)
    single_options = {**options, "accum_steps": world_size * accum}
    mp.spawn(single_worker, args=(str(tmp_path / "one"), single_options, overrides), nprocs=1)
    ddp_log, one_log = losses(tmp_path / "ddp" / "log.jsonl"), losses(tmp_path / "one" / "log.jsonl")
    assert len(ddp_log) == len(one_log) == 2 * (12 // (world_size * accum * batch))
    for a, b in zip(ddp_log, one_log):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=rtol, abs=0), (a["step"], k)
    snap = load_snapshot(tmp_path / "ddp" / "checkpoint_epoch_2.pt")
    assert len(snap["rng"]) == world_size  # every rank's RNG state is kept
    single = load_snapshot(tmp_path / "one" / "checkpoint_epoch_2.pt")
    close = dict(rtol=0, atol=atol)
    for state, one in zip([snap["netG"], *snap["netsD"]], [single["netG"], *single["netsD"]]):
        for name in parameter_names(one):
            torch.testing.assert_close(state[name], one[name], **close)


@pytest.mark.slow
def test_torchrun_train_cli(tmp_path):
    """``torchrun --standalone --nproc_per_node 2 -m attngan_fast.cli train`` on the CPU (gloo)."""
    cfg_path, _, _ = synthetic_run_files(tmp_path)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "attngan_fast.cli", "train", "--cfg", str(cfg_path), "--out", str(out), "--device", "cpu",
           "--max-epochs", "1", "--threads", "1", "--no-progress", "--sample-every", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 1 epochs, 5 steps") == 1  # rank 0 reports, 40 images / (2 x 4)
    snap = load_snapshot(out / "checkpoint_epoch_1.pt")
    assert len(snap["rng"]) == 2 and snap["step"] == 5
    seeds = json.loads((out / "run.json").read_text())["options"]["seed"]
    assert 1 <= seeds <= 10000 and json.loads((out / "run.json").read_text())["world_size"] == 2


def test_sync_batchnorm_needs_cuda():
    from attngan_fast.training.distributed import DistInfo, convert_sync_batchnorm

    with pytest.raises(ValueError, match="CUDA devices only"):
        convert_sync_batchnorm(torch.nn.BatchNorm2d(3), DistInfo(world_size=2))
