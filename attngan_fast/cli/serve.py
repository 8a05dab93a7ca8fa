"""``attngan-fast serve``: the HTTP API and web page of :mod:`attngan_fast.serving` on uvicorn."""
from __future__ import annotations

import argparse
from typing import Any

from ..backend import set_backend
from .common import (
    UsageError,
    add_backend_argument,
    add_generator_arguments,
    add_threads_argument,
    generator_from_args,
    set_up_cpu,
)


def add_parser(subparsers: Any) -> None:
    from ..serving.options import ServeOptions

    d = ServeOptions()
    p = subparsers.add_parser(
        "serve", help="serve a trained generator over HTTP (API + web page), with dynamic batching",
        description="An HTTP API (/api/v1/..., OpenAPI at /openapi.json), the original AttnGAN route "
                    "POST /api/v1.0/bird and a web page at /, from a training snapshot or the original "
                    "AttnGAN files. Needs the serve extra: pip install \"attngan_fast[serve]\".",
    )
    add_generator_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=d.max_batch, help=f"images per generator forward (default {d.max_batch})")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help=f"how long a forward waits for more requests after the first (default {d.max_wait_ms:g})")
    p.add_argument("--queue-size", type=int, default=d.queue_size,
                   help=f"requests waiting at most; more get 503 (default {d.queue_size})")
    p.add_argument("--timeout-s", type=float, default=d.timeout_s,
                   help=f"a request not answered in time gets 504 (default {d.timeout_s:g})")
    p.add_argument("--no-pad-batch", dest="pad_batch", action="store_false", default=True,
                   help="forwards as large as the rows gathered (images then equal across batches only "
                        "up to float rounding; default: fixed-shape forwards, bitwise)")
    p.add_argument("--max-num", type=int, default=d.max_num, help=f"images per caption at most (default {d.max_num})")
    p.add_argument("--max-captions", type=int, default=d.max_captions,
                   help=f"captions per request at most (default {d.max_captions})")
    p.add_argument("--max-words", type=int, default=d.max_words,
                   help=f"words per caption at most (default {d.max_words})")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help=f"request body size at most; more gets 413 (default {d.max_body_bytes})")
    p.add_argument("--example-caption", help="the page's starting caption")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    add_backend_argument(p)
    add_threads_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..serving.options import INSTALL_HINT, ServeOptions

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected 0..65535")
    try:
        options = ServeOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
                               timeout_s=args.timeout_s, max_num=args.max_num, max_captions=args.max_captions,
                               max_words=args.max_words, max_body_bytes=args.max_body_bytes,
                               pad_batch=args.pad_batch, example_caption=args.example_caption)
    except ValueError as e:  # "max_batch: why" names the option
        name, _, why = str(e).partition(": ")
        raise UsageError(f"--{name.replace('_', '-')}: {why}") from None
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise UsageError(f"serve: {INSTALL_HINT} ({e})") from None
    from ..serving.app import create_app

    set_backend(args.backend)
    set_up_cpu(args.threads)
    generator = generator_from_args(args)
    app = create_app(generator, options)
    print(f"serving on http://{args.host}:{args.port}/ (API: /api/v1, OpenAPI: /openapi.json)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
