"""Evaluation metrics: Inception Score, FID, attribute accuracy (synthetic birds)."""
from .attributes import AttributeClassifier, attribute_accuracy, predict_attributes, train_attribute_classifier
from .inception import (
    InceptionV3,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_outputs,
    inception_score,
)

__all__ = [
    "AttributeClassifier", "InceptionV3", "attribute_accuracy", "feature_statistics", "fid_from_features",
    "frechet_distance", "inception_outputs", "inception_score", "predict_attributes", "train_attribute_classifier",
]
