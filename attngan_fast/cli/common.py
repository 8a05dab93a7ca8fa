"""Options shared by the subcommands: config, threads, device, backend, progress; the
:class:`UsageError` of bad option values and the ``type=`` checks of counts, sizes and times."""
from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any, Callable, Optional

from .. import config
from ..cpu_memory import retain_freed_memory

__all__ = ["UsageError", "number", "positive_int", "nonnegative_int", "nonnegative_float", "open_fraction",
           "add_config_arguments", "overrides_from_args", "config_from_args", "add_threads_argument",
           "set_threads", "set_up_cpu", "add_progress_argument", "add_backend_argument", "add_device_argument",
           "device_from_args", "add_generator_arguments", "generator_from_args"]


class UsageError(Exception):
    """A bad combination or value of options: ``main`` prints ``error: <message>`` and exits with 2."""


def number(kind: type, low: float, *, strict: bool = False, high: Optional[float] = None) -> Callable[[str], Any]:
    """An argparse ``type=``: ``kind(text)`` that is >= ``low`` (> with ``strict``) and, with
    ``high``, < ``high``; anything else is a usage error naming the accepted range."""
    what = "an integer" if kind is int else "a number"
    bound = f"> {low:g}" if strict else f">= {low:g}"
    want = f"{what} {bound}" + (f" and < {high:g}" if high is not None else "")

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        ok = (value > low if strict else value >= low) and (high is None or value < high)
        if not ok or (isinstance(value, float) and math.isnan(value)):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    parse.__name__ = f"{kind.__name__} {bound}"  # argparse names the type in some messages
    return parse


positive_int = number(int, 1)
nonnegative_int = number(int, 0)
nonnegative_float = number(float, 0.0)
open_fraction = number(float, 0.0, strict=True, high=1.0)  # in (0, 1)


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--cfg NAME_OR_PATH`` and repeatable ``--set KEY=VALUE`` (value parsed as YAML 1.2)."""
    parser.add_argument("--cfg", required=required,
                        help=f"config file or shipped name ({', '.join(config.available())})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set TRAIN.MAX_EPOCH=5 (repeatable)")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--set KEY=VALUE`` overrides as ``{"KEY": value}`` (values parsed as YAML 1.2:
    ``2e-4`` is a float, see :func:`attngan_fast.config.parse_yaml`; an empty value is "")."""
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key.strip()] = config.parse_yaml(value, f"--set {item!r}") if value.strip() else ""
        except ValueError as e:
            raise UsageError(str(e)) from None
    return overrides


def config_from_args(args: argparse.Namespace, base: Optional[config.Config] = None) -> config.Config:
    """The config named by ``--cfg`` (or ``base`` when ``--cfg`` is not given) with the ``--set``
    overrides applied."""
    overrides = overrides_from_args(args)
    try:
        if base is not None and not args.cfg:
            return base.replace(**overrides)
        return config.load(args.cfg, **overrides)
    except ValueError as e:
        raise UsageError(str(e)) from None


def add_threads_argument(parser: argparse.ArgumentParser, default: Optional[int] = None) -> None:
    """``--threads N``: torch's CPU threads; default: the cores other processes leave free."""
    auto = "torch's count, lowered to the cores other processes keep busy (load average, runnable now)"
    parser.add_argument("--threads", type=positive_int, default=default,
                        help=f"CPU threads for torch (default: {default if default else auto})")


def set_threads(requested: Optional[int]) -> int:
    """Set torch's intra-op threads to ``requested``, or by default to ``cores - busy`` (at least 1).

    Many small ops each end in a barrier of all threads; on a CPU that other jobs keep busy, threads
    that wait for a descheduled peer spin, and a step gets 10x-50x slower than with fewer threads.
    ``busy`` (:func:`busy_cores`) is the 1-minute load average, unless other processes are not
    running right now (a job that has just ended still weighs on the average for a minute or two).
    Returns the count set.
    """
    import torch

    if requested is None:
        requested = torch.get_num_threads()
        requested = max(1, min(requested, int((os.cpu_count() or requested) - busy_cores() + 0.5)))
    elif requested < 1:
        raise ValueError(f"threads: expected >= 1, got {requested}")
    torch.set_num_threads(requested)
    return requested


def set_up_cpu(requested: Optional[int]) -> int:
    """:func:`set_threads`, then :func:`attngan_fast.retain_freed_memory` (freed tensors stay in the
    heap instead of being page-faulted anew: ~1.2x the demo's GAN step, ~5% of FID's Inception pass
    over 200 images); what every command that computes does first. Returns the thread count set."""
    threads = set_threads(requested)
    retain_freed_memory()
    return threads


PROC_LOADAVG = "/proc/loadavg"
# reads of PROC_LOADAVG's running count, and the pause between two
LOADAVG_SAMPLES, LOADAVG_INTERVAL = 5, 0.02


def busy_cores() -> float:
    """Cores that other processes keep busy: min(1-minute load average, processes runnable now).

    "Runnable now" is the median over ``LOADAVG_SAMPLES`` reads of ``/proc/loadavg``'s running count,
    less this process; where that file is missing (not Linux) only the load average counts (0 without one).
    """
    try:
        average = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this platform
        return 0.0
    counts = []
    for i in range(LOADAVG_SAMPLES):
        try:
            with open(PROC_LOADAVG, encoding="ascii") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return average
        if i + 1 < LOADAVG_SAMPLES:
            time.sleep(LOADAVG_INTERVAL)
    return min(average, float(sorted(counts)[len(counts) // 2]))


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars (``args.progress`` is False); per-epoch lines stay."""
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=True,
                        help="no progress bars (the per-epoch and final lines are still printed)")


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """``--backend fast|reference``: the fused kernels (default) or the original math."""
    parser.add_argument("--backend", choices=("fast", "reference"), default="fast",
                        help="fused kernels (default) or the original math in plain PyTorch")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda``; default (None): :func:`device_from_args` picks cuda when available."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")


def device_from_args(args: argparse.Namespace) -> str:
    """``--device``, or "cuda" when a GPU is visible, else "cpu"."""
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    """A trained generator: ``--checkpoint`` (a training snapshot) or the original files
    (``--netG --text-encoder --captions --cfg``), ``--mask-mode``, ``--weights``, ``--device``."""
    parser.add_argument("--checkpoint", help="a training snapshot (checkpoint_epoch_*.pt)")
    parser.add_argument("--netG", help="original format: G state_dict, e.g. netG_epoch_600.pth")
    parser.add_argument("--text-encoder", help="original format: text_encoder200.pth")
    parser.add_argument("--captions", help="original format: captions.pickle (the training vocabulary)")
    parser.add_argument("--cfg", help="config name or file (with --netG), e.g. eval_bird")
    parser.add_argument("--mask-mode", choices=("per_sample", "original"), default=None,
                        help="'original' reproduces the released checkpoints' attention masking")
    parser.add_argument("--weights", choices=("ema", "current"), default="ema", help="snapshot: EMA or current G")
    add_device_argument(parser)


def generator_from_args(args: argparse.Namespace) -> Any:
    """The :class:`attngan_fast.sampling.Generator` of :func:`add_generator_arguments`' options
    (``ValueError`` / ``FileNotFoundError`` as raised by ``Generator.from_checkpoint``)."""
    from ..sampling import Generator

    return Generator.from_checkpoint(args.checkpoint, netG=args.netG, text_encoder=args.text_encoder,
                                     captions=args.captions, cfg=args.cfg, device=device_from_args(args),
                                     mask_mode=args.mask_mode, weights=args.weights)
