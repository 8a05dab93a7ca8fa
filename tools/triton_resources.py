"""Compile every Triton kernel ahead of time for sm_80 and sm_90 and report its resources.

For each kernel of ``attngan_fast.kernels`` (attention, damsm) x every config the GPU would run
(the autotune lists of kernels/attention.py, kernels/damsm.py ``launch_config``) x dtype (fp32,
fp16, bf16) x the constexpr buckets the launchers produce, ``triton.compile(ASTSource(...),
target=GPUTarget("cuda", cc, 32))`` builds the cubin with Triton's bundled ptxas (no GPU needed);
the registers and spill bytes come from ptxas's own report (``-v``), the shared memory from the
compiled kernel's metadata. Checked against the per-block limits of each target and the spill
bounds of ``SPILL_BOUNDS``.

    python tools/triton_resources.py [--full] [--jobs N] [--json out.json] [--markdown out.md]

Without ``--full``: every kernel x config x dtype x target at the largest tiles of each bucket
axis the launchers produce plus the flag variants at one config (the CI set, see ``cases``);
``--full`` adds every (BLOCK_C, BLOCK_T) / (BLOCK_D, BLOCK_T) bucket x every flag combination.
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
# Largest spill-store bytes per thread allowed per kernel over every case compiled: what ptxas
# (Triton 3.8's) reports for the CI set, rounded up to 256 B (docs/triton_resources.md). Most
# attention configs spill at the largest (BLOCK_C, BLOCK_T) = (64, 64) bucket, fp32 (IEEE dots on
# FMA units) worst; the autotuner picks among them by time. A change that spills more fails.
SPILL_BOUNDS = {
    "attention._forward_kernel": 16384,
    "attention._backward_kernel": 37120,
    "damsm._damsm_fwd_kernel": 2048,
    "damsm._damsm_bwd_pair_kernel": 23552,
    "damsm._damsm_bwd_regions_kernel": 13312,
}
# DAMSM is not autotuned: a case over the shared-memory limit cannot launch (Triton raises
# OutOfResources). Known: the backward at BLOCK_D 256 x BLOCK_T 64 (D = 256 with 33..64 word slots;
# AttnGAN's T <= 18 is BLOCK_T 32, which fits). (kernel, cc, dtype, BLOCK_D, BLOCK_T)
KNOWN_OVER_SHARED = {
    ("damsm._damsm_bwd_pair_kernel", 80, "fp32", 256, 64),
    ("damsm._damsm_bwd_regions_kernel", 80, "fp32", 256, 64),
    ("damsm._damsm_bwd_regions_kernel", 80, "fp16", 256, 64),
    ("damsm._damsm_bwd_regions_kernel", 80, "bf16", 256, 64),
    ("damsm._damsm_bwd_regions_kernel", 90, "fp32", 256, 64),
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


def _attention_cases(full: bool) -> list[Case]:
    from attngan_fast.kernels import attention as k

    buckets = list(itertools.product((16, 32, 64), (16, 32, 64))) if full else [(64, 64)]
    cases = []
    for kernel, configs in (("_forward_kernel", k.FORWARD_CONFIGS), ("_backward_kernel", k.BACKWARD_CONFIGS)):
        flag_names = ("HAS_MASK", "NEED_WEIGHTS") if kernel == "_forward_kernel" else ("HAS_MASK", "HAS_GRAD_WEIGHTS")
        for ci, cfg in enumerate(configs):
            for (bc, bt), dtype, cc in itertools.product(buckets, DTYPES, TARGETS):
                chunks = (True,) if kernel == "_forward_kernel" or bc < 64 else (True, False)  # C > 64 only at 64
                # every flag combination in --full; else all flags on, and the others once (config 0, fp16, sm_90)
                every_flag = full or (ci == 0 and dtype == "fp16" and cc == 90)
                flags = list(itertools.product((True, False), repeat=2)) if every_flag else [(True, True)]
                for values, one_chunk in itertools.product(flags, chunks):
                    consts = dict(zip(flag_names, values), FP32_DOT=dtype == "fp32", BLOCK_C=bc, BLOCK_T=bt,
                                  **cfg.kwargs)
                    if kernel == "_backward_kernel":
                        consts["ONE_CHUNK"] = one_chunk
                    cases.append(Case(f"attention.{kernel}", cc, dtype, consts, cfg.num_warps, cfg.num_stages))
    return cases


# DAMSM (BLOCK_D, BLOCK_T) buckets of the CI set: the AttnGAN shapes (D = 256, T <= 18 -> BLOCK_T 32),
# a narrow one (D <= 32, 4 warps) and the widest words bucket at D = 256 (T <= 64). BLOCK_D 512 and
# 1024 compile for minutes each (ptxas on the spilling fp32 tiles): --full only.
DAMSM_CI_BUCKETS = [(32, 32), (256, 32), (256, 64)]


def _damsm_cases(full: bool) -> list[Case]:
    import torch

    from attngan_fast.kernels import damsm as k

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    buckets = (list(itertools.product((16, 32, 64, 128, 256, 512, 1024), (16, 32, 64))) if full
               else DAMSM_CI_BUCKETS)
    cases = []
    for (d, t), dtype, cc in itertools.product(buckets, DTYPES, TARGETS):
        cfg = k.launch_config(d, t, dtypes[dtype])
        num_warps = cfg.pop("num_warps")
        for kernel in ("_damsm_fwd_kernel", "_damsm_bwd_pair_kernel", "_damsm_bwd_regions_kernel"):
            for need_attn in ((True, False) if kernel == "_damsm_fwd_kernel" and full else (True,)):
                consts = dict(cfg, NEED_ATTN=need_attn) if kernel == "_damsm_fwd_kernel" else dict(cfg)
                cases.append(Case(f"damsm.{kernel}", cc, dtype, consts, num_warps))
    return cases


def cases(full: bool = False) -> list[Case]:
    """The compile cases: the CI set, or with ``full`` every bucket and flag combination."""
    return _attention_cases(full) + _damsm_cases(full)


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


def _known_over_shared(c: Case) -> bool:
    k = c.constexprs
    return (c.kernel, c.cc, c.dtype, k.get("BLOCK_D"), k.get("BLOCK_T")) in KNOWN_OVER_SHARED


def problems(rows: list[Row]) -> list[str]:
    """Why the compiled cases are not acceptable (empty: fine).

    Compile errors, registers over 255, spills over SPILL_BOUNDS; shared memory over the target's
    limit: for an autotuned kernel when no config of the same case (kernel, target, dtype, bucket,
    flags) fits (the autotuner skips the ones that do not), for DAMSM unless in KNOWN_OVER_SHARED.
    """
    out = []
    fitting: dict[tuple, bool] = {}
    for r in rows:
        c = r.case
        if c.kernel.startswith("attention."):
            key = (c.kernel, c.cc, c.dtype, tuple((k, v) for k, v in c.constexprs.items() if k != "BLOCK_Q"))
            fitting[key] = fitting.get(key, False) or not (r.error or _over_shared(r))
    for r in rows:
        c = r.case
        if r.error:
            out.append(f"{_where(c)}: compile error: {r.error}")
            continue
        if r.regs > MAX_REGS:
            out.append(f"{_where(c)}: {r.regs} registers > {MAX_REGS}")
        if r.spill_stores > SPILL_BOUNDS[c.kernel]:
            out.append(f"{_where(c)}: {r.spill_stores} bytes of spill stores > the bound {SPILL_BOUNDS[c.kernel]} B")
    for key, ok in fitting.items():
        if not ok:
            out.append(f"{key}: no autotune config fits the shared memory limit")
    for r in rows:
        if r.case.kernel.startswith("damsm.") and _over_shared(r) and not _known_over_shared(r.case):
            out.append(f"{_where(r.case)}: shared memory {r.shared} B > the sm_{r.case.cc} limit "
                       f"{SHARED_LIMIT[r.case.cc]} B")
    return out


def run(all_cases: list[Case], jobs: int) -> list[Row]:
    """Compile the cases on ``jobs`` processes (ptxas is the slow part)."""
    if jobs <= 1:
        return [compile_case(c) for c in all_cases]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(compile_case, all_cases, chunksize=4))


def _bucket(c: Case) -> str:
    keys = [k for k in ("BLOCK_C", "BLOCK_T", "BLOCK_D", "BLOCK_N", "BLOCK_Q") if k in c.constexprs]
    flags = [k for k, v in c.constexprs.items() if v is True and k != "FP32_DOT"]
    return " ".join(f"{k[6:]}={c.constexprs[k]}" for k in keys) + (" " + ",".join(flags) if flags else "")


def markdown(rows: list[Row], seconds: float, full: bool) -> str:
    """The resource table: registers / spill bytes / shared KiB on sm_80 and sm_90 per case."""
    table: dict[tuple, dict[int, Row]] = {}
    for r in rows:
        c = r.case
        key = (c.kernel, c.dtype, _bucket(c), c.num_warps)
        table.setdefault(key, {})[c.cc] = r
    lines = [
        "# Triton kernels: registers, spills and shared memory on sm_80 / sm_90",
        "",
        f"Generated by `python tools/triton_resources.py --markdown docs/triton_resources.md"
        f"{' --full' if full else ''}` ({len(rows)} compiles, {seconds:.0f} s): every kernel of "
        "`kernels/attention.py` and `kernels/damsm.py` x every config the GPU would run (the autotune "
        "lists, DAMSM's `launch_config`) x dtype, compiled ahead of time with "
        "`triton.compile(ASTSource(...), target=GPUTarget(\"cuda\", cc, 32))` and Triton's bundled "
        "ptxas (no GPU needed). Registers are per thread, spills are ptxas's spill-store bytes per "
        "thread, shared memory is the kernel's dynamic shared memory per block (limits: "
        f"{SHARED_LIMIT[80] // 1024} KiB on sm_80, {SHARED_LIMIT[90] // 1024} KiB on sm_90). "
        "The attention bucket is (BLOCK_C, BLOCK_T) = (64, 64), the largest the launchers produce, "
        "with the other flag combinations at the first config (fp16, sm_90); DAMSM's (BLOCK_D, BLOCK_T) "
        f"buckets are {DAMSM_CI_BUCKETS} (AttnGAN: D = 256, T <= 18 is (256, 32)); `--full` adds every "
        "bucket and flag. Checked by tests/test_triton_aot.py: no compile error, at most 255 registers, "
        f"spill stores within {SPILL_BOUNDS} bytes, shared memory within the limit for at least one "
        "autotune config of each attention case (the autotuner skips configs that do not fit) and for "
        "every DAMSM case except the known ones: "
        + "; ".join(f"{k} sm_{cc} {dt} BLOCK_D={d} BLOCK_T={t}" for k, cc, dt, d, t in sorted(KNOWN_OVER_SHARED))
        + " (these launches fail with OutOfResources on that target).",
        "",
        "| kernel | dtype | constexprs | warps | sm_80 regs | sm_80 spills (B) | sm_80 shared (KiB) "
        "| sm_90 regs | sm_90 spills (B) | sm_90 shared (KiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (kernel, dtype, bucket, warps), by_cc in table.items():
        cells = []
        for cc in TARGETS:
            r = by_cc.get(cc)
            if r is None or r.error:
                cells += ["error" if r else "-", "", ""]
            else:
                over = " (over the limit)" if _over_shared(r) else ""
                cells += [str(r.regs), str(r.spill_stores), f"{r.shared / 1024:.1f}{over}"]
        lines.append(f"| {kernel} | {dtype} | {bucket} | {warps} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="every bucket and flag combination")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes")
    parser.add_argument("--json", help="write the rows as JSON here")
    parser.add_argument("--markdown", help="write the resource table here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("TRITON_INTERPRET=1: the interpreter's kernels cannot be compiled; unset it")
    start = time.perf_counter()
    rows = run(cases(args.full), args.jobs)
    seconds = time.perf_counter() - start
    bad = problems(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": seconds, "problems": bad,
                       "rows": [dict(asdict(r), case=asdict(r.case)) for r in rows]}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, seconds, args.full))
    print(f"{len(rows)} compiles in {seconds:.0f} s, {len(bad)} problems")
    for p in bad:
        print(p, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
