"""Request and response bodies of the HTTP API (pydantic; the limits come from :class:`ServeOptions`)."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from typing_extensions import Annotated

from .options import ServeOptions

__all__ = ["MAX_SEED", "request_models", "StageImage", "WordMap", "AttentionStage", "GeneratedImage",
           "CaptionResult", "BatchInfo", "GenerateResponse", "BirdImages", "BirdResponse", "ErrorResponse"]

MAX_SEED = 2**63 - 1


def request_models(options: ServeOptions) -> tuple[type[BaseModel], type[BaseModel]]:
    """The bodies of ``POST /api/v1/generate`` and ``POST /api/v1.0/bird`` with ``options``' limits.

    Types are strict (``"3"`` is not a number) and unknown fields of the v1 body are refused.
    """
    Caption = Annotated[str, StringConstraints(max_length=options.max_caption_chars)]

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        captions: list[Caption] = Field(
            min_length=1, max_length=options.max_captions,
            description=f"1 to {options.max_captions} captions, each at most {options.max_words} words "
                        f"({options.max_caption_chars} characters); tokenised as in training (lower-cased "
                        "ASCII words), words not in the vocabulary are dropped and reported",
            examples=[["this bird has a red belly and black wings"]])
        num: int = Field(1, ge=1, le=options.max_num, description="images per caption")
        seed: int = Field(0, ge=0, le=MAX_SEED, description=(
            "seeds the noise of this request only: image j of caption k uses noise row k * num + j "
            "of a generator seeded with it, as `attngan-fast generate --seed` does"))
        stages: Optional[list[int]] = Field(None, description=(
            "the stages whose images to return (0 = smallest; negative counts from the last); default all"))
        attention: bool = Field(True, description="return each word's attention map per attention stage")
        figure: bool = Field(False, description="return the paper's attention figure (PNG) per image")

    class BirdRequest(BaseModel):
        model_config = ConfigDict(strict=True)
        caption: Caption = Field(description="one caption (the original API's only field)")
        seed: int = Field(0, ge=0, le=MAX_SEED, description="not in the original, which drew unseeded noise")

    return GenerateRequest, BirdRequest


class StageImage(BaseModel):
    stage: int
    size: int = Field(description="width = height in pixels")
    png: str = Field(description="the PNG, base64")


class WordMap(BaseModel):
    word: str
    png: str = Field(description="grey PNG (base64) of the word's attention, scaled to its maximum")


class AttentionStage(BaseModel):
    stage: int = Field(description="the stage whose generation used this attention")
    size: int
    maps: list[WordMap]


class GeneratedImage(BaseModel):
    index: int = Field(description="copy j of the caption")
    stages: list[StageImage]
    attention: Optional[list[AttentionStage]] = None
    attention_figure: Optional[str] = Field(None, description="the paper's figure, PNG base64")


class CaptionResult(BaseModel):
    caption: str
    words: list[str] = Field(description="the words used (known to the vocabulary)")
    unknown: list[str] = Field(description="the words dropped (not in the vocabulary)")
    images: list[GeneratedImage]


class BatchInfo(BaseModel):
    rows: int = Field(description="images in the generator forward this request ran in")
    requests: int = Field(description="requests sharing that forward")


class GenerateResponse(BaseModel):
    seed: int
    num: int
    results: list[CaptionResult]
    batch: BatchInfo
    elapsed_ms: float = Field(description="from arrival to the images (queue + generation)")


class BirdImages(BaseModel):
    small: Optional[str] = Field(None, description="stage 0 image as a data: URL (the original: a blob URL)")
    medium: Optional[str] = Field(None, description="stage 1 image as a data: URL")
    large: Optional[str] = Field(None, description="stage 2 image as a data: URL")
    map1: Optional[str] = Field(None, description="attention figure of the first attention stage, data: URL")
    map2: Optional[str] = Field(None, description="attention figure of the second attention stage, data: URL")
    caption: str
    elapsed: float = Field(description="seconds")
    words: list[str]
    unknown: list[str]


class BirdResponse(BaseModel):
    bird: BirdImages


class ErrorResponse(BaseModel):
    error: str = Field(description="`<field>: <why>`")
    detail: Optional[list[dict]] = None
