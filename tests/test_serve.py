"""``attngan-fast serve``: the batcher, the engine's determinism, the HTTP API (in-process client) and
its errors, the original ``/api/v1.0/bird`` route, and the CLI without the serve extra."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from attngan_fast.cli import main
from attngan_fast.sampling import Generator
from attngan_fast.serving import Batcher, Engine, QueueFull, ServeOptions
from attngan_fast.visualize import to_pil
from tests.serve_helpers import need
from tests.training_helpers import single_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture
def generator(original_files):
    paths, *_ = original_files
    return Generator.from_checkpoint(**{k: str(v) for k, v in paths.items()})


def _client(generator, **options):
    need("fastapi"), need("httpx")
    from fastapi.testclient import TestClient

    from attngan_fast.serving import create_app

    return TestClient(create_app(generator, ServeOptions(**options)))


def _png(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _max_diff(a: Image.Image, b: Image.Image) -> int:
    """Largest pixel difference of two RGB pictures of one size."""
    return int(np.abs(np.asarray(a.convert("RGB"), dtype=np.int32) - np.asarray(b.convert("RGB"), dtype=np.int32)).max())


# ---------------------------------------------------------------------- batcher (no model)
def test_batcher_groups_rows_holds_the_overflow_and_refuses_when_full():
    gate, seen = threading.Event(), []

    def process(jobs):
        gate.wait(10)
        seen.append(list(jobs))
        return [j * 10 for j in jobs]

    b = Batcher(process, rows=lambda j: j, max_batch=5, max_wait_s=0.5, queue_size=3)
    b.start()
    try:
        first = b.submit(1)  # the worker takes it and waits for more (max_wait_s)
        time.sleep(0.05)
        rest = [b.submit(2), b.submit(3)]  # 1 + 2 fit in 5 rows, 3 is held for the next group
        gate.set()
        assert [f.result(10) for f in [first, *rest]] == [10, 20, 30]
        assert seen == [[1, 2], [3]]
        gate.clear()
        blocker = b.submit(5)  # a full group: runs at once and blocks in process
        time.sleep(0.2)
        queued = [b.submit(1) for _ in range(3)]
        with pytest.raises(QueueFull, match="3 requests are already waiting"):
            b.submit(1)
        assert queued[0].cancel()  # a cancelled job is skipped
        gate.set()
        assert blocker.result(10) == 50 and [f.result(10) for f in queued[1:]] == [10, 10]
        assert b.stats.rejected == 1 and b.stats.jobs == 6 and b.stats.jobs_per_batch[2] >= 1
    finally:
        gate.set()
        b.stop()
    with pytest.raises(ValueError, match="max_batch >= 1"):
        Batcher(process, rows=len, max_batch=0, max_wait_s=0, queue_size=1)


def test_serve_options_are_checked():
    with pytest.raises(ValueError, match="max_num: expected an integer >= 1, got 0"):
        ServeOptions(max_num=0)
    with pytest.raises(ValueError, match="timeout_s: expected > 0"):
        ServeOptions(timeout_s=0)


# ---------------------------------------------------------------------- determinism
@pytest.mark.parametrize("pad_batch", [True, False])
def test_a_request_gives_the_same_images_whatever_it_is_batched_with(generator, pad_batch):
    engine = Engine(generator, ServeOptions(max_batch=8, pad_batch=pad_batch))
    request = lambda: engine.prepare(["A bird with red wings.", "a blue bird"], 2, 5)  # noqa: E731
    alone = engine.run([request()])[0]
    others = [engine.prepare(["a white bird with black wings and a red belly"], 3, 1),
              engine.prepare(["bird"], 1, 9)]
    for batch in ([others[0], request()], [others[1], request(), others[0]]):
        mixed = engine.run(batch)[1]
        assert mixed.batch_jobs == len(batch)
        for x, y in zip(alone.images + alone.attention, mixed.images + mixed.attention):
            if pad_batch:  # fixed-shape forwards: bitwise
                assert torch.equal(x, y)
            else:  # the arithmetic follows the batch's shape: float rounding only
                torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    # the images generate() gives for the same captions and seed
    ref = generator.generate(["A bird with red wings.", "a blue bird"], seed=5, num=2)
    for x, r in zip(alone.images + alone.attention, ref.images + ref.attention):
        torch.testing.assert_close(x, r, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- API
def test_generate_returns_every_stage_the_attention_and_the_words(generator):
    with _client(generator) as client:
        r = client.post("/api/v1/generate", json={"captions": ["A bird with purple wings", "a red bird"],
                                                   "num": 2, "seed": 3, "figure": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["seed"] == 3 and body["num"] == 2 and body["batch"]["rows"] >= 4
        first, second = body["results"]
        assert first["words"] == ["a", "bird", "with", "wings"] and first["unknown"] == ["purple"]
        assert second["unknown"] == [] and len(first["images"]) == 2
        image = first["images"][1]
        assert [(s["stage"], s["size"], _png(s["png"]).size) for s in image["stages"]] == \
            [(0, 64, (64, 64)), (1, 128, (128, 128))]
        (att,) = image["attention"]
        assert att["stage"] == 1 and [m["word"] for m in att["maps"]] == first["words"]
        assert _png(att["maps"][0]["png"]).size == (64, 64) and _png(image["attention_figure"]).width > 128
        # the pixels of generate() (PNG: uint8, equal up to one level from float rounding)
        with pytest.warns(UserWarning, match="purple"):
            ref = generator.generate(["A bird with purple wings", "a red bird"], seed=3, num=2).pil()[1]
        assert _max_diff(_png(image["stages"][1]["png"]), ref) <= 1
        only = client.post("/api/v1/generate", json={"captions": ["a red bird"], "stages": [-1], "attention": False})
        (img,) = only.json()["results"][0]["images"]
        assert [s["stage"] for s in img["stages"]] == [1] and img["attention"] is None


def test_concurrent_requests_are_batched_and_keep_their_images(generator):
    need("fastapi"), need("httpx")
    import httpx

    from attngan_fast.serving import create_app

    app = create_app(generator, ServeOptions(max_batch=16, max_wait_ms=300))
    bodies = [{"captions": [c], "seed": s, "num": n} for c, s, n in
              [("a red bird", 1, 2), ("a blue bird with white wings", 2, 1), ("black bird", 3, 3), ("a red bird", 1, 2)]]

    async def post_all(payloads):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(*(client.post("/api/v1/generate", json=b) for b in payloads))

    app.state.batcher.start()
    try:
        alone = [asyncio.run(post_all([b]))[0].json() for b in bodies]
        together = [r.json() for r in asyncio.run(post_all(bodies))]
    finally:
        app.state.batcher.stop()
    assert all(a["batch"]["requests"] == 1 for a in alone)
    assert max(t["batch"]["requests"] for t in together) > 1
    for a, t in zip(alone, together):
        assert a["results"] == t["results"]  # the same PNG bytes
    assert together[0]["results"] == together[3]["results"]  # same caption and seed, same images


@pytest.mark.parametrize("body, status, field", [
    ({"captions": [""]}, 422, "captions.0: the caption has no word"),
    ({"captions": ["a red bird", "?!"]}, 422, "captions.1: the caption has no word"),
    ({"captions": ["purple tail"]}, 422, "captions.0: no word of the caption is in the vocabulary (unknown: purple, tail)"),
    ({"captions": ["bird " * 9]}, 422, "captions.0: 9 words, at most 8 allowed"),
    ({"captions": ["x" * 101]}, 422, "captions.0: String should have at most 100 characters"),
    ({"captions": []}, 422, "captions: List should have at least 1 item"),
    ({"captions": ["bird"] * 4}, 422, "captions: List should have at most 3 items"),
    ({"captions": "a red bird"}, 422, "captions: Input should be a valid list"),
    ({"captions": ["bird"], "num": 0}, 422, "num: Input should be greater than or equal to 1"),
    ({"captions": ["bird"], "num": 5}, 422, "num: Input should be less than or equal to 4"),
    ({"captions": ["bird"], "num": "2"}, 422, "num: Input should be a valid integer"),
    ({"captions": ["bird"], "seed": -1}, 422, "seed: Input should be greater than or equal to 0"),
    ({"captions": ["bird"], "seed": 1.5}, 422, "seed: Input should be a valid integer"),
    ({"captions": ["bird"], "stages": [2]}, 422, "stages.0: 2 is not a stage: expected 0..1 (or -2..-1)"),
    ({"captions": ["bird"], "path": "/etc/passwd"}, 422, "path: Extra inputs are not permitted"),
    ({}, 422, "captions: Field required"),
])
def test_bad_input_names_the_field(generator, body, status, field):
    with _client(generator, max_num=4, max_captions=3, max_words=8, max_caption_chars=100) as client:
        r = client.post("/api/v1/generate", json=body)
        assert r.status_code == status and r.json()["error"].startswith(field), r.text  # pydantic's wording varies


def test_bad_bodies_and_queries(generator):
    with _client(generator, max_body_bytes=200) as client:
        r = client.post("/api/v1/generate", content=json.dumps({"captions": ["a bird " * 50]}),
                        headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "body: larger than 200 bytes"

        def chunks():  # no Content-Length: counted while it streams
            for _ in range(10):
                yield b" " * 50

        r = client.post("/api/v1/generate", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = client.post("/api/v1/generate", content=b'{"captions": [', headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"].startswith("1")  # JSON error position
        r = client.get("/api/v1/image.png", params={"caption": "a red bird", "stage": 7})
        assert r.status_code == 422 and r.json()["error"] == "stage: 7 is not a stage: expected 0..1 (or -2..-1)"
        r = client.get("/api/v1/image.png", params={"caption": "purple"})
        assert r.status_code == 422 and r.json()["error"].startswith("caption: no word")
        assert client.get("/api/v1/image.png").json()["error"] == "caption: Field required"


def test_png_routes_and_the_original_bird_route(generator):
    with _client(generator) as client:
        r = client.get("/api/v1/image.png", params={"caption": "a purple bird", "seed": 4, "stage": 0})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == (64, 64)
        assert r.headers["x-words"] == "a bird" and r.headers["x-unknown-words"] == "purple"
        with pytest.warns(UserWarning, match="purple"):
            expected = to_pil(generator.generate("a purple bird", seed=4).images[0][0])
        assert _max_diff(Image.open(io.BytesIO(r.content)), expected) <= 1
        r = client.get("/api/v1/attention.png", params={"caption": "a red bird"})
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).width == 4 * 128

        r = client.post("/api/v1.0/bird", json={"caption": "a bird with red wings"})
        assert r.status_code == 201
        bird = r.json()["bird"]
        assert set(bird) == {"small", "medium", "large", "map1", "map2", "caption", "elapsed", "words", "unknown"}
        assert bird["large"] is None and bird["map2"] is None  # a 2-stage model
        prefix = "data:image/png;base64,"
        assert bird["small"].startswith(prefix) and _png(bird["medium"][len(prefix):]).size == (128, 128)
        assert _png(bird["map1"][len(prefix):]).width == 6 * 128 and bird["caption"] == "a bird with red wings"
        r = client.post("/api/v1.0/bird", json={"text": "a bird"})
        assert r.status_code == 422 and r.json()["error"] == "caption: Field required"


def test_queue_full_gives_503_and_a_slow_answer_504(generator):
    entered, gate = threading.Event(), threading.Event()
    forward = generator.netG.forward

    def slow(*args, **kwargs):
        entered.set()
        gate.wait(20)
        return forward(*args, **kwargs)

    with _client(generator, max_batch=1, queue_size=1, timeout_s=1.0) as client:
        generator.netG.forward = slow  # after the warm-up forward of create_app
        try:
            results = {}
            first = threading.Thread(target=lambda: results.update(a=client.post(
                "/api/v1/generate", json={"captions": ["bird"]})))
            first.start()
            assert entered.wait(10)  # the worker holds request a
            second = threading.Thread(target=lambda: results.update(b=client.post(
                "/api/v1/generate", json={"captions": ["bird"]})))
            second.start()
            while client.get("/api/v1/health").json()["queue"] < 1:
                time.sleep(0.01)
            full = client.post("/api/v1/generate", json={"captions": ["bird"]})
            assert full.status_code == 503 and full.headers["retry-after"] == "1"
            assert full.json()["error"].startswith("queue: full")
            first.join(), second.join()
            assert results["a"].status_code == 504 and results["b"].status_code == 504
            assert results["a"].json()["error"] == "timeout: not answered within 1 s"
        finally:
            gate.set()
            generator.netG.forward = forward
        while client.get("/api/v1/health").json()["queue"]:  # b, timed out, leaves when the worker reaches it
            time.sleep(0.01)
        assert client.post("/api/v1/generate", json={"captions": ["bird"]}).status_code == 200
        health = client.get("/api/v1/health").json()
        assert health["stats"]["rejected"] == 1 and health["queue"] == 0


def test_model_info_health_openapi_and_page(generator):
    with _client(generator, max_num=3) as client:
        info = client.get("/api/v1/model").json()
        assert [s["size"] for s in info["stages"]] == [64, 128] and info["attention_stages"] == [{"stage": 1, "size": 64}]
        assert info["limits"]["max_num"] == 3 and info["vocabulary_size"] == 11
        assert info["example_caption"] == "this bird has a red belly and black wings with white spots"
        assert client.get("/api/v1/health").json()["status"] == "ok"
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/api/v1/generate", "/api/v1/image.png", "/api/v1/attention.png", "/api/v1.0/bird",
                "/api/v1/health", "/api/v1/model"} <= set(paths)
        page = client.get("/").text
        assert "<script>" in page and "/api/v1/generate" in page
        for external in ("http://", "https://", "src=\"//", "@import", "@font-face"):
            assert external not in page  # no network: inline script and style only


def test_serve_without_the_extra_says_how_to_install(original_files, monkeypatch, capsys):
    paths, *_ = original_files
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    assert main(["serve", "--netG", str(paths["netG"]), "--text-encoder", str(paths["text_encoder"]),
                 "--captions", str(paths["captions"]), "--cfg", str(paths["cfg"])]) == 2
    assert re.search(r"error: serve: .*pip install", capsys.readouterr().err)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "attngan_fast.serving.app", raising=False)
    with pytest.raises(ImportError, match=r'pip install "attngan_fast\[serve\]"'):
        import attngan_fast.serving.app  # noqa: F401
    monkeypatch.delitem(sys.modules, "uvicorn")
    assert main(["serve", "--max-batch", "0"]) == 2
    assert "error: --max-batch: expected an integer >= 1, got 0" in capsys.readouterr().err
    # the package and its CLI import without FastAPI
    code = "import sys, attngan_fast, attngan_fast.cli, attngan_fast.serving; print('fastapi' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
