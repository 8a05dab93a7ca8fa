"""Evaluation metrics: R-precision (DM-GAN's protocol), Inception Score, FID and KID under named
feature protocols (docs/metrics.md), attribute accuracy."""
from .attributes import AttributeClassifier, attribute_accuracy, predict_attributes, train_attribute_classifier
from .fid import PROTOCOLS, RESIZE_FILTERS, FeatureExtractor, ReferenceStats, build_extractor, extract_features
from .inception import (
    InceptionV3,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_outputs,
    inception_score,
    psd_sqrt,
    trace_sqrt_product,
)
from .kid import kernel_inception_distance
from .r_precision import RPrecision, dataset_r_precision, r_precision

__all__ = [
    "AttributeClassifier", "FeatureExtractor", "InceptionV3", "PROTOCOLS", "RESIZE_FILTERS", "RPrecision",
    "ReferenceStats", "attribute_accuracy", "build_extractor", "dataset_r_precision", "extract_features",
    "feature_statistics", "fid_from_features", "frechet_distance", "inception_outputs", "inception_score",
    "kernel_inception_distance", "predict_attributes", "psd_sqrt", "r_precision", "trace_sqrt_product",
    "train_attribute_classifier",
]
