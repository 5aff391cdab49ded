"""Tests of build_train_loader (identity-balanced batches of both modalities) on a tiny synthetic dataset."""

from __future__ import annotations

import pytest
import torch

from vireid_layers.data import (
    CrossModalityIdentitySampler,
    ImageSample,
    build_dataset,
    build_test_transform,
    build_train_loader,
)
from vireid_layers.data.datasets.synthetic import make_synthetic_dataset

TRANSFORM = build_test_transform(32, 16)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    root = make_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"),
        num_identities=8,
        train_identities=4,
        images_per_camera=2,
        height=32,
        width=16,
    )
    return build_dataset("synthetic", root)


def test_train_loader_batches(dataset) -> None:
    loader = build_train_loader(
        dataset.train, TRANSFORM, num_identities=3, num_instances=2, epoch_length=4, seed=1, num_replicas=1, rank=0
    )
    assert isinstance(loader.batch_sampler, CrossModalityIdentitySampler) and len(loader) == 4
    assert not loader.persistent_workers
    batches = list(loader)
    assert len(batches) == 4
    for batch in batches:
        assert isinstance(batch, ImageSample) and batch.image.shape == (12, 3, 32, 16)
        assert batch.image.dtype == torch.float32
        ids, mods = batch.identity, batch.modality
        assert len(ids.unique()) == 3
        for identity in ids.unique():
            assert [int((mods[ids == identity] == m).sum()) for m in (0, 1)] == [2, 2]
    # The same seed gives the same batches.
    again = build_train_loader(
        dataset.train, TRANSFORM, num_identities=3, num_instances=2, epoch_length=4, seed=1, num_replicas=1, rank=0
    )
    assert [b.identity.tolist() for b in again] == [b.identity.tolist() for b in batches]


def test_train_loader_workers_and_errors(dataset) -> None:
    loader = build_train_loader(dataset.train, None, num_identities=2, num_instances=1, num_workers=1, pin_memory=True)
    assert loader.persistent_workers and loader.num_workers == 1 and loader.pin_memory
    with pytest.raises(ValueError, match="num_workers"):
        build_train_loader(dataset.train, None, num_identities=2, num_instances=1, num_workers=-1)
    with pytest.raises(ValueError, match="num_identities"):
        build_train_loader(dataset.train, None, num_identities=0, num_instances=1)
