"""Tests for the modality convention: ``Modality`` parsing and splitting / merging a batch by modality."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vireid_layers.modality import Modality, merge_by_modality, split_by_modality

# ------------------------------------------------------------------------------------------------- Modality


def test_values() -> None:
    assert Modality.VISIBLE == 0 and Modality.INFRARED == 1
    assert [m.value for m in Modality] == [0, 1]
    assert torch.tensor([Modality.VISIBLE, Modality.INFRARED]).tolist() == [0, 1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Modality.VISIBLE, Modality.VISIBLE),
        (Modality.INFRARED, Modality.INFRARED),
        (0, Modality.VISIBLE),
        (1, Modality.INFRARED),
        ("visible", Modality.VISIBLE),
        (" RGB ", Modality.VISIBLE),
        ("Vis", Modality.VISIBLE),
        ("v", Modality.VISIBLE),
        ("infrared", Modality.INFRARED),
        ("IR", Modality.INFRARED),
        ("thermal", Modality.INFRARED),
        ("NIR", Modality.INFRARED),
        ("t", Modality.INFRARED),
        ("i", Modality.INFRARED),
    ],
)
def test_parse(value: object, expected: Modality) -> None:
    parsed = Modality.parse(value)  # type: ignore[arg-type]
    assert parsed is expected and isinstance(parsed, Modality)


@pytest.mark.parametrize("value", ["", "color", "visible light", 2, -1, True, False, 1.0, None, "0"])
def test_parse_errors(value: object) -> None:
    with pytest.raises(ValueError, match="modality") as info:
        Modality.parse(value)  # type: ignore[arg-type]
    assert repr(value) in str(info.value)  # the message shows what was received


@pytest.mark.parametrize(("modal", "expected"), [(1, Modality.VISIBLE), (2, Modality.INFRARED)])
def test_from_official(modal: int, expected: Modality) -> None:
    assert Modality.from_official(modal) is expected


@pytest.mark.parametrize("modal", [0, 3, -1, "1"])
def test_from_official_errors(modal: object) -> None:
    with pytest.raises(ValueError, match="modal"):
        Modality.from_official(modal)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- split / merge


def test_split_example() -> None:
    x = torch.arange(10.0).view(5, 2)
    vis, ir, vis_index, ir_index = split_by_modality(x, torch.tensor([1, 0, 0, 1, 0]))
    assert vis[:, 0].tolist() == [2.0, 4.0, 8.0] and ir[:, 0].tolist() == [0.0, 6.0]
    assert vis_index.tolist() == [1, 2, 4] and ir_index.tolist() == [0, 3]


@given(
    modalities=st.lists(st.sampled_from([0, 1]), min_size=0, max_size=12),
    trailing=st.sampled_from([(), (3,), (2, 4)]),
    as_bool=st.booleans(),
)
def test_split_merge_round_trip(modalities: list[int], trailing: tuple[int, ...], as_bool: bool) -> None:
    n = len(modalities)
    x = torch.randn(n, *trailing)
    mods = torch.tensor(modalities, dtype=torch.bool if as_bool else torch.long)
    vis, ir, vis_index, ir_index = split_by_modality(x, mods)
    assert vis.shape == (modalities.count(0), *trailing) and ir.shape == (modalities.count(1), *trailing)
    assert vis_index.tolist() == [i for i, m in enumerate(modalities) if m == 0]
    assert ir_index.tolist() == [i for i, m in enumerate(modalities) if m == 1]
    torch.testing.assert_close(merge_by_modality(vis, ir, vis_index, ir_index), x, rtol=0, atol=0)


def test_merge_gradient() -> None:
    x = torch.randn(6, 3, requires_grad=True)
    parts = split_by_modality(x, torch.tensor([0, 1, 1, 0, 1, 0]))
    merge_by_modality(*parts).mul(torch.arange(6.0).unsqueeze(1)).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.arange(6.0).unsqueeze(1).expand(6, 3))


@pytest.mark.parametrize(
    ("modalities", "error"),
    [
        (torch.tensor([0, 1, 2, 0]), ValueError),
        (torch.tensor([0, -1, 1, 0]), ValueError),
        (torch.tensor([0, 1, 0]), ValueError),
        (torch.tensor([[0, 1, 0, 1]]), ValueError),
        (torch.tensor([0.0, 1.0, 0.0, 1.0]), TypeError),
        ([0, 1, 0, 1], TypeError),
    ],
)
def test_split_bad_modalities(modalities: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="modalities"):
        split_by_modality(torch.randn(4, 2), modalities)  # type: ignore[arg-type]


def test_split_bad_values_listed() -> None:
    with pytest.raises(ValueError, match=r"\[-1, 2\]"):
        split_by_modality(torch.randn(4, 2), torch.tensor([2, -1, 1, 2]))


def test_split_bad_input() -> None:
    with pytest.raises(TypeError, match="x"):
        split_by_modality([[1.0], [2.0]], torch.tensor([0, 1]))  # type: ignore[arg-type]
