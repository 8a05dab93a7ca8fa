"""Attributes of synthetic birds: does a generated bird have what its caption names, and does
what the caption leaves open vary with the noise?

A small CNN (:class:`AttributeClassifier`) is trained on real synthetic renders to predict each
attribute (any set of heads: wing / belly / head colour, beak, size, background, facing);
:func:`attribute_accuracy` is the share of generated images whose predicted attribute equals the
caption's (chance 1/classes); :func:`distinct_classes` counts the distinct predictions among the
samples of one caption (the diversity measure: generated against real renders that share the
caption's named attributes).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AttributeClassifier", "train_attribute_classifier", "predict_attributes", "attribute_accuracy",
           "distinct_classes"]


class AttributeClassifier(nn.Module):
    """images (N, 3, H, W) in [-1, 1] (resized to ``input_size``) -> {attribute: logits (N, classes)}.

    Four conv-BN-ReLU stages (stride 2) and global average pooling, one linear head per attribute.
    """

    def __init__(self, num_classes: Mapping[str, int], width: int = 16, input_size: int = 64) -> None:
        super().__init__()
        self.num_classes = dict(num_classes)
        self.input_size = input_size
        layers, cin = [], 3
        for cout in (width, 2 * width, 4 * width, 4 * width):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: nn.Linear(cin, n) for name, n in self.num_classes.items()})

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.dim() != 4 or images.size(1) != 3:
            raise ValueError(f"images: expected (N, 3, H, W), got {tuple(images.shape)}")
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        h = self.features(images).mean(dim=(2, 3))
        return {name: head(h) for name, head in self.heads.items()}


def train_attribute_classifier(
    images: Tensor,
    labels: Mapping[str, Tensor],
    num_classes: Mapping[str, int],
    *,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    flip_swaps: Sequence[str] = (),
) -> AttributeClassifier:
    """Train a classifier on real images (N, 3, H, W) in [-1, 1] with labels {attribute: (N,) int64}.

    Adam, cross-entropy summed over attributes, random horizontal flips; flip_swaps: the binary
    attributes a flip inverts (facing left / right). Returns it in eval mode.
    """
    n = images.size(0)
    for name, y in labels.items():
        if y.shape != (n,):
            raise ValueError(f"labels[{name!r}]: expected ({n},), got {tuple(y.shape)}")
    for name in flip_swaps:
        if num_classes.get(name) != 2:
            raise ValueError(f"flip_swaps: {name!r} is not a two-class attribute of num_classes")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = AttributeClassifier(num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            x = images[idx].to(device)
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x = torch.where(flip.to(device).view(-1, 1, 1, 1), x.flip(3), x)
            logits = model(x)
            targets = {k: torch.where(flip, 1 - y[idx], y[idx]) if k in flip_swaps else y[idx]
                       for k, y in labels.items()}
            loss = sum(F.cross_entropy(logits[k], targets[k].to(device)) for k in labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def predict_attributes(model: AttributeClassifier, images: Tensor, batch_size: int = 256) -> dict[str, Tensor]:
    """{attribute: predicted class (N,) int64} for images (N, 3, H, W) in [-1, 1]."""
    device = next(model.parameters()).device
    model.eval()
    out: dict[str, list[Tensor]] = {name: [] for name in model.num_classes}
    for batch in images.split(batch_size):
        for name, logits in model(batch.to(device)).items():
            out[name].append(logits.argmax(dim=1).cpu())
    return {name: torch.cat(v) for name, v in out.items()}


def attribute_accuracy(
    model: AttributeClassifier, images: Tensor, targets: Mapping[str, Tensor], batch_size: int = 256,
    predictions: Optional[Mapping[str, Tensor]] = None, masks: Optional[Mapping[str, Tensor]] = None,
) -> dict[str, float]:
    """{attribute: share of images whose predicted attribute equals ``targets[attribute]`` (N,)};
    masks: {attribute: (N,) bool}, the images that count for it (those whose caption names it;
    default all). An attribute no image counts for is left out."""
    predictions = predictions or predict_attributes(model, images, batch_size)
    out = {}
    for name, target in targets.items():
        hit = predictions[name] == target.cpu()
        if masks is not None and name in masks:
            hit = hit[masks[name].cpu()]
        if len(hit):
            out[name] = float(hit.double().mean())
    return out


def distinct_classes(predictions: Tensor, samples: int) -> Tensor:
    """Distinct classes among each group of ``samples`` consecutive predictions: (N * samples,)
    int64 -> (N,) int64 (row i: predictions[i * samples : (i + 1) * samples])."""
    if predictions.dim() != 1 or samples < 1 or len(predictions) % samples:
        raise ValueError(f"predictions: expected (N * {samples},), got {tuple(predictions.shape)}")
    groups = predictions.view(-1, samples).sort(dim=1).values
    return 1 + (groups[:, 1:] != groups[:, :-1]).sum(dim=1)
