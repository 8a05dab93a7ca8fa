"""Tiny data sets in the original AttnGAN layouts, written by the tests themselves."""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

# Per image: (key, class id, captions). Caption 0 of bird a2 has 22 words (> WORDS_NUM 18).
BIRDS_TRAIN = [
    ("001.Black_footed_Albatross/a1", 1, ["A large bird, black wings.", "", "its belly is white",
                                          "this bird has a long beak"]),
    ("001.Black_footed_Albatross/a2", 1, [" ".join(f"w{i}" for i in range(22)), "grey bird with a hooked bill",
                                          "the albatross glides", "caf\u00e9 brown head"]),
    ("002.Laysan_Albatross/b1", 2, ["white head and a yellow beak", "\u00e9\u00e8 \u00e0", "long wings",
                                    "dark back and white belly", "an extra fourth caption"]),
]
BIRDS_TEST = [
    ("003.Sooty_Albatross/c1", 3, ["sooty brown all over", "a dark bird", "thin bill"]),
    ("003.Sooty_Albatross/c2", 3, ["a sooty bird", "brown wings", "new words here"]),
]
CAPTIONS_PER_IMAGE = 3


def py2_pickle(obj: object) -> bytes:
    """A protocol-2 pickle as Python 2 writes it: ``str`` → SHORT_BINSTRING (raw bytes, latin1 here)."""
    out = bytearray(b"\x80\x02")

    def emit(x: object) -> None:
        if isinstance(x, str):
            data = x.encode("latin1")
            out.extend(b"U" + bytes([len(data)]) + data)
        elif isinstance(x, int):
            out.extend(b"J" + struct.pack("<i", x))
        elif isinstance(x, list):
            out.extend(b"](")
            for item in x:
                emit(item)
            out.extend(b"e")
        else:
            raise TypeError(type(x))

    emit(obj)
    out.extend(b".")
    return bytes(out)


def solid_jpeg(path: Path, size: tuple[int, int], colour: tuple[int, int, int], box=None, box_colour=(255, 0, 0)) -> None:
    """A JPEG of one colour, optionally with a rectangle ``box`` (x0, y0, x1, y1) in ``box_colour``."""
    img = Image.new("RGB", size, colour)
    if box is not None:
        img.paste(Image.new("RGB", (box[2] - box[0], box[3] - box[1]), box_colour), box[:2])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=95)


def write_text(root: Path, key: str, captions: list[str]) -> None:
    path = root / "text" / f"{key}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(captions) + "\n").encode("utf-8"))


def make_birds(root: Path, with_class_info: bool = True) -> Path:
    """The birds layout: 3 train images (classes 1, 1, 2), 2 test images (class 3), 3 captions each.

    Images are 120 x 80 grey with a red bbox region; bounding boxes as floats (as CUB writes them).
    """
    cub = root / "CUB_200_2011"
    lines, boxes = [], []
    for number, (key, _, _) in enumerate(BIRDS_TRAIN + BIRDS_TEST, start=1):
        box = (20 + number, 10, 60 + number, 40)
        solid_jpeg(cub / "images" / f"{key}.jpg", (120, 80), (128, 128, 128), box)
        lines.append(f"{number} {key}.jpg")
        boxes.append(f"{number} {box[0]}.0 {box[1]}.0 {box[2] - box[0]}.0 {box[3] - box[1]}.0")
    (cub / "images.txt").write_text("\n".join(lines) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    for split, items in (("train", BIRDS_TRAIN), ("test", BIRDS_TEST)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / "filenames.pickle").write_bytes(py2_pickle([k for k, _, _ in items]))
        if with_class_info:
            (root / split / "class_info.pickle").write_bytes(py2_pickle([c for _, c, _ in items]))
        for key, _, caps in items:
            write_text(root, key, caps)
    return root


def make_coco(root: Path) -> Path:
    """The COCO layout: images/<key>.jpg, text/<key>.txt, filenames.pickle, no boxes or classes."""
    train = ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    test = ["COCO_val2014_000000000042"]
    for i, key in enumerate(train + test):
        solid_jpeg(root / "images" / f"{key}.jpg", (64 + 8 * i, 48), (40 * i, 100, 200))
        write_text(root, key, [f"a photo number {i}", "a plate of food", "two people", "a dog on a bed", "a cat"])
    for split, keys in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        with open(root / split / "filenames.pickle", "wb") as f:
            pickle.dump(keys, f, protocol=2)
    return root


def make_own(root: Path, n: int = 6) -> Path:
    """A folder of n PNG images and captions.tsv (image<TAB>caption), 1 to 3 captions per image."""
    lines = ["# my captions"]
    for i in range(n):
        name = f"img_{i}.png"
        Image.fromarray(np.full((40, 50, 3), 30 * i, np.uint8)).save(root / name)
        for j in range(1 + i % 3):
            lines.append(f"{name}\tPicture {i}, caption {j}: a shade of grey")
    (root / "captions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
