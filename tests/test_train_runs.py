"""A training run's folder and ending: a reused --out refused / --overwrite / --resume, the lock,
stale .tmp files, SIGTERM and SIGINT mid-epoch then --resume bitwise, a kill between the snapshot's
files, the original's continuation keys and snapshot epochs, a diverging run."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attngan_fast.cli import main
from attngan_fast.models import D_NET64, D_NET128, G_NET
from attngan_fast.training import NonFiniteLossError, find_latest, load_snapshot
from attngan_fast.training.builders import build_discriminators, build_generator
from attngan_fast.training.run_folder import LOCK_NAME, RunFolderError, RunLock, open_run_folder
from attngan_fast.training.stop import StopSignals
from tests.training_helpers import make_trainer, single_thread, synthetic_run_files, tiny_cfg

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def assert_fails(argv: list[str], pattern: str) -> None:
    """``main(argv)`` fails (exit code 1 or 2) with ``error: ...`` on stderr matching ``pattern``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    assert code in (1, 2), code
    assert re.search(pattern, err.getvalue()), err.getvalue()


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def train_args(cfg_path: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--cfg", str(cfg_path), "--out", str(out), "--seed", "7", "--device", "cpu", "--no-progress",
            "--sample-every", "0", "--backend", "reference", "--threads", "1", *extra]


def resume_args(out: Path, *extra: str) -> list[str]:
    """--resume takes the config and options from the snapshot; the backend is not one of them."""
    return ["train", "--out", str(out), "--resume", "--threads", "1", "--no-progress", "--backend", "reference", *extra]


def same_state(a: dict, b: dict) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


TRAINED = ("netG", "netG_ema", "netsD", "optimizerG", "optimizersD", "epoch", "batch", "step")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A synthetic config of 2 steps per epoch (8 training images of 4)."""
    return synthetic_run_files(tmp_path_factory.mktemp("small"), **{"SYNTHETIC.NUM_IMAGES": 10})[0]


# ---------------------------------------------------------------- reused folders
def test_reused_out_refused_overwrite_clears_resume_continues(small_run, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(small_run, out, "--max-epochs", "1")) == 0
    (out / "notes.txt").write_text("mine")
    before = (out / "log.jsonl").read_text()
    assert_fails(train_args(small_run, out, "--max-epochs", "1"),
                 r"holds a training run \(checkpoint_epoch_0.pt, .*--resume.*--overwrite")
    assert (out / "log.jsonl").read_text() == before  # untouched
    assert_fails(["train", "--out", str(out), "--resume", "--overwrite"], "--overwrite: cannot be combined with --resume")
    # --overwrite: only the run's files go (an old epoch's snapshot included); others stay
    (out / "checkpoint_epoch_9.pt").write_bytes(b"old")
    (out / "netG_epoch_9.pth").write_bytes(b"old")
    capsys.readouterr()
    assert main(train_args(small_run, out, "--max-epochs", "1", "--overwrite")) == 0
    assert "overwrite: removed" in capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["checkpoint_epoch_0.pt", "checkpoint_epoch_1.pt", "log.jsonl", "netD0.pth", "netD1.pth",
                     "netG_epoch_0.pth", "netG_epoch_1.pth", "notes.txt", "run.json", "samples"]
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    # --resume of the folder's own snapshot is allowed; a snapshot of another run into it is not
    assert main(resume_args(out, "--max-epochs", "2")) == 0
    other = tmp_path / "other"
    assert main(train_args(small_run, other, "--max-epochs", "1")) == 0
    assert_fails(["train", "--out", str(out), "--resume", str(other / "checkpoint_epoch_1.pt"), "--threads", "1"],
                 "holds a training run")


def test_lock_refuses_a_live_writer_and_takes_over_a_stale_one(small_run, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom attngan_fast.training.run_folder import RunLock\n"
         "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        lock = json.loads((out / LOCK_NAME).read_text())
        assert lock["pid"] == holder.pid and {"host", "started"} <= set(lock)
        assert_fails(train_args(small_run, out, "--max-epochs", "1"),
                     rf"in use by another training process \(pid {holder.pid}, since")
        assert not (out / "log.jsonl").exists()
    finally:
        holder.kill()  # dies holding the lock: a stale lock is left
        holder.wait(timeout=30)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid
    capsys.readouterr()
    assert main(train_args(small_run, out, "--max-epochs", "1")) == 0
    assert f"taking over the stale lock of pid {holder.pid}" in capsys.readouterr().err
    assert not (out / LOCK_NAME).exists()  # released at the end


def test_lock_of_another_host_and_a_torn_lock_are_refused(tmp_path):
    tmp_path.joinpath(LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x"}))
    with pytest.raises(RunFolderError, match="pid 1 on host elsewhere .*delete"):
        RunLock(tmp_path).acquire()
    tmp_path.joinpath(LOCK_NAME).write_text("{")
    with pytest.raises(RunFolderError, match="unreadable lock file"):
        RunLock(tmp_path).acquire()
    tmp_path.joinpath(LOCK_NAME).unlink()
    with RunLock(tmp_path) as lock:  # our own live pid holds it now: a second writer is refused
        with pytest.raises(RunFolderError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
        assert lock.held
    assert not tmp_path.joinpath(LOCK_NAME).exists() and list(tmp_path.iterdir()) == []


def test_stale_tmp_files_removed_on_start(tmp_path):
    for name in (".checkpoint_epoch_3.pt.k2j4h1x9.tmp", ".log.jsonl.abcdefgh.tmp", "keep.tmp", "notes.txt"):
        (tmp_path / name).write_text("x")
    messages = []
    with open_run_folder(tmp_path, log=messages.append):
        assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tmp", "notes.txt", LOCK_NAME]
    assert messages == [f"{tmp_path}: removed 2 temporary file(s) of interrupted writes"]


# ---------------------------------------------------------------- signals
def test_stop_signals_record_the_first_signal_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal: noted, ignored
        time.sleep(0.05)
        assert stop.received == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before


def test_a_second_signal_while_saving_changes_nothing(tmp_path, monkeypatch):
    import attngan_fast.training.snapshots as snapshots
    import attngan_fast.training.trainer as trainer_module

    straight = make_trainer(tmp_path / "a", max_epochs=1)
    straight.train()
    real_step, real_save = trainer_module.GANTrainer.train_step, snapshots.save_snapshot

    def step_then_signal(self, batch):
        out = real_step(self, batch)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    def save_with_signals(path, snap):
        os.kill(os.getpid(), signal.SIGTERM)  # while saving (ignored)
        os.kill(os.getpid(), signal.SIGINT)
        real_save(path, snap)

    monkeypatch.setattr(trainer_module.GANTrainer, "train_step", step_then_signal)
    monkeypatch.setattr(snapshots, "save_snapshot", save_with_signals)
    summary = make_trainer(tmp_path / "b", max_epochs=1).train()
    assert (summary["interrupted"], summary["steps"]) == ("SIGTERM", 2)
    monkeypatch.undo()
    snap = load_snapshot(tmp_path / "b" / "checkpoint_epoch_0.pt")
    assert (snap["interrupted"], snap["epoch"], snap["batch"]) == (True, 0, 2)
    resumed = make_trainer(tmp_path / "b", max_epochs=1)
    resumed.resume(tmp_path / "b" / "checkpoint_epoch_0.pt")
    resumed.train()
    assert all(torch.equal(x, y) for x, y in zip(straight.netG.state_dict().values(), resumed.netG.state_dict().values()))


@pytest.fixture(scope="module")
def signal_run(tmp_path_factory):
    """The synthetic config (10 steps per epoch) and its uninterrupted 2-epoch run."""
    tmp = tmp_path_factory.mktemp("signals")
    cfg_path = synthetic_run_files(tmp)[0]
    with single_thread():
        assert main(train_args(cfg_path, tmp / "straight", "--max-epochs", "2")) == 0
    return cfg_path, tmp / "straight"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_epoch_then_resume_is_bitwise_the_uninterrupted_run(signal_run, tmp_path, sig):
    """SIGTERM to the training process; SIGINT to its process group as Ctrl-C sends it, data loader
    workers included (2 of them: the items do not depend on the worker, so the run is the same)."""
    cfg_path, straight = signal_run
    out = tmp_path / "run"
    script = "import sys\nfrom attngan_fast.cli import main\nsys.exit(main(sys.argv[1:]))"
    workers = ["--workers", "2"] if sig == signal.SIGINT else []
    proc = subprocess.Popen([sys.executable, "-c", script, *train_args(cfg_path, out, "--max-epochs", "2", *workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)
    try:
        log, deadline = out / "log.jsonl", time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) >= 3:  # within epoch 0 (10 steps)
                break
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.count("stopping after the current step") == 1  # the workers stay quiet
    assert stdout.strip().splitlines()[-1].startswith(f"interrupted by {signal.Signals(sig).name} at step ")
    snap = load_snapshot(find_latest(out))
    assert snap["interrupted"] is True and snap["epoch"] == 0 and 3 <= snap["batch"] < 10
    assert snap["step"] == snap["batch"] and find_latest(out).name == "checkpoint_epoch_0.pt"
    assert not (out / LOCK_NAME).exists()
    # resume: continues at the next batch of epoch 0, with the same data order and RNG
    assert main(resume_args(out)) == 0
    a, b = load_snapshot(straight / "checkpoint_epoch_2.pt"), load_snapshot(out / "checkpoint_epoch_2.pt")
    assert all(same_state(a[k], b[k]) for k in TRAINED) and b["interrupted"] is False
    assert same_state(load_snapshot(straight / "checkpoint_epoch_0.pt")["netsD"],
                      load_snapshot(out / "checkpoint_epoch_0.pt")["netsD"])  # epoch 0's end, rewritten
    def strip(path: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(x).items() if k != "imgs_per_s"} for x in path.read_text().splitlines()]

    assert strip(out / "log.jsonl") == strip(straight / "log.jsonl")


def test_time_stop_mid_epoch_resumes_at_the_next_batch(tmp_path):
    straight = make_trainer(tmp_path / "a", max_epochs=2, snapshot_every=1)
    straight.train()
    stopped = make_trainer(tmp_path / "b", max_epochs=2, snapshot_every=1, max_minutes=0.0)
    summary = stopped.train()  # after one step (of 4 in epoch 0)
    assert (summary["steps"], summary["interrupted"], summary["stopped_by_time"]) == (1, None, True)
    snap = load_snapshot(tmp_path / "b" / "checkpoint_epoch_0.pt")
    assert (snap["epoch"], snap["batch"], snap["interrupted"]) == (0, 1, False)
    with pytest.raises(ValueError, match=r"within an epoch \(batch 1\) resumes with the same processes x accumulation steps"):
        make_trainer(tmp_path / "c", max_epochs=2, accum_steps=2).resume(tmp_path / "b" / "checkpoint_epoch_0.pt")
    torch.manual_seed(999)
    resumed = make_trainer(tmp_path / "b", max_epochs=2, snapshot_every=1)
    resumed.resume(tmp_path / "b" / "checkpoint_epoch_0.pt")
    resumed.train()
    assert all(torch.equal(x, y) for x, y in zip(straight.netG.state_dict().values(), resumed.netG.state_dict().values()))
    assert all(torch.equal(x, y) for x, y in zip(straight.ema_state_dict().values(), resumed.ema_state_dict().values()))


# ---------------------------------------------------------------- snapshot files as one unit
def test_crash_between_the_snapshot_files_is_repaired_on_resume(tmp_path, monkeypatch):
    import attngan_fast.training.snapshots as snapshots

    straight = make_trainer(tmp_path / "a", max_epochs=3, snapshot_every=1)
    straight.train()
    out = tmp_path / "b"
    real = snapshots.save_snapshot

    def crash_at_epoch_1(path, snap):
        if snap["label"] == 1:
            raise OSError("simulated crash after the netG/netD files, before the checkpoint")
        real(path, snap)

    monkeypatch.setattr(snapshots, "save_snapshot", crash_at_epoch_1)
    with pytest.raises(OSError, match="simulated crash"):
        make_trainer(out, max_epochs=3, snapshot_every=1).train()
    monkeypatch.setattr(snapshots, "save_snapshot", real)
    assert find_latest(out).name == "checkpoint_epoch_0.pt"  # the half-written snapshot does not count
    assert (out / "netG_epoch_1.pth").exists()  # written first, orphaned
    (out / "netG_epoch_0.pth").unlink()  # and one of the latest snapshot's files lost
    resumed = make_trainer(out, max_epochs=3, snapshot_every=1)
    resumed.resume(out / "checkpoint_epoch_0.pt")
    snap0 = load_snapshot(out / "checkpoint_epoch_0.pt")
    assert not (out / "netG_epoch_1.pth").exists()
    assert same_state(torch.load(out / "netG_epoch_0.pth", weights_only=True), snap0["netG_ema"])
    assert same_state(torch.load(out / "netD1.pth", weights_only=True), snap0["netsD"][1])
    resumed.train()
    for label in (0, 1, 2, 3):
        a = torch.load(tmp_path / "a" / f"netG_epoch_{label}.pth", weights_only=True)
        assert same_state(a, torch.load(out / f"netG_epoch_{label}.pth", weights_only=True)), label
    for i in range(2):
        assert same_state(torch.load(tmp_path / "a" / f"netD{i}.pth", weights_only=True),
                          torch.load(out / f"netD{i}.pth", weights_only=True))


# ---------------------------------------------------------------- the original's keys and epochs
def test_snapshot_epochs_as_the_original(tmp_path):
    cfg = tiny_cfg(**{"TRAIN.MAX_EPOCH": 2, "TRAIN.SNAPSHOT_INTERVAL": 1})
    make_trainer(tmp_path, cfg=cfg).train()
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".pt", ".pth"))
    # epochs 0 and 1 (0 % 1 == 1 % 1 == 0) and the final save with e = MAX_EPOCH
    assert names == ["checkpoint_epoch_0.pt", "checkpoint_epoch_1.pt", "checkpoint_epoch_2.pt", "netD0.pth",
                     "netD1.pth", "netG_epoch_0.pth", "netG_epoch_1.pth", "netG_epoch_2.pth"]


def original_run_folder(folder: Path, cfg) -> tuple[dict, list[dict]]:
    """netG_epoch_3.pth and netD0..netD{n-1}.pth as the original trainer writes them: bare
    state_dicts (non-trivial values, unlike a fresh initialisation)."""
    folder.mkdir(parents=True)
    torch.manual_seed(11)
    netG, netsD = build_generator(cfg), build_discriminators(cfg)
    with torch.no_grad():
        for module in (netG, *netsD):
            for p in module.parameters():
                p.add_(0.01 * torch.randn_like(p))
    torch.save(netG.state_dict(), folder / "netG_epoch_3.pth")
    for i, d in enumerate(netsD):
        torch.save(d.state_dict(), folder / f"netD{i}.pth")
    return netG.state_dict(), [d.state_dict() for d in netsD]


def test_net_g_and_b_net_d_continue_as_the_original(tmp_path, capsys):
    cfg_path, cfg, _ = synthetic_run_files(tmp_path, **{"SYNTHETIC.NUM_IMAGES": 10})
    g_state, d_states = original_run_folder(tmp_path / "original", cfg)
    net_g = tmp_path / "original" / "netG_epoch_3.pth"
    keys = ["--set", f"TRAIN.NET_G={net_g}", "--set", "TRAIN.B_NET_D=true"]
    # MAX_EPOCH 4: training starts at epoch 3 + 1 = 4, so only the final save: the loaded weights
    out = tmp_path / "loaded"
    assert main(train_args(cfg_path, out, "--max-epochs", "4", *keys)) == 0
    assert "trained 4 epochs, 0 steps" in capsys.readouterr().out
    assert same_state(torch.load(out / "netG_epoch_4.pth", weights_only=True), g_state)  # G and its EMA
    snap = load_snapshot(out / "checkpoint_epoch_4.pt")
    assert same_state(snap["netG"], g_state) and (snap["epoch"], snap["step"]) == (4, 0)
    for i in range(2):
        assert same_state(torch.load(out / f"netD{i}.pth", weights_only=True), d_states[i])
    # MAX_EPOCH 5: epoch 4 trained (its snapshot), then the final save 5
    out = tmp_path / "run"
    assert main(train_args(cfg_path, out, "--max-epochs", "5", *keys)) == 0
    assert "trained 5 epochs, 2 steps" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".pt", ".pth")) == [
        "checkpoint_epoch_4.pt", "checkpoint_epoch_5.pt", "netD0.pth", "netD1.pth", "netG_epoch_4.pth",
        "netG_epoch_5.pth"]
    assert [json.loads(x)["epoch"] for x in (out / "log.jsonl").read_text().splitlines()] == [4, 4]
    # what we write continues in turn as the original would: G_NET / D_NET load them strictly
    G_NET(cfg).load_state_dict(torch.load(out / "netG_epoch_5.pth", weights_only=True))
    for i, D in enumerate((D_NET64, D_NET128)):
        state = torch.load(out / f"netD{i}.pth", weights_only=True)
        D(cfg).load_state_dict(state)
        assert not same_state(state, d_states[i])  # trained on
    # a resumed snapshot ignores NET_G (its config still names it)
    assert load_snapshot(out / "checkpoint_epoch_5.pt")["config"]["TRAIN"]["NET_G"] == str(net_g)
    assert main(resume_args(out, "--max-epochs", "6")) == 0
    assert "trained 6 epochs, 4 steps" in capsys.readouterr().out
    # B_NET_D without the D files; a G file name without the epoch; NET_G inside a used --out
    (tmp_path / "original" / "netD1.pth").unlink()
    assert_fails(train_args(cfg_path, tmp_path / "r2", "--max-epochs", "5", *keys), r"TRAIN.B_NET_D: .*netD1.pth: no such file")
    renamed = tmp_path / "original" / "bird_AttnGAN2.pth"
    net_g.rename(renamed)
    assert_fails(train_args(cfg_path, tmp_path / "r3", "--set", f"TRAIN.NET_G={renamed}", "--set", "TRAIN.B_NET_D=false"),
                 "start epoch is read from the file name")
    assert_fails(train_args(cfg_path, out, "--overwrite", "--set", f"TRAIN.NET_G={out / 'netG_epoch_5.pth'}"),
                 "TRAIN.NET_G .* lies in the output folder")


# ---------------------------------------------------------------- divergence
def poison(trainer, index: int, from_epoch: int = 0) -> None:
    """From ``from_epoch`` on, item ``index``'s 64-px image is NaN: D0's loss goes non-finite on its batch."""
    dataset = trainer.dataset

    def set_epoch(epoch: int) -> None:
        if epoch == from_epoch:
            dataset.imgs[0][index] = float("nan")

    dataset.set_epoch = set_epoch


def test_diverging_run_stops_naming_the_step_and_writes_nothing(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=3, snapshot_every=1)
    order = list(trainer._loader(1).sampler)  # epoch 1's data order: item order[5] is in its batch 2
    poison(trainer, order[5], from_epoch=1)
    diverged = r"diverged at step 6 \(epoch 1, batch 2\), errD0 update: errD0 = nan \(NaN probabilities of D0\)"
    with pytest.raises(NonFiniteLossError, match=diverged) as e:
        trainer.train()
    assert (e.value.step, e.value.name) == (6, "errD0")
    assert find_latest(tmp_path).name == "checkpoint_epoch_0.pt"  # the last good snapshot stays the latest
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint_epoch_0.pt"]
    assert all(torch.isfinite(p).all() for d in trainer.netsD for p in d.parameters())
    assert trainer.step == 5


def test_on_nan_skip_skips_the_steps_and_counts_them(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=2, snapshot_every=1, on_nan="skip")
    poison(trainer, 0)  # in one batch of each epoch
    summary = trainer.train()
    assert summary["skipped"] == 2 and summary["steps"] == 8
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in log] == sorted(r["skipped"] for r in log) and log[-1]["skipped"] == 2
    assert sum(r["errD0"] != r["errD0"] for r in log) == 2  # the NaN losses are logged
    assert all(torch.isfinite(p).all() for m in (trainer.netG, *trainer.netsD) for p in m.parameters())
    assert load_snapshot(tmp_path / "checkpoint_epoch_2.pt")["skipped"] == 2


def test_diverging_cli_run_names_the_step_and_the_latest_snapshot(small_run, tmp_path):
    out = tmp_path / "run"
    assert_fails(train_args(small_run, out, "--set", "TRAIN.GENERATOR_LR=1.0e+35"),
                 r"error: training diverged at step 2 \(epoch 0, batch 2\), errD0 update: errD0 = nan \(NaN probabilities of D0"
                                         r".*the latest snapshot is none")
    assert not list(out.glob("*.pt")) and not (out / LOCK_NAME).exists()
