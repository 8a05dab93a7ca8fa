"""DAMSM word loss: the reference loop (``attngan_fast.losses.words_loss``) vs the fused op.

Shapes: DAMSM sizes, D=256, 17 x 17 regions, T word slots (lengths drawn in 5..T, one of T).
Sizes (see conftest): "cpu" birds (T=18) at batch 10 (the test-time / small-batch case) and 48
(DAMSM pre-training); "full" adds birds at 20 (the GAN's batch) and COCO at 14 (GAN, T=12) and
48 (pre-training, T=15). Forward only and forward+backward (gradients w.r.t. words and regions).

FLOPs (algorithmic, both implementations): per (image, caption) pair with n words, the two
matmuls s = W R (n x N x D) and c = B R^T, i.e. 4 n N D forward; the backward adds db = dC R,
dW = dS R^T and dR = dC^T B + W^T dS, i.e. 8 n N D. Over the batch: 4 B L N D forward and
12 B L N D forward+backward (L = sum of the lengths). The fused backward recomputes s and c
(16 B L N D executed). Bytes: inputs, outputs and gradients once (the op is compute bound).

Peak memory (``extra_info["peak_bytes"]``): on CUDA ``torch.cuda.max_memory_allocated`` above
the inputs; on CPU the peak resident set size above the baseline (Linux VmHWM, reset through
/proc/self/clear_refs) of one call in a fresh subprocess whose glibc mmap threshold is pinned
at 64 KiB, so every tensor buffer is mapped on allocation and unmapped on free.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from attngan_fast import backend, config, losses
from attngan_fast.losses import fused as damsm_losses

try:
    from benchmarks.common import DEVICE, FULL, record
except ImportError:  # run as a script (the peak-memory subprocess)
    record = None
    DEVICE, FULL = "cpu", False

CFG = config.load("bird_attn2")
D, HW = 256, 17
# name -> (batch, T)
CASES = {"birds-small": (10, 18), "birds-damsm": (48, 18)}
if FULL:
    CASES.update({"birds-gan": (20, 18), "coco-gan": (14, 12), "coco-damsm": (48, 15)})
ROUNDS = {"fwd": 5, "fwd+bwd": 3}


def make_case(batch: int, T: int, device: str = DEVICE):
    gen = torch.Generator().manual_seed(batch)
    img = torch.randn(batch, D, HW, HW, generator=gen).to(device).requires_grad_(True)
    words = torch.randn(batch, D, T, generator=gen).to(device).requires_grad_(True)
    lens = torch.randint(5, T + 1, (batch,), generator=gen)
    lens[0] = T
    return img, words, lens.to(device), torch.arange(batch, device=device), lens.sum().item()


def make_step(impl: str, mode: str, batch: int, T: int, device: str = DEVICE):
    """A function running one words loss (forward, or forward+backward) with implementation ``impl``."""
    img, words, lens, labels, total_len = make_case(batch, T, device)
    words_loss = losses.words_loss if impl == "reference" else damsm_losses.words_loss
    kwargs = {} if impl == "reference" else {"return_att_maps": False}

    def step():
        with backend(impl), torch.set_grad_enabled(mode != "fwd"):
            loss0, loss1, _ = words_loss(img, words, labels, lens, None, batch, CFG, **kwargs)
            if mode != "fwd":
                (loss0 + loss1).backward()
        return loss0

    return step, total_len


def peak_bytes(impl: str, mode: str, batch: int, T: int) -> int:
    """Peak memory of one call above the baseline (see the module docstring)."""
    if DEVICE == "cuda":
        step, _ = make_step(impl, mode, batch, T)
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, __file__, impl, mode, str(batch), str(T)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def _rss() -> dict[str, int]:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, value = line.split(":", 1)
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_damsm_words_loss(benchmark, impl, case, mode):
    batch, T = CASES[case]
    step, total_len = make_step(impl, mode, batch, T)
    N = HW * HW
    flops = (4 if mode == "fwd" else 12) * batch * total_len * N * D
    tensors = 4 * (batch * D * T + batch * D * N) * (1 if mode == "fwd" else 2)
    record(benchmark, group=f"damsm words_loss {case} {mode} B={batch} D={D} T={T} {HW}x{HW}", impl=impl, device=DEVICE,
           shapes={"B": batch, "D": D, "T": T, "H": HW, "W": HW, "sum_lens": total_len},
           flops=flops, bytes_moved=tensors)
    benchmark.extra_info["peak_bytes"] = peak_bytes(impl, mode, batch, T)
    benchmark.pedantic(step, rounds=ROUNDS[mode], warmup_rounds=1, iterations=1)


if __name__ == "__main__":  # one peak-memory measurement on the CPU: impl mode batch T
    impl_arg, mode_arg, batch_arg, t_arg = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    step_fn, _ = make_step(impl_arg, mode_arg, batch_arg, t_arg, "cpu")
    step_fn()  # warm: thread pools, lazy init
    base = _rss()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    step_fn()
    print(json.dumps({"peak_bytes": _rss()["VmHWM"] - base}))
