"""Tests of the record types: the validation hold-out of VIReIDDataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vireid_layers import Modality
from vireid_layers.data import ImageRecord, VIReIDDataset, read_sysu_mm01
from vireid_layers.data.datasets.sysu import read_id_file
from vireid_layers.evaluation import SYSUProtocol


def toy(ids: list[int], images: int = 2) -> VIReIDDataset:
    """Training records of the original ``ids`` (labels 0..C-1 in increasing id order), both modalities."""
    order = sorted(ids)
    train = tuple(
        ImageRecord(Path(f"/d/{pid}/{m}{k}.jpg"), order.index(pid), 1 + 2 * m, Modality(m))
        for pid in ids
        for m in (0, 1)
        for k in range(images)
    )
    test = (ImageRecord(Path("/d/test.jpg"), 99, 1, Modality.VISIBLE),)
    return VIReIDDataset("toy", Path("/d"), train, test, tuple(order))


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(1, 500), min_size=2, max_size=12), st.data())
def test_hold_out_partitions_and_relabels(ids: set[int], data: st.DataObject) -> None:
    ds = toy(list(ids))
    held = data.draw(st.sets(st.sampled_from(sorted(ids)), min_size=1, max_size=len(ids) - 1))
    train, val = ds.hold_out(held)
    # Every training record ends in exactly one side, with its original id recoverable.
    kept = [(r.path, train.train_identities[r.identity]) for r in train.train]
    held_out = [(r.path, r.identity) for r in val.test]
    assert sorted(kept + held_out) == sorted((r.path, ds.train_identities[r.identity]) for r in ds.train)
    assert set(train.train_identities) == ids - held and {r.identity for r in val.test} == held
    # Contiguous labels in increasing order of the original id; the test split is untouched.
    assert sorted({r.identity for r in train.train}) == list(range(len(ids - held)))
    assert list(train.train_identities) == sorted(ids - held)
    assert train.test == ds.test and train.name == "toy"
    assert val.train == () and val.name == "toy-val" and val.root == ds.root


@pytest.mark.parametrize(
    ("held", "match"),
    [([], "at least one"), ([3, 4], r"unknown ids \[4\]"), ([1, 2, 3], "every training identity")],
)
def test_hold_out_rejects(held: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        toy([1, 2, 3]).hold_out(held)


def test_hold_out_sysu_val_ids_runs_the_protocol(tmp_path: Path, make_sysu: Callable[..., object]) -> None:
    make_sysu(tmp_path, train_ids=(2, 5, 11), val_ids=(7, 9), test_ids=(3, 8), images=2)
    ds = read_sysu_mm01(tmp_path)
    train, val = ds.hold_out(read_id_file(tmp_path / "exp" / "val_id.txt"))
    assert train.train_identities == (2, 5, 11) and train.num_train_identities == 3
    assert sorted({r.identity for r in val.test}) == [7, 9]
    # The SYSU protocol draws its queries and gallery from the held-out identities.
    protocol = SYSUProtocol(num_trials=1)
    assert {r.identity for r in protocol.query(val)} == {7, 9}
    assert {r.identity for r in protocol.gallery(val)} == {7, 9}
