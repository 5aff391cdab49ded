"""Tests for the shared distances and per-identity centres (``vireid_layers.distances``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import F64, LABEL_VALUES, assert_close_at, grid_randn, pkm_batches

from vireid_layers.distances import (
    class_centers,
    class_modality_centers,
    first_occurrence,
    paired_euclidean,
    pairwise_euclidean,
    pairwise_squared_euclidean,
    safe_sqrt,
)

DTYPES = [torch.float32, F64]


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


# ------------------------------------------------------------------------------------------------- pairwise


@pytest.mark.parametrize("leading", [(), (3,)])
def test_pairwise_matches_cdist(leading: tuple[int, ...]) -> None:
    x, y = _randn(*leading, 10, 5, seed=1), _randn(*leading, 7, 5, seed=2)
    expected = torch.cdist(x.double(), y.double())
    assert expected.min() > 0.1  # away from 0, where the clamp takes over
    actual = pairwise_euclidean(x, y)
    assert actual.shape == (*leading, 10, 7)
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pairwise_squared_euclidean(x, y).double(), expected**2, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(pairwise_euclidean(x), pairwise_euclidean(x, x))


@given(batch=st.sampled_from([(), (2,)]).flatmap(lambda lead: pkm_batches(num_ids=(1, 5), dim=(1, 6), leading=lead)))
def test_pairwise_exact_on_grid(batch: tuple) -> None:
    """On the 1/64 grid the float32 squared distances are exact: the result is sqrt(max(|a - b|^2, 1e-12))."""
    x = batch[0]
    expected = (torch.cdist(x.double(), x.double()) ** 2).clamp(min=1e-12).sqrt()
    torch.testing.assert_close(pairwise_euclidean(x).double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_diagonal(dtype: torch.dtype) -> None:
    """The self-distance is the official sqrt(1e-12) = 1e-6 (exactly, when the squared norm is exact)."""
    x = grid_randn(9, 6, generator=torch.Generator().manual_seed(3)) if dtype == torch.float32 else _randn(9, 6)
    diagonal = pairwise_euclidean(x.to(dtype)).diagonal()
    torch.testing.assert_close(diagonal, torch.full((9,), 1e-6, dtype=dtype), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(torch.float32, torch.float32), (F64, F64), (torch.bfloat16, torch.float32), (torch.float16, torch.float32)],
)
def test_dtype(dtype: torch.dtype, expected: torch.dtype) -> None:
    """At least float32: low-precision inputs are promoted, float64 is kept."""
    x = _randn(4, 3).to(dtype)
    assert pairwise_squared_euclidean(x).dtype == expected
    assert pairwise_euclidean(x).dtype == expected
    assert paired_euclidean(x, x.flip(0)).dtype == expected


def test_bf16_autocast() -> None:
    x = _randn(8, 16, seed=4)
    for inputs in (x, x.bfloat16()):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            distances = pairwise_euclidean(inputs)
            paired = paired_euclidean(inputs, inputs.flip(0))
        assert distances.dtype == torch.float32 and paired.dtype == torch.float32
        reference = pairwise_euclidean(inputs.float())
        torch.testing.assert_close(distances, reference)
        torch.testing.assert_close(paired, reference.flip(1).diagonal())


def test_pairwise_gradient_finite_at_coincidence() -> None:
    x = torch.ones(4, 3, requires_grad=True)
    pairwise_euclidean(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# -------------------------------------------------------------------------------------------------- safe_sqrt


def test_safe_sqrt() -> None:
    x = torch.tensor([0.0, -1e-3, 1e-13, 4.0, 1e-6], requires_grad=True)
    y = safe_sqrt(x)
    torch.testing.assert_close(y, torch.tensor([1e-6, 1e-6, 1e-6, 2.0, 1e-3]), rtol=1e-6, atol=0)
    y.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 0.0, 0.0, 0.25, 500.0]), rtol=1e-5, atol=0)
    assert x.grad[0].item() == 0.0
    torch.testing.assert_close(safe_sqrt(torch.tensor([0.0]), eps=0.25), torch.tensor([0.5]))


# ----------------------------------------------------------------------------------------------- paired


@pytest.mark.parametrize(("x_shape", "y_shape"), [((6, 4), (6, 4)), ((2, 6, 4), (2, 6, 4)), ((3, 6, 4), (6, 4))])
def test_paired_is_pairwise_diagonal(x_shape: tuple, y_shape: tuple) -> None:
    x, y = _randn(*x_shape, seed=5), _randn(*y_shape, seed=6)
    actual = paired_euclidean(x, y)
    expected = pairwise_euclidean(x, y.expand(x_shape)).diagonal(dim1=-2, dim2=-1)
    assert actual.shape == x_shape[:-1]
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(paired_euclidean(x, x), torch.full(x_shape[:-1], 1e-6), rtol=0, atol=1e-3)


# ------------------------------------------------------------------------------------ first occurrence / centres


def loop_first_occurrence(labels: list[int]) -> list[int]:
    return [labels.index(v) for v in labels]


@given(labels=st.lists(LABEL_VALUES | st.integers(-3, 3), min_size=1, max_size=12))
def test_first_occurrence(labels: list[int]) -> None:
    out = first_occurrence(torch.tensor(labels, dtype=torch.long))
    assert out.dtype == torch.long
    assert out.tolist() == loop_first_occurrence(labels)


def test_first_occurrence_empty() -> None:
    out = first_occurrence(torch.zeros(0, dtype=torch.long))
    assert out.shape == (0,) and out.dtype == torch.long


def loop_centers(x: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None) -> tuple:
    """Per (modality, slot) means, one group at a time; slots are first-occurrence positions."""
    x = x.to(F64)
    lab = labels.tolist()
    n, m_count = len(lab), 1 if modalities is None else 2
    centers = x.new_zeros(*x.shape[:-2], m_count, n, x.shape[-1])
    counts = torch.zeros(m_count, n)
    for s in range(n):
        for m in range(m_count):
            rows = [i for i in range(n) if lab.index(lab[i]) == s and (modalities is None or modalities[i] == m)]
            counts[m, s] = len(rows)
            if rows:
                centers[..., m, s, :] = x[..., rows, :].mean(-2)
    is_slot = torch.tensor([lab.index(v) == i for i, v in enumerate(lab)])
    return centers, counts, is_slot


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("leading", [(), (3,), (2, 2)])
def test_class_modality_centers_reference(dtype: torch.dtype, leading: tuple[int, ...]) -> None:
    labels = torch.tensor([40, -7, 40, 12, -7, 40, 12, 99])
    modalities = torch.tensor([1, 0, 0, 1, 1, 1, 0, 0])
    x = _randn(*leading, 8, 5, seed=7, dtype=dtype)
    result = class_modality_centers(x, labels, modalities)
    centers, counts, is_slot = loop_centers(x, labels, modalities)
    assert result.centers.shape == (*leading, 2, 8, 5)
    assert_close_at(result.centers, centers, dtype)
    torch.testing.assert_close(result.counts.float(), counts)
    assert result.slot.tolist() == loop_first_occurrence(labels.tolist())
    assert result.is_slot.tolist() == is_slot.tolist()


@given(batch=pkm_batches(modalities="mixed", leading=(2,)))
def test_centers_property(batch: tuple) -> None:
    x, labels, modalities = batch
    for mods in (modalities, None):
        result = class_modality_centers(x, labels, mods) if mods is not None else class_centers(x, labels)
        centers, counts, is_slot = loop_centers(x, labels, mods)
        assert_close_at(result.centers, centers, torch.float32)
        torch.testing.assert_close(result.counts.float(), counts)
        assert result.is_slot.tolist() == is_slot.tolist()


def test_class_centers() -> None:
    x = torch.tensor([[1.0], [3.0], [5.0], [7.0]])
    result = class_centers(x, torch.tensor([4, 4, 9, 4]))
    assert result.centers.shape == (1, 4, 1)
    torch.testing.assert_close(result.centers[0, :, 0], torch.tensor([11.0 / 3, 0.0, 5.0, 0.0]))
    assert result.counts.tolist() == [[3.0, 0.0, 1.0, 0.0]]


def test_centers_gradient_and_bf16() -> None:
    x = _randn(6, 4, seed=8).bfloat16().requires_grad_(True)
    labels, modalities = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 0, 1, 0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = class_modality_centers(x, labels, modalities)
    assert result.centers.dtype == torch.float32
    result.centers.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.usefixtures("fresh_dynamo")
def test_compile_centers() -> None:
    x = _randn(2, 8, 4, seed=9)
    labels = torch.tensor([5, 3, 5, 3, 8, 8, 3, 5])
    modalities = torch.tensor([0, 1, 1, 0, 0, 1, 0, 1])
    compiled = torch.compile(class_modality_centers, backend="eager", fullgraph=True)
    expected, actual = class_modality_centers(x, labels, modalities), compiled(x, labels, modalities)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e)
    distances = torch.compile(pairwise_euclidean, backend="eager", fullgraph=True)
    torch.testing.assert_close(distances(x), pairwise_euclidean(x))
