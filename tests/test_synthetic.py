"""Synthetic birds: determinism, attributes, captions, caching, and the birds layout on disk."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attngan_fast import config
from attngan_fast.cli import main
from attngan_fast.data import SyntheticBirds, TextDataset, build_dataset
from attngan_fast.data.synthetic import (
    ATTRIBUTE_CLASSES,
    COLOUR_NAMES,
    bird_captions,
    named_attributes,
    read_attributes,
    render_bird,
    sample_attributes,
    synthetic_vocabulary,
)


def test_deterministic_renders_and_captions():
    a = SyntheticBirds("train", num_images=40, data_seed=3, seed=5)
    b = SyntheticBirds("train", num_images=40, data_seed=3, seed=5)
    c = SyntheticBirds("train", num_images=40, data_seed=4, seed=5)
    assert a.filenames == b.filenames and a.captions == b.captions and a.text == b.text
    assert all(np.array_equal(a.render(i), b.render(i)) for i in range(len(a)))
    assert all(torch.equal(a[i].imgs[0], b[i].imgs[0]) and torch.equal(a[i].caption, b[i].caption) for i in range(5))
    assert a.text != c.text and not np.array_equal(a.render(0), c.render(0))


@pytest.mark.parametrize("size", [64, 128, 256])
def test_render_sizes(size):
    img = render_bird(sample_attributes(0, 1), size)
    assert img.size == (size, size) and img.mode == "RGB"


def test_attributes_classes_and_captions():
    ds = SyntheticBirds("train", num_images=200, data_seed=0)
    assert len({a.class_id for a in ds._attributes}) > 60  # ~100 (wing, belly) pairs
    for i in range(len(ds)):
        attrs = ds.attributes(i)
        assert ds.class_ids[i] == 1 + 10 * attrs.wing + attrs.belly
        assert len(ds.text[i]) == 10 and len(set(ds.text[i])) == 10
        for caption in ds.text[i]:  # every caption names the wing and the belly colour
            assert COLOUR_NAMES[attrs.wing] in caption and COLOUR_NAMES[attrs.belly] in caption
            assert "left" not in caption and "right" not in caption  # flips keep captions true
        assert max(len(c) for c in ds.captions[i]) <= 18
    assert {len(set(ds.attribute_array(k))) for k in ("wing", "belly", "head")} == {10}
    assert set(ds.attribute_array("beak")) == {0, 1}
    for name, classes in ATTRIBUTE_CLASSES.items():
        assert set(ds.attribute_array(name)) == set(range(classes))


def test_named_attributes_of_captions():
    ds = SyntheticBirds("train", num_images=40, data_seed=0)
    seen = set()
    for i in range(len(ds)):
        attrs = ds.attributes(i).names()
        for caption in ds.text[i]:
            named = named_attributes(caption.replace(",", " ").split())
            seen.add(named)
            assert named[:2] == ("wing", "belly") and not {"background", "facing"} & set(named)
            assert ("head" in named) == (f"{attrs['head']} head" in caption or f"{attrs['head']} crown" in caption
                                         or f"{attrs['head']} nape" in caption)
    assert {n for named in seen for n in named} == {"wing", "belly", "head", "beak", "size"}
    assert ("wing", "belly") in seen


def test_variant_images_keep_the_named_attributes():
    ds = SyntheticBirds("test", num_images=20, base_size=32, augment=False, seed=0)
    everything = ds.variant_images(1, tuple(ATTRIBUTE_CLASSES), 2)
    some = ds.variant_images(1, ("wing", "belly"), 3)
    assert everything.shape == (2, 3, 32, 32) and some.shape == (3, 3, 32, 32)
    assert torch.equal(some, ds.variant_images(1, ("wing", "belly"), 3))  # deterministic
    assert not torch.equal(some[0], some[1])  # the rest drawn afresh
    with pytest.raises(ValueError, match="keep: unknown attributes"):
        ds.variant_images(1, ("tail",), 2)


def test_split_by_index_and_fixed_vocabulary():
    train = SyntheticBirds("train", num_images=50, test_fraction=0.2)
    test = SyntheticBirds("test", num_images=50, test_fraction=0.2)
    assert (len(train), len(test)) == (40, 10) and train.indices == list(range(40)) and test.indices[0] == 40
    assert not set(train.filenames) & set(test.filenames)
    assert train.vocab == test.vocab == SyntheticBirds("train", num_images=7, data_seed=9).vocab == synthetic_vocabulary()
    assert train.n_words < 120


def test_rendering_is_cached():
    ds = SyntheticBirds("train", num_images=20, test_fraction=0.0)
    for i in range(len(ds)):
        ds.render(i)
    cached = ds.render(3)
    assert ds.render(3) is cached


def test_config_builds_synthetic_birds():
    cfg = config.load("synthetic_birds", **{"SYNTHETIC.NUM_IMAGES": 30, "TREE.BRANCH_NUM": 2, "TREE.BASE_SIZE": 32})
    ds = build_dataset(cfg, "test", seed=1, wrong_images=True)
    assert isinstance(ds, SyntheticBirds) and len(ds) == 6 and ds.seed == 1
    s = ds[0]
    assert [tuple(x.shape) for x in s.imgs] == [(3, 32, 32), (3, 64, 64)] and len(s.wrong_imgs) == 2


def test_make_synthetic_reads_back_identically(tmp_path, capsys):
    assert main(["make-synthetic", str(tmp_path), "--n", "25", "--size", "64", "--seed", "2"]) == 0
    assert "wrote 20 train + 5 test" in capsys.readouterr().out
    truth = read_attributes(tmp_path)
    for split in ("train", "test"):
        mem = SyntheticBirds(split, num_images=25, data_seed=2, base_size=64, branch_num=1, seed=11)
        disk = TextDataset(tmp_path, split, base_size=64, branch_num=1, seed=11)
        assert disk.layout == "birds" and disk.filenames == mem.filenames
        assert disk.captions == mem.captions and disk.vocab == mem.vocab
        assert list(disk.class_ids) == list(mem.class_ids)
        for i in range(len(mem)):
            assert truth[mem.filenames[i]]["wing"] == COLOUR_NAMES[mem.attributes(i).wing]
            x, y = mem[i], disk[i]
            assert torch.equal(x.caption, y.caption) and x.cap_len == y.cap_len and x.key == y.key
            assert (x.imgs[0] - y.imgs[0]).abs().mean() < 0.03  # JPEG loss only


def test_captions_are_deterministic_functions_of_seed_and_index():
    attrs = sample_attributes(7, 123)
    assert attrs == sample_attributes(7, 123)
    assert bird_captions(attrs, 7, 123) == bird_captions(attrs, 7, 123)
    assert all(synthetic_vocabulary().encode(c)[1] == [] for c in bird_captions(attrs, 7, 123, 16))
