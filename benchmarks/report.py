"""Turn pytest-benchmark JSON files into the README's performance table (markdown).

    pytest benchmarks/ --benchmark-only --benchmark-json=bench.json
    python benchmarks/report.py bench.json [more.json ...] [--out table.md]

One row per benchmark group: the median time of reference, fast and fast+compile, the ratios
reference/fast and reference/(fast+compile); where measured, reference+compile (the original math under
``torch.compile``: what a user gets without this library) and the ratio (reference+compile)/(fast+compile);
any other implementation's ratio, the shapes and the
device; where the benchmark recorded ``bytes`` or ``flops``, the achieved GB/s or TFLOP/s of the
fastest non-reference implementation, as a share of the machine's measured limit (copy bandwidth,
fp32 matmul; ``benchmarks/test_limits.py``) when the run has it. Several files (e.g. one per
benchmark file) are merged.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

MAIN_IMPLS = ("reference", "fast", "fast+compile", "reference+compile")


def rows(data: dict) -> list[dict]:
    """Benchmark groups (sorted), each ``{"group", "device", "times": {impl: median s}, "info": {impl: extra_info}}``;
    the limits (impl "limit") are left out."""
    groups: dict[str, dict] = {}
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        impl = info.get("impl")
        if impl is None or impl == "limit":
            continue
        g = groups.setdefault(bench["group"], {"group": bench["group"], "device": info.get("device", "?"), "times": {},
                                               "info": {}})
        g["times"][impl] = bench["stats"]["median"]
        g["info"][impl] = info
    return [groups[k] for k in sorted(groups)]


def limits(data: dict) -> dict[tuple[str, str], float]:
    """Measured limits per (device, kind): "bytes" -> bytes/s (copy), "flops" -> flop/s (fp32 matmul)."""
    out: dict[tuple[str, str], float] = {}
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if info.get("impl") == "limit" and info.get("limit_of"):
            amount = info.get(info["limit_of"])
            if amount:
                out[(info.get("device", "?"), info["limit_of"])] = amount / bench["stats"]["median"]
    return out


def throughput(info: dict, seconds: float, limit: dict[tuple[str, str], float]) -> str:
    """TFLOP/s and/or GB/s (whichever were recorded), each with its share of the device's limit."""
    parts = []
    for kind, unit, scale in (("flops", "TFLOP/s", 1e12), ("bytes", "GB/s", 1e9)):
        if info.get(kind):
            rate = info[kind] / seconds
            peak = limit.get((info.get("device", "?"), kind))
            parts.append(f"{rate / scale:.3g} {unit}" + (f" ({100 * rate / peak:.0f}%)" if peak else ""))
    return ", ".join(parts)


def format_shapes(shapes: dict) -> str:
    def value(v):
        return "x".join(str(d) for d in v) if isinstance(v, (list, tuple)) else str(v)

    return ", ".join(f"{k} {value(v)}" for k, v in shapes.items())


def format_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def merge(documents: list[dict]) -> dict:
    """One document with the benchmarks of all, the machine and date of the first."""
    merged = dict(documents[0])
    merged["benchmarks"] = [b for d in documents for b in d["benchmarks"]]
    return merged


def table(data: dict) -> str:
    machine = data.get("machine_info", {})
    limit = limits(data)
    lines = [
        f"Measured {data.get('datetime', '?')[:10]} on {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
        f"python {machine.get('python_version', '?')}; medians of pytest-benchmark rounds; ratios are reference / other; "
        "throughput of the fastest non-reference implementation, as a share of the measured limit (above 100% "
        "when the data stays in cache).",
    ]
    versions = sorted({(b["extra_info"].get("torch"), b["extra_info"].get("triton")) for b in data["benchmarks"]
                       if "torch" in b.get("extra_info", {})})
    if versions:
        lines[0] += " " + "; ".join(f"torch {t}, triton {tr}" for t, tr in versions) + "."
    for device in sorted({d for d, _ in limit}):
        parts = [f"copy {limit[(device, 'bytes')] / 1e9:.3g} GB/s" if (device, "bytes") in limit else "",
                 f"fp32 matmul {limit[(device, 'flops')] / 1e12:.3g} TFLOP/s" if (device, "flops") in limit else ""]
        lines += ["", f"Measured limits on {device}: {', '.join(p for p in parts if p)}."]
    lines += [
        "",
        "| benchmark | shapes | device | reference | fast | reference / fast | fast+compile | reference / (fast+compile) "
        "| reference+compile | (reference+compile) / (fast+compile) | other | throughput (% of limit) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows(data):
        t = r["times"]
        ref = t.get("reference")

        def ratio(impl: str, bold: bool = False, ref: Optional[float] = ref, t: dict = t) -> str:
            if not ref or impl not in t:
                return ""
            return f"**{ref / t[impl]:.2f}x**" if bold else f"{ref / t[impl]:.2f}x"

        compiled = (f"**{t['reference+compile'] / t['fast+compile']:.2f}x**"
                    if "reference+compile" in t and "fast+compile" in t else "")
        others = ", ".join(f"{impl} {format_time(s)} ({ratio(impl)})" for impl, s in sorted(t.items()) if impl not in MAIN_IMPLS)
        candidates = [impl for impl in t if not impl.startswith("reference")]
        best = min(candidates, key=t.get) if candidates else "reference"
        tp = throughput(r["info"][best], t[best], limit)
        if tp and best != "fast":
            tp = f"{best}: {tp}"
        shapes = format_shapes(next(iter(r["info"].values())).get("shapes", {}))
        lines.append(f"| {r['group']} | {shapes} | {r['device']} | {format_time(ref)} | {format_time(t.get('fast'))} "
                     f"| {ratio('fast', bold=True)} | {format_time(t.get('fast+compile'))} | {ratio('fast+compile', bold=True)} "
                     f"| {format_time(t.get('reference+compile'))} | {compiled} | {others} | {tp} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, help="write the table here too")
    args = parser.parse_args(argv)
    text = table(merge([json.loads(path.read_text()) for path in args.json]))
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
