"""Load test of ``attngan-fast serve`` on the loopback interface: N concurrent clients, each request
timed, bounded in time and count (it stops by itself).

  python benchmarks/serve_load.py                 # the table: 1 / 8 / 32 clients, batched (fixed-shape
                                                  # and --no-pad-batch) vs --max-batch 1, and a small
                                                  # queue under 32 clients
  python benchmarks/serve_load.py --url http://127.0.0.1:8000 --clients 8 --duration-s 10

Without ``--url`` it writes a randomly initialised generator of ``--cfg`` (default demo_birds with
two stages, 64 + 128 px with word attention) and the synthetic birds vocabulary in the original
file format, and runs ``attngan-fast serve`` on it in a subprocess per server setting. Clients are
threads with one keep-alive connection each; a 503 (queue full) is counted, waited 50 ms on and
retried with the next request. "lost" = requests sent without any HTTP answer (must be 0).
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence
from urllib.parse import urlsplit

import torch
import yaml

CAPTIONS = ["a small bird with red wings and a white belly", "this bird has blue wings and a yellow belly",
            "a bird with black wings", "the bird is green with a short beak and a red head"]


def write_original_files(folder: Path, cfg_name: str = "demo_birds", branch_num: int = 2) -> dict[str, Path]:
    """A random G_NET of ``cfg_name`` (``TREE.BRANCH_NUM=branch_num``) and text encoder over the
    synthetic birds vocabulary, saved as the original AttnGAN files; returns their paths."""
    from attngan_fast import config
    from attngan_fast.data.synthetic import synthetic_vocabulary
    from attngan_fast.data.text import CaptionsPickle, save_captions_pickle
    from attngan_fast.models import G_NET, RNN_ENCODER, weights_init

    cfg = config.load(cfg_name, **{"TREE.BRANCH_NUM": branch_num})
    vocab = synthetic_vocabulary()
    torch.manual_seed(0)
    netG = G_NET(cfg)
    netG.apply(weights_init)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"netG": folder / "netG.pth", "text_encoder": folder / "text_encoder.pth",
             "captions": folder / "captions.pickle", "cfg": folder / "cfg.yml"}
    torch.save(netG.state_dict(), files["netG"])
    torch.save(RNN_ENCODER(vocab.n_words, cfg, nhidden=cfg.TEXT.EMBEDDING_DIM).state_dict(), files["text_encoder"])
    save_captions_pickle(files["captions"], CaptionsPickle([[1]], [[1]], vocab))
    files["cfg"].write_text(yaml.safe_dump(cfg.to_dict()))
    return files


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(files: dict[str, Path], *options: str, threads: int = 1,
                  start_timeout_s: float = 120.0) -> Iterator[str]:
    """``attngan-fast serve`` on the original-format ``files`` with extra ``options``, on a free
    127.0.0.1 port; yields its base URL, terminates it afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "attngan_fast.cli", "serve", "--netG", str(files["netG"]),
           "--text-encoder", str(files["text_encoder"]), "--captions", str(files["captions"]),
           "--cfg", str(files["cfg"]), "--device", "cpu", "--threads", str(threads), "--port", str(port),
           "--log-level", "warning", *options]
    log = Path(files["cfg"]).with_name(f"serve_{port}.log")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                status, _ = request(url, "GET", "/api/v1/health", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer within {start_timeout_s} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def request(url: str, method: str, path: str, body: Optional[dict] = None, timeout: float = 60,
            conn: Optional[http.client.HTTPConnection] = None) -> tuple[int, Any]:
    """One request (on ``conn`` when given); returns the status and the decoded JSON (or None)."""
    parts = urlsplit(url)
    own = conn is None
    conn = conn or http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        response = conn.getresponse()
        raw = response.read()
        kind = response.getheader("content-type", "")
        return response.status, json.loads(raw) if kind.startswith("application/json") else None
    finally:
        if own:
            conn.close()


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run_load(url: str, clients: int, duration_s: float = 10.0, max_requests: int = 1000, num: int = 1,
             timeout_s: float = 60.0) -> dict[str, Any]:
    """``clients`` threads posting ``/api/v1/generate`` (one caption, ``num`` images, a seed per
    request) until ``duration_s`` passed or ``max_requests`` were sent. Returns counts (sent, ok,
    rejected = 503, errors = other statuses, lost = sent without an answer), requests/s of
    the ok ones, p50 / p99 latency (ms) and the requests per forward seen in the answers."""
    lock = threading.Lock()
    counts = {"sent": 0, "answered": 0, "ok": 0, "rejected": 0, "errors": 0}
    latencies: list[float] = []
    per_forward: list[int] = []
    error_kinds: dict[str, int] = {}
    deadline = time.monotonic() + duration_s
    parts = urlsplit(url)

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        try:
            while time.monotonic() < deadline:
                with lock:
                    if counts["sent"] >= max_requests:
                        return
                    ticket = counts["sent"]
                    counts["sent"] += 1
                body = {"captions": [CAPTIONS[ticket % len(CAPTIONS)]], "num": num, "seed": ticket, "attention": False}
                start = time.perf_counter()
                try:
                    status, answer = request(url, "POST", "/api/v1/generate", body, timeout_s, conn)
                except (OSError, http.client.HTTPException) as e:  # no answer: lost
                    with lock:
                        error_kinds[type(e).__name__] = error_kinds.get(type(e).__name__, 0) + 1
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
                    continue
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    counts["answered"] += 1
                    if status == 200:
                        counts["ok"] += 1
                        latencies.append(elapsed)
                        per_forward.append(answer["batch"]["requests"])
                    elif status == 503:
                        counts["rejected"] += 1
                    else:
                        counts["errors"] += 1
                        error_kinds[str(status)] = error_kinds.get(str(status), 0) + 1
                if status == 503:
                    time.sleep(0.05)
        finally:
            conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + timeout_s + 10)
    wall = time.perf_counter() - start
    return {**counts, "lost": counts["sent"] - counts["answered"], "error_kinds": error_kinds, "clients": clients,
            "wall_s": wall, "rps": counts["ok"] / wall,
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "mean_requests_per_forward": sum(per_forward) / max(1, len(per_forward)),
            "max_requests_per_forward": max(per_forward, default=0)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running server (default: start one per setting)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--duration-s", type=float, default=10.0, help="per cell")
    p.add_argument("--max-requests", type=int, default=2000, help="per cell")
    p.add_argument("--num", type=int, default=1, help="images per request")
    p.add_argument("--cfg", default="demo_birds")
    p.add_argument("--server-threads", type=int, default=1)
    p.add_argument("--settings", nargs="+", default=["--max-batch 16", "--max-batch 16 --no-pad-batch", "--max-batch 1"],
                   help="server options to compare, one string each (all client counts)")
    p.add_argument("--queue-full", default="--max-batch 16 --queue-size 4",
                   help="server options of the queue-full run (the largest client count; '' to skip)")
    p.add_argument("--json", help="write the rows to this file too")
    args = p.parse_args(argv)
    rows = []

    def cell(url: str, setting: str, clients: int) -> None:
        r = run_load(url, clients, args.duration_s, args.max_requests, args.num)
        rows.append({"setting": setting, **r})
        print(f"| {setting} | {clients} | {r['sent']} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
              f"{r['mean_requests_per_forward']:.1f} (max {r['max_requests_per_forward']}) | {r['errors']} | "
              f"{r['lost']} | {r['rejected']} |", flush=True)

    print("| server | clients | sent | ok req/s | p50 ms | p99 ms | requests per forward | errors | lost | 503 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    if args.url:
        for c in args.clients:
            cell(args.url, "given", c)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            files = write_original_files(Path(tmp), args.cfg)
            settings = [(o, args.clients) for o in args.settings]
            if args.queue_full:
                settings.append((args.queue_full, [max(args.clients)]))
            for options, clients in settings:
                with serve_process(files, *options.split(), threads=args.server_threads) as url:
                    for c in clients:
                        cell(url, options, c)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["errors"] == 0 and r["lost"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
