"""``TextDataset``: the original AttnGAN data layouts (birds, COCO) and a user's own caption set.

Layouts (docs/original_attngan.md §8.1), detected from the folder (``layout="auto"``):

* **birds** (``CUB_200_2011/`` present): images ``CUB_200_2011/images/<key>.jpg``, bounding boxes
  from ``CUB_200_2011/{images,bounding_boxes}.txt`` (the image is cropped around its box),
  captions ``text/<key>.txt``, ``{train,test}/filenames.pickle``, ``{train,test}/class_info.pickle``
  (else class ids ``0..N-1``), ``captions.pickle``.
* **coco** (``train/filenames.pickle`` or ``test/filenames.pickle`` present): images
  ``images/<key>.jpg``, no boxes, class ids ``0..N-1``, otherwise as birds.
* **captions** (a user's own set): a folder of images and one captions file, ``captions.tsv``,
  ``captions.txt`` or ``captions.json`` (or ``captions_file=``); see :func:`read_own_captions`.

For birds and COCO, ``captions.pickle`` is read if present (the released files work); otherwise it is
built from ``text/`` on first use and written next to the data (atomically). For the own layout the
captions file is parsed every time and ``captions.pickle`` keeps the vocabulary stable: a word seen
for the first time is appended (existing ids never change; a warning says that ``n_words`` grew).

Bad data: a caption line that is not UTF-8, a malformed captions-file line or entry, a text file with
fewer than ``CAPTIONS_PER_IMAGE`` captions, an image file that is missing → ``ValueError`` naming the
file (and line). With ``on_bad_data="skip"`` the images whose file is missing and the malformed
lines of an own captions file are skipped with one warning naming them instead. Caption lines with no
ASCII word are always skipped with a warning (the original skipped them). An image that cannot be
decoded raises ``ValueError`` naming it when it is loaded.
"""
from __future__ import annotations

import json
import os
import warnings
import zlib
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from PIL import Image

from ..io import load_pickle
from .base import CaptionDataset
from .synthetic import SyntheticBirds
from .text import CaptionsPickle, Vocabulary, load_captions_pickle, read_caption_file, save_captions_pickle, tokenize
from .transforms import bbox_crop

__all__ = ["TextDataset", "build_dataset", "detect_layout", "read_own_captions", "load_image_file", "OWN_CAPTION_FILES"]

PathLike = Union[str, os.PathLike]
Layout = Literal["auto", "birds", "coco", "captions"]
OWN_CAPTION_FILES = ("captions.tsv", "captions.txt", "captions.json")


def detect_layout(data_dir: PathLike) -> str:
    """"birds", "coco" or "captions" for ``data_dir``; ``ValueError`` saying what was looked for."""
    d = Path(data_dir)
    if not d.is_dir():
        raise ValueError(f"data folder {str(d)!r} does not exist")
    if (d / "CUB_200_2011").is_dir():
        return "birds"
    if (d / "train" / "filenames.pickle").is_file() or (d / "test" / "filenames.pickle").is_file():
        return "coco"
    if any((d / name).is_file() for name in OWN_CAPTION_FILES):
        return "captions"
    raise ValueError(
        f"{d}: no known data layout: expected CUB_200_2011/ (birds), train/filenames.pickle (COCO) or "
        f"one of {', '.join(OWN_CAPTION_FILES)} (own captions)"
    )


def load_image_file(path: PathLike) -> Image.Image:
    """Open and decode an image as RGB; ``ValueError`` naming the file if it cannot be."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None


class TextDataset(CaptionDataset):
    """Images with captions in an original AttnGAN layout or a user's own caption folder.

    Items are :class:`~attngan_fast.data.Sample`: ``branch_num`` images of sizes
    ``base_size * 2**i`` (the original pipeline, see :class:`~attngan_fast.data.ImageTransform`),
    one random caption of the image padded/truncated to ``words_num``, the class id and the key;
    batch them with :func:`~attngan_fast.data.collate`. Random draws depend on ``(seed, epoch,
    index)`` only (see :class:`~attngan_fast.data.CaptionDataset`).

    test_fraction: own layout only, the share of images without an explicit split that go to the
        test split (chosen by a hash of the image name, so adding images moves no other image).
    """

    def __init__(
        self,
        data_dir: PathLike,
        split: str = "train",
        *,
        base_size: int = 64,
        branch_num: int = 3,
        words_num: int = 18,
        captions_per_image: int = 10,
        layout: Layout = "auto",
        seed: Optional[int] = None,
        augment: bool = True,
        wrong_images: bool = False,
        on_bad_data: Literal["error", "skip"] = "error",
        captions_file: Optional[PathLike] = None,
        test_fraction: float = 0.1,
    ) -> None:
        super().__init__(split=split, base_size=base_size, branch_num=branch_num, words_num=words_num,
                         seed=seed, augment=augment, wrong_images=wrong_images)
        if on_bad_data not in ("error", "skip"):
            raise ValueError(f"on_bad_data: expected 'error' or 'skip', got {on_bad_data!r}")
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image: expected >= 1, got {captions_per_image}")
        self.data_dir = Path(data_dir)
        if layout == "auto":
            layout = "captions" if captions_file is not None else detect_layout(self.data_dir)
        if layout not in ("birds", "coco", "captions"):
            raise ValueError(f"layout: expected 'auto', 'birds', 'coco' or 'captions', got {layout!r}")
        self.layout = layout
        self.captions_per_image = captions_per_image
        self.bbox: Optional[dict[str, list[int]]] = None
        if self.layout == "captions":
            self._read_own(captions_file, test_fraction, on_bad_data)
        else:
            self._read_original()
        self._drop_missing_images(on_bad_data)
        self._check()

    @classmethod
    def from_config(cls, cfg: Any, split: str = "train", **kwargs: Any) -> "TextDataset":
        """``TextDataset(cfg.DATA_DIR, split, ...)`` with sizes from ``cfg.TREE`` and ``cfg.TEXT``."""
        params = dict(base_size=cfg.TREE.BASE_SIZE, branch_num=cfg.TREE.BRANCH_NUM, words_num=cfg.TEXT.WORDS_NUM,
                      captions_per_image=cfg.TEXT.CAPTIONS_PER_IMAGE)
        params.update(kwargs)
        return cls(cfg.DATA_DIR, split, **params)

    # ---- images --------------------------------------------------------------------------------
    def image_path(self, index: int) -> Path:
        key = self.filenames[index]
        if self.layout == "birds":
            return self.data_dir / "CUB_200_2011" / "images" / f"{key}.jpg"
        if self.layout == "coco":
            return self.data_dir / "images" / f"{key}.jpg"
        return self.data_dir / key

    def load_image(self, index: int) -> Image.Image:
        img = load_image_file(self.image_path(index))
        if self.bbox is not None:
            img = bbox_crop(img, self.bbox[self.filenames[index]])
        return img

    def _drop_missing_images(self, on_bad_data: str) -> None:
        missing = [i for i in range(len(self.filenames)) if not self.image_path(i).is_file()]
        if not missing:
            return
        names = ", ".join(str(self.image_path(i)) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        if on_bad_data == "error":
            raise ValueError(f"{len(missing)} image file(s) of the {self.split} split missing: {names}")
        warnings.warn(f"skipping {len(missing)} image(s) of the {self.split} split whose file is missing: {names}",
                      stacklevel=3)
        keep = sorted(set(range(len(self.filenames))) - set(missing))
        self.filenames = [self.filenames[i] for i in keep]
        self.captions = [self.captions[i] for i in keep]
        self.class_ids = np.asarray(self.class_ids)[keep]

    # ---- birds / COCO --------------------------------------------------------------------------
    def _read_original(self) -> None:
        split_file = self.data_dir / self.split / "filenames.pickle"
        if not split_file.is_file():
            raise ValueError(f"{split_file}: missing (the {self.split} split's list of image keys)")
        filenames = {s: _load_filenames(self.data_dir / s / "filenames.pickle") for s in ("train", "test")}
        self.filenames = filenames[self.split]
        self.class_ids = self._load_class_ids(len(self.filenames))
        if self.layout == "birds":
            self.bbox = _load_bboxes(self.data_dir / "CUB_200_2011")
            absent = [k for k in self.filenames if k not in self.bbox]
            if absent:
                raise ValueError(f"{self.data_dir / 'CUB_200_2011' / 'images.txt'}: no bounding box for {absent[:5]}")
        captions = self._load_or_build_captions(filenames)
        flat = captions.train_captions if self.split == "train" else captions.test_captions
        cpi = self.captions_per_image
        self.captions = [flat[k * cpi:(k + 1) * cpi] for k in range(len(self.filenames))]
        self.vocab = captions.vocab

    def _load_class_ids(self, n: int) -> np.ndarray:
        path = self.data_dir / self.split / "class_info.pickle"
        if not path.is_file():
            return np.arange(n, dtype=np.int64)
        ids = np.asarray(load_pickle(path, "class_info.pickle (class ids)"), dtype=np.int64).reshape(-1)
        if len(ids) != n:
            raise ValueError(f"{path}: {len(ids)} class ids for {n} filenames in {self.split}/filenames.pickle")
        return ids

    def _load_or_build_captions(self, filenames: dict[str, list[str]]) -> CaptionsPickle:
        path = self.data_dir / "captions.pickle"
        cpi = self.captions_per_image
        if path.is_file():
            captions = load_captions_pickle(path)
            for split, flat in (("train", captions.train_captions), ("test", captions.test_captions)):
                if len(flat) != cpi * len(filenames[split]):
                    raise ValueError(
                        f"{path}: {len(flat)} {split} captions, expected {cpi} per image x "
                        f"{len(filenames[split])} images (TEXT.CAPTIONS_PER_IMAGE={cpi}); a stale file? "
                        f"delete it to rebuild it from text/"
                    )
            return captions
        tokens = {
            split: [cap for key in keys for cap in read_caption_file(self.data_dir / "text" / f"{key}.txt", cpi)]
            for split, keys in filenames.items()
        }
        vocab = Vocabulary.from_captions(tokens["train"], tokens["test"])
        encode = lambda caps: [[vocab.wordtoix[w] for w in cap] for cap in caps]  # noqa: E731
        captions = CaptionsPickle(encode(tokens["train"]), encode(tokens["test"]), vocab)
        save_captions_pickle(path, captions)
        return captions

    # ---- own captions --------------------------------------------------------------------------
    def _read_own(self, captions_file: Optional[PathLike], test_fraction: float, on_bad_data: str) -> None:
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected 0 <= value < 1, got {test_fraction}")
        if captions_file is None:
            captions_file = next(self.data_dir / n for n in OWN_CAPTION_FILES if (self.data_dir / n).is_file())
        entries = read_own_captions(captions_file, skip_bad=on_bad_data == "skip")
        splits: dict[str, list[str]] = {"train": [], "test": []}
        for name, (_, split) in entries.items():
            if split is None:
                split = "test" if zlib.crc32(name.encode("utf-8")) % 10_000 < test_fraction * 10_000 else "train"
            splits[split].append(name)
        tokens = {s: [entries[n][0] for n in names] for s, names in splits.items()}
        vocab = self._own_vocabulary(tokens)
        self.filenames = splits[self.split]
        self.captions = [[[vocab.wordtoix[w] for w in cap] for cap in caps] for caps in tokens[self.split]]
        self.class_ids = np.arange(len(self.filenames), dtype=np.int64)
        self.vocab = vocab

    def _own_vocabulary(self, tokens: dict[str, list[list[list[str]]]]) -> Vocabulary:
        """The cached vocabulary extended by new words; ``captions.pickle`` rewritten when it changed."""
        path = self.data_dir / "captions.pickle"
        cached = load_captions_pickle(path) if path.is_file() else None
        words = [w for s in ("train", "test") for caps in tokens[s] for cap in caps for w in cap]
        old = list(cached.vocab.ixtoword.values())[1:] if cached else []
        vocab = Vocabulary.from_words(old + words)
        if cached and vocab.n_words != cached.vocab.n_words:
            warnings.warn(f"{path}: {vocab.n_words - cached.vocab.n_words} new word(s) appended to the vocabulary "
                          f"(n_words {cached.vocab.n_words} -> {vocab.n_words}); existing ids unchanged", stacklevel=4)
        cpi = self.captions_per_image
        # captions.pickle slots: CAPTIONS_PER_IMAGE per image, an image's captions repeated in order to fill them
        flat = {s: [[vocab.wordtoix[w] for w in caps[i % len(caps)]] for caps in tokens[s] for i in range(cpi)]
                for s in ("train", "test")}
        content = CaptionsPickle(flat["train"], flat["test"], vocab)
        if cached != content:
            save_captions_pickle(path, content)
        return vocab


# image name → (tokenised captions, "train" | "test" | None), in file order
OwnCaptions = dict[str, tuple[list[list[str]], Optional[str]]]


def read_own_captions(path: PathLike, skip_bad: bool = False) -> OwnCaptions:
    """Parse a user's captions file → ``{image name: (tokenised captions, split or None)}``.

    Formats (image names are paths relative to the data folder, where the images are read from):

    * ``.tsv`` / ``.txt``: one caption per line, ``image<TAB>caption`` or
      ``image<TAB>caption<TAB>train|test``; an image may have any number of lines; blank lines and
      lines starting with ``#`` are ignored.
    * ``.json``: ``{"image.jpg": "caption" | ["caption", ...]}``, or a list of records
      ``{"image": ..., "caption": ... | "captions": [...], "split": "train"|"test" (optional)}``
      (``file_name`` is accepted for ``image``), or COCO's ``captions_*.json``
      (``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``).

    Errors name the file and line (or entry). With ``skip_bad`` the malformed lines/entries are
    skipped with one warning listing them. Captions without an ASCII word are skipped with a warning.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read the captions file ({e.strerror or e})") from None
    records = _json_records(path, raw) if path.suffix.lower() == ".json" else _tsv_records(path, raw)
    entries: OwnCaptions = {}
    bad: list[str] = []
    empty: list[str] = []
    for where, item in records:
        if isinstance(item, str):  # an error message for this line/entry
            if not skip_bad:
                raise ValueError(f"{where}: {item}")
            bad.append(f"{where} ({item})")
            continue
        name, caption, split = item
        tokens = tokenize(caption)
        caps, old_split = entries.setdefault(name, ([], split))
        if split is not None and old_split is not None and split != old_split:
            message = f"image {name!r} was put in the {old_split} split before, now in {split}"
            if not skip_bad:
                raise ValueError(f"{where}: {message}")
            bad.append(f"{where} ({message})")
            continue
        if split is not None and old_split is None:
            entries[name] = (caps, split)
        if tokens:
            caps.append(tokens)
        else:
            empty.append(where)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} malformed line(s)/entries: {'; '.join(bad[:5])}"
                      + (" ..." if len(bad) > 5 else ""), stacklevel=3)
    if empty:
        warnings.warn(f"{path}: skipped {len(empty)} caption(s) without an ASCII word: {', '.join(empty[:5])}"
                      + (" ..." if len(empty) > 5 else ""), stacklevel=3)
    captionless = [n for n, (caps, _) in entries.items() if not caps]
    for name in captionless:
        del entries[name]
    if captionless:
        warnings.warn(f"{path}: {len(captionless)} image(s) left without a caption, skipped: {captionless[:5]}",
                      stacklevel=3)
    if not entries:
        raise ValueError(f"{path}: no captioned image found")
    return entries


_Record = tuple[str, Union[str, tuple[str, str, Optional[str]]]]


def _tsv_records(path: Path, raw: bytes) -> list[_Record]:
    records: list[_Record] = []
    for lineno, line_bytes in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{lineno}"
        try:
            line = line_bytes.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            records.append((where, f"not valid UTF-8 ({e.reason} at byte {e.start})"))
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) not in (2, 3) or not parts[0].strip():
            records.append((where, "expected 'image<TAB>caption' or 'image<TAB>caption<TAB>train|test', "
                                   f"got {line[:80]!r}"))
            continue
        split = parts[2].strip() if len(parts) == 3 else None
        if split not in (None, "train", "test"):
            records.append((where, f"split must be 'train' or 'test', got {split!r}"))
            continue
        records.append((where, (parts[0].strip(), parts[1], split)))
    return records


def _json_records(path: Path, raw: bytes) -> list[_Record]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    records: list[_Record] = []
    if isinstance(data, dict) and "annotations" in data and "images" in data:  # COCO captions_*.json
        names = {img.get("id"): img.get("file_name") for img in data["images"] if isinstance(img, dict)}
        for i, ann in enumerate(data["annotations"]):
            where = f"{path}: annotations[{i}]"
            name = names.get(ann.get("image_id")) if isinstance(ann, dict) else None
            if not isinstance(name, str) or not isinstance(ann.get("caption"), str):
                records.append((where, "expected an image_id listed in 'images' and a string 'caption'"))
            else:
                records.append((where, (name, ann["caption"], None)))
    elif isinstance(data, dict):
        for name, caps in data.items():
            where = f"{path}: [{name!r}]"
            caps = [caps] if isinstance(caps, str) else caps
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                records.append((where, "expected a caption string or a list of caption strings"))
                continue
            records += [(f"{where}[{j}]", (name, c, None)) for j, c in enumerate(caps)]
    elif isinstance(data, list):
        for i, rec in enumerate(data):
            where = f"{path}: [{i}]"
            name = rec.get("image", rec.get("file_name")) if isinstance(rec, dict) else None
            caps = (rec.get("captions", rec.get("caption")) if isinstance(rec, dict) else None)
            caps = [caps] if isinstance(caps, str) else caps
            split = rec.get("split") if isinstance(rec, dict) else None
            if not isinstance(name, str) or not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                records.append((where, "expected {'image': name, 'caption': text} or "
                                       "{'image': name, 'captions': [...]}"))
            elif split not in (None, "train", "test"):
                records.append((where, f"split must be 'train' or 'test', got {split!r}"))
            else:
                records += [(where, (name, c, split)) for c in caps]
    else:
        raise ValueError(f"{path}: expected a JSON object or list at the top level, got {type(data).__name__}")
    return records


# ---- pickles and metadata of the original layouts ---------------------------------------------
def _load_filenames(path: Path) -> list[str]:
    if not path.is_file():
        return []
    names = load_pickle(path, "filenames.pickle (a list of image keys)")
    if not isinstance(names, (list, tuple)):
        raise ValueError(f"{path}: expected a list of image keys, got {type(names).__name__}")
    out = []
    for i, name in enumerate(names):
        if isinstance(name, bytes):
            name = name.decode("latin1")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}: entry {i} is not an image key: {name!r}")
        out.append(name)
    return out


def _load_bboxes(cub_dir: Path) -> dict[str, list[int]]:
    """``{key: [x, y, w, h]}`` from ``images.txt`` and ``bounding_boxes.txt`` (values cast to int)."""
    images: dict[str, str] = {}
    for lineno, index, rest in _numbered_lines(cub_dir / "images.txt"):
        if len(rest) != 1:
            raise ValueError(f"{cub_dir / 'images.txt'}:{lineno}: expected 'index relative/path.jpg'")
        images[index] = os.path.splitext(rest[0])[0]
    boxes: dict[str, list[int]] = {}
    for lineno, index, rest in _numbered_lines(cub_dir / "bounding_boxes.txt"):
        where = f"{cub_dir / 'bounding_boxes.txt'}:{lineno}"
        try:
            box = [int(float(v)) for v in rest]
        except ValueError:
            box = []
        if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
            raise ValueError(f"{where}: expected 'index x y width height' with positive sizes, got {' '.join(rest)!r}")
        if index not in images:
            raise ValueError(f"{where}: image index {index} is not in images.txt")
        boxes[images[index]] = box
    return boxes


def _numbered_lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if parts:
            yield lineno, parts[0], parts[1:]


def build_dataset(cfg: Any, split: str = "train", **kwargs: Any) -> CaptionDataset:
    """The dataset a config names: synthetic birds in memory, or :class:`TextDataset` on ``DATA_DIR``.

    ``DATASET_NAME: synthetic_birds`` with an empty ``DATA_DIR`` → :class:`SyntheticBirds` (sized by
    ``cfg.SYNTHETIC``); any other config → ``TextDataset.from_config``. ``kwargs`` (``seed``,
    ``augment``, ``wrong_images``, ...) go to the dataset.
    """
    if not cfg.DATA_DIR:
        if cfg.DATASET_NAME == "synthetic_birds":
            return SyntheticBirds.from_config(cfg, split, **kwargs)
        raise ValueError("config: DATA_DIR is empty (set it to the data folder, or DATASET_NAME to "
                         "'synthetic_birds' for synthetic birds)")
    return TextDataset.from_config(cfg, split, **kwargs)
