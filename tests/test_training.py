"""The GAN trainer: one step's math, EMA, snapshots (weights_only, original export), exact resume,
kill -9, mixed precision, channels_last, compile."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attngan_fast.checkpoint import seed_everything, stream_seed
from attngan_fast.cli import main
from attngan_fast.losses import KL_loss, discriminator_loss, generator_loss
from attngan_fast.models import G_NET
from attngan_fast.training import GANTrainer, TrainOptions, collate_shards, find_latest, load_snapshot
from attngan_fast.training.trainer import any_non_finite
from tests.training_helpers import make_trainer, single_thread, synthetic_run_files, tiny_cfg

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def first_batch(trainer: GANTrainer):
    return next(iter(trainer._loader(0)))


def test_micro_batches_are_interleaved_and_sorted(tmp_path):
    trainer = make_trainer(tmp_path, accum_steps=2)
    dataset = trainer.dataset
    first = collate_shards([dataset[i] for i in range(6)], shards=2)
    assert [b.keys for b in first] == [sorted(["key0", "key2", "key4"], key=lambda k: -dataset.lens[int(k[3:])]),
                                       sorted(["key1", "key3", "key5"], key=lambda k: -dataset.lens[int(k[3:])])]
    for b in first:
        assert b.cap_lens.tolist() == sorted(b.cap_lens.tolist(), reverse=True)
    batches = first_batch(trainer)
    assert len(batches) == 2 and all(b.captions.shape == (3, 6) for b in batches)


def test_noise_is_its_own_stream(tmp_path):
    """G's noise does not replay the global RNG, which the trainer seeds with the same seed."""
    trainer = make_trainer(tmp_path)
    seed = trainer.options.seed
    gen = torch.Generator().manual_seed(0)
    gen.set_state(trainer.noise_gen.get_state())
    noise = torch.randn(4, 8, generator=gen)
    seed_everything(seed)
    assert not torch.allclose(noise, torch.randn(4, 8))
    assert torch.equal(noise, torch.randn(4, 8, generator=torch.Generator().manual_seed(stream_seed(seed, "noise"))))
    seeds = {stream_seed(s, name) for s in (seed, seed + 1) for name in ("noise", "samples")}
    assert len(seeds) == 4 and all(0 <= s < 2**63 for s in seeds)


def test_train_step_matches_the_original_schedule(tmp_path):
    """One step == D steps then the G step written out by hand with the shared losses."""
    trainer = make_trainer(tmp_path)
    cfg = trainer.cfg
    batches = first_batch(trainer)
    G0 = params(trainer.netG)
    noise_state = trainer.noise_gen.get_state()
    logs = trainer.train_step(batches)

    # the same step by hand
    ref = make_trainer(tmp_path / "ref")
    netG, netsD = ref.netG, ref.netsD
    assert all(torch.equal(a, b) for a, b in zip(params(netG), G0))
    (batch,) = batches
    imgs, caps, lens, cls = batch.imgs, batch.captions, batch.cap_lens, batch.class_ids
    assert lens.tolist() == sorted(lens.tolist(), reverse=True)
    gen = torch.Generator().manual_seed(0)
    gen.set_state(noise_state)
    b = caps.size(0)
    noise = torch.randn(b, cfg.GAN.Z_DIM, generator=gen)
    eps = torch.randn(b, cfg.GAN.CONDITION_DIM, generator=gen)
    with torch.no_grad():
        words, sent = ref.text_encoder(caps, lens)
    fakes, _, mu, logvar = netG(noise, sent, words, (caps == 0)[:, : words.size(2)], eps)
    ones, zeros = torch.ones(b), torch.zeros(b)
    optD = [torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999)) for d in netsD]
    for i, netD in enumerate(netsD):
        netD.zero_grad()
        errD = discriminator_loss(netD, imgs[i], fakes[i].detach(), sent, ones, zeros)
        errD.backward()
        optD[i].step()
        assert torch.allclose(errD, logs[f"errD{i}"], rtol=1e-6, atol=0)
    netG.zero_grad()
    errG, parts = generator_loss(netsD, ref.image_encoder, fakes, ones, words, sent, torch.arange(b), lens, cls, cfg)
    errG = errG + KL_loss(mu, logvar)
    errG.backward()
    torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999)).step()
    assert torch.allclose(errG, logs["errG"], rtol=1e-6, atol=0)
    assert {"g_loss0", "g_loss1", "w_loss", "s_loss", "kl"} <= set(logs)
    for a, b_ in zip(netG.parameters(), trainer.netG.parameters()):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-7)
    for d_ref, d in zip(netsD, trainer.netsD):
        for a, b_ in zip(d_ref.parameters(), d.parameters()):
            torch.testing.assert_close(a, b_)
    # EMA: 0.999 * old + 0.001 * new on parameters; BN buffers untouched by the EMA
    for ema, old, new in zip(trainer.netG_ema.parameters(), G0, trainer.netG.parameters()):
        torch.testing.assert_close(ema, 0.999 * old + 0.001 * new.detach(), rtol=1e-6, atol=1e-8)
    ema_sd = trainer.ema_state_dict()
    g_sd = trainer.netG.state_dict()
    bn = "h_net1.fc.1.running_mean"
    assert torch.equal(ema_sd[bn], g_sd[bn]) and not torch.equal(ema_sd["ca_net.fc.weight"], g_sd["ca_net.fc.weight"])


def test_adam_is_the_loop_bit_for_bit_or_fused_on_fast(tmp_path):
    """Reference backend: multi-tensor Adam, equal to the per-parameter loop; fast: the fused kernel."""
    import attngan_fast
    from attngan_fast.training.trainer import use_fused_adam

    trainer = make_trainer(tmp_path)
    batches = first_batch(trainer)
    optimizers = [trainer.optimizerG, *trainer.optimizersD]
    for backend, fused in (("reference", False), ("fast", True), ("reference", False)):
        with attngan_fast.backend(backend):
            trainer.train_step(batches)
        assert all(g["fused"] is fused and g["foreach"] is not fused for o in optimizers for g in o.param_groups)
    torch.manual_seed(0)
    start = [torch.randn(n) for n in (7, 300, 1)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]

    def run(kind):
        ps = [p.clone().requires_grad_() for p in start]
        opt = torch.optim.Adam(ps, lr=2e-4, betas=(0.5, 0.999), foreach=kind != "loop")
        if kind == "fused":
            use_fused_adam([opt], True)
        for g in grads:
            for p, gi in zip(ps, g):
                p.grad = gi.clone()
            opt.step()
        return ps

    loop, multi, fused = run("loop"), run("multi"), run("fused")
    assert all(torch.equal(a, b) for a, b in zip(loop, multi))
    for a, b in zip(loop, fused):
        torch.testing.assert_close(b, a, rtol=5e-7, atol=1e-9)


def test_any_non_finite_finds_inf_and_nan_and_leaves_the_values():
    base = [lambda: torch.randn(3, 4), lambda: torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
            lambda: torch.randn(7, dtype=torch.float64), lambda: torch.randn(5).to(torch.bfloat16),
            lambda: torch.randn(6).half(), lambda: torch.randn(4, 6)[:, ::2]]  # the last not dense
    for i in range(len(base)):
        for bad in (float("inf"), -float("inf"), float("nan"), None):
            tensors = [make() for make in base]
            if bad is not None:
                tensors[i][(-1,) * tensors[i].dim()] = bad
            before = [t.clone() for t in tensors]
            found = any_non_finite(tensors)
            assert found.dtype == torch.bool and bool(found) == (bad is not None), (i, bad)
            assert all(torch.equal(a.nan_to_num(), b.nan_to_num()) for a, b in zip(tensors, before))


def test_non_finite_gradients_stop_the_step(tmp_path):
    """Finite losses, an infinite gradient: the step is not taken and the error says so."""
    from attngan_fast.training.trainer import NonFiniteLossError

    trainer = make_trainer(tmp_path)
    weight = trainer.netG.ca_net.fc.weight
    weight.register_hook(lambda g: torch.full_like(g, float("inf")))
    before = weight.detach().clone()
    with single_thread(), pytest.raises(NonFiniteLossError, match="non-finite gradients of the errG update"):
        trainer.train_step(next(iter(trainer._loader(0))))
    assert torch.equal(weight.detach(), before)


def test_snapshots_logs_samples_and_original_export(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=3, snapshot_every=2, sample_every=3)
    summary = trainer.train()
    assert summary["epochs"] == 3 and summary["steps"] == 12
    names = sorted(p.name for p in tmp_path.iterdir())
    # after epoch indices 0 and 2 (e % 2 == 0, the last epoch too) and at the end (label = epochs done),
    # as the original; netD{i}.pth (current D weights) overwritten by each
    assert [n for n in names if n.endswith(".pt")] == ["checkpoint_epoch_0.pt", "checkpoint_epoch_2.pt",
                                                       "checkpoint_epoch_3.pt"]
    assert [n for n in names if n.endswith(".pth")] == ["netD0.pth", "netD1.pth", "netG_epoch_0.pth",
                                                        "netG_epoch_2.pth", "netG_epoch_3.pth"]
    assert find_latest(tmp_path).name == "checkpoint_epoch_3.pt"
    snap = load_snapshot(tmp_path / "checkpoint_epoch_3.pt")  # weights_only=True
    assert snap["epoch"] == 3 and snap["step"] == 12 and snap["config"] == trainer.cfg.to_dict()
    assert len(snap["netsD"]) == 2 == len(snap["optimizersD"]) and len(snap["rng"]) == 1
    # the original format: a bare G state_dict (EMA weights) loading strictly into G_NET
    state = torch.load(tmp_path / "netG_epoch_3.pth", weights_only=True)
    G_NET(trainer.cfg).load_state_dict(state, strict=True)
    assert torch.equal(state["ca_net.fc.weight"], snap["netG_ema"]["ca_net.fc.weight"])
    for i in range(len(trainer.netsD)):
        d_state = torch.load(tmp_path / f"netD{i}.pth", weights_only=True)
        assert all(torch.equal(d_state[k], v) for k, v in snap["netsD"][i].items())
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))
    assert {"errD0", "errD1", "errG", "w_loss", "s_loss", "kl", "imgs_per_s"} <= set(log[0])
    samples = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert "step_0000003_g0.png" in samples and "step_0000003_g1.png" in samples
    assert "step_0000003_attention.png" in samples and "step_0000012_attention.png" in samples
    with pytest.raises(ValueError, match="expected an attngan_fast training snapshot"):
        load_snapshot(tmp_path / "netG_epoch_3.pth")


def test_resume_continues_exactly(tmp_path):
    """3 epochs straight == 1 epoch, a new process state from the snapshot, 2 more epochs: bitwise."""
    straight = make_trainer(tmp_path / "a", max_epochs=3, snapshot_every=1)
    straight.train()
    first = make_trainer(tmp_path / "b", max_epochs=1, snapshot_every=1)
    first.train()
    torch.manual_seed(12345)  # disturb every global RNG: the snapshot must restore them
    resumed = make_trainer(tmp_path / "b", max_epochs=3, snapshot_every=1)
    resumed.resume(tmp_path / "b" / "checkpoint_epoch_1.pt")
    assert (resumed.epoch, resumed.step) == (1, 4)
    resumed.train()
    for a, b in zip(straight.netG.state_dict().values(), resumed.netG.state_dict().values()):
        assert torch.equal(a, b)
    for da, db in zip(straight.netsD, resumed.netsD):
        assert all(torch.equal(a, b) for a, b in zip(da.state_dict().values(), db.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(straight.ema_state_dict().values(), resumed.ema_state_dict().values()))
    log_a = (tmp_path / "a" / "log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    def strip(lines: list[str]) -> list[dict]:
        return [{k: v for k, v in json.loads(x).items() if k != "imgs_per_s"} for x in lines]

    assert strip(log_a) == strip(log_b)


def test_resume_rejects_another_model(tmp_path):
    make_trainer(tmp_path, max_epochs=1).train()
    other = make_trainer(tmp_path / "o", cfg=tiny_cfg(**{"GAN.GF_DIM": 3}))
    with pytest.raises(ValueError, match="GAN.GF_DIM: 2 in the snapshot, 3 now"):
        other.resume(tmp_path / "checkpoint_epoch_1.pt")


def test_grow_from_fewer_stages(tmp_path):
    """A 64 px run's G (weights, EMA) and D start the first stage of a two-stage model; the new stage
    keeps its initialisation; the step count starts afresh; no growing from as many stages."""
    from attngan_fast.training.snapshots import grow_from_snapshot

    small = make_trainer(tmp_path / "one", cfg=tiny_cfg(**{"TREE.BRANCH_NUM": 1}), max_epochs=1)
    small.train()
    snapshot = tmp_path / "one" / "checkpoint_epoch_0.pt"
    grown = make_trainer(tmp_path / "two", max_epochs=1)
    fresh = {k: v.clone() for k, v in grown.netG.state_dict().items()}
    grow_from_snapshot(grown, snapshot)
    assert (grown.epoch, grown.step) == (0, 0)
    for name, value in grown.netG.state_dict().items():
        expected = small.netG.state_dict().get(name, fresh[name])
        assert torch.equal(value, expected), name
    ema = dict(grown.netG_ema.named_parameters())
    assert all(torch.equal(ema[k], v) for k, v in small.netG_ema.named_parameters())
    assert all(torch.equal(a, b) for a, b in zip(grown.netsD[0].state_dict().values(),
                                                  small.netsD[0].state_dict().values()))
    grown.train()
    with pytest.raises(ValueError, match="fewer stages than this model, found TREE.BRANCH_NUM 1 in it and 1 now"):
        grow_from_snapshot(make_trainer(tmp_path / "again", cfg=tiny_cfg(**{"TREE.BRANCH_NUM": 1})), snapshot)


KILL_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from tests.training_helpers import make_trainer
trainer = make_trainer({out!r}, n=6, max_epochs=10_000, snapshot_every=1)
trainer.train()
"""


def test_kill_9_leaves_the_last_snapshot_loadable_and_resumable(tmp_path):
    out = tmp_path / "run"
    script = KILL_SCRIPT.format(root=str(TESTS.parent), out=str(out))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        # kill while a snapshot is being written if we catch one, else right after the third
        while time.monotonic() < deadline and proc.poll() is None:
            tmp_files = list(out.glob(".*.tmp")) if out.exists() else []
            done = list(out.glob("checkpoint_epoch_*.pt")) if out.exists() else []
            if len(done) >= 3 or (len(done) >= 1 and tmp_files):
                break
            time.sleep(0.002)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    latest = find_latest(out)
    assert latest is not None
    for path in out.glob("checkpoint_epoch_*.pt"):
        load_snapshot(path)  # every complete snapshot loads (weights_only=True)
    snap = load_snapshot(latest)
    resumed = make_trainer(out, n=6, max_epochs=snap["epoch"] + 1, snapshot_every=1)
    resumed.resume(latest)
    resumed.train()
    assert resumed.epoch == snap["epoch"] + 1
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, resumed.step + 1))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_steps(tmp_path, amp):
    trainer = make_trainer(tmp_path, amp=amp, max_epochs=1)
    before = params(trainer.netG)
    batch = first_batch(trainer)
    for _ in range(10):  # fp16: GradScaler skips the steps whose gradients overflow while it backs off
        logs = trainer.train_step(batch)
    assert all(torch.isfinite(v) for v in logs.values())
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    changed = [not torch.equal(a, b) for a, b in zip(before, trainer.netG.parameters())]
    assert sum(changed) > len(changed) // 2
    assert all(p.dtype == torch.float32 for p in trainer.netG.parameters())


def test_encoder_amp_step_is_close_to_the_float32_step(tmp_path):
    """The image encoder alone in bf16: the G step's losses within bf16's error of the float32 step's."""
    plain = make_trainer(tmp_path / "p")
    low = make_trainer(tmp_path / "b", encoder_amp="bf16")
    batch = first_batch(plain)
    a, b = plain.train_step(batch), low.train_step(batch)
    for k in ("w_loss", "s_loss", "errG"):
        torch.testing.assert_close(a[k], b[k], rtol=3e-2, atol=1e-2)
    assert all(p.dtype == torch.float32 for p in low.netG.parameters())
    assert low.image_encoder.training is False and next(low.image_encoder.parameters()).dtype == torch.float32


def test_channels_last_and_compile_match_the_plain_step(tmp_path):
    plain = make_trainer(tmp_path / "p")
    fancy = make_trainer(tmp_path / "f", channels_last=True, compile="eager")
    batch = first_batch(plain)
    a, b = plain.train_step(batch), fancy.train_step(batch)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    conv = fancy.netG.h_net1.upsample1[1].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert list(fancy.netG.state_dict()) == list(plain.netG.state_dict())  # compile keeps the keys


def test_bad_options_and_data(tmp_path):
    with pytest.raises(ValueError, match="amp"):
        TrainOptions(out_dir=str(tmp_path), amp="fp8")
    with pytest.raises(ValueError, match="encoder_amp"):
        TrainOptions(out_dir=str(tmp_path), encoder_amp="int8")
    with pytest.raises(ValueError, match="encoder_amp: expected None or amp's 'bf16'"):
        TrainOptions(out_dir=str(tmp_path), amp="bf16", encoder_amp="fp16")
    with pytest.raises(ValueError, match="accum_steps"):
        TrainOptions(out_dir=str(tmp_path), accum_steps=0)
    trainer = make_trainer(tmp_path, n=2)
    with pytest.raises(ValueError, match="no full batch"):
        trainer.train()


def test_time_budget_stops_and_snapshots(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=1000, max_minutes=0.0)
    summary = trainer.train()
    assert summary["stopped_by_time"] and summary["steps"] == 1 and summary["epochs"] == 0
    assert (tmp_path / "checkpoint_epoch_0.pt").exists()


def test_train_cli_and_resume(tmp_path, capsys):
    cfg_path, cfg, _ = synthetic_run_files(tmp_path)
    out = tmp_path / "run"
    base = ["train", "--cfg", str(cfg_path), "--out", str(out), "--seed", "7", "--device", "cpu", "--no-progress",
            "--sample-every", "5", "--backend", "reference"]
    assert main(base + ["--max-epochs", "1"]) == 0
    assert "trained 1 epochs, 10 steps" in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert run["options"]["seed"] == 7 and run["backend"] == "reference" and run["steps"] == 10
    # --resume takes the config and options from the snapshot; --max-epochs extends the run
    assert main(["train", "--out", str(out), "--resume", "--max-epochs", "2"]) == 0
    assert "trained 2 epochs, 20 steps" in capsys.readouterr().out
    snap = load_snapshot(out / "checkpoint_epoch_2.pt")
    assert snap["options"]["seed"] == 7 and snap["options"]["sample_every"] == 5
    assert (out / "samples" / "step_0000015_attention.png").exists()
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "no snapshot" in capsys.readouterr().err
    assert main(["train", "--cfg", str(cfg_path), "--set", "TRAIN.NET_E=", "--out", str(tmp_path / "x")]) == 1
    assert "TRAIN.NET_E is empty" in capsys.readouterr().err
