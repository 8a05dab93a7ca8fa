"""attngan_fast.data: tokenisation, the birds / COCO / own-captions layouts, batching, bad data."""
from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image

from attngan_fast import config
from attngan_fast.data import (
    TextDataset,
    Vocabulary,
    bbox_crop,
    build_dataset,
    collate,
    data_loader,
    load_captions_pickle,
    tokenize,
)
from attngan_fast.data.datasets import _load_filenames
from attngan_fast.data.text import pad_caption, read_caption_file
from tests.data_fixtures import BIRDS_TEST, BIRDS_TRAIN, CAPTIONS_PER_IMAGE, make_birds, make_coco, make_own, py2_pickle

KW = dict(base_size=16, branch_num=3, words_num=18, captions_per_image=CAPTIONS_PER_IMAGE, seed=0)


# ---- tokenisation and vocabulary ---------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "This bird's wings are BLUE, and its belly is red.",
    "under_score 42nd  tabs\tand\nnewlines",
    "caf\u00e9 na\u00efve \u00fcber stra\u00dfe",
    "weird\ufffd\ufffdsplit and \ufffd single",
    "...!!!",
])
def test_tokenize_is_regexp_w_plus_lowercase_ascii(text):
    # nltk's RegexpTokenizer(r'\w+').tokenize is re.findall(r'\w+', ...) with unicode semantics
    expected = [t.encode("ascii", "ignore").decode() for t in re.findall(r"\w+", text.replace("\ufffd\ufffd", " ").lower())]
    assert tokenize(text) == [t for t in expected if t]


def test_vocabulary_first_seen_order_and_encode():
    vocab = Vocabulary.from_captions([["a", "red", "bird"], ["a", "bird"]], [["blue", "a"]])
    assert vocab.ixtoword == {0: "<end>", 1: "a", 2: "red", 3: "bird", 4: "blue"}
    assert vocab.encode("A blue bird!") == ([1, 4, 3], [])
    with pytest.raises(KeyError, match=r"\['green'\].*'a green bird'"):
        vocab.encode("a green bird")
    assert vocab.encode("a green bird", on_unknown="skip") == ([1, 3], ["green"])
    assert vocab.decode([1, 2, 3, 0, 0]) == "a red bird"


def test_pad_caption_truncates_to_an_ordered_random_subset():
    rng = np.random.default_rng(0)
    ids = list(range(1, 31))
    out, n = pad_caption(ids, 18, rng)
    assert n == 18 and list(out) == sorted(out) and set(out) <= set(ids)
    out, n = pad_caption([5, 6, 7], 18, rng)
    assert n == 3 and list(out) == [5, 6, 7] + [0] * 15


def test_python2_pickle_needs_latin1(tmp_path):
    path = tmp_path / "filenames.pickle"
    path.write_bytes(py2_pickle(["caf\u00e9/x", "plain/y"]))
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(path.read_bytes())
    assert _load_filenames(path) == ["caf\u00e9/x", "plain/y"]


# ---- birds -------------------------------------------------------------------------------------
def test_birds_layout(tmp_path):
    root = make_birds(tmp_path)
    with pytest.warns(UserWarning, match=r"b1\.txt:2: caption line has no ASCII word"):
        train = TextDataset(root, "train", **KW)
    assert (root / "captions.pickle").is_file() and not list(root.glob(".captions.pickle*"))  # atomic, no temp left
    test = TextDataset(root, "test", **KW)  # reads the cached captions.pickle
    assert train.vocab == test.vocab and train.n_words == len(train.ixtoword)
    assert train.filenames == [k for k, _, _ in BIRDS_TRAIN] and test.filenames == [k for k, _, _ in BIRDS_TEST]
    assert list(train.class_ids) == [1, 1, 2] and list(test.class_ids) == [3, 3]
    decode = train.vocab.decode
    assert [decode(c) for c in train.captions[0]] == ["a large bird black wings", "its belly is white",
                                                     "this bird has a long beak"]
    assert decode(train.captions[1][2]) == "the albatross glides"
    assert decode(train.captions[2][1]) == "long wings"  # the non-ASCII line was skipped
    assert decode(train.captions[1][0]) == " ".join(f"w{i}" for i in range(22))
    # the original's vocabulary order: first seen over train then test captions
    assert list(train.ixtoword.values())[:5] == ["<end>", "a", "large", "bird", "black"]
    cached = load_captions_pickle(root / "captions.pickle")
    assert len(cached.train_captions) == 3 * CAPTIONS_PER_IMAGE and cached.test_captions[-1] == test.captions[-1][-1]

    sample = train[1]
    assert [tuple(x.shape) for x in sample.imgs] == [(3, 16, 16), (3, 32, 32), (3, 64, 64)]
    assert all(x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1 for x in sample.imgs)
    assert sample.caption.shape == (18,) and sample.caption.dtype == torch.int64
    assert sample.class_id == 1 and sample.key == BIRDS_TRAIN[1][0] and sample.wrong_imgs is None
    assert (sample.caption[sample.cap_len:] == 0).all() and (sample.caption[:sample.cap_len] > 0).all()


def test_birds_bbox_crop(tmp_path):
    root = make_birds(tmp_path)
    with pytest.warns(UserWarning):
        ds = TextDataset(root, "train", **KW)
    # image 1: box x 21..61, y 10..40 → r = int(0.75 * 40) = 30, centre (41, 25) → crop [11, 0, 71, 55]
    assert ds.bbox[ds.filenames[0]] == [21, 10, 40, 30]
    assert ds.load_image(0).size == (60, 55)
    img = Image.new("RGB", (100, 100))
    assert bbox_crop(img, (90, 90, 10, 10)).size == (12, 12)  # r = 7 around (95, 95), clipped at 100


def test_long_caption_truncation_and_random_choice(tmp_path):
    root = make_birds(tmp_path)
    with pytest.warns(UserWarning):
        ds = TextDataset(root, "train", **KW)
    long_ids = ds.captions[1][0]
    seen_sentences = set()
    for epoch in range(30):
        ds.set_epoch(epoch)
        s = ds[1]
        kept = s.caption[:s.cap_len].tolist()
        if s.cap_len == 18:  # the 22-word caption: 18 of its words, in order
            positions = [long_ids.index(w) for w in kept]
            assert positions == sorted(positions) and len(set(positions)) == 18
        seen_sentences.add(tuple(kept))
    assert len(seen_sentences) >= 3


def test_seeded_items_and_wrong_images(tmp_path):
    root = make_birds(tmp_path)
    with pytest.warns(UserWarning):
        a = TextDataset(root, "train", wrong_images=True, **KW)
    b = TextDataset(root, "train", wrong_images=True, **KW)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x.caption, y.caption) and all(torch.equal(p, q) for p, q in zip(x.imgs, y.imgs))
        assert all(torch.equal(p, q) for p, q in zip(x.wrong_imgs, y.wrong_imgs))
    rng = np.random.default_rng(0)
    assert all(a.class_ids[a.wrong_index(0, rng)] != a.class_ids[0] for _ in range(20))
    a.set_epoch(1)
    assert any(not torch.equal(a[i].imgs[-1], b[i].imgs[-1]) for i in range(len(a)))


def test_collate_sorts_by_caption_length(tmp_path):
    root = make_birds(tmp_path)
    with pytest.warns(UserWarning):
        ds = TextDataset(root, "train", wrong_images=True, **KW)
    samples = [ds[i] for i in range(len(ds))]
    batch = collate(samples)
    assert batch.cap_lens.tolist() == sorted((s.cap_len for s in samples), reverse=True)
    order = [[s.key for s in samples].index(k) for k in batch.keys]
    for j, i in enumerate(order):
        assert torch.equal(batch.captions[j], samples[i].caption) and batch.class_ids[j] == samples[i].class_id
        assert torch.equal(batch.imgs[2][j], samples[i].imgs[2]) and torch.equal(batch.wrong_imgs[0][j], samples[i].wrong_imgs[0])
    loader = list(data_loader(ds, 2, seed=3))
    assert len(loader) == 1 and loader[0].imgs[0].shape == (2, 3, 16, 16)
    again = list(data_loader(ds, 2, seed=3))
    assert again[0].keys == loader[0].keys and torch.equal(again[0].imgs[1], loader[0].imgs[1])


def test_class_ids_default_to_arange_and_config_entry(tmp_path):
    root = make_birds(tmp_path, with_class_info=False)
    cfg = config.load("DAMSM/bird", DATA_DIR=str(root), **{"TREE.BASE_SIZE": 24, "TEXT.CAPTIONS_PER_IMAGE": 3})
    with pytest.warns(UserWarning):
        ds = build_dataset(cfg, "train", seed=1)
    assert isinstance(ds, TextDataset) and list(ds.class_ids) == [0, 1, 2]
    assert [tuple(x.shape) for x in ds[0].imgs] == [(3, 24, 24)]


# ---- COCO --------------------------------------------------------------------------------------
def test_coco_layout(tmp_path):
    root = make_coco(tmp_path)
    train = TextDataset(root, "train", base_size=16, branch_num=2, words_num=12, captions_per_image=5, seed=0)
    test = TextDataset(root, "test", base_size=16, branch_num=2, words_num=12, captions_per_image=5, seed=0)
    assert train.layout == "coco" and train.bbox is None
    assert list(train.class_ids) == [0, 1] and list(test.class_ids) == [0]
    assert train.load_image(1).size == (72, 48)  # no crop
    assert [tuple(x.shape) for x in test[0].imgs] == [(3, 16, 16), (3, 32, 32)]
    assert train.vocab.decode(test.captions[0][0]) == "a photo number 2"


# ---- own captions ------------------------------------------------------------------------------
def test_own_captions_tsv(tmp_path):
    root = make_own(tmp_path)
    train = TextDataset(root, "train", base_size=16, branch_num=1, seed=0, test_fraction=0.3)
    test = TextDataset(root, "test", base_size=16, branch_num=1, seed=0, test_fraction=0.3)
    assert train.layout == "captions"
    assert sorted(train.filenames + test.filenames) == [f"img_{i}.png" for i in range(6)]
    assert not set(train.filenames) & set(test.filenames)
    assert {len(c) for c in train.captions + test.captions} == {1, 2, 3}
    k = train.filenames.index("img_5.png") if "img_5.png" in train.filenames else None
    if k is not None:
        assert train.vocab.decode(train.captions[k][2]) == "picture 5 caption 2 a shade of grey"
    assert train[0].imgs[0].shape == (3, 16, 16)
    cached = load_captions_pickle(root / "captions.pickle")
    assert cached.vocab == train.vocab and len(cached.train_captions) == 10 * len(train)


def test_own_captions_vocabulary_only_grows(tmp_path):
    root = make_own(tmp_path, n=3)
    before = TextDataset(root, "train", base_size=16, branch_num=1, test_fraction=0.0).vocab
    with open(root / "captions.tsv", "a", encoding="utf-8") as f:
        f.write("img_0.png\tZebra stripes, a grey picture\n")
    with pytest.warns(UserWarning, match=r"2 new word\(s\) appended"):
        after = TextDataset(root, "train", base_size=16, branch_num=1, test_fraction=0.0).vocab
    assert after.n_words == before.n_words + 2
    assert all(after.wordtoix[w] == i for w, i in before.wordtoix.items())


@pytest.mark.parametrize("fmt", ["dict", "records", "coco"])
def test_own_captions_json(tmp_path, fmt):
    for i in range(3):
        Image.new("RGB", (30, 30), (i * 50, 0, 0)).save(tmp_path / f"{i}.jpg")
    caps = {f"{i}.jpg": [f"red level {i}", "a square"] for i in range(3)}
    if fmt == "dict":
        data = caps
    elif fmt == "records":
        data = [{"image": n, "captions": c, "split": "test" if n == "2.jpg" else "train"} for n, c in caps.items()]
    else:
        data = {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(3)],
                "annotations": [{"image_id": i, "caption": c} for i in range(3) for c in caps[f"{i}.jpg"]]}
    (tmp_path / "captions.json").write_text(json.dumps(data))
    train = TextDataset(tmp_path, "train", base_size=16, branch_num=1, test_fraction=0.0)
    if fmt == "records":
        assert train.filenames == ["0.jpg", "1.jpg"]
    else:
        assert train.filenames == ["0.jpg", "1.jpg", "2.jpg"]
    assert train.vocab.decode(train.captions[1][0]) == "red level 1"


# ---- bad data ----------------------------------------------------------------------------------
def test_missing_image_is_named_or_skipped(tmp_path):
    root = make_birds(tmp_path)
    missing = root / "CUB_200_2011" / "images" / f"{BIRDS_TRAIN[1][0]}.jpg"
    missing.unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=re.escape(str(missing))):
        TextDataset(root, "train", **KW)
    with pytest.warns(UserWarning, match="skipping 1 image"):
        ds = TextDataset(root, "train", on_bad_data="skip", **KW)
    assert ds.filenames == [BIRDS_TRAIN[0][0], BIRDS_TRAIN[2][0]] and list(ds.class_ids) == [1, 2]


def test_corrupt_image_names_the_file(tmp_path):
    root = make_coco(tmp_path)
    bad = root / "images" / "COCO_train2014_000000000025.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    ds = TextDataset(root, "train", base_size=16, branch_num=1, captions_per_image=5, seed=0)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        ds[1]


def test_caption_file_errors(tmp_path):
    root = make_birds(tmp_path)
    text = root / "text" / f"{BIRDS_TRAIN[0][0]}.txt"
    text.write_bytes(b"fine line\nbad \xff byte\nthird\n")
    with pytest.raises(ValueError, match=re.escape(f"{text}:2: caption line is not valid UTF-8")):
        TextDataset(root, "train", **KW)
    text.write_bytes(b"only one caption\n\n")
    with pytest.raises(ValueError, match=re.escape(f"{text}: 1 caption(s), expected at least TEXT.CAPTIONS_PER_IMAGE=3")):
        read_caption_file(text, 3)
    assert not (root / "captions.pickle").exists()  # nothing cached from bad data


def test_stale_or_bad_captions_pickle(tmp_path):
    root = make_birds(tmp_path)
    with pytest.warns(UserWarning):
        TextDataset(root, "train", **KW)
    with pytest.raises(ValueError, match="expected 2 per image.*stale"):
        TextDataset(root, "train", **{**KW, "captions_per_image": 2})
    content = pickle.loads((root / "captions.pickle").read_bytes())
    content[0][4] = [1, 10_000]
    (root / "captions.pickle").write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(ValueError, match=r"captions.pickle: train_captions\[4\].*outside"):
        TextDataset(root, "train", **KW)


def test_bad_bbox_line(tmp_path):
    root = make_birds(tmp_path)
    path = root / "CUB_200_2011" / "bounding_boxes.txt"
    lines = path.read_text().splitlines()
    lines[2] = "3 1.0 2.0 x 4.0"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=re.escape(f"{path}:3:")):
        TextDataset(root, "train", **KW)


def test_own_captions_bad_lines(tmp_path):
    root = make_own(tmp_path, n=2)
    path = root / "captions.tsv"
    path.write_text(path.read_text() + "no tab on this line\nimg_1.png\t!!!\nimg_1.png\tok\tvalidation\n")
    lines = path.read_text().splitlines()
    bad_line = lines.index("no tab on this line") + 1
    with pytest.raises(ValueError, match=re.escape(f"{path}:{bad_line}: expected 'image<TAB>caption'")):
        TextDataset(root, "train", base_size=16, branch_num=1)
    with pytest.warns(UserWarning) as record:
        ds = TextDataset(root, "train", base_size=16, branch_num=1, on_bad_data="skip", test_fraction=0.0)
    messages = " ".join(str(w.message) for w in record)
    assert "skipped 2 malformed" in messages and "without an ASCII word" in messages
    assert len(ds) == 2
    (root / "img_0.png").unlink()
    path.write_text("img_0.png\ta shade of grey\nimg_1.png\tgrey\n")
    with pytest.raises(ValueError, match="img_0.png"):
        TextDataset(root, "train", base_size=16, branch_num=1, test_fraction=0.0)


def test_layout_detection_error(tmp_path):
    with pytest.raises(ValueError, match="no known data layout"):
        TextDataset(tmp_path, "train")
    with pytest.raises(ValueError, match="does not exist"):
        TextDataset(tmp_path / "nope", "train")
