"""A short load test of ``attngan-fast serve`` (a real uvicorn process on loopback): concurrent
clients, no errors, no lost request, and requests shared forwards."""
from __future__ import annotations

from tests.serve_helpers import need, serve_load


def test_concurrent_clients_are_all_answered_and_batched(original_files):
    need("fastapi"), need("uvicorn")
    paths, *_ = original_files
    load = serve_load()
    with load.serve_process(paths, "--max-batch", "8", "--max-wait-ms", "50") as url:
        # bounded by the count; the duration is only a safety stop, so a slow machine sends all 36 too
        result = load.run_load(url, clients=6, duration_s=600, max_requests=36)
    assert result["errors"] == 0 and result["lost"] == 0 and result["rejected"] == 0, result
    assert result["ok"] == result["sent"] == 36, result
    assert result["max_requests_per_forward"] > 1, result
