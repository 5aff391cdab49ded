"""Datasets in their published on-disk layouts, the synthetic dataset, sampling and transforms."""

from .records import ImageRecord, VIReIDDataset, relabel
from .sampler import CrossModalityIdentitySampler, EpochLength
from .transforms import (
    CIFAR_MEAN,
    GRAY_WEIGHTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRAIN_PIPELINES,
    ChannelAdapGray,
    ChannelExchange,
    ChannelRandomErasing,
    RandomErasingFill,
    TrainPipeline,
    build_test_transform,
    build_train_transform,
    random_erasing_params,
    register_pipeline,
    replicate_channel,
    weighted_gray,
)

__all__ = [
    "CIFAR_MEAN",
    "GRAY_WEIGHTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRAIN_PIPELINES",
    "ChannelAdapGray",
    "ChannelExchange",
    "ChannelRandomErasing",
    "CrossModalityIdentitySampler",
    "EpochLength",
    "ImageRecord",
    "RandomErasingFill",
    "TrainPipeline",
    "VIReIDDataset",
    "build_test_transform",
    "build_train_transform",
    "random_erasing_params",
    "register_pipeline",
    "relabel",
    "replicate_channel",
    "weighted_gray",
]
