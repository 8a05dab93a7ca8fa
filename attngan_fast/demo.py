"""``attngan-fast demo``: the whole pipeline on a CPU in a few minutes, with no data and no weights.

1. synthetic birds (:mod:`attngan_fast.data.synthetic`), drawn in memory;
2. DAMSM pre-training (config ``demo_damsm``): text and image encoders;
3. AttnGAN training (config ``demo_birds``: two stages, 64 px then 128 px with the generator's word
   attention) for the time that is left, minus a reserve for 4-5: first the 64 px stage alone
   (:data:`STAGE1_SHARE` of that time, in ``gan_64px/``), then the two-stage model grown from it
   (``train_gan(..., grow_from=...)``) in ``gan/``; the frozen image encoder of the G step runs in
   bfloat16 where the CPU has bf16 arithmetic (:func:`encoder_amp`);
4. images and attention pictures for :data:`PROMPTS`: the generator's own word attention (each
   attention stage's maps over its image) and, in the last row, DAMSM's over the final image;
5. evaluation on the test captions: R-precision, the accuracy of every named attribute, the
   diversity of the unnamed ones, and FID / KID against the real test renders (tf-fid, when the
   ``metrics`` extra is installed).

Outputs under ``out``: ``damsm/``, ``gan_64px/``, ``gan/`` (snapshots, ``log.jsonl``, ``samples/``), ``prompts/``
(PNG per stage, ``*_attention.png``), ``evaluation.json`` and ``demo.json`` (timings, metrics).
The demo always starts from scratch (its DAMSM encoders are new): in a reused ``out`` the previous
GAN run in ``gan/`` is cleared (``train_gan(..., overwrite=True)``: its files only); a GAN training
still running in ``gan/`` makes the demo stop there (the run folder's lock).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from . import config
from .cpu_memory import retain_freed_memory
from .io import atomic_write_json

__all__ = ["PROMPTS", "DEFAULT_MINUTES", "run_demo"]

PROMPTS = (
    "a bird with wings that are black and a white belly",
    "a bird with wings that are blue and a red belly",
    "a bird with wings that are red and a yellow belly",
)
DEFAULT_MINUTES = 15.0
# minutes kept for the prompts and the evaluation after the GAN training (FID / KID: 0.75 more), on
# two CPU threads (they took 1.3-1.5 min in all there: docs/demo_recipe.md); doubled on one thread
EVAL_RESERVE_MINUTES = 0.85
FID_RESERVE_MINUTES = 0.75
# FID / KID of this many generated images against as many real test renders (Inception on a CPU)
FID_IMAGES = 200
# share of the GAN time spent on the 64 px stage alone (a step ~2.6x cheaper than both stages';
# 0.75 against 0.6: docs/demo_recipe.md)
STAGE1_SHARE = 0.75
# test captions of the diversity measure (8 images each, and 8 real renders)
DIVERSITY_CAPTIONS = 100


def run_demo(
    out_dir: str | Path,
    minutes: float = DEFAULT_MINUTES,
    *,
    seed: int = 0,
    threads: Optional[int] = None,
    progress: bool = True,
    damsm_overrides: Optional[dict[str, Any]] = None,
    gan_overrides: Optional[dict[str, Any]] = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo in ``out_dir`` within about ``minutes``; returns what ``demo.json`` holds, or,
    when SIGINT / SIGTERM stops a GAN stage, ``{"interrupted": <signal name>, "steps", "snapshot"}``
    (nothing after that stage runs; during DAMSM pre-training SIGINT raises KeyboardInterrupt).

    threads: torch CPU threads (None keeps torch's setting; ``attngan-fast demo`` passes the cores other
    processes leave free: on an idle 2-core CPU two threads run the two-stage step ~1.5x faster than one).
    The overrides change the shipped configs (tests use tiny ones).
    """
    from .metrics.evaluate import default_metrics, evaluate_generator, format_table
    from .sampling import Generator, damsm_attention
    from .training import train_gan
    from .training.damsm import load_encoders, pretrain_damsm

    start = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    retain_freed_memory()
    timings: dict[str, float] = {}

    log(f"[demo] 1/4 DAMSM pre-training on synthetic birds (budget {minutes:.1f} min in all)")
    damsm_cfg = config.load("demo_damsm", **(damsm_overrides or {}))
    damsm = pretrain_damsm(damsm_cfg, out / "damsm", seed=seed + 1, device="cpu", progress=progress, log=log)
    timings["damsm_s"] = time.monotonic() - start
    net_e = out / "damsm" / "Model" / f"text_encoder{damsm_cfg.TRAIN.MAX_EPOCH - 1}.pth"

    gan_cfg = config.load("demo_birds", **{**(gan_overrides or {}), "TRAIN.NET_E": str(net_e)})
    metrics, note = default_metrics(gan_cfg)
    if note:
        log(f"[demo] {note}")
    amp = encoder_amp()
    reserve = (EVAL_RESERVE_MINUTES + (FID_RESERVE_MINUTES if "fid" in metrics else 0.0)) * max(
        1.0, 2.0 / torch.get_num_threads())
    left = minutes - (time.monotonic() - start) / 60.0 - reserve
    log(f"[demo] 2/4 AttnGAN training for {max(left, 0.0):.1f} min: the 64 px stage alone, then both stages"
        f"{f' (image encoder in {amp})' if amp else ''}")
    grow_from = None
    if gan_cfg.TREE.BRANCH_NUM > 1:
        stage1 = train_gan(config.load("demo_birds", **{**(gan_overrides or {}), "TRAIN.NET_E": str(net_e),
                                                        "TREE.BRANCH_NUM": 1}),
                           _gan_options(out / "gan_64px", seed, STAGE1_SHARE * left, progress, amp), overwrite=True)
        if stage1["interrupted"]:
            return _interrupted(stage1, "the 64 px stage", log)
        grow_from = stage1["snapshot"]
        timings["gan_64px_s"] = time.monotonic() - start - timings["damsm_s"]
        left = minutes - (time.monotonic() - start) / 60.0 - reserve
        log(f"[demo] 2/4 both stages (grown from {grow_from}) for {max(left, 0.0):.1f} min")
    gan = train_gan(gan_cfg, _gan_options(out / "gan", seed, left, progress, amp), grow_from=grow_from, overwrite=True)
    if gan["interrupted"]:
        return _interrupted(gan, "the GAN training", log)
    timings["gan_s"] = time.monotonic() - start - timings["damsm_s"]

    log("[demo] 3/4 the prompts' images and attention maps")
    generator = Generator.from_checkpoint(gan["snapshot"])
    result = generator.generate(list(PROMPTS), seed=seed, num=4)
    encoders = load_encoders(gan_cfg, generator.vocab.n_words, net_e)
    sizes = [int(im.shape[-1]) for im in result.images]
    result.attention_labels = [f"G {sizes[j + 1]}px" for j in range(len(result.attention))] + ["DAMSM"]
    result.attention = [*result.attention, damsm_attention(result, *encoders, gan_cfg)]
    prompt_files = result.save(out / "prompts")

    log("[demo] 4/4 evaluation on the test captions")
    evaluation = evaluate_generator(generator, gan_cfg, metrics=metrics, damsm_encoders=encoders, seed=seed,
                                    diversity_captions=DIVERSITY_CAPTIONS, fid_images=FID_IMAGES, log=log)
    atomic_write_json(out / "evaluation.json", evaluation)
    timings["total_s"] = time.monotonic() - start
    summary = {
        "minutes_budget": minutes, "seconds": timings["total_s"], "timings": timings, "encoder_amp": amp,
        "damsm_r_precision_real_images": damsm.get("r_precision"),
        "gan": {"epochs": gan["epochs"], "steps": gan["steps"], "snapshot": gan["snapshot"]},
        **({"gan_64px": {"epochs": stage1["epochs"], "steps": stage1["steps"], "snapshot": stage1["snapshot"]}}
           if grow_from else {}),
        "evaluation": evaluation, "prompts": list(PROMPTS),
        "prompt_images": [str(p) for p in prompt_files],
    }
    atomic_write_json(out / "demo.json", summary)
    log(format_table(evaluation))
    steps = (f"{stage1['steps']} steps at 64 px, then " if grow_from else "") + f"{gan['steps']} steps"
    log(f"[demo] done in {timings['total_s'] / 60:.1f} min (DAMSM {timings['damsm_s']:.0f} s, GAN "
        f"{timings['gan_s']:.0f} s: {steps}); images in {out / 'prompts'}, results in "
        f"{out / 'demo.json'}")
    return summary


def _interrupted(run: dict[str, Any], what: str, log: Callable[[str], None]) -> dict[str, Any]:
    """The demo stops where SIGINT / SIGTERM stopped a GAN run (no later stage, no evaluation)."""
    log(f"[demo] interrupted by {run['interrupted']} in {what} after {run['steps']} steps (snapshot "
        f"{run['snapshot']}); no images, no evaluation")
    return {"interrupted": run["interrupted"], "steps": run["steps"], "snapshot": str(run["snapshot"])}


def encoder_amp() -> Optional[str]:
    """"bf16" where the CPU has bfloat16 arithmetic (AVX512-BF16 or AMX: the frozen image encoder of
    the G step then runs in it: ~1.2x the 64 px stage's images/s here), else None (emulated bf16 is
    slower)."""
    native = (getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported",
                                                                       "_is_amx_tile_supported"))
    return "bf16" if any(native) else None


def _gan_options(out: Path, seed: int, minutes: float, progress: bool, amp: Optional[str]) -> Any:
    """The demo's training options: EMA 0.99 (a short run), samples every 200 steps, the image encoder
    in ``amp`` (:func:`encoder_amp`)."""
    from .training import TrainOptions

    return TrainOptions(out_dir=str(out), seed=seed + 2, device="cpu", max_minutes=max(minutes, 0.05), ema_decay=0.99,
                        encoder_amp=amp, sample_every=200, log_every=20, progress=progress)
