"""Evaluation of a generator: generate images for the test captions and score them.

For test image k the caption is the one the test split draws for it (epoch 0 of the split's seed,
as :func:`~attngan_fast.metrics.r_precision.dataset_r_precision` uses); more images than test
images (``num_images``) take the captions of later epochs. Metrics:

* ``r_precision``: DM-GAN's protocol against DAMSM encoders (by default the ones G trained with);
* ``attributes``: synthetic birds only, the share of images whose wing / belly colour (predicted by
  a classifier trained on real renders of the train split) is the caption's;
* ``is`` and ``fid``: with an Inception-v3 weights file (``inception_weights``); FID against the
  real test images.

Returns a JSON-ready dict; :func:`format_table` prints it.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import Config
from .attributes import attribute_accuracy, train_attribute_classifier
from .inception import InceptionV3, fid_from_features, inception_outputs, inception_score
from .r_precision import dataset_r_precision

__all__ = ["METRICS", "split_captions", "real_attribute_set", "evaluate_generator", "format_table"]

METRICS = ("r_precision", "attributes", "is", "fid")
ATTRIBUTES = ("wing", "belly")


def split_captions(dataset: Any, num: int) -> tuple[Tensor, Tensor, np.ndarray]:
    """Captions (num, WORDS_NUM), lengths (num,) and image indices (num,) of the split's items,
    epoch 0 first (item k of epoch e is row e * len(dataset) + k)."""
    captions, lens, index = [], [], []
    for row in range(num):
        epoch, k = divmod(row, len(dataset))
        if k == 0:
            dataset.set_epoch(epoch)
        sample = dataset[k]
        captions.append(sample.caption)
        lens.append(sample.cap_len)
        index.append(k)
    dataset.set_epoch(0)
    return torch.stack(captions), torch.tensor(lens), np.asarray(index)


def real_attribute_set(dataset: Any, size: int = 64) -> tuple[Tensor, dict[str, Tensor]]:
    """The split's real images (last stage, resized to ``size``) and their wing / belly labels."""
    dataset.set_epoch(0)
    images = torch.stack([dataset[k].imgs[-1] for k in range(len(dataset))])
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return images, {name: torch.from_numpy(dataset.attribute_array(name)) for name in ATTRIBUTES}


def evaluate_generator(
    generator: Any,
    cfg: Config,
    *,
    metrics: Sequence[str] = ("r_precision", "attributes"),
    damsm_encoders: Optional[tuple[torch.nn.Module, torch.nn.Module]] = None,
    inception_weights: Optional[str] = None,
    num_images: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 32,
    classifier_epochs: int = 15,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score ``generator`` (an :class:`attngan_fast.Generator`) on the test split of ``cfg``.

    damsm_encoders: (text encoder, image encoder) for R-precision. Metrics that cannot run
    (no encoders, not synthetic birds, no Inception weights) raise ValueError.
    """
    from ..data import build_dataset

    for name, value in (("num_images", 1 if num_images is None else num_images), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name}: expected >= 1, got {value}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"metrics: unknown {unknown}; expected some of {METRICS}")
    test_set = build_dataset(cfg, "test", seed=seed, augment=False)
    if "attributes" in metrics and not hasattr(test_set, "attribute_array"):
        raise ValueError("metric 'attributes' needs synthetic birds (DATASET_NAME: synthetic_birds)")
    if "r_precision" in metrics and damsm_encoders is None:
        raise ValueError("metric 'r_precision' needs the DAMSM encoders")
    if ("is" in metrics or "fid" in metrics) and not inception_weights:
        raise ValueError("metrics 'is' / 'fid' need an Inception-v3 weights file (inception_weights)")
    n = len(test_set) if num_images is None else num_images
    # read the weights file before generating: a bad file fails at once
    inception = InceptionV3(inception_weights).to(generator.device) if "is" in metrics or "fid" in metrics else None
    start = time.perf_counter()
    captions, lens, owners = split_captions(test_set, n)
    images = generator.generate_ids(captions, lens, seed=seed, batch_size=batch_size, progress=progress)[0][-1]
    result: dict[str, Any] = {"images": n, "image_size": int(images.shape[-1]), "seed": seed,
                              "generate_seconds": time.perf_counter() - start}
    log(f"generated {n} images for the test captions in {result['generate_seconds']:.1f} s")
    if "r_precision" in metrics:
        if n < len(test_set):
            raise ValueError(f"R-precision needs an image for each of the {len(test_set)} test images")
        text_encoder, image_encoder = damsm_encoders
        rp = dataset_r_precision(text_encoder, image_encoder, test_set, images=images[: len(test_set)], seed=seed)
        result["r_precision"] = rp.to_dict()
        log(f"R-precision: {rp}")
    if "attributes" in metrics:
        train_set = build_dataset(cfg, "train", seed=seed)
        real, labels = real_attribute_set(train_set)
        classifier = train_attribute_classifier(real, labels, {a: 10 for a in ATTRIBUTES}, epochs=classifier_epochs,
                                                seed=seed)
        real_test, test_labels = real_attribute_set(test_set)
        targets = {a: test_labels[a][owners] for a in ATTRIBUTES}
        result["attribute_accuracy"] = attribute_accuracy(classifier, images, targets)
        result["attribute_accuracy_real"] = attribute_accuracy(classifier, real_test, test_labels)
        log("attribute accuracy: " + ", ".join(f"{a} {100 * v:.1f} %" for a, v in result["attribute_accuracy"].items())
            + " (classifier on real test renders: " + ", ".join(
                f"{a} {100 * v:.1f} %" for a, v in result["attribute_accuracy_real"].items()) + ")")
    if inception is not None:
        pool, probs = inception_outputs(inception, images, batch_size)
        if "is" in metrics:
            mean, std = inception_score(probs)
            result["inception_score"] = {"mean": mean, "std": std}
            log(f"Inception Score: {mean:.3f} ± {std:.3f}")
        if "fid" in metrics:
            real = torch.stack([test_set[k].imgs[-1] for k in range(len(test_set))])
            result["fid"] = fid_from_features(inception_outputs(inception, real, batch_size)[0], pool)
            log(f"FID: {result['fid']:.3f}")
    result["seconds"] = time.perf_counter() - start
    return result


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of the metrics in ``result``."""
    rows = [("images", f"{result['images']} at {result['image_size']} px")]
    if "r_precision" in result:
        rp = result["r_precision"]
        rows.append(("R-precision (%)", f"{rp['mean']:.2f} ± {rp['std']:.2f}"))
    for name, value in result.get("attribute_accuracy", {}).items():
        real = result.get("attribute_accuracy_real", {}).get(name)
        rows.append((f"{name} colour accuracy (%)", f"{100 * value:.1f}" + (f"  (real: {100 * real:.1f})" if real else "")))
    if "inception_score" in result:
        rows.append(("Inception Score", f"{result['inception_score']['mean']:.3f} ± {result['inception_score']['std']:.3f}"))
    if "fid" in result:
        rows.append(("FID", f"{result['fid']:.3f}"))
    width = max(len(r[0]) for r in rows)
    line = "-" * (width + 3 + max(len(r[1]) for r in rows))
    return "\n".join([line] + [f"{k:<{width}} | {v}" for k, v in rows] + [line])
