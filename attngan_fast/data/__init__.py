"""Data: the original AttnGAN layouts, a user's own captions, synthetic birds, batching.

>>> from attngan_fast import config, data
>>> cfg = config.load("synthetic_birds")
>>> train = data.build_dataset(cfg, "train", seed=0)
>>> batch = next(iter(data.data_loader(train, batch_size=4, seed=0)))
>>> [tuple(x.shape) for x in batch.imgs], tuple(batch.captions.shape)
([(4, 3, 64, 64)], (4, 18))
"""
from .base import CaptionDataset, Sample
from .batching import Batch, collate, data_loader
from .datasets import TextDataset, build_dataset, detect_layout, read_own_captions
from .synthetic import BirdAttributes, SyntheticBirds, write_birds_layout
from .text import Vocabulary, load_captions_pickle, save_captions_pickle, tokenize
from .transforms import ImageTransform, bbox_crop

__all__ = [
    "Batch", "BirdAttributes", "CaptionDataset", "ImageTransform", "Sample", "SyntheticBirds", "TextDataset",
    "Vocabulary", "bbox_crop", "build_dataset", "collate", "data_loader", "detect_layout", "load_captions_pickle",
    "read_own_captions", "save_captions_pickle", "tokenize", "write_birds_layout",
]
