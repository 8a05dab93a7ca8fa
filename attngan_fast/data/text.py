"""Captions: tokenisation, vocabulary, ``captions.pickle`` and the original WORDS_NUM truncation.

Tokenisation is the original's (docs/original_attngan.md §8.2): U+FFFD U+FFFD → space, lower-case, the runs of the
regex ``\\w+`` (what nltk's ``RegexpTokenizer(r'\\w+')`` returns; nltk is not needed), non-ASCII
characters stripped from each token, empty tokens dropped.

The vocabulary maps word ids ≥ 1 to words, id 0 is ``'<end>'`` (padding). Built from the captions
it numbers words in first-seen order over the train then the test captions, which is the order the
original gets under Python ≥ 3.7 (the released ``captions.pickle`` files were built under Python 2
with another order: use the released file with the released encoders, never a rebuilt one).

``captions.pickle`` holds ``[train_captions, test_captions, ixtoword, wordtoix]``; the caption
lists are flat lists of word-id lists, entry ``k * CAPTIONS_PER_IMAGE + s`` being caption ``s`` of
image ``k``. Python-2 pickles are read with ``encoding='latin1'``; files are written with pickle
protocol 2, atomically.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence, Union

import numpy as np

from ..io import atomic_pickle_dump, load_pickle

__all__ = [
    "END_TOKEN",
    "tokenize",
    "read_caption_file",
    "Vocabulary",
    "CaptionsPickle",
    "load_captions_pickle",
    "save_captions_pickle",
    "pad_caption",
]

END_TOKEN = "<end>"
_WORD = re.compile(r"\w+")
PathLike = Union[str, os.PathLike]


def tokenize(text: str) -> list[str]:
    """Lower-cased ASCII word tokens of ``text``, as the original tokenises captions.

    >>> tokenize("This bird's wings are BLUE, and its belly is red.")
    ['this', 'bird', 's', 'wings', 'are', 'blue', 'and', 'its', 'belly', 'is', 'red']
    """
    text = text.replace("\ufffd\ufffd", " ").lower()
    tokens = (t.encode("ascii", "ignore").decode("ascii") for t in _WORD.findall(text))
    return [t for t in tokens if t]


def read_caption_file(path: PathLike, captions_per_image: int) -> list[list[str]]:
    """The first ``captions_per_image`` captions of a ``text/<key>.txt`` file, tokenised.

    One caption per line (UTF-8). Blank lines are skipped (as in the original); a non-blank line
    without any ASCII word is skipped with a warning naming the file and line. Raises ``ValueError``
    naming the file and line for a line that is not valid UTF-8, and naming the file when fewer than
    ``captions_per_image`` captions remain (the original only printed a message and then mixed up
    the captions of all later images).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read the caption file ({e.strerror or e})") from None
    captions: list[list[str]] = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if len(captions) == captions_per_image:
            break
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}:{lineno}: caption line is not valid UTF-8 ({e.reason} at byte {e.start})"
            ) from None
        if not line.strip():
            continue
        tokens = tokenize(line)
        if not tokens:
            warnings.warn(f"{path}:{lineno}: caption line has no ASCII word, skipped: {line.strip()!r}", stacklevel=2)
            continue
        captions.append(tokens)
    if len(captions) < captions_per_image:
        raise ValueError(
            f"{path}: {len(captions)} caption(s), expected at least TEXT.CAPTIONS_PER_IMAGE={captions_per_image}"
        )
    return captions


@dataclass(frozen=True)
class Vocabulary:
    """Word ↔ id maps in the original's format: ``ixtoword[0] == '<end>'``, ids 0..n_words-1."""

    ixtoword: dict[int, str]
    wordtoix: dict[str, int]

    def __post_init__(self) -> None:
        if self.ixtoword.get(0) != END_TOKEN:
            raise ValueError(f"vocabulary: id 0 must be {END_TOKEN!r}, got {self.ixtoword.get(0)!r}")
        if sorted(self.ixtoword) != list(range(len(self.ixtoword))):
            raise ValueError("vocabulary: ixtoword ids must be 0..n_words-1 without gaps")
        if len(self.wordtoix) != len(self.ixtoword) or any(self.ixtoword.get(i) != w for w, i in self.wordtoix.items()):
            raise ValueError("vocabulary: wordtoix is not the inverse of ixtoword")

    @classmethod
    def from_words(cls, words: Iterable[str]) -> "Vocabulary":
        """Ids 1, 2, ... in first-seen order of ``words`` (duplicates ignored)."""
        ixtoword = {0: END_TOKEN}
        wordtoix = {END_TOKEN: 0}
        for w in words:
            if w not in wordtoix:
                wordtoix[w] = len(ixtoword)
                ixtoword[len(ixtoword)] = w
        return cls(ixtoword, wordtoix)

    @classmethod
    def from_captions(cls, *caption_lists: Sequence[Sequence[str]]) -> "Vocabulary":
        """Every word of the tokenised captions (train first, then test), in first-seen order."""
        return cls.from_words(w for captions in caption_lists for tokens in captions for w in tokens)

    @property
    def n_words(self) -> int:
        """``len(ixtoword)``: the text encoder's ``ntoken``."""
        return len(self.ixtoword)

    def __len__(self) -> int:
        return len(self.ixtoword)

    def encode(
        self,
        text: Union[str, Sequence[str]],
        on_unknown: Literal["error", "skip"] = "error",
    ) -> tuple[list[int], list[str]]:
        """Word ids of a caption (a string, tokenised here, or tokens) and the unknown words found.

        on_unknown: "error" raises ``KeyError`` naming the unknown words and the caption; "skip"
        drops them (the original's ``gen_example`` behaviour) and returns them as the second item.
        """
        if on_unknown not in ("error", "skip"):
            raise ValueError(f"on_unknown: expected 'error' or 'skip', got {on_unknown!r}")
        tokens = tokenize(text) if isinstance(text, str) else list(text)
        ids, unknown = [], []
        for w in tokens:
            ix = self.wordtoix.get(w)
            if ix is None or ix == 0:
                unknown.append(w)
            else:
                ids.append(ix)
        if unknown and on_unknown == "error":
            raise KeyError(f"unknown word(s) {unknown} in caption {text!r} (not in the training vocabulary)")
        return ids, unknown

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` joined by spaces, padding (0) left out."""
        return " ".join(self.ixtoword[int(i)] for i in ids if int(i) != 0)


@dataclass(frozen=True)
class CaptionsPickle:
    """The contents of ``captions.pickle``: flat caption lists (word ids) and the vocabulary."""

    train_captions: list[list[int]]
    test_captions: list[list[int]]
    vocab: Vocabulary


def load_captions_pickle(path: PathLike) -> CaptionsPickle:
    """Read ``captions.pickle`` (Python 2 or 3) without running code from it (:func:`~attngan_fast.io.load_pickle`);
    ``ValueError`` naming the file if it is malformed.

    Every caption must be non-empty with ids in 1..n_words-1.
    """
    path = Path(path)
    content = load_pickle(path, "captions.pickle ([train_captions, test_captions, ixtoword, wordtoix])")
    if not isinstance(content, (list, tuple)) or len(content) < 4:
        raise ValueError(f"{path}: expected [train_captions, test_captions, ixtoword, wordtoix]")
    train, test, ixtoword, wordtoix = content[:4]
    try:
        vocab = Vocabulary({int(k): _as_str(v) for k, v in ixtoword.items()},
                           {_as_str(k): int(v) for k, v in wordtoix.items()})
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad vocabulary ({e})") from None
    lists = []
    for name, captions in (("train_captions", train), ("test_captions", test)):
        if not isinstance(captions, (list, tuple)):
            raise ValueError(f"{path}: {name} is a {type(captions).__name__}, expected a list")
        converted = []
        for i, cap in enumerate(captions):
            ids = [int(x) for x in cap]
            if not ids or min(ids) < 1 or max(ids) >= vocab.n_words:
                raise ValueError(
                    f"{path}: {name}[{i}] = {ids[:30]} is empty or has ids outside 1..{vocab.n_words - 1}"
                )
            converted.append(ids)
        lists.append(converted)
    return CaptionsPickle(lists[0], lists[1], vocab)


def save_captions_pickle(path: PathLike, captions: CaptionsPickle) -> None:
    """Write ``[train_captions, test_captions, ixtoword, wordtoix]`` atomically (protocol 2)."""
    atomic_pickle_dump(
        [captions.train_captions, captions.test_captions, dict(captions.vocab.ixtoword), dict(captions.vocab.wordtoix)],
        path,
    )


def pad_caption(ids: Sequence[int], words_num: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """The original ``get_caption``: ``(words_num,)`` int64 ids zero-padded, and the length kept.

    A caption longer than ``words_num`` keeps ``words_num`` positions drawn at random without
    replacement (from ``rng``), in their original order.
    """
    caption = np.asarray(ids, dtype=np.int64)
    out = np.zeros(words_num, dtype=np.int64)
    if len(caption) <= words_num:
        out[: len(caption)] = caption
        return out, len(caption)
    keep = np.sort(rng.permutation(len(caption))[:words_num])
    out[:] = caption[keep]
    return out, words_num


def _as_str(x: object) -> str:
    if isinstance(x, bytes):
        return x.decode("latin1")
    if not isinstance(x, str):
        raise TypeError(f"expected a word (str), got {type(x).__name__} {x!r}")
    return x
