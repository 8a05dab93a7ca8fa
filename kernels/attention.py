"""Word-region attention in Triton: forward and backward, one pass over the regions each.

Per region q of sample b, over the words t that the mask keeps:
``s_t = h_q . w_t``, ``a = softmax_t(s)``, ``context_q = sum_t a_t w_t``. A sample whose words are
all masked gets weights 0 and context 0 (zero gradients). All T words of a sample (T <= 64 in one
``BLOCK_T`` tile) stay on chip; the backward recomputes the scores, so no (B, T, Q) tensor is
written unless the weights are requested.

Backward, with ``dctx`` (and ``dweights`` when the weights were used):
``da_t = dctx_q . w_t + dweights_t``, ``ds_t = a_t (da_t - sum_u a_u da_u)``,
``dh_q = sum_t ds_t w_t``, ``dw_t = sum_q ds_t h_q + a_t dctx_q``.
The word gradient is a sum over every region: each program walks a strided set of region blocks
of one sample and accumulates its share in registers, writes it to its own slot of a
(B, SPLIT, C, T) fp32 buffer, and the slots are summed afterwards (``sum(1)``). No atomics: the
result is deterministic, and SPLIT depends on the shapes only. The slots are a few KiB per program
(against MiB of regions), so the second reduction is small.

Layouts: ``h`` is read through its strides (NCHW or channels_last, any layout where H and W fold
into one region index); outputs are contiguous. fp32 inputs use IEEE fp32 dots; fp16/bf16 inputs
use the native dot with fp32 accumulation (the weights are rounded to the input dtype before the
context dot, as the reference does in that dtype).

Launchers take and return plain tensors; on a CPU-only machine they run in Triton's interpreter
(``TRITON_INTERPRET=1`` before the import) on CPU tensors.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch
import triton
import triton.language as tl

__all__ = ["MAX_WORDS", "BLOCK_C", "FORWARD_CONFIGS", "BACKWARD_CONFIGS", "block_t", "configs_for",
           "word_region_attention_forward", "word_region_attention_backward"]

MAX_WORDS = 64  # largest T in one on-chip tile
BLOCK_C = 32  # channels per chunk, every launch (C loops over chunks; AttnGAN's ngf = 32 is one)
_TARGET_PROGRAMS = 512  # backward: about this many programs over the batch, fixed (determinism)
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


# The (BLOCK_Q, num_warps) candidates the GPU autotunes among, per (BLOCK_C, BLOCK_T) bucket and
# dtype (each one is compiled, so keep the lists short). tests/test_triton_configs.py runs every
# one in the interpreter; tools/triton_resources.py compiles every one for sm_80 / sm_90.
FORWARD_CONFIGS = [triton.Config({"BLOCK_Q": q}, num_warps=w) for q, w in ((64, 4), (128, 4), (128, 8), (256, 8))]
BACKWARD_CONFIGS = [triton.Config({"BLOCK_Q": q}, num_warps=w) for q, w in ((32, 4), (64, 4), (64, 8), (128, 8))]
# fp32 (IEEE dots on FMA units, operands replicated in registers): the (BLOCK_Q, num_warps) of
# those lists whose spills stay small at BLOCK_T = 64 (the others spill KiBs; docs/triton_resources.md).
_FP32_FORWARD_TILES = {(64, 4), (128, 8)}
_FP32_BACKWARD_TILES = {(32, 4), (64, 8)}
# The interpreter is for correctness, not tuning: one small config (fast at the tests' tiny shapes).
_INTERPRETER_CONFIGS = [triton.Config({"BLOCK_Q": 16}, num_warps=4)]


def _configs(backward: bool) -> list[triton.Config]:
    """The autotuner's candidates: the GPU lists above, or the interpreter's single config."""
    if _INTERPRET:
        return _INTERPRETER_CONFIGS
    return BACKWARD_CONFIGS if backward else FORWARD_CONFIGS


def configs_for(backward: bool, fp32_dot: bool) -> list[triton.Config]:
    """The configs the GPU autotunes among for a dtype: fp32 (``fp32_dot``) only the tiles that barely spill."""
    configs = BACKWARD_CONFIGS if backward else FORWARD_CONFIGS
    if not fp32_dot:
        return configs
    fp32_tiles = _FP32_BACKWARD_TILES if backward else _FP32_FORWARD_TILES
    return [c for c in configs if (c.kwargs["BLOCK_Q"], c.num_warps) in fp32_tiles]


def _pruner(backward: bool) -> Callable[..., list[triton.Config]]:
    """The autotuner's early_config_prune: the configs of ``configs_for`` the launch's FP32_DOT."""

    def prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
        if _INTERPRET:  # the interpreter's own config (or the one a test restricts it to)
            return configs
        allowed = configs_for(backward, kwargs.get("FP32_DOT", named_args.get("FP32_DOT")))
        return [c for c in configs if c in allowed]

    return prune


_prune_forward, _prune_backward = _pruner(False), _pruner(True)


@triton.jit
def _valid_words(mask_ptr, b, T, BLOCK_T: tl.constexpr):
    """The words of sample b that the (B, T) uint8 mask keeps (0 = kept; a launch without a mask passes zeros)."""
    offs_t = tl.arange(0, BLOCK_T)
    padded = tl.load(mask_ptr + b * T + offs_t, mask=offs_t < T, other=1)
    return offs_t, padded == 0


@triton.jit
def _dot(x, y, FP32_DOT: tl.constexpr):
    """x @ y with fp32 accumulation: IEEE fp32 products when FP32_DOT, else the inputs' native dot."""
    if FP32_DOT:
        return tl.dot(x.to(tl.float32), y.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(x, y)


@triton.jit
def _softmax_rows(s, valid):
    """(BLOCK_Q, BLOCK_T) scores -> weights over the valid words; rows with none valid -> 0."""
    s = tl.where(valid[None, :], s, float("-inf"))
    row_max = tl.max(s, 1)
    row_max = tl.where(row_max == float("-inf"), 0.0, row_max)
    e = tl.exp(s - row_max[:, None])
    den = tl.sum(e, 1)
    den = tl.where(den == 0.0, 1.0, den)
    return e / den[:, None]


@triton.autotune(configs=_configs(backward=False), key=["BLOCK_T", "FP32_DOT"],
                 prune_configs_by={"early_config_prune": _prune_forward})
@triton.jit(do_not_specialize=["need_weights"])
def _forward_kernel(
    h_ptr, w_ptr, mask_ptr, ctx_ptr, weights_ptr,
    C, T, Q,
    stride_hb, stride_hc, stride_hq,
    stride_wb, stride_wc, stride_wt,
    need_weights,
    FP32_DOT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    pid_q = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_ok = offs_q < Q
    offs_t, valid = _valid_words(mask_ptr, b, T, BLOCK_T)
    t_ok = offs_t < T
    h_base = h_ptr + b * stride_hb
    w_base = w_ptr + b * stride_wb

    s = tl.zeros((BLOCK_Q, BLOCK_T), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_ok = offs_c < C
        hq = tl.load(h_base + offs_q[:, None] * stride_hq + offs_c[None, :] * stride_hc,
                     mask=q_ok[:, None] & c_ok[None, :], other=0.0)  # (BLOCK_Q, BLOCK_C)
        wt = tl.load(w_base + offs_c[:, None] * stride_wc + offs_t[None, :] * stride_wt,
                     mask=c_ok[:, None] & t_ok[None, :], other=0.0)  # (BLOCK_C, BLOCK_T)
        s += _dot(hq, wt, FP32_DOT)
    a = _softmax_rows(s, valid)  # (BLOCK_Q, BLOCK_T) fp32

    # need_weights is a runtime flag in the store's mask (one compile for both, do_not_specialize)
    tl.store(weights_ptr + b * T * Q + offs_t[None, :] * Q + offs_q[:, None],
             a.to(weights_ptr.dtype.element_ty), mask=q_ok[:, None] & t_ok[None, :] & (need_weights != 0))
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_ok = offs_c < C
        wt = tl.load(w_base + offs_c[:, None] * stride_wc + offs_t[None, :] * stride_wt,
                     mask=c_ok[:, None] & t_ok[None, :], other=0.0)
        ctx = _dot(a.to(wt.dtype), tl.trans(wt), FP32_DOT)  # (BLOCK_Q, BLOCK_C)
        tl.store(ctx_ptr + b * C * Q + offs_c[None, :] * Q + offs_q[:, None],
                 ctx.to(ctx_ptr.dtype.element_ty), mask=q_ok[:, None] & c_ok[None, :])


@triton.autotune(configs=_configs(backward=True), key=["BLOCK_T", "FP32_DOT"], reset_to_zero=["slots_ptr"],
                 prune_configs_by={"early_config_prune": _prune_backward})
@triton.jit(do_not_specialize=["has_grad_weights", "one_chunk"])
def _backward_kernel(
    h_ptr, w_ptr, mask_ptr, gctx_ptr, gweights_ptr, gh_ptr, slots_ptr,
    C, T, Q, SPLIT,
    stride_hb, stride_hc, stride_hq,
    stride_wb, stride_wc, stride_wt,
    stride_gb, stride_gc, stride_gq,
    has_grad_weights, one_chunk,
    FP32_DOT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    split = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_t, valid = _valid_words(mask_ptr, b, T, BLOCK_T)
    t_ok = offs_t < T
    h_base = h_ptr + b * stride_hb
    g_base = gctx_ptr + b * stride_gb
    w_base = w_ptr + b * stride_wb
    slot_base = slots_ptr + (b * SPLIT + split) * C * T
    dw = tl.zeros((BLOCK_C, BLOCK_T), dtype=tl.float32)  # this program's word gradient (one_chunk)

    for qb in range(split, tl.cdiv(Q, BLOCK_Q), SPLIT):
        offs_q = qb * BLOCK_Q + tl.arange(0, BLOCK_Q)
        q_ok = offs_q < Q
        s = tl.zeros((BLOCK_Q, BLOCK_T), dtype=tl.float32)
        da = tl.zeros((BLOCK_Q, BLOCK_T), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            qc_ok = q_ok[:, None] & (offs_c < C)[None, :]
            hq = tl.load(h_base + offs_q[:, None] * stride_hq + offs_c[None, :] * stride_hc, mask=qc_ok, other=0.0)
            gq = tl.load(g_base + offs_q[:, None] * stride_gq + offs_c[None, :] * stride_gc, mask=qc_ok, other=0.0)
            wt = tl.load(w_base + offs_c[:, None] * stride_wc + offs_t[None, :] * stride_wt,
                         mask=(offs_c < C)[:, None] & t_ok[None, :], other=0.0)
            s += _dot(hq, wt, FP32_DOT)
            da += _dot(gq, wt, FP32_DOT)
        a = _softmax_rows(s, valid)
        # has_grad_weights / one_chunk: runtime flags in masks, not branches (one compile; a branch spills in fp32)
        da += tl.load(gweights_ptr + b * T * Q + offs_t[None, :] * Q + offs_q[:, None],
                      mask=q_ok[:, None] & valid[None, :] & (has_grad_weights != 0), other=0.0).to(tl.float32)
        ds = a * (da - tl.sum(a * da, 1)[:, None])  # (BLOCK_Q, BLOCK_T)

        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            c_ok = offs_c < C
            qc_ok = q_ok[:, None] & c_ok[None, :]
            # h and dctx again: this block was just read, so these come from cache.
            hq = tl.load(h_base + offs_q[:, None] * stride_hq + offs_c[None, :] * stride_hc, mask=qc_ok, other=0.0)
            gq = tl.load(g_base + offs_q[:, None] * stride_gq + offs_c[None, :] * stride_gc, mask=qc_ok, other=0.0)
            wt = tl.load(w_base + offs_c[:, None] * stride_wc + offs_t[None, :] * stride_wt,
                         mask=c_ok[:, None] & t_ok[None, :], other=0.0)
            dh = _dot(ds.to(wt.dtype), tl.trans(wt), FP32_DOT)  # (BLOCK_Q, BLOCK_C)
            part = _dot(tl.trans(hq), ds.to(hq.dtype), FP32_DOT) + _dot(tl.trans(gq), a.to(gq.dtype), FP32_DOT)
            tl.store(gh_ptr + b * C * Q + offs_c[None, :] * Q + offs_q[:, None],
                     dh.to(gh_ptr.dtype.element_ty), mask=qc_ok)
            dw += part  # one chunk: the whole word gradient, stored at the end
            # several chunks: this program's slot, read-modify-write (no other program touches it)
            slot = slot_base + offs_c[:, None] * T + offs_t[None, :]
            ct_ok = c_ok[:, None] & t_ok[None, :] & (one_chunk == 0)
            tl.store(slot, tl.load(slot, mask=ct_ok, other=0.0) + part, mask=ct_ok)

    offs_c = tl.arange(0, BLOCK_C)
    tl.store(slot_base + offs_c[:, None] * T + offs_t[None, :], dw,
             mask=(offs_c < C)[:, None] & t_ok[None, :] & (one_chunk != 0))


def block_t(T: int) -> int:
    """BLOCK_T of the launches for T words (T <= MAX_WORDS): 16, 32 or 64."""
    if T > MAX_WORDS:
        raise ValueError(f"words: at most {MAX_WORDS} words in the Triton kernels, got T={T}")
    return max(16, triton.next_power_of_2(T))


def _regions(x: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """x (B, C, H, W) and its (batch, channel, region) strides, regions q = y * W + x."""
    if x.stride(2) != x.size(3) * x.stride(3) and x.size(2) > 1:
        x = x.contiguous()
    return x, x.stride(0), x.stride(1), x.stride(3)


def _fp32_dot(dtype: torch.dtype) -> bool:
    # fp32 inputs take IEEE fp32 dots; so do bf16 ones in the interpreter, whose bf16 dot is wrong
    # (the operands are still rounded to bf16 first, as on the GPU).
    return dtype == torch.float32 or (_INTERPRET and dtype == torch.bfloat16)


def _mask_arg(mask: Optional[torch.Tensor], B: int, T: int, device: torch.device) -> torch.Tensor:
    """The (B, T) uint8 padding mask the kernels read (zeros without one: B * T bytes, one compile)."""
    if mask is None:
        return torch.zeros((B, T), dtype=torch.uint8, device=device)
    return mask.contiguous().view(torch.uint8)


def word_region_attention_forward(
    h: torch.Tensor, words: torch.Tensor, mask: Optional[torch.Tensor], need_weights: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """h: (B, C, H, W); words: (B, C, T); mask: (B, T) bool or None.

    Returns context (B, C, H, W) and weights (B, T, H, W), or an empty (0,) tensor without need_weights.
    """
    B, C, H, W = h.shape
    T = words.size(2)
    Q = H * W
    bt = block_t(T)
    h, shb, shc, shq = _regions(h)
    ctx = torch.empty((B, C, H, W), dtype=h.dtype, device=h.device)
    weights = torch.empty((B, T, H, W) if need_weights else (0,), dtype=h.dtype, device=h.device)
    if ctx.numel() == 0 and weights.numel() == 0:
        return ctx, weights

    def grid(meta):
        return (triton.cdiv(Q, meta["BLOCK_Q"]), B)

    _forward_kernel[grid](
        h, words, _mask_arg(mask, B, T, h.device), ctx, weights,
        C, T, Q,
        shb, shc, shq,
        words.stride(0), words.stride(1), words.stride(2),
        int(need_weights),
        FP32_DOT=_fp32_dot(h.dtype), BLOCK_C=BLOCK_C, BLOCK_T=bt,
    )
    return ctx, weights


def backward_split(B: int, Q: int) -> int:
    """Programs per sample in the backward: about _TARGET_PROGRAMS in all, at most one per 16 regions."""
    return max(1, min(triton.cdiv(_TARGET_PROGRAMS, max(B, 1)), triton.cdiv(Q, 16)))


def word_region_attention_backward(
    grad_context: torch.Tensor, grad_weights: Optional[torch.Tensor], h: torch.Tensor, words: torch.Tensor,
    mask: Optional[torch.Tensor], weights: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_context: (B, C, H, W); grad_weights: (B, T, H, W), None or empty; h, words, mask as in the
    forward; weights (the forward's, or None) is not read: recomputing them costs less than reading.

    Returns grad_h (B, C, H, W) and grad_words (B, C, T).
    """
    B, C, H, W = h.shape
    T = words.size(2)
    Q = H * W
    bt = block_t(T)
    h, shb, shc, shq = _regions(h)
    grad_context, sgb, sgc, sgq = _regions(grad_context.to(h.dtype))
    has_gw = grad_weights is not None and grad_weights.numel() > 0
    gw = grad_weights.to(h.dtype).contiguous() if has_gw else h
    split = backward_split(B, Q)
    grad_h = torch.empty((B, C, H, W), dtype=h.dtype, device=h.device)
    slots = torch.zeros((B, split, C, T), dtype=torch.float32, device=h.device)
    if grad_h.numel() > 0 and T > 0:
        _backward_kernel[(split, B)](
            h, words, _mask_arg(mask, B, T, h.device), grad_context, gw, grad_h, slots,
            C, T, Q, split,
            shb, shc, shq,
            words.stride(0), words.stride(1), words.stride(2),
            sgb, sgc, sgq,
            int(has_gw), int(C <= BLOCK_C),
            FP32_DOT=_fp32_dot(h.dtype), BLOCK_C=BLOCK_C, BLOCK_T=bt,
        )
    else:
        grad_h.zero_()
    return grad_h, slots.sum(1).to(words.dtype)
