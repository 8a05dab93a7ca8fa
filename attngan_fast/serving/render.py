"""Generated tensors -> PNG bytes and the JSON payload of a generation (base64 PNGs)."""
from __future__ import annotations

import base64
import io
from typing import Any, Optional, Sequence

import torch
from PIL import Image
from torch import Tensor

from ..visualize import attention_figure, to_pil
from .engine import Job, JobResult

__all__ = ["png_bytes", "png_base64", "word_map", "stage_attention_figure", "job_payload"]


def png_bytes(picture: Image.Image) -> bytes:
    stream = io.BytesIO()
    picture.save(stream, format="PNG")
    return stream.getvalue()


def png_base64(picture: Image.Image) -> str:
    return base64.b64encode(png_bytes(picture)).decode("ascii")


def word_map(attention: Tensor) -> Image.Image:
    """One word's attention (h, w) as a grey picture scaled to its maximum (white = most attended)."""
    a = attention.float()
    a = a / a.max().clamp(min=1e-12)
    return Image.fromarray((a.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), "L")


def stage_attention_figure(images: Sequence[Tensor], attention: Sequence[Tensor], words: Sequence[str],
                           stage: Optional[int] = None) -> Image.Image:
    """The paper's figure of one row: images (3, S, S) per stage, attention (T, h, w) per attention
    stage, each figure row labelled with the stage that used it (0-based, as ``attention_stages``);
    with ``stage`` (>= 1) only that stage's row."""
    if stage is None:
        return attention_figure(images, attention, words, labels=[f"stage {k + 1}" for k in range(len(attention))])
    return attention_figure([images[0], images[stage]], [attention[stage - 1]], words, labels=[f"stage {stage}"])


def job_payload(job: Job, result: JobResult, stages: Sequence[int], maps: bool, figure: bool) -> list[dict[str, Any]]:
    """Per caption: its words, unknown words and ``num`` images, each with the PNGs of ``stages``
    and, with ``maps``, every word's attention map per attention stage, with ``figure`` the paper's
    figure (all base64)."""
    out = []
    for k, text in enumerate(job.texts):
        images = []
        for j in range(job.num):
            row = k * job.num + j
            width = len(job.words[k])
            item: dict[str, Any] = {
                "index": j,
                "stages": [{"stage": s, "size": int(result.images[s].size(-1)),
                            "png": png_base64(to_pil(result.images[s][row]))} for s in stages],
            }
            if maps:
                item["attention"] = [
                    {"stage": a + 1, "size": int(att.size(-1)),
                     "maps": [{"word": w, "png": png_base64(word_map(att[row, i]))}
                              for i, w in enumerate(job.words[k])]}
                    for a, att in enumerate(result.attention)]
            if figure:
                item["attention_figure"] = png_base64(stage_attention_figure(
                    [im[row] for im in result.images], [a[row, :width] for a in result.attention], job.words[k]))
            images.append(item)
        out.append({"caption": text, "words": job.words[k], "unknown": job.unknown[k], "images": images})
    return out
