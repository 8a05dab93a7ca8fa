"""Triton kernels (CUDA) of ``attngan_fast::damsm_word_similarity`` and its backward.

One program per (image j, caption i) pair walks image j's regions in tiles of BLOCK_N, keeping the
caption's words (BLOCK_T x BLOCK_D) on chip: ``s = W R_tile``, the softmax over the words per
region (complete inside a tile), then the softmax over the regions of ``gamma1 * a`` online (running
max and sum, flash-attention style) while accumulating ``c = softmax . R^T``; the cosines and the
log-sum-exp follow in registers. Nothing of size B x B x T x N reaches memory.

Backward (attention recomputed):
  1. ``_damsm_bwd_pair_kernel``, per pair: the forward pass again, then
     ``dc_t = g_t (w_t / q - cos_t c_t / |c_t|^2)`` and ``delta_t = dc_t . c_t``, then a second pass
     over the tiles: ``db = dC R``, ``da = gamma1 b (db - delta)``, ``ds = a (da - sum_t a da)``,
     ``dW_pair = g_t (c_t / q - cos_t w_t / |w_t|^2) + dS R^T``. Writes dW_pair, dC and the row
     statistics (softmax max, sum, delta) of the pair.
  2. ``_damsm_bwd_regions_kernel``, per (image j, region tile): loops over the captions and
     accumulates ``dR_tile = B^T dC + dS^T W`` from the saved dC and statistics.
  grad_words is the sum of dW_pair over the images (a deterministic torch reduction).

Shapes: words (B, D, T) with T <= 64 and D <= 256 (the (T, D) tiles of words, context and their
gradients stay on chip), regions (B, D, H, W); float32 (IEEE dots), float16, bfloat16.
Runs in Triton's interpreter on CPU tensors when TRITON_INTERPRET=1 (the tests).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["DTYPES", "MAX_D", "MAX_T", "damsm_word_similarity_backward", "damsm_word_similarity_forward"]

COS_EPS = tl.constexpr(1e-8)  # a global read inside @triton.jit must be a constexpr
MAX_T = 64
MAX_D = 256  # AttnGAN's EMBEDDING_DIM; a larger BLOCK_T x BLOCK_D tile no longer fits on chip
DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # tl.dot: no float64


@triton.jit
def _pair_setup(W_ptr, L_ptr, i, T, D, sw_b, sw_d, sw_t, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """Caption i: its length n, row/column masks and words w (BLOCK_T, BLOCK_D), zero outside."""
    n = tl.load(L_ptr + i).to(tl.int32)
    n = tl.minimum(tl.maximum(n, 1), T)
    offs_t = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    t_mask = offs_t < n
    d_mask = offs_d < D
    w = tl.load(W_ptr + i * sw_b + offs_t[:, None] * sw_t + offs_d[None, :] * sw_d,
                mask=t_mask[:, None] & d_mask[None, :], other=0.0)
    return n, offs_t, offs_d, t_mask, d_mask, w


@triton.jit
def _word_probabilities(w, R_ptr, j, k0, N, offs_d, d_mask, t_mask, sr_b, sr_d, sr_n,
                        BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """Region tile k0: r (BLOCK_D, BLOCK_N), a = softmax over the caption's words of w r, k mask."""
    offs_k = k0 + tl.arange(0, BLOCK_N)
    k_mask = offs_k < N
    r = tl.load(R_ptr + j * sr_b + offs_d[:, None] * sr_d + offs_k[None, :] * sr_n,
                mask=d_mask[:, None] & k_mask[None, :], other=0.0)
    s = tl.dot(w, r, input_precision=PRECISION)
    s = tl.where(t_mask[:, None], s, float("-inf"))
    e = tl.exp(s - tl.max(s, axis=0)[None, :])
    a = e / tl.sum(e, axis=0)[None, :]
    return r, a, k_mask, offs_k


@triton.jit
def _attend(w, R_ptr, j, N, offs_d, d_mask, t_mask, sr_b, sr_d, sr_n, gamma1,
            BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """One pass over image j: the region-softmax row max m and sum l of gamma1 * a, and c (BLOCK_T, BLOCK_D)."""
    m = tl.full((BLOCK_T,), float("-inf"), tl.float32)
    l = tl.zeros((BLOCK_T,), tl.float32)
    acc = tl.zeros((BLOCK_T, BLOCK_D), tl.float32)
    for k0 in range(0, N, BLOCK_N):
        r, a, k_mask, offs_k = _word_probabilities(w, R_ptr, j, k0, N, offs_d, d_mask, t_mask, sr_b, sr_d, sr_n,
                                                   BLOCK_N, PRECISION)
        x = tl.where(k_mask[None, :], gamma1 * a, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=1))
        scale = tl.exp(m - m_new)
        p = tl.exp(x - m_new[:, None])
        l = l * scale + tl.sum(p, axis=1)
        acc = acc * scale[:, None] + tl.dot(p.to(r.dtype), tl.trans(r), input_precision=PRECISION)
        m = m_new
    return m, l, acc / l[:, None]


@triton.jit
def _cosines(w, c, t_mask, gamma2):
    """cos_t (clamp on the product of the norms), the dots, and sim = log sum_t exp(gamma2 cos_t)."""
    wf = w.to(tl.float32)
    wc = tl.sum(wf * c, axis=1)
    ww = tl.sum(wf * wf, axis=1)
    cc = tl.sum(c * c, axis=1)
    q = tl.sqrt(ww) * tl.sqrt(cc)
    cos = wc / tl.maximum(q, COS_EPS)
    z = tl.where(t_mask, gamma2 * cos, float("-inf"))
    z_max = tl.max(z, axis=0)
    sim = z_max + tl.log(tl.sum(tl.exp(z - z_max), axis=0))
    return cos, ww, cc, q, z, sim


@triton.jit(do_not_specialize=["need_attn"])
def _damsm_fwd_kernel(W_ptr, L_ptr, R_ptr, SIM_ptr, ATTN_ptr, B, T, D, N,
                      sw_b, sw_d, sw_t, sr_b, sr_d, sr_n, gamma1, gamma2, need_attn,
                      BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                      PRECISION: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)  # int64 offsets: B * B * T * D may pass 2**31
    i = tl.program_id(1).to(tl.int64)
    n, offs_t, offs_d, t_mask, d_mask, w = _pair_setup(W_ptr, L_ptr, i, T, D, sw_b, sw_d, sw_t, BLOCK_T, BLOCK_D)
    m, l, c = _attend(w, R_ptr, j, N, offs_d, d_mask, t_mask, sr_b, sr_d, sr_n, gamma1,
                      BLOCK_T, BLOCK_D, BLOCK_N, PRECISION)
    cos, ww, cc, q, z, sim = _cosines(w, c, t_mask, gamma2)
    tl.store(SIM_ptr + j * B + i, sim)
    # caption i on its own image, when asked (need_attn: a runtime flag, one compile for both): the
    # normalised attention (B, T, N), zero at t >= n
    if (need_attn != 0) & (i == j):
        for k0 in range(0, N, BLOCK_N):
            r, a, k_mask, offs_k = _word_probabilities(w, R_ptr, j, k0, N, offs_d, d_mask, t_mask,
                                                       sr_b, sr_d, sr_n, BLOCK_N, PRECISION)
            beta = tl.exp(gamma1 * a - m[:, None]) / l[:, None]
            beta = tl.where(t_mask[:, None], beta, 0.0)
            tl.store(ATTN_ptr + (i * T + offs_t[:, None]) * N + offs_k[None, :],
                     beta.to(ATTN_ptr.dtype.element_ty), mask=(offs_t[:, None] < T) & k_mask[None, :])


@triton.jit
def _damsm_bwd_pair_kernel(GS_ptr, W_ptr, L_ptr, R_ptr, DW_ptr, DC_ptr, STAT_ptr, B, T, D, N,
                           sw_b, sw_d, sw_t, sr_b, sr_d, sr_n, gamma1, gamma2,
                           BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                           PRECISION: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)  # int64 offsets: B * B * T * D may pass 2**31
    i = tl.program_id(1).to(tl.int64)
    n, offs_t, offs_d, t_mask, d_mask, w = _pair_setup(W_ptr, L_ptr, i, T, D, sw_b, sw_d, sw_t, BLOCK_T, BLOCK_D)
    m, l, c = _attend(w, R_ptr, j, N, offs_d, d_mask, t_mask, sr_b, sr_d, sr_n, gamma1,
                      BLOCK_T, BLOCK_D, BLOCK_N, PRECISION)
    cos, ww, cc, q, z, sim = _cosines(w, c, t_mask, gamma2)
    g = tl.load(GS_ptr + j * B + i).to(tl.float32) * gamma2 * tl.exp(z - sim)  # 0 at t >= n
    clamped = q < COS_EPS
    kw = g / tl.maximum(q, COS_EPS)
    kc = tl.where(clamped, 0.0, g * cos / tl.where(clamped, 1.0, cc))
    kw2 = tl.where(clamped, 0.0, g * cos / tl.where(clamped, 1.0, ww))
    wf = w.to(tl.float32)
    dc = kw[:, None] * wf - kc[:, None] * c
    delta = tl.sum(dc * c, axis=1)
    dw = kw[:, None] * c - kw2[:, None] * wf
    dc_in = dc.to(w.dtype)
    for k0 in range(0, N, BLOCK_N):
        r, a, k_mask, offs_k = _word_probabilities(w, R_ptr, j, k0, N, offs_d, d_mask, t_mask, sr_b, sr_d, sr_n,
                                                   BLOCK_N, PRECISION)
        beta = tl.where(k_mask[None, :], tl.exp(gamma1 * a - m[:, None]) / l[:, None], 0.0)
        dbeta = tl.dot(dc_in, r, input_precision=PRECISION)
        da = gamma1 * beta * (dbeta - delta[:, None])
        ds = a * (da - tl.sum(a * da, axis=0)[None, :])
        ds = tl.where(t_mask[:, None] & k_mask[None, :], ds, 0.0)
        dw += tl.dot(ds.to(r.dtype), tl.trans(r), input_precision=PRECISION)
    pair = j * B + i
    row_mask = (offs_t[:, None] < T) & d_mask[None, :]
    rows = (pair * T + offs_t[:, None]) * D + offs_d[None, :]
    tl.store(DW_ptr + rows, tl.where(t_mask[:, None], dw, 0.0), mask=row_mask)
    tl.store(DC_ptr + rows, dc, mask=row_mask)
    stat_mask = offs_t < T
    tl.store(STAT_ptr + (pair * 3 + 0) * T + offs_t, m, mask=stat_mask)
    tl.store(STAT_ptr + (pair * 3 + 1) * T + offs_t, l, mask=stat_mask)
    tl.store(STAT_ptr + (pair * 3 + 2) * T + offs_t, delta, mask=stat_mask)


@triton.jit
def _damsm_bwd_regions_kernel(W_ptr, L_ptr, R_ptr, DC_ptr, STAT_ptr, DR_ptr, B, T, D, N,
                              sw_b, sw_d, sw_t, sr_b, sr_d, sr_n, gamma1,
                              BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                              PRECISION: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)
    k0 = tl.program_id(1) * BLOCK_N
    dr = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    for i in range(0, B):  # pair = j * B + i is int64 through j
        n, offs_t, offs_d, t_mask, d_mask, w = _pair_setup(W_ptr, L_ptr, i, T, D, sw_b, sw_d, sw_t,
                                                           BLOCK_T, BLOCK_D)
        pair = j * B + i
        stat_mask = offs_t < T
        m = tl.load(STAT_ptr + (pair * 3 + 0) * T + offs_t, mask=stat_mask, other=0.0)
        l = tl.load(STAT_ptr + (pair * 3 + 1) * T + offs_t, mask=stat_mask, other=1.0)
        delta = tl.load(STAT_ptr + (pair * 3 + 2) * T + offs_t, mask=stat_mask, other=0.0)
        dc = tl.load(DC_ptr + (pair * T + offs_t[:, None]) * D + offs_d[None, :],
                     mask=t_mask[:, None] & d_mask[None, :], other=0.0).to(w.dtype)
        r, a, k_mask, offs_k = _word_probabilities(w, R_ptr, j, k0, N, offs_d, d_mask, t_mask, sr_b, sr_d, sr_n,
                                                   BLOCK_N, PRECISION)
        beta = tl.where(t_mask[:, None] & k_mask[None, :], tl.exp(gamma1 * a - m[:, None]) / l[:, None], 0.0)
        dbeta = tl.dot(dc, r, input_precision=PRECISION)
        da = gamma1 * beta * (dbeta - delta[:, None])
        ds = a * (da - tl.sum(a * da, axis=0)[None, :])
        ds = tl.where(t_mask[:, None] & k_mask[None, :], ds, 0.0)
        dr += tl.dot(tl.trans(beta.to(w.dtype)), dc, input_precision=PRECISION)
        dr += tl.dot(tl.trans(ds.to(w.dtype)), w, input_precision=PRECISION)
    offs_k = k0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    tl.store(DR_ptr + j * D * N + offs_d[None, :] * N + offs_k[:, None], dr,
             mask=(offs_k[:, None] < N) & (offs_d[None, :] < D))


def _config(words: Tensor, backward: bool) -> dict:
    B, D, T = words.shape
    if T > MAX_T:
        raise ValueError(f"words: the CUDA kernel supports T <= {MAX_T} word slots, got T={T}")
    if D > MAX_D:
        raise ValueError(f"words: the CUDA kernel supports D <= {MAX_D} features, got D={D}")
    if words.dtype not in DTYPES:
        raise TypeError(f"words: the CUDA kernel takes float32, float16 or bfloat16, got {words.dtype}")
    return launch_config(D, T, words.dtype, backward)


def launch_config(D: int, T: int, dtype: torch.dtype, backward: bool) -> dict:
    """The constexprs, num_warps and num_stages of the forward's or the backward's launches for D
    features, T word slots and the dtype.

    Six (BLOCK_T, BLOCK_D) buckets: BLOCK_T in {32, 64}, BLOCK_D in {64, 128, 256} (AttnGAN: D = 256,
    T <= 18 is (32, 256)); tools/triton_resources.py compiles each for sm_80 and sm_90.
    """
    block_d = max(64, triton.next_power_of_2(D))
    block_t = max(32, triton.next_power_of_2(T))
    fp32 = dtype == torch.float32
    return dict(
        BLOCK_T=block_t,
        BLOCK_D=block_d,
        # the fp32 IEEE dots run on FMA units with replicated operands: region tiles of 16
        BLOCK_N=16 if fp32 else 32,
        PRECISION="ieee" if fp32 else "tf32",  # tf32 is ignored for 16-bit inputs
        num_warps=4 if block_d <= 64 else 8,
        # software pipelining keeps extra copies of the word tiles in shared memory: at 64 x 256 the
        # backward's pass sm_80's 163 KiB per block (every dtype), so no pipelining there (the
        # forward fits, and spills KiBs more in fp32 without it)
        num_stages=1 if backward and block_t * block_d > 8192 else 3,
    )


def _strides(words: Tensor, regions: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    B, D = regions.shape[:2]
    regions = regions.reshape(B, D, -1)
    return regions, (*words.stride(), *regions.stride())


def damsm_word_similarity_forward(words: Tensor, cap_lens: Tensor, regions: Tensor, gamma1: float, gamma2: float,
                  need_attention: bool) -> tuple[Tensor, Tensor]:
    """CUDA kernel of ``attngan_fast::damsm_word_similarity``: sim (B, B) float32, attn (B or 0, T, H, W)."""
    B, D, T = words.shape
    H, W = regions.shape[2:]
    cfg = _config(words, backward=False)
    flat, strides = _strides(words, regions)
    sim = torch.empty((B, B), device=words.device, dtype=torch.float32)
    attn = (torch.zeros if need_attention else torch.empty)(
        (B if need_attention else 0, T, H, W), device=words.device, dtype=words.dtype)
    # without need_attention the attn pointer is never written: pass words (same pointer type, the same compile)
    _damsm_fwd_kernel[(B, B)](words, cap_lens, flat, sim, attn if need_attention else words, B, T, D, H * W, *strides,
                              float(gamma1), float(gamma2), int(need_attention), **cfg)
    return sim, attn


def damsm_word_similarity_backward(grad_sim: Tensor, words: Tensor, cap_lens: Tensor, regions: Tensor, gamma1: float,
                   gamma2: float) -> tuple[Tensor, Tensor]:
    """CUDA kernel of ``attngan_fast::damsm_word_similarity_backward``: (grad_words, grad_regions)."""
    B, D, T = words.shape
    H, W = regions.shape[2:]
    N = H * W
    cfg = _config(words, backward=True)
    flat, strides = _strides(words, regions)
    grad_sim = grad_sim.contiguous()
    dw_pair = torch.empty((B, B, T, D), device=words.device, dtype=torch.float32)
    dc = torch.empty((B, B, T, D), device=words.device, dtype=torch.float32)
    stats = torch.empty((B, B, 3, T), device=words.device, dtype=torch.float32)
    _damsm_bwd_pair_kernel[(B, B)](grad_sim, words, cap_lens, flat, dw_pair, dc, stats, B, T, D, N, *strides,
                                   float(gamma1), float(gamma2), **cfg)
    grad_regions = torch.empty((B, D, N), device=words.device, dtype=torch.float32)
    grid = (B, triton.cdiv(N, cfg["BLOCK_N"]))
    _damsm_bwd_regions_kernel[grid](words, cap_lens, flat, dc, stats, grad_regions, B, T, D, N, *strides,
                                    float(gamma1), **cfg)
    grad_words = dw_pair.sum(0).transpose(1, 2).to(words.dtype).contiguous()
    return grad_words, grad_regions.view(B, D, H, W).to(regions.dtype)
