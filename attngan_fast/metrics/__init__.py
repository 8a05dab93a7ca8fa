"""Evaluation metrics: R-precision (DM-GAN's protocol), Inception Score, FID, attribute accuracy."""
from .attributes import AttributeClassifier, attribute_accuracy, predict_attributes, train_attribute_classifier
from .inception import (
    InceptionV3,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_outputs,
    inception_score,
)
from .r_precision import RPrecision, dataset_r_precision, r_precision

__all__ = [
    "AttributeClassifier", "InceptionV3", "RPrecision", "attribute_accuracy", "dataset_r_precision",
    "feature_statistics", "fid_from_features", "frechet_distance", "inception_outputs", "inception_score",
    "predict_attributes", "r_precision", "train_attribute_classifier",
]
