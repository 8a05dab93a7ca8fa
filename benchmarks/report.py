"""Turn a pytest-benchmark JSON file into the README's performance table (markdown).

    pytest benchmarks/ --benchmark-only --benchmark-json=bench.json
    python benchmarks/report.py bench.json [--out table.md]

One row per benchmark group: the median time of every implementation, the ratio reference/other,
and, where the benchmark recorded ``bytes`` or ``flops``, the achieved GB/s or TFLOP/s.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(data: dict) -> list[dict]:
    groups: dict[str, dict] = {}
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        impl = info.get("impl")
        if impl is None:
            continue
        g = groups.setdefault(bench["group"], {"group": bench["group"], "device": info.get("device", "?"), "times": {}, "info": {}})
        g["times"][impl] = bench["stats"]["median"]
        g["info"][impl] = info
    return [groups[k] for k in sorted(groups)]


def throughput(info: dict, seconds: float) -> str:
    if info.get("bytes"):
        return f"{info['bytes'] / seconds / 1e9:.1f} GB/s"
    if info.get("flops"):
        return f"{info['flops'] / seconds / 1e12:.3f} TFLOP/s"
    return ""


def table(data: dict) -> str:
    machine = data.get("machine_info", {})
    lines = [
        f"Measured {data.get('datetime', '?')[:10]} on {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
        f"python {machine.get('python_version', '?')}; medians of pytest-benchmark rounds.",
        "",
        "| benchmark | device | reference | fast | reference / fast | other | fast throughput |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows(data):
        t = r["times"]
        ref, fast = t.get("reference"), t.get("fast")
        ratio = f"**{ref / fast:.2f}x**" if ref and fast else ""
        others = ", ".join(f"{impl} {ref / s:.2f}x" for impl, s in sorted(t.items()) if impl not in ("reference", "fast") and ref)
        tp = throughput(r["info"].get("fast", {}), fast) if fast else ""
        fmt = lambda s: f"{s * 1e3:.2f} ms" if s is not None else ""  # noqa: E731
        lines.append(f"| {r['group']} | {r['device']} | {fmt(ref)} | {fmt(fast)} | {ratio} | {others} | {tp} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("--out", type=Path, help="write the table here too")
    args = parser.parse_args(argv)
    text = table(json.loads(args.json.read_text()))
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
