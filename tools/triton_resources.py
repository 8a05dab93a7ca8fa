"""Compile every Triton kernel ahead of time for sm_80 and sm_90 and report its resources.

For each kernel of ``attngan_fast.kernels`` (attention, damsm) x every config the GPU would run
(per dtype: kernels/attention.py ``configs_for``, kernels/damsm.py ``launch_config``) x dtype (fp32,
fp16, bf16) x every constexpr bucket the launchers produce (attention: BLOCK_T in {16, 32, 64} at
the fixed BLOCK_C; DAMSM: the distinct ``launch_config`` results over every D <= MAX_D, T <= MAX_T),
``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`` builds the cubin with Triton's
bundled ptxas (no GPU needed); the registers and spill bytes come from ptxas's own report (``-v``),
the shared memory from the compiled kernel's metadata. The flags (masks, optional outputs) are
runtime arguments, so one compile covers every combination. Checked against the per-block limits of
each target and the spill bounds of ``SPILL_BOUNDS``.

    python tools/triton_resources.py [--jobs N] [--json out.json] [--markdown out.md] [--summary out.md]

Must run WITHOUT ``TRITON_INTERPRET=1`` (the interpreter's kernels cannot be compiled).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

DTYPES = ("fp32", "fp16", "bf16")
TARGETS = (80, 90)
# Dynamic shared memory per block with the opt-in attribute (CUDA programming guide, "Technical
# Specifications per Compute Capability"): 163 KiB on 8.0, 227 KiB on 9.0.
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
MAX_REGS = 255  # per thread, every target
# Largest spill-store bytes per thread allowed per kernel over every case compiled: the worst case
# Triton 3.8's ptxas reports, rounded up to 256 B (docs/triton_resources.md). A change that spills more fails.
SPILL_BOUNDS = {
    # fp32 BLOCK_Q 64 / 4 warps at BLOCK_T 64 on sm_80 (the fp32 configs that spill KiBs are pruned)
    "attention._forward_kernel": 256,
    # fp32 BLOCK_Q 32 / 4 warps at BLOCK_T 64 on sm_80; 16-bit at most 684 B (BLOCK_Q 128)
    "attention._backward_kernel": 1024,
    # fp32 at (BLOCK_T, BLOCK_D) = (64, 256) on sm_90; every 16-bit case <= 288 B
    "damsm._damsm_fwd_kernel": 2048,
    # fp32 at (64, 256): words, context, dC, dW are four 64 x 256 fp32 tiles = the whole 64K-register
    # file of the block; 16-bit <= 636 B; AttnGAN's T <= 18 (BLOCK_T 32) <= 908 B
    "damsm._damsm_bwd_pair_kernel": 24576,
    # fp32 at (64, 128) / (64, 256) (two (T, D) tiles, dC and words, beside the (BLOCK_N, D) sum); 16-bit <= 88 B
    "damsm._damsm_bwd_regions_kernel": 7680,
}


@dataclass(frozen=True)
class Case:
    """One compile: kernel ("module.name"), target cc, dtype, constexprs, launch options."""

    kernel: str
    cc: int
    dtype: str
    constexprs: dict = field(hash=False)
    num_warps: int = 4
    num_stages: int = 3


@dataclass
class Row:
    case: Case
    regs: int = -1
    spill_stores: int = -1
    spill_loads: int = -1
    shared: int = -1
    seconds: float = 0.0
    error: str = ""


def _attention_cases() -> list[Case]:
    from attngan_fast.kernels import attention as k

    cases = []
    for kernel, backward in (("_forward_kernel", False), ("_backward_kernel", True)):
        for dtype, cc, block_t in itertools.product(DTYPES, TARGETS, (16, 32, 64)):
            for cfg in k.configs_for(backward, dtype == "fp32"):
                consts = dict(FP32_DOT=dtype == "fp32", BLOCK_C=k.BLOCK_C, BLOCK_T=block_t, **cfg.kwargs)
                cases.append(Case(f"attention.{kernel}", cc, dtype, consts, cfg.num_warps, cfg.num_stages))
    return cases


def _damsm_cases() -> list[Case]:
    import torch

    from attngan_fast.kernels import damsm as k

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    cases = []
    for dtype, cc in itertools.product(DTYPES, TARGETS):
        for backward, kernels in ((False, ("_damsm_fwd_kernel",)),
                                  (True, ("_damsm_bwd_pair_kernel", "_damsm_bwd_regions_kernel"))):
            launches = {tuple(k.launch_config(d, t, dtypes[dtype], backward).items())
                        for d, t in itertools.product(range(1, k.MAX_D + 1), range(1, k.MAX_T + 1))}
            for launch in sorted(launches):
                cfg = dict(launch)
                num_warps, num_stages = cfg.pop("num_warps"), cfg.pop("num_stages")
                cases.extend(Case(f"damsm.{kernel}", cc, dtype, cfg, num_warps, num_stages) for kernel in kernels)
    return cases


def cases() -> list[Case]:
    """Every compile: kernel x config x dtype x target x bucket (the flags are runtime arguments)."""
    return _attention_cases() + _damsm_cases()


def _signature(fn, case: Case) -> tuple[dict, dict]:
    """(signature, attrs) as a launch with 16-byte aligned torch tensors would give."""
    elem = "*" + case.dtype
    fp32_buffers = {"slots_ptr", "SIM_ptr", "GS_ptr", "DW_ptr", "DC_ptr", "STAT_ptr", "DR_ptr"}
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in case.constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = ("*u8" if name == "mask_ptr" else "*i64" if name == "L_ptr"
                         else "*fp32" if name in fp32_buffers else elem)
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "fp32" if name.startswith("gamma") else "i32"
    return sig, attrs


_PTXAS = {
    "regs": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
}


def compile_case(case: Case) -> Row:
    """Compile one case; registers / spills from ptxas's report, shared memory from the metadata."""
    import importlib

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.autotuner import Autotuner

    row = Row(case)
    start = time.perf_counter()
    log = io.StringIO()
    try:
        module, name = case.kernel.split(".")
        fn = getattr(importlib.import_module(f"attngan_fast.kernels.{module}"), name)
        if isinstance(fn, Autotuner):  # the JITFunction it tunes
            fn = fn.fn
        sig, attrs = _signature(fn, case)
        knobs.nvidia.dump_ptxas_log = True  # ptxas -v's report is printed to stdout
        knobs.compilation.always_compile = True  # a cached kernel would skip ptxas and its report
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(ASTSource(fn, sig, case.constexprs, attrs),
                                      target=GPUTarget("cuda", case.cc, 32),
                                      options={"num_warps": case.num_warps, "num_stages": case.num_stages})
        row.shared = int(compiled.metadata.shared)
        text = log.getvalue()
        for key, pattern in _PTXAS.items():
            found = [int(v) for v in pattern.findall(text)]
            setattr(row, key, max(found) if found else 0)
        if not _PTXAS["regs"].search(text):
            row.error = "no ptxas report (registers) in the compile log"
    except Exception as e:  # noqa: BLE001 -- a compile error is a result to report
        row.error = f"{type(e).__name__}: {str(e)[-2000:]}"
    row.seconds = time.perf_counter() - start
    return row


def _where(c: Case) -> str:
    return f"{c.kernel} sm_{c.cc} {c.dtype} {c.constexprs} num_warps={c.num_warps}"


def _over_shared(row: Row) -> bool:
    return not row.error and row.shared > SHARED_LIMIT[row.case.cc]


def problems(rows: list[Row]) -> list[str]:
    """Why the compiled cases are not acceptable (empty: fine): compile errors, registers over 255,
    spills over SPILL_BOUNDS, shared memory over the target's per-block limit (any case)."""
    out = []
    for r in rows:
        c = r.case
        if r.error:
            out.append(f"{_where(c)}: compile error: {r.error}")
            continue
        if r.regs > MAX_REGS:
            out.append(f"{_where(c)}: {r.regs} registers > {MAX_REGS}")
        if r.spill_stores > SPILL_BOUNDS[c.kernel]:
            out.append(f"{_where(c)}: {r.spill_stores} bytes of spill stores > the bound {SPILL_BOUNDS[c.kernel]} B")
        if _over_shared(r):
            out.append(f"{_where(c)}: shared memory {r.shared} B > the sm_{c.cc} limit {SHARED_LIMIT[c.cc]} B")
    return out


def run(all_cases: list[Case], jobs: int) -> list[Row]:
    """Compile the cases on ``jobs`` processes (ptxas is the slow part), the slow ones (DAMSM, fp32) first."""
    if jobs <= 1:
        return [compile_case(c) for c in all_cases]
    order = sorted(range(len(all_cases)), key=lambda i: (all_cases[i].kernel.startswith("attention."),
                                                         all_cases[i].dtype != "fp32"))
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        done = dict(zip(order, pool.map(compile_case, [all_cases[i] for i in order])))
    return [done[i] for i in range(len(all_cases))]


def _bucket(c: Case) -> str:
    keys = [k for k in ("BLOCK_C", "BLOCK_T", "BLOCK_D", "BLOCK_N") if k in c.constexprs]
    return " ".join(f"{k[6:]}={c.constexprs[k]}" for k in keys)


def _config(c: Case) -> str:
    """The autotune config (attention) or the launch's own (DAMSM: its tiles come with the bucket)."""
    q = c.constexprs.get("BLOCK_Q")
    return (f"Q={q} " if q else "") + f"w{c.num_warps} s{c.num_stages}"


def _cells(by_cc: dict[int, list[Row]]) -> list[str]:
    """regs / spills / shared KiB per target, the worst of the rows (an error, a limit passed, marked)."""
    cells = []
    for cc in TARGETS:
        rs = by_cc.get(cc, [])
        if not rs or any(r.error for r in rs):
            cells += ["error" if rs else "-", "", ""]
            continue
        shared = max(r.shared for r in rs)
        over = " (over the limit)" if shared > SHARED_LIMIT[cc] else ""
        cells += [str(max(r.regs for r in rs)), str(max(r.spill_stores for r in rs)), f"{shared / 1024:.1f}{over}"]
    return cells


_HEADER = ["| sm_80 regs | sm_80 spills (B) | sm_80 shared (KiB) | sm_90 regs | sm_90 spills (B) | sm_90 shared (KiB) |",
           "|---|---|---|---|---|---|"]


def _intro(rows: list[Row], seconds: float) -> str:
    return (f"{len(rows)} compiles ({seconds:.0f} s): every kernel of `kernels/attention.py` and "
            "`kernels/damsm.py` x every config the GPU would run (per dtype: attention's `configs_for`, "
            "DAMSM's `launch_config`) x dtype x bucket (attention: BLOCK_T in {16, 32, 64}; DAMSM: "
            "(BLOCK_T, BLOCK_D) in {32, 64} x {64, 128, 256}), compiled ahead of time for sm_80 and sm_90 "
            "with `triton.compile(ASTSource(...), target=GPUTarget(\"cuda\", cc, 32))` and Triton's bundled "
            "ptxas (no GPU needed). Registers are per thread, spills are ptxas's spill-store bytes per thread, "
            "shared memory is the kernel's dynamic shared memory per block (limits: "
            f"{SHARED_LIMIT[80] // 1024} KiB on sm_80, {SHARED_LIMIT[90] // 1024} KiB on sm_90). "
            "Checked by tests/test_triton_aot.py: no compile error, at most 255 registers, shared memory "
            "within the limit, spill stores within `SPILL_BOUNDS` (tools/triton_resources.py): "
            + ", ".join(f"{k} {v} B" for k, v in SPILL_BOUNDS.items()) + ".")


def markdown(rows: list[Row], seconds: float) -> str:
    """The full resource table: registers / spill bytes / shared KiB on sm_80 and sm_90 per case."""
    table: dict[tuple, dict[int, list[Row]]] = {}
    for r in rows:
        c = r.case
        table.setdefault((c.kernel, c.dtype, _bucket(c), _config(c)), {}).setdefault(c.cc, []).append(r)
    lines = ["# Triton kernels: registers, spills and shared memory on sm_80 / sm_90", "",
             "Generated by `python tools/triton_resources.py --markdown docs/triton_resources.md`: " + _intro(rows, seconds),
             "", "| kernel | dtype | bucket | config " + _HEADER[0], "|---|---|---|---" + _HEADER[1]]
    for (kernel, dtype, bucket, config), by_cc in table.items():
        lines.append(f"| {kernel} | {dtype} | {bucket} | {config} | " + " | ".join(_cells(by_cc)) + " |")
    return "\n".join(lines) + "\n"


def summary(rows: list[Row]) -> str:
    """The compact table (README): per kernel x config x dtype, the worst case over the buckets."""
    table: dict[tuple, dict[int, list[Row]]] = {}
    for r in rows:
        c = r.case
        config = _config(c) if c.kernel.startswith("attention.") else "launch_config"
        table.setdefault((c.kernel, config, c.dtype), {}).setdefault(c.cc, []).append(r)
    lines = ["| kernel | config | dtype " + _HEADER[0], "|---|---|---" + _HEADER[1]]
    for (kernel, config, dtype), by_cc in table.items():
        lines.append(f"| {kernel} | {config} | {dtype} | " + " | ".join(_cells(by_cc)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes")
    parser.add_argument("--json", help="write the rows as JSON here")
    parser.add_argument("--markdown", help="write the full resource table here")
    parser.add_argument("--summary", help="write the compact table (worst case over the buckets) here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("TRITON_INTERPRET=1: the interpreter's kernels cannot be compiled; unset it")
    start = time.perf_counter()
    rows = run(cases(), args.jobs)
    seconds = time.perf_counter() - start
    bad = problems(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": seconds, "problems": bad,
                       "rows": [dict(asdict(r), case=asdict(r.case)) for r in rows]}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, seconds))
    if args.summary:
        with open(args.summary, "w") as f:
            f.write(summary(rows))
    print(f"{len(rows)} compiles in {seconds:.0f} s, {len(bad)} problems")
    for p in bad:
        print(p, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
