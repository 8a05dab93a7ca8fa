"""Sampling: Generator from a training snapshot and from original-format files; ``generate`` CLI."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

import attngan_fast
from attngan_fast.cli import main
from attngan_fast.data.text import CaptionsPickle, Vocabulary, save_captions_pickle
from attngan_fast.models import G_NET
from attngan_fast.sampling import Generation, Generator
from tests.training_helpers import ORIGINAL_WORDS, make_trainer, single_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def test_generator_from_original_files(original_files):
    paths, netG, encoder, cfg = original_files
    gen = Generator.from_checkpoint(**{k: str(v) for k, v in paths.items()})
    assert attngan_fast.Generator is Generator
    result = gen.generate(["A bird with red wings.", "a blue bird"], seed=3, num=2)
    assert isinstance(result, Generation)
    assert [tuple(im.shape) for im in result.images] == [(4, 3, 64, 64), (4, 3, 128, 128)]
    assert tuple(result.attention[0].shape) == (4, 5, 64, 64)
    assert result.texts == ["A bird with red wings.", "A bird with red wings.", "a blue bird", "a blue bird"]
    assert result.words[0] == ["a", "bird", "with", "red", "wings"] and result.words[2] == ["a", "blue", "bird"]
    # the same as running the original modules by hand: eval mode, noise and CA noise from the seed
    g = torch.Generator().manual_seed(3)
    z, eps = torch.randn(4, cfg.GAN.Z_DIM, generator=g), torch.randn(4, cfg.GAN.CONDITION_DIM, generator=g)
    ids = torch.tensor([[1, 2, 3, 4, 6], [1, 2, 3, 4, 6], [1, 5, 2, 0, 0], [1, 5, 2, 0, 0]])
    lens = torch.tensor([5, 5, 3, 3])
    netG.eval(), encoder.eval()
    with torch.no_grad():
        words, sent = encoder(ids, lens)
        fakes, atts, _, _ = netG(z, sent, words, ids == 0, eps)
    torch.testing.assert_close(result.images[-1], fakes[-1])
    torch.testing.assert_close(result.attention[0], atts[0])
    # copies differ, a seed reproduces, the batch size does not matter (per-sample masks)
    assert not torch.equal(result.images[-1][0], result.images[-1][1])
    again = gen.generate(["A bird with red wings.", "a blue bird"], seed=3, num=2, batch_size=1)
    torch.testing.assert_close(again.images[-1], result.images[-1])
    pil = gen.generate("a red bird", seed=0, output="pil")
    assert len(pil) == 1 and isinstance(pil[0], Image.Image) and pil[0].size == (128, 128)


def test_unknown_words(original_files):
    paths, *_ = original_files
    gen = Generator.from_checkpoint(**{k: str(v) for k, v in paths.items()})
    with pytest.warns(UserWarning, match=r"unknown word\(s\) \['purple', 'tail'\]"):
        result = gen.generate("a purple bird with red tail", seed=0)
    assert result.unknown == [["purple", "tail"]] and result.words == [["a", "bird", "with", "red"]]
    with pytest.raises(KeyError, match="purple"):
        gen.generate("a purple bird", on_unknown="error")
    with pytest.raises(ValueError, match="no word"), pytest.warns(UserWarning, match="purple"):
        gen.generate("purple", on_unknown="skip")


def test_mismatched_files_are_reported(original_files, tmp_path):
    paths, _, _, cfg = original_files
    other = tmp_path / "captions_other.pickle"
    save_captions_pickle(other, CaptionsPickle([[1]], [[1]], Vocabulary.from_words(ORIGINAL_WORDS + ["extra"])))
    with pytest.raises(ValueError, match="vocabulary of 11 words, the captions file 12"):
        Generator.from_checkpoint(netG=paths["netG"], text_encoder=paths["text_encoder"], captions=other, cfg=cfg)
    with pytest.raises(ValueError, match="does not match the config"):
        Generator.from_checkpoint(netG=paths["netG"], text_encoder=paths["text_encoder"], captions=paths["captions"],
                                  cfg=cfg.replace(**{"GAN.GF_DIM": 3}))
    with pytest.raises(ValueError, match="missing: captions, cfg"):
        Generator.from_checkpoint(netG=paths["netG"], text_encoder=paths["text_encoder"])


def test_generator_from_training_snapshot(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.train()
    snapshot = tmp_path / "checkpoint_epoch_1.pt"
    ema = Generator.from_checkpoint(snapshot)
    current = Generator.from_checkpoint(snapshot, weights="current")
    ids = trainer.fixed_batch["captions"]
    text = " ".join(trainer.ixtoword[int(i)] for i in ids[0] if int(i))
    a, b = ema.generate(text, seed=1), current.generate(text, seed=1)
    assert a.images[-1].shape == (1, 3, 128, 128) and not torch.equal(a.images[-1], b.images[-1])
    for name, value in ema.netG.state_dict().items():
        torch.testing.assert_close(value, trainer.ema_state_dict()[name])
    # the original-format export of the same snapshot gives the same images
    orig = Generator(G_NET(trainer.cfg), ema.text_encoder, ema.vocab, trainer.cfg)
    orig.netG.load_state_dict(torch.load(tmp_path / "netG_epoch_1.pth", weights_only=True))
    torch.testing.assert_close(orig.generate(text, seed=1).images[-1], a.images[-1])


def test_generate_cli_with_original_files(original_files, tmp_path, capsys):
    paths, *_ = original_files
    caption_file = tmp_path / "captions.txt"
    caption_file.write_text("a blue bird with white belly\n\na black bird with green wings\n")
    out = tmp_path / "out"
    argv = ["generate", "a red bird", "--file", str(caption_file), "--netG", str(paths["netG"]),
            "--text-encoder", str(paths["text_encoder"]), "--captions", str(paths["captions"]),
            "--cfg", str(paths["cfg"]), "--mask-mode", "original", "--num", "2", "--seed", "5",
            "--batch-size", "4", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "unknown word(s) dropped from 'a black bird with green wings': green" in printed
    names = sorted(p.name for p in out.iterdir())
    assert "000_0_g0.png" in names and "002_1_g1.png" in names and "002_1_attention.png" in names
    assert len([n for n in names if n.endswith(".png")]) == 3 * 2 * 3
    assert Image.open(out / "001_0_g1.png").size == (128, 128)
    lines = (out / "captions.txt").read_text().splitlines()
    assert lines[2].split("\t")[:2] == ["001_0", "a blue bird with white belly"]
    capsys.readouterr()
    assert main(argv[:1] + ["a green bird"] + argv[4:] + ["--on-unknown", "error"]) == 1
    assert "error: unknown word" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(paths["netG"])]) == 2
    assert "error: no captions" in capsys.readouterr().err


def test_generate_to_streams_batches_with_the_same_images(original_files, tmp_path):
    """generate_to writes what generate(...).save writes, and frees each batch's images before the
    next batch is drawn (counted with weak references to G's outputs, not timed)."""
    import weakref

    import numpy

    paths, _, _, _ = original_files
    gen = Generator.from_checkpoint(**{k: str(v) for k, v in paths.items()})
    texts = ["a bird with red wings", "a blue bird", "a white bird with black wings"]
    expected = gen.generate(texts, seed=5, num=3, batch_size=4)
    expected.save(tmp_path / "all")

    netG, alive, peak = gen.netG, [], []

    class Tracked(torch.nn.Module):
        def forward(self, *args):
            peak.append(sum(ref() is not None for ref in alive))  # images of earlier batches still alive
            out = netG(*args)
            alive.extend(weakref.ref(t) for t in (*out[0], *out[1]))
            return out

    gen.netG = Tracked()
    written = gen.generate_to(tmp_path / "stream", texts, seed=5, num=3, batch_size=4)
    assert len(peak) == 3 and peak == [0, 0, 0]  # 9 rows in batches of 4, 4, 1
    assert written.files == 9 * 3 and written.texts == texts and written.num == 3
    names = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "stream").iterdir())
    assert (tmp_path / "all" / "captions.txt").read_text() == (tmp_path / "stream" / "captions.txt").read_text()
    for name in ("000_0_g1.png", "002_2_g0.png", "001_1_attention.png"):
        a = torch.from_numpy(numpy.array(Image.open(tmp_path / "all" / name)))
        b = torch.from_numpy(numpy.array(Image.open(tmp_path / "stream" / name)))
        assert torch.equal(a, b), name
    # the list-keeping path, for contrast: every batch's images stay alive
    alive.clear(), peak.clear()
    kept = gen.generate(texts, seed=5, num=3, batch_size=4)
    assert peak == [0, 2, 4] and len(kept.texts) == 9  # the 2 stage outputs of each earlier batch


def test_generate_cli_streams_with_progress(original_files, tmp_path, capsys):
    paths, _, _, _ = original_files
    args = ["generate", "a red bird", "a blue bird", "--netG", str(paths["netG"]), "--text-encoder",
            str(paths["text_encoder"]), "--captions", str(paths["captions"]), "--cfg", str(paths["cfg"]),
            "--num", "3", "--batch-size", "2", "--device", "cpu", "--out", str(tmp_path / "g")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "wrote 18 images for 2 caption(s) x 3" in captured.out
    assert "generating" in captured.err  # the progress bar (images)
    assert len(list((tmp_path / "g").glob("*.png"))) == 18
    assert main(args + ["--no-progress", "--out", str(tmp_path / "h")]) == 0
    assert "generating" not in capsys.readouterr().err
