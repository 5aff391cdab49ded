"""Tests for the MPANet batch layout of the identity sampler (identity blocks, infrared and visible alternating)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vireid_layers import Modality
from vireid_layers.data import CrossModalityIdentitySampler, ImageRecord, MPANetIdentitySampler


def records(identities: int = 6, per_modality: int = 5) -> list[ImageRecord]:
    return [
        ImageRecord(Path(f"{pid}_{m}_{j}.jpg"), pid, 1 + 2 * m, Modality(m))
        for pid in range(identities)
        for m in (0, 1)
        for j in range(per_modality + pid % 3)
    ]


@given(st.integers(0, 1000), st.integers(1, 4), st.integers(1, 4), st.booleans())
def test_layout_and_same_draw_as_parent(seed: int, p: int, k: int, replacement: bool) -> None:
    data = records()
    ours = MPANetIdentitySampler(data, p, k, seed=seed, replacement=replacement, epoch_length=3)
    parent = CrossModalityIdentitySampler(data, p, k, seed=seed, replacement=replacement, epoch_length=3)
    for batch, reference in zip(ours, parent, strict=True):
        assert len(batch) == 2 * p * k
        blocks = torch.tensor([int(data[i].identity) for i in batch]).view(p, 2 * k)
        assert (blocks == blocks[:, :1]).all() and len(set(blocks[:, 0].tolist())) == p  # one identity per block
        modalities = [int(data[i].modality) for i in batch]
        assert modalities == [1, 0] * (p * k)  # infrared first, alternating
        assert sorted(batch) == sorted(reference)  # the same images, only reordered
        # The parent's visible block of identity j, in order, is the visible column of block j.
        visible = torch.tensor(reference[: p * k]).view(p, k)
        infrared = torch.tensor(reference[p * k :]).view(p, k)
        laid = torch.tensor(batch).view(p, k, 2)
        assert torch.equal(laid[..., 0], infrared) and torch.equal(laid[..., 1], visible)


def test_default_epoch_length_resume_and_repr() -> None:
    data = records()
    sampler = MPANetIdentitySampler(data, 2, 2, seed=3)
    total = len(data)
    assert sampler.epoch_length == "all_images" and len(sampler) == -(-total // 8)
    first = list(sampler)
    sampler.load_state_dict({**sampler.state_dict(), "num_yielded": 1})
    assert list(sampler) == first[1:]
    assert repr(sampler).startswith("MPANetIdentitySampler(")
    by_labels = MPANetIdentitySampler.from_labels([7, 7, 9, 9], [0, 1, 0, 1], 2, 1, epoch_length=2)
    assert isinstance(by_labels, MPANetIdentitySampler)
    assert [[i % 2 for i in b] for b in by_labels] == [[1, 0, 1, 0]] * 2


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="identities"):
        MPANetIdentitySampler(records(2), 3, 2)
    with pytest.raises(TypeError, match="records"):
        MPANetIdentitySampler([1, 2], 1, 1)  # type: ignore[list-item]
