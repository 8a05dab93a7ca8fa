"""Evaluation metrics: R-precision (DM-GAN's protocol)."""
from .r_precision import RPrecision, dataset_r_precision, r_precision

__all__ = ["RPrecision", "dataset_r_precision", "r_precision"]
