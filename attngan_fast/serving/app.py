"""The FastAPI application: the v1 API, the original's ``/api/v1.0/bird`` route and the page at ``/``.

Routes (OpenAPI at ``/openapi.json``; ``/docs`` renders it with Swagger UI, which the browser loads
from a CDN — the page at ``/`` needs no network):

- ``POST /api/v1/generate``: captions, num, seed, stages -> base64 PNGs per stage, each word's
  attention map, the words used and dropped.
- ``GET /api/v1/image.png`` / ``GET /api/v1/attention.png``: one image (a stage) / the paper's
  attention figure of one caption, as a PNG body.
- ``POST /api/v1.0/bird``: the original AttnGAN ``eval/`` request ``{"caption": ...}`` answered with
  201 ``{"bird": {small, medium, large, map1, map2, caption, elapsed}}`` as the original, but the
  images are inline ``data:image/png;base64`` URLs instead of blob-store URLs (plus ``words`` and
  ``unknown``); tokenised as in training, not split on spaces; one image from ``seed`` (0 unless
  given), where the original drew unseeded noise; 422 naming the field instead of a bare 400.
- ``GET /api/v1/health``, ``GET /api/v1/model``.

Errors: ``{"error": "<field>: <why>", "detail": [...]}`` with 422 (invalid field), 413 (body over
``max_body_bytes``), 503 (queue full; ``Retry-After``), 504 (not answered in ``timeout_s``).
What a request sends is only tokenised: it reaches neither the file system nor a pickle.
"""
# No ``from __future__ import annotations``: FastAPI reads the route signatures, whose body types
# are classes made in create_app.
import asyncio
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, AsyncIterator, Optional, Sequence

from .batcher import Batcher, QueueFull
from .engine import Engine, FieldError, Job, JobResult
from .options import INSTALL_HINT, ServeOptions

try:
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError(f"{INSTALL_HINT} ({e})") from e

from ..sampling import Generator
from ..visualize import to_pil
from . import render
from .schemas import MAX_SEED, BirdResponse, ErrorResponse, GenerateResponse, request_models

__all__ = ["INSTALL_HINT", "create_app"]

_ERRORS = {code: {"model": ErrorResponse} for code in (413, 422, 503, 504)}


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` (declared or streamed) gets 413 before
    the application sees it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._too_large(scope, receive, send)
        chunks, total, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > self.max_bytes:
                return await self._too_large(scope, receive, send)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        response = _error(413, ("body",), f"larger than {self.max_bytes} bytes", "too_large")
        await response(scope, receive, send)


def _field_name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:] or parts
    return ".".join(parts)


def _error(status: int, loc: Sequence[Any], msg: str, kind: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": f"{_field_name(loc)}: {msg}", "detail": [{"loc": list(loc), "msg": msg, "type": kind}]},
                        status_code=status, headers=headers)


def create_app(generator: Generator, options: Optional[ServeOptions] = None) -> FastAPI:
    """The application serving ``generator`` with ``options`` (default :class:`ServeOptions`).

    The batcher's worker thread starts and stops with the application's lifespan (uvicorn, or
    ``with TestClient(app)``). ``app.state.engine`` / ``app.state.batcher`` hold them.
    """
    options = options or ServeOptions()
    engine = Engine(generator, options)
    batcher: Batcher[Job, JobResult] = Batcher(engine.run, rows=lambda job: job.rows, max_batch=options.max_batch,
                                               max_wait_s=options.max_wait_ms / 1000, queue_size=options.queue_size,
                                               mergeable=lambda job: engine.mergeable)
    GenerateRequest, BirdRequest = request_models(options)
    n_stages = len(engine.stage_sizes)
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="attngan_fast", version="1", lifespan=lifespan,
                  description="Text-to-image with an AttnGAN generator; requests are batched dynamically. "
                              "Errors: `{\"error\": \"<field>: <why>\", \"detail\": [...]}`.")
    app.state.engine, app.state.batcher = engine, batcher
    app.add_middleware(BodySizeLimit, max_bytes=options.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        first = detail[0] if detail else {"loc": ["body"], "msg": "invalid"}
        return JSONResponse({"error": f"{_field_name(first['loc'])}: {first['msg']}", "detail": detail},
                            status_code=422)

    @app.exception_handler(FieldError)
    async def bad_field(request: Request, exc: FieldError) -> JSONResponse:
        return _error(422, exc.loc, exc.msg, "value_error")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    async def run(job: Job) -> JobResult:
        try:
            future = batcher.submit(job)
        except QueueFull as e:
            raise HTTPException(503, f"queue: full, {e}; retry later", headers={"Retry-After": "1"}) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), options.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"timeout: not answered within {options.timeout_s:g} s") from None

    def stage_index(stage: int, loc: tuple) -> int:
        if not -n_stages <= stage < n_stages:
            raise FieldError(loc, f"{stage} is not a stage: expected 0..{n_stages - 1} (or -{n_stages}..-1)")
        return stage % n_stages

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/v1/health", summary="liveness, queue depth and batching counters")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queue": batcher.depth(), "queue_size": options.queue_size,
                "stats": batcher.stats.as_dict()}

    @app.get("/api/v1/model", summary="the model: stages, vocabulary size, limits, batching")
    async def model() -> dict[str, Any]:
        return engine.info()

    @app.post("/api/v1/generate", response_model=GenerateResponse, responses=_ERRORS,
              summary="images of every stage and each word's attention for one or several captions")
    async def generate(body: GenerateRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        start = time.perf_counter()
        stages = list(range(n_stages)) if body.stages is None else \
            [stage_index(s, ("body", "stages", i)) for i, s in enumerate(body.stages)]
        job = engine.prepare(body.captions, body.num, body.seed)
        result = await run(job)
        elapsed = (time.perf_counter() - start) * 1000
        results = await asyncio.to_thread(render.job_payload, job, result, stages, body.attention, body.figure)
        return {"seed": body.seed, "num": body.num, "results": results, "elapsed_ms": elapsed,
                "batch": {"rows": result.batch_rows, "requests": result.batch_jobs}}

    def one_caption(caption: str, seed: int, loc: tuple) -> Job:
        return engine.prepare([caption], 1, seed, locs=[loc])

    caption_query = Query(max_length=options.max_caption_chars, description="one caption")
    seed_query = Query(0, ge=0, le=MAX_SEED)

    def png_response(picture: Any, job: Job) -> Response:
        return Response(render.png_bytes(picture), media_type="image/png",
                        headers={"X-Words": " ".join(job.words[0]), "X-Unknown-Words": " ".join(job.unknown[0])})

    @app.get("/api/v1/image.png", response_class=Response, responses={200: {"content": {"image/png": {}}}, **_ERRORS},
             summary="one caption's image of one stage as a PNG body (X-Words / X-Unknown-Words headers)")
    async def image_png(caption: str = caption_query, seed: int = seed_query,
                        stage: int = Query(-1, description="default the last")) -> Response:
        index = stage_index(stage, ("query", "stage"))
        job = one_caption(caption, seed, ("query", "caption"))
        result = await run(job)
        return png_response(await asyncio.to_thread(to_pil, result.images[index][0]), job)

    @app.get("/api/v1/attention.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, **_ERRORS},
             summary="one caption's attention figure (the paper's picture) as a PNG body")
    async def attention_png(caption: str = caption_query, seed: int = seed_query) -> Response:
        job = one_caption(caption, seed, ("query", "caption"))
        result = await run(job)
        picture = await asyncio.to_thread(render.stage_attention_figure, [im[0] for im in result.images],
                                          [a[0] for a in result.attention], job.words[0])
        return png_response(picture, job)

    @app.post("/api/v1.0/bird", status_code=201, response_model=BirdResponse, responses=_ERRORS,
              summary="the original AttnGAN eval/ API: images inline as data: URLs")
    async def bird(body: BirdRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        start = time.perf_counter()
        job = one_caption(body.caption, body.seed, ("body", "caption"))
        result = await run(job)

        def urls() -> dict[str, str]:
            out = {}
            for name, images in zip(("small", "medium", "large"), result.images):
                out[name] = "data:image/png;base64," + render.png_base64(to_pil(images[0]))
            for a in range(len(result.attention)):
                picture = render.stage_attention_figure([im[0] for im in result.images],
                                                        [att[0] for att in result.attention], job.words[0], a + 1)
                out[f"map{a + 1}"] = "data:image/png;base64," + render.png_base64(picture)
            return out

        found = await asyncio.to_thread(urls)
        return {"bird": {**found, "caption": body.caption, "elapsed": time.perf_counter() - start,
                         "words": job.words[0], "unknown": job.unknown[0]}}

    return app
