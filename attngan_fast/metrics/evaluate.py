"""Evaluation of a generator: generate images for the test captions and score them.

For test image k the caption is the one the test split draws for it (epoch 0 of the split's seed,
as :func:`~attngan_fast.metrics.r_precision.dataset_r_precision` uses); more images than test
images (``num_images``) take the captions of later epochs. Metrics:

* ``r_precision``: DM-GAN's protocol against DAMSM encoders (by default the ones G trained with);
* ``attributes``: synthetic birds only, per attribute a caption names (wing and belly colour
  always; head colour, beak, size when it names them) the share of the images that have it,
  predicted by a classifier of every attribute trained on real renders of the train split;
* ``diversity``: synthetic birds only, ``diversity_samples`` images per test caption; per attribute
  the caption leaves unnamed (head colour, beak, size when unnamed; background, facing), the mean
  number of distinct predicted classes among them, relative to ``diversity_samples`` real renders
  sharing the caption's named attributes (1.0: as diverse as the data; 1 / that count: collapse);
* ``fid`` and ``kid``: against the real test images (or reference statistics from
  ``attngan-fast fid-stats``, ``fid_stats``), under a named feature protocol (docs/metrics.md):
  ``tf-fid`` by default when the ``metrics`` extra is installed, else ``torchvision-legacy`` with an
  Inception-v3 weights file; the protocol is written into the result;
* ``is``: the Inception Score (10 splits) with a user-provided classifier (``inception_weights``,
  a torchvision Inception-v3 state_dict), named in the result by file and SHA-1.

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
from ..data.synthetic import ATTRIBUTE_CLASSES, named_attributes
from .attributes import (
    AttributeClassifier,
    attribute_accuracy,
    distinct_classes,
    predict_attributes,
    train_attribute_classifier,
)
from .fid import (
    METRICS_EXTRA_HINT,
    MetricsExtraMissing,
    ReferenceStats,
    build_extractor,
    dataset_batches,
    default_protocol,
    extract_features,
    file_sha1,
)
from .inception import fid_from_features, inception_score
from .kid import kernel_inception_distance
from .r_precision import dataset_r_precision

__all__ = ["METRICS", "split_captions", "real_attribute_set", "caption_attributes", "unnamed_diversity",
           "default_metrics", "reference_statistics", "feature_metrics", "evaluate_generator", "format_table"]

METRICS = ("r_precision", "attributes", "diversity", "is", "fid", "kid")
SYNTHETIC_METRICS = ("attributes", "diversity")


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
    """The split's real images (last stage, resized to ``size``) and their labels of every attribute."""
    dataset.set_epoch(0)
    images = torch.stack([dataset[k].imgs[-1] for k in range(len(dataset))])
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return images, {name: torch.from_numpy(dataset.attribute_array(name)) for name in ATTRIBUTE_CLASSES}


def caption_attributes(dataset: Any, captions: Tensor, lens: Tensor) -> dict[str, Tensor]:
    """{attribute: (N,) bool, whether caption i names it} for word ids (N, T) of synthetic captions."""
    named = [named_attributes(dataset.ixtoword[int(w)] for w in caption[: int(n)]) for caption, n in zip(captions, lens)]
    return {a: torch.tensor([a in row for row in named]) for a in ATTRIBUTE_CLASSES}


def unnamed_diversity(
    generator: Any, classifier: AttributeClassifier, dataset: Any, captions: Tensor, lens: Tensor,
    owners: np.ndarray, *, samples: int = 8, seed: int = 0, chunk: int = 32, batch_size: int = 32,
) -> dict[str, dict[str, float]]:
    """The ``diversity`` metric (module docstring) for captions (N, T) of the synthetic test images
    ``owners`` (N,): {attribute: {"generated", "real": mean distinct classes among ``samples``,
    "relative": their ratio, "captions": how many leave it unnamed}}, for every attribute some
    caption leaves unnamed. Generated in chunks of ``chunk`` captions (noise seed ``seed + 1 + c``)."""
    if samples < 2:
        raise ValueError(f"samples: expected >= 2 (distinct classes among one image are always 1), got {samples}")
    named = caption_attributes(dataset, captions, lens)
    distinct: dict[str, list[list[Tensor]]] = {a: [[], []] for a in ATTRIBUTE_CLASSES}
    for c, start in enumerate(range(0, len(captions), chunk)):
        rows = slice(start, start + chunk)
        fakes = generator.generate_ids(captions[rows].repeat_interleave(samples, 0), lens[rows].repeat_interleave(samples),
                                       seed=seed + 1 + c, batch_size=batch_size)[0][-1]
        real = torch.cat([dataset.variant_images(int(k), [a for a in ATTRIBUTE_CLASSES if named[a][start + i]],
                                                 samples, seed) for i, k in enumerate(owners[rows])])
        for which, images in enumerate((fakes, real)):
            for a, predicted in predict_attributes(classifier, images).items():
                distinct[a][which].append(distinct_classes(predicted, samples))
    out = {}
    for a, (fake, real) in distinct.items():
        unnamed = ~named[a]
        if unnamed.any():
            g, r = (float(torch.cat(d)[unnamed].double().mean()) for d in (fake, real))
            out[a] = {"generated": g, "real": r, "relative": g / r, "captions": int(unnamed.sum())}
    return out


def default_metrics(cfg: Config, inception_weights: Optional[str] = None) -> tuple[list[str], Optional[str]]:
    """The metrics an evaluation computes unless told: R-precision, attributes (synthetic birds),
    FID and KID when a protocol is available, IS with a classifier; and a note when FID is not
    available (how to get it)."""
    metrics = ["r_precision"] + (list(SYNTHETIC_METRICS) if cfg.DATASET_NAME == "synthetic_birds" else [])
    available = default_protocol(inception_weights) is not None
    metrics += ["fid", "kid"] if available else []
    metrics += ["is"] if inception_weights else []
    return metrics, None if available else f"FID/KID not computed: {METRICS_EXTRA_HINT}"


def reference_statistics(extractor: Any, dataset: Any, *, count: Optional[int] = None, batch_size: int = 50,
                         progress: bool = False, description: str = "") -> ReferenceStats:
    """FID reference statistics of a caption data set's real images (first ``count`` items)."""
    features, _ = extract_features(extractor, dataset_batches(dataset, batch_size, count), progress=progress,
                                   desc="inception features (real)")
    return ReferenceStats.from_features(features, extractor.protocol, description or f"{len(features)} real images")


def feature_metrics(reference: ReferenceStats, features: np.ndarray, kid_subsets: int = 10) -> dict[str, Any]:
    """``fid`` and ``kid`` ({mean, stderr, subsets}; fewer subsets for small sets, none below 4
    images a set) of ``features`` (N, 2048) against ``reference``."""
    out: dict[str, Any] = {"fid": fid_from_features(reference.features, features)}
    subsets = min(kid_subsets, reference.count // 2, len(features) // 2)
    if subsets >= 2:
        mean, stderr = kernel_inception_distance(reference.features, features, subsets=subsets)
        out["kid"] = {"mean": mean, "stderr": stderr, "subsets": subsets}
    return out


def evaluate_generator(
    generator: Any,
    cfg: Config,
    *,
    metrics: Optional[Sequence[str]] = None,
    damsm_encoders: Optional[tuple[torch.nn.Module, torch.nn.Module]] = None,
    inception_weights: Optional[str] = None,
    fid_protocol: Optional[str] = None,
    resize: Optional[str] = None,
    fid_stats: Optional[str] = None,
    fid_images: Optional[int] = None,
    num_images: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 32,
    classifier_epochs: int = 15,
    diversity_samples: int = 8,
    diversity_captions: Optional[int] = None,
    kid_subsets: int = 10,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score ``generator`` (an :class:`attngan_fast.Generator`) on the test split of ``cfg``.

    metrics: default :func:`default_metrics`. damsm_encoders: (text encoder, image encoder) for
    R-precision. fid_protocol / resize: the FID feature protocol and resize filter
    (:mod:`attngan_fast.metrics.fid`); fid_stats: an ``.npz`` of ``attngan-fast fid-stats`` to use
    as the reference (refused when made under another protocol); fid_images: FID / KID of the
    first that many images against as many real ones (default all: a CPU's budget may want fewer). diversity_samples: images per
    test caption for ``diversity``, on the first ``diversity_captions`` (default all) test captions. Metrics that cannot run (no
    encoders, not synthetic birds, no Inception weights or metrics extra) raise ValueError.
    """
    from ..data import build_dataset

    for name, value in (("num_images", 1 if num_images is None else num_images), ("batch_size", batch_size),
                        ("diversity_captions", diversity_captions or 1), ("fid_images", fid_images or 1)):
        if value < 1:
            raise ValueError(f"{name}: expected >= 1, got {value}")
    notes = []
    if metrics is None:
        metrics, note = default_metrics(cfg, inception_weights)
        notes += [note] if note else []
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"metrics: unknown {unknown}; expected some of {METRICS}")
    test_set = build_dataset(cfg, "test", seed=seed, augment=False)
    for name in SYNTHETIC_METRICS:
        if name in metrics and not hasattr(test_set, "attribute_array"):
            raise ValueError(f"metric {name!r} needs synthetic birds (DATASET_NAME: synthetic_birds)")
    if "r_precision" in metrics and damsm_encoders is None:
        raise ValueError("metric 'r_precision' needs the DAMSM encoders")
    if "is" in metrics and not inception_weights:
        raise ValueError("metric 'is' needs a classifier: a torchvision Inception-v3 weights file (inception_weights)")
    want_fid = "fid" in metrics or "kid" in metrics
    if want_fid:
        fid_protocol = fid_protocol or default_protocol(inception_weights)
        if fid_protocol is None:
            raise MetricsExtraMissing(f"metrics 'fid' / 'kid': {METRICS_EXTRA_HINT}; or give a torchvision "
                                      "Inception-v3 weights file (inception_weights) for the torchvision-legacy protocol")
    n = len(test_set) if num_images is None else num_images
    # the Inception networks are read before generating: a bad weights file fails at once
    extractor = (build_extractor(fid_protocol, resize=resize, inception_weights=inception_weights,
                                 device=generator.device) if want_fid else None)
    is_network = extractor
    if "is" in metrics and (extractor is None or extractor.name != "torchvision-legacy"):
        is_network = build_extractor("torchvision-legacy", inception_weights=inception_weights, device=generator.device)
    start = time.perf_counter()
    captions, lens, owners = split_captions(test_set, n)
    images = generator.generate_ids(captions, lens, seed=seed, batch_size=batch_size, progress=progress)[0][-1]
    result: dict[str, Any] = {"images": n, "image_size": int(images.shape[-1]), "seed": seed,
                              "generate_seconds": time.perf_counter() - start}
    if notes:
        result["notes"] = notes
    log(f"generated {n} images for the test captions in {result['generate_seconds']:.1f} s")
    if "r_precision" in metrics:
        if n < len(test_set):
            raise ValueError(f"R-precision needs an image for each of the {len(test_set)} test images")
        text_encoder, image_encoder = damsm_encoders
        rp = dataset_r_precision(text_encoder, image_encoder, test_set, images=images[: len(test_set)], seed=seed)
        result["r_precision"] = rp.to_dict()
        log(f"R-precision: {rp}")
    if any(m in metrics for m in SYNTHETIC_METRICS):
        real, labels = real_attribute_set(build_dataset(cfg, "train", seed=seed, augment=False))
        classifier = train_attribute_classifier(real, labels, ATTRIBUTE_CLASSES, epochs=classifier_epochs, seed=seed,
                                                flip_swaps=("facing",))
        real_test, test_labels = real_attribute_set(test_set)
        result["attribute_accuracy_real"] = attribute_accuracy(classifier, real_test, test_labels)
        log("attribute classifier on real test renders: " + ", ".join(
            f"{a} {100 * v:.1f} %" for a, v in result["attribute_accuracy_real"].items()))
    if "attributes" in metrics:
        named = caption_attributes(test_set, captions, lens)
        targets = {a: test_labels[a][owners] for a in ATTRIBUTE_CLASSES if named[a].any()}
        result["attribute_accuracy"] = attribute_accuracy(classifier, images, targets, masks=named)
        result["attribute_captions"] = {a: int(named[a].sum()) for a in result["attribute_accuracy"]}
        log("named attribute accuracy: " + ", ".join(
            f"{a} {100 * v:.1f} %" for a, v in result["attribute_accuracy"].items()))
    if "diversity" in metrics:
        m = min(n, len(test_set), diversity_captions or len(test_set))
        result["diversity"] = unnamed_diversity(generator, classifier, test_set, captions[:m], lens[:m], owners[:m],
                                                samples=diversity_samples, seed=seed, batch_size=batch_size)
        log(f"diversity of unnamed attributes ({diversity_samples} images per caption, relative to real renders): "
            + ", ".join(f"{a} {d['relative']:.2f}" for a, d in result["diversity"].items()))
    if extractor is not None:
        if fid_stats:
            reference = ReferenceStats.load(fid_stats, expected_protocol=extractor.protocol)
        else:
            count = min(len(test_set), fid_images or len(test_set))
            reference = reference_statistics(extractor, test_set, count=count, batch_size=batch_size,
                                             progress=progress,
                                             description=f"{cfg.DATASET_NAME} test split, {count} real images")
        features, probs = extract_features(extractor, images[:fid_images], batch_size=batch_size, progress=progress,
                                           desc="inception features (generated)")
        scores = feature_metrics(reference, features, kid_subsets)
        result["fid_protocol"] = extractor.protocol
        result["fid_reference"] = {"source": reference.source, "images": reference.count,
                                   **({"file": str(fid_stats)} if fid_stats else {})}
        if "fid" in metrics:
            result["fid"] = scores["fid"]
            log(f"FID ({fid_protocol}, resize {extractor.resize}): {result['fid']:.3f}")
        if "kid" in metrics and "kid" in scores:
            result["kid"] = scores["kid"]
            log(f"KID ({fid_protocol}): {scores['kid']['mean']:.5f} ± {scores['kid']['stderr']:.5f}")
    if "is" in metrics:
        if is_network is not extractor:
            probs = extract_features(is_network, images, batch_size=batch_size, progress=progress,
                                     desc="inception classifier")[1]
        mean, std = inception_score(probs)
        result["inception_score"] = {"mean": mean, "std": std, "splits": 10, "classifier": {
            "file": str(inception_weights), "sha1": file_sha1(inception_weights), "classes": int(probs.shape[1])}}
        log(f"Inception Score: {mean:.3f} ± {std:.3f} (classifier {inception_weights})")
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
        what = f"{name} colour" if ATTRIBUTE_CLASSES.get(name) == 10 else name
        rows.append((f"{what} accuracy (%)", f"{100 * value:.1f}" + (f"  (real: {100 * real:.1f})" if real else "")))
    for name, d in result.get("diversity", {}).items():
        rows.append((f"{name} diversity (vs real)", f"{d['relative']:.2f}  ({d['generated']:.2f} / {d['real']:.2f} "
                                                     "distinct classes)"))
    if "inception_score" in result:
        score = result["inception_score"]
        rows.append((f"Inception Score ({score['classifier']['classes']} classes, {score['splits']} splits)",
                     f"{score['mean']:.3f} ± {score['std']:.3f}"))
    if "fid_protocol" in result:
        proto, ref = result["fid_protocol"], result["fid_reference"]
        where = f"{proto['protocol']}, resize {proto['resize']}, vs {ref['images']} real"
        if "fid" in result:
            rows.append((f"FID ({where})", f"{result['fid']:.3f}"))
        if "kid" in result:
            rows.append((f"KID x 1000 ({proto['protocol']})",
                         f"{1000 * result['kid']['mean']:.3f} ± {1000 * result['kid']['stderr']:.3f}"))
    for note in result.get("notes", []):
        rows.append(("note", note))
    width = max(len(r[0]) for r in rows)
    line = "-" * (width + 3 + max(len(r[1]) for r in rows))
    return "\n".join([line] + [f"{k:<{width}} | {v}" for k, v in rows] + [line])
