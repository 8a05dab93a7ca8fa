"""The serving limits and batching settings (one frozen object, checked once)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["INSTALL_HINT", "ServeOptions"]

INSTALL_HINT = ('the HTTP server needs FastAPI and uvicorn: pip install "attngan_fast[serve]" '
                '(in a checkout: pip install -e ".[serve]")')


@dataclass(frozen=True)
class ServeOptions:
    """Settings of :func:`attngan_fast.serving.create_app`.

    Batching: requests waiting in the queue are gathered into one generator forward of at most
    ``max_batch`` images (rows), waiting up to ``max_wait_ms`` after the first one for more;
    a request of more rows than ``max_batch`` runs in chunks. pad_batch: every forward has
    ``max_batch`` rows and ``max_words`` word slots (filler rows), which makes a request's images
    bitwise independent of what it is batched with; False: forwards as large as the rows gathered
    (less work when lightly loaded; images then agree across batches up to float rounding). At most ``queue_size`` requests wait
    (more: 503); a request not answered within ``timeout_s`` of its arrival gets 504.

    Limits of one request (more: 4xx naming the field): ``max_captions`` captions, each of at most
    ``max_caption_chars`` characters and ``max_words`` words (tokens, unknown ones included),
    ``max_num`` images per caption, a body of at most ``max_body_bytes`` bytes (413).
    example_caption: the page's starting caption (default: the first words of the vocabulary
    when the birds sentence has none of them).
    """

    max_batch: int = 16
    max_wait_ms: float = 10.0
    queue_size: int = 64
    timeout_s: float = 60.0
    max_num: int = 8
    max_captions: int = 8
    max_words: int = 64
    max_caption_chars: int = 1000
    max_body_bytes: int = 65536
    pad_batch: bool = True
    example_caption: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue_size", "max_num", "max_captions", "max_words", "max_caption_chars",
                     "max_body_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms: expected >= 0, got {self.max_wait_ms!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s: expected > 0, got {self.timeout_s!r}")
