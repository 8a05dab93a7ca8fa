"""Where a GAN training step's time goes: torch.profiler over ``GANTrainer.train_step``, split into
G / Ds / image encoder / DAMSM loss / optimizer / rest.

Forward: the ops inside G's, each D's (and its heads'), the frozen image encoder's forward (forward
hooks open a profiler range around each) and inside the DAMSM loss terms. Backward: each autograd
node's time (``autograd::engine::evaluate_function``) goes to the part whose forward op created it
(the profiler's sequence numbers). Optimizer: ``Optimizer.step`` / ``zero_grad``. Rest: the step's
time minus those (G's EMA, the label tensors, the loss sums, the finite checks, Python).

    python benchmarks/profile_step.py --stages 1 --stages 2 --backend fast --steps 5 --threads 1

Prints a Markdown table (ms per step and share of the step). Runs whatever ``attngan_fast`` the
interpreter imports (e.g. another checkout first on PYTHONPATH, for a before / after).
"""
from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch
from torch.autograd.profiler import record_function

import attngan_fast
from attngan_fast import config, losses
from attngan_fast.data import SyntheticBirds
from attngan_fast.models import RNN_ENCODER
from attngan_fast.models.small_cnn import SmallImageEncoder
from attngan_fast.training import GANTrainer, TrainOptions
from attngan_fast.training.options import AMP_DTYPES

PARTS = ("G", "Ds", "image encoder", "DAMSM loss", "optimizer", "rest")
LABEL = "profile_step::"


def make_trainer(stages: int, batch: int, out_dir: str, encoder_amp: str | None = None) -> GANTrainer:
    """demo_birds with ``stages`` stages at ``batch``, frozen random encoders (as benchmarks/test_training_step.py);
    encoder_amp: ``TrainOptions.encoder_amp`` (the demo's "bf16" on a CPU with bf16 arithmetic)."""
    cfg = config.load("demo_birds", **{"TREE.BRANCH_NUM": stages, "TRAIN.BATCH_SIZE": batch,
                                       "SYNTHETIC.NUM_IMAGES": 4 * batch})
    data = SyntheticBirds.from_config(cfg, "train", seed=0)
    torch.manual_seed(0)
    text_encoder = RNN_ENCODER(data.n_words, cfg, nhidden=cfg.TEXT.EMBEDDING_DIM)
    image_encoder = SmallImageEncoder(cfg.TEXT.EMBEDDING_DIM, cfg.DAMSM.SMALL_CNN_WIDTH, cfg.DAMSM.SMALL_CNN_INPUT)
    options = TrainOptions(out_dir=out_dir, progress=False, sample_every=0, workers=0, encoder_amp=encoder_amp)
    return GANTrainer(cfg, data, text_encoder, image_encoder, options, ixtoword=data.ixtoword)


def _label_forward(module: torch.nn.Module, part: str) -> None:
    """A profiler range named after ``part`` around each call of ``module``."""
    open_ranges: list[Any] = []

    def enter(_module, _args):
        rf = record_function(LABEL + part)
        rf.__enter__()
        open_ranges.append(rf)

    def leave(_module, _args, _out):
        open_ranges.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)


def _label_damsm() -> None:
    for module in (losses.fused, losses.oracle):
        terms = module.damsm_loss_terms

        def labelled(*args, _terms=terms, **kwargs):
            with record_function(LABEL + "DAMSM loss"):
                return _terms(*args, **kwargs)

        module.damsm_loss_terms = labelled


def _part(event) -> str | None:
    if event.name.startswith(LABEL):
        part = event.name[len(LABEL):]
        return part if part in PARTS else None
    if event.name.startswith("Optimizer."):
        return "optimizer"
    return None


def split(prof, steps: int) -> dict[str, float]:
    """ms per step of each part (the profile of ``steps`` steps, each inside a "train_step" range)."""
    events = prof.events()
    by_seq: dict[int, str] = {}
    for e in events:
        if e.sequence_nr < 0 or e.name.startswith("autograd::engine"):
            continue
        p = e
        while p is not None and _part(p) is None:
            p = p.cpu_parent
        if p is not None:
            by_seq.setdefault(e.sequence_nr, _part(p))
    totals = dict.fromkeys(PARTS, 0.0)
    step_us = 0.0
    for e in events:
        if e.name == LABEL + "train_step":
            step_us += e.cpu_time_total
            continue
        part = _part(e)
        if part is None and e.name.startswith("autograd::engine::evaluate_function") and e.sequence_nr >= 0:
            part = by_seq.get(e.sequence_nr)
        if part is None:
            continue
        p, nested = e.cpu_parent, False
        while p is not None:  # count the outermost classified range only
            if _part(p) is not None or p.name.startswith("autograd::engine::evaluate_function"):
                nested = True
                break
            p = p.cpu_parent
        if not nested:
            totals[part] += e.cpu_time_total
    totals["rest"] = step_us - sum(v for k, v in totals.items() if k != "rest")
    return {k: v / 1e3 / steps for k, v in totals.items()} | {"step": step_us / 1e3 / steps}


def profile(stages: int, batch: int, backend: str, steps: int, encoder_amp: str | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = make_trainer(stages, batch, out_dir, encoder_amp)
        for module in (trainer.netG,):
            _label_forward(module, "G")
        for netD in trainer.netsD:
            for m in (netD, getattr(netD, "UNCOND_DNET", None), netD.COND_DNET):
                if m is not None:
                    _label_forward(m, "Ds")
        _label_forward(trainer._image_encoder, "image encoder")
        batches = next(iter(trainer._loader(0)))
        with attngan_fast.backend(backend):
            for _ in range(2):
                trainer.train_step(batches)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    with record_function(LABEL + "train_step"):
                        trainer.train_step(batches)
    return split(prof, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, action="append", help="1 and/or 2 (default both)")
    parser.add_argument("--batch", type=int, default=8, help="8: the README's rows (the demo trains at 16)")
    parser.add_argument("--backend", action="append", choices=["fast", "reference"], help="default: fast")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--encoder-amp", choices=tuple(AMP_DTYPES), help="the frozen image encoder's precision")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="attngan_fast.retain_freed_memory() first, as the CLI's training commands and the demo do")
    parser.add_argument("--tag", default="", help="a label for the rows (e.g. before / after)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.retain_freed_memory:
        attngan_fast.retain_freed_memory()
    _label_damsm()
    print(f"attngan_fast from {attngan_fast.__file__}, {args.threads} thread(s), {args.steps} steps")
    print("| run | step (ms) | " + " | ".join(PARTS) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in PARTS) + " |")
    for stages in args.stages or [1, 2]:
        for backend in args.backend or ["fast"]:
            t = profile(stages, args.batch, backend, args.steps, args.encoder_amp)
            cells = " | ".join(f"{t[p]:.1f} ({100 * t[p] / t['step']:.0f}%)" for p in PARTS)
            settings = (f", encoder {args.encoder_amp}" if args.encoder_amp else "") + (
                ", freed memory retained" if args.retain_freed_memory else "")
            print(f"| {args.tag} {backend}, {stages} stage(s), B={args.batch}{settings} | {t['step']:.1f} | {cells} |",
                  flush=True)


if __name__ == "__main__":
    main()
