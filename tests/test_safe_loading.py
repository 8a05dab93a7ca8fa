"""Nothing runs from a data file: the restricted unpickler of the data pickles through every loader,
and the one loader of ``.pt`` / ``.pth`` files (weights_only=True) with a message per bad file."""
from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
import yaml

from attngan_fast import config
from attngan_fast.checkpoint import load_snapshot
from attngan_fast.cli import main
from attngan_fast.data import TextDataset, build_dataset, load_captions_pickle
from attngan_fast.io import FileFormatError, load_pickle, load_state_dict_file, load_torch_file
from attngan_fast.metrics.inception import InceptionV3
from attngan_fast.models import CNN_ENCODER
from attngan_fast.sampling import Generator
from tests.data_fixtures import make_birds, py2_pickle
from tests.training_helpers import single_thread


class _RunsShell:
    """Unpickling this calls ``os.system`` (what a crafted data file would do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_pickle(path, marker) -> None:
    """A captions.pickle-shaped file whose first caption list would run a shell command."""
    path.write_bytes(pickle.dumps([_RunsShell(str(marker)), [], {}, {}], protocol=2))


# ---- the restricted unpickler ------------------------------------------------------------------
def test_plain_types_and_numeric_numpy_load(tmp_path):
    content = [[[1, 2], [3]], ("a", b"raw", 2.5, True, None, -(2**40)), {1: "w", "x": {2: [3.0]}}]
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        (tmp_path / "p").write_bytes(pickle.dumps(content, protocol=protocol))
        assert load_pickle(tmp_path / "p") == content, protocol
    arrays = [np.arange(6, dtype=np.int64).reshape(2, 3), np.linspace(0, 1, 4, dtype=np.float32), np.int64(7),
              np.float64(0.5)]
    for protocol in (2, 4, 5):  # protocol 2 from Python 3 names _codecs.encode, 5 numpy's _frombuffer
        (tmp_path / "n").write_bytes(pickle.dumps(arrays, protocol=protocol))
        loaded = load_pickle(tmp_path / "n")
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(loaded, arrays)), protocol
    # the module path numpy 1 (and Python 2) pickles name
    old = pickle.dumps(arrays[:3], protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in old
    loaded = load_pickle_bytes(tmp_path, old)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, arrays[:3]))


def load_pickle_bytes(tmp_path, data: bytes):
    path = tmp_path / "b.pickle"
    path.write_bytes(data)
    return load_pickle(path)


def test_python2_pickles_still_load(tmp_path):
    assert load_pickle_bytes(tmp_path, py2_pickle(["caf\u00e9/x", "plain/y", 3])) == ["caf\u00e9/x", "plain/y", 3]


def test_crafted_pickles_are_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    crafted_pickle(tmp_path / "captions.pickle", marker)
    pickle.loads((tmp_path / "captions.pickle").read_bytes())  # plain pickle runs the payload ...
    assert marker.exists()
    marker.unlink()
    with pytest.raises(FileFormatError, match=r"captions.pickle: refused to load .*references posix.system"):
        load_pickle(tmp_path / "captions.pickle")
    assert not marker.exists()  # ... the data loader does not
    for obj, what in ((np.array([1, "x"], dtype=object), "numpy array of Python objects"),
                      (__import__("collections").OrderedDict(a=1), "collections.OrderedDict"),
                      (bytearray(b"x"), r"__builtin__.bytearray, which a data file never holds")):
        with pytest.raises(FileFormatError, match=what):
            load_pickle_bytes(tmp_path, pickle.dumps(obj, protocol=2))
    codec = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xX\x06\x00\x00\x00rot_13\x86R."
    with pytest.raises(FileFormatError, match="only latin1"):
        load_pickle_bytes(tmp_path, codec)


@pytest.mark.parametrize("content, found", [(b"", "an empty file"), (b"\x80\x02]q\x00(K\x01", "a truncated pickle"),
                                            (b"hello\n", "not a valid pickle")])
def test_bad_data_pickles_are_named(tmp_path, content, found):
    path = tmp_path / "filenames.pickle"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=f"{path}: cannot read .*{found}"):
        load_pickle(path)
    with pytest.raises(FileFormatError, match=f"{tmp_path}: cannot read"):
        load_pickle(tmp_path)  # a directory


def test_crafted_pickle_through_every_data_loader(tmp_path, original_files):
    marker = tmp_path / "ran"
    crafted_pickle(tmp_path / "evil.pickle", marker)
    with pytest.raises(FileFormatError, match="evil.pickle: refused"):
        load_captions_pickle(tmp_path / "evil.pickle")
    paths = original_files[0]
    with pytest.raises(FileFormatError, match="evil.pickle: refused"):
        Generator.from_checkpoint(netG=paths["netG"], text_encoder=paths["text_encoder"],
                                  captions=tmp_path / "evil.pickle", cfg=paths["cfg"])
    # each pickle of a DATA_DIR
    for name in ("captions.pickle", "train/filenames.pickle", "test/filenames.pickle", "train/class_info.pickle"):
        root = make_birds(tmp_path / "data" / name.replace("/", "_"))
        crafted_pickle(root / name, marker)
        with pytest.raises(FileFormatError, match=f"{name}: refused"):
            TextDataset(root, "train", words_num=18, captions_per_image=3, base_size=16, branch_num=1)
    cfg = config.load("DAMSM/bird", DATA_DIR=str(root))
    with pytest.raises(FileFormatError, match="class_info.pickle: refused"):
        build_dataset(cfg, "train")
    assert not marker.exists()


def test_crafted_pickle_through_every_command(tmp_path, capsys, original_files):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pickle"
    crafted_pickle(evil, marker)
    paths = original_files[0]
    files = ["--netG", str(paths["netG"]), "--text-encoder", str(paths["text_encoder"]), "--captions", str(evil),
             "--cfg", str(paths["cfg"])]
    root = make_birds(tmp_path / "birds")
    crafted_pickle(root / "captions.pickle", marker)
    runs = {
        "generate": ["generate", "a bird", *files, "--out", str(tmp_path / "g")],
        "evaluate": ["evaluate", *files, "--metrics", "is", "--json", str(tmp_path / "e.json")],
        "train": ["train", "--cfg", "bird_attn2", "--set", f"DATA_DIR={root}", "--set", "TRAIN.NET_E=x.pth",
                  "--set", "TEXT.CAPTIONS_PER_IMAGE=3", "--out", str(tmp_path / "t"), "--device", "cpu"],
        "pretrain-damsm": ["pretrain-damsm", "--cfg", "DAMSM/bird", "--set", f"DATA_DIR={root}",
                           "--set", "TEXT.CAPTIONS_PER_IMAGE=3", "--out", str(tmp_path / "p"), "--device", "cpu"],
    }
    with single_thread():
        for name, argv in runs.items():
            assert main(argv + ["--threads", "1"]) == 1, name
            err = capsys.readouterr().err
            assert err.startswith("error: ") and "refused to load captions.pickle" in err, (name, err)
            assert "Traceback" not in err
    assert not marker.exists()


# ---- .pt / .pth files --------------------------------------------------------------------------
def _bad_files(tmp_path) -> dict[str, tuple[object, str]]:
    """name -> (path, the part of the message that says what was found)."""
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(3)}, good)
    files = {"text": ("hello, this is text\n", "a text file"), "empty": ("", "an empty file")}
    out = {}
    for name, (text, found) in files.items():
        (tmp_path / f"{name}.pt").write_text(text)
        out[name] = (tmp_path / f"{name}.pt", found)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:200])
    out["truncated"] = (tmp_path / "truncated.pt", "a damaged or truncated zip archive")
    (tmp_path / "folder.pt").mkdir()
    out["directory"] = (tmp_path / "folder.pt", "a directory")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("x.txt", "not torch")
    out["zip"] = (tmp_path / "other.zip", "a damaged or truncated zip archive")
    torch.save({"w": _RunsShell(str(tmp_path / "ran"))}, tmp_path / "evil.pt")
    out["malicious"] = (tmp_path / "evil.pt", "refused to load .*weights_only=True")
    return out


def test_torch_file_loader_names_file_expected_and_found(tmp_path):
    for name, (path, found) in _bad_files(tmp_path).items():
        with pytest.raises(FileFormatError, match=f"{path}: .*{found}") as info:
            load_torch_file(path, "a training snapshot")
        assert "a training snapshot" in str(info.value), name
    assert not (tmp_path / "ran").exists()
    with pytest.raises(FileNotFoundError, match=r"missing.pt: no such file \(expected a training snapshot\)"):
        load_torch_file(tmp_path / "missing.pt", "a training snapshot")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(FileFormatError, match=r"list.pt: expected a state_dict of G_NET, found a list of 1 items"):
        load_state_dict_file(tmp_path / "list.pt", "a state_dict of G_NET")
    torch.save({"w": torch.zeros(3)}, tmp_path / "sd.pt")
    with pytest.raises(FileFormatError, match=r"sd.pt: expected an attngan_fast training snapshot .*, found a "
                                              r"state_dict of 1 tensors \('w'\)"):
        load_snapshot(tmp_path / "sd.pt")


def test_every_model_file_option_names_the_bad_file(tmp_path, capsys, original_files):
    paths = original_files[0]
    bad = _bad_files(tmp_path)
    snapshot_like = tmp_path / "snapshot_like.pt"
    torch.save({"format": "attngan_fast.gan_snapshot", "version": 1}, snapshot_like)
    files = {"--netG": str(paths["netG"]), "--text-encoder": str(paths["text_encoder"]),
             "--captions": str(paths["captions"]), "--cfg": str(paths["cfg"])}
    with single_thread():
        for name, (path, _found) in bad.items():
            for option in ("--checkpoint", "--netG", "--text-encoder"):
                argv = ["generate", "a bird", "--threads", "1", "--out", str(tmp_path / "g")]
                argv += [option, str(path)] if option == "--checkpoint" else \
                    [x for k, v in {**files, option: str(path)}.items() for x in (k, v)]
                assert main(argv) == 1, (name, option)
                err = capsys.readouterr().err
                assert err.startswith(f"error: {path}: ") and err.count("\n") == 1, (name, option, err)
        # a file of the wrong kind: a snapshot given as --netG, a G state_dict given as --checkpoint
        argv = ["generate", "a bird", *[x for k, v in {**files, "--netG": str(snapshot_like)}.items() for x in (k, v)]]
        assert main(argv) == 1
        assert "expected a state_dict of G_NET (netG_epoch_*.pth), found a 'attngan_fast.gan_snapshot' file" \
            in capsys.readouterr().err
        assert main(["generate", "a bird", "--checkpoint", str(paths["netG"])]) == 1
        assert "expected an attngan_fast training snapshot" in capsys.readouterr().err
        assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 1
        assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing.pt'}: no such file")
        # --inception-weights is read before any image is generated
        cfg = yaml.safe_load(paths["cfg"].read_text())
        cfg.update(DATASET_NAME="synthetic_birds", DATA_DIR="", SYNTHETIC={**cfg["SYNTHETIC"], "NUM_IMAGES": 10})
        (tmp_path / "synth.yml").write_text(yaml.safe_dump(cfg))
        argv = ["evaluate", *[x for k, v in {**files, "--cfg": str(tmp_path / "synth.yml")}.items() for x in (k, v)],
                "--metrics", "is", "--threads", "1", "--json", str(tmp_path / "e.json")]
        for name in ("text", "truncated", "malicious"):
            path, found = bad[name]
            assert main(argv + ["--inception-weights", str(path)]) == 1
            err = capsys.readouterr().err
            assert err.startswith(f"error: {path}: ") and "a torchvision inception_v3 state_dict" in err, err
    assert not (tmp_path / "ran").exists()


def test_inception_and_encoder_weights_files(tmp_path):
    bad = _bad_files(tmp_path)
    for cls in (InceptionV3, lambda w: CNN_ENCODER(8, weights=w)):
        for name in ("text", "empty", "malicious"):
            with pytest.raises(FileFormatError, match="a torchvision inception_v3 state_dict"):
                cls(bad[name][0])
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "sd.pth")
    with pytest.raises(FileFormatError, match=r"found a state_dict of 1 tensors \('conv.weight'\) without 'fc.weight'"):
        CNN_ENCODER(8, weights=tmp_path / "sd.pth")
