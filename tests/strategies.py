"""Shared hypothesis strategies and small helpers for the loss, distance and modality tests.

* :func:`pkm_batches` draws P x K x M batches (identities x instances x modalities) with arbitrary,
  non-contiguous integer labels and the rows in shuffled order, as ``(embeddings, labels, modalities)``.
* :func:`sampler_layout` builds the official ``IdentitySampler`` layout: ``[VIS block | IR block]``, each
  block made of identities in contiguous groups of K rows, in the same identity order in both blocks.
* :func:`grid_randn` draws Gaussian values rounded to a 1/64 grid. Sums of squares and dot products of such
  values are exact in float32 (for moderate sizes), so float32 distances then carry no rounding error, in
  particular the official self-distance ``sqrt(clamp(0, 1e-12)) = 1e-6`` is exact. The references are
  compared with the library at the precision of the *input* dtype through :func:`assert_close_at`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from hypothesis import strategies as st
from torch import Tensor

F64 = torch.float64

#: Tolerances of a library result against a float64 reference, by the dtype of the library's inputs.
TOLERANCES = {
    torch.float64: {"rtol": 1e-7, "atol": 1e-7},
    torch.float32: {"rtol": 2e-5, "atol": 2e-5},
}

#: A label range wide enough to catch any code that uses label values as indices.
LABEL_VALUES = st.integers(min_value=-(2**40), max_value=2**40)


def assert_close_at(
    actual: Tensor, expected: Tensor, dtype: torch.dtype, *, rtol: float | None = None, atol: float | None = None
) -> None:
    """Compare a library result with a float64 reference at the precision of ``dtype``, the input dtype.

    The result itself must carry ``dtype``: a float64 input computed in float32 loses precision silently.
    """
    assert actual.dtype == dtype, f"the result is {actual.dtype} for {dtype} inputs: computed at a lower precision"
    tol = dict(TOLERANCES[dtype])
    if rtol is not None:
        tol["rtol"] = rtol
    if atol is not None:
        tol["atol"] = atol
    torch.testing.assert_close(actual.to(F64), expected.to(F64), **tol)


def grid_randn(*shape: int, generator: torch.Generator, scale: float = 1.0, dtype: torch.dtype = F64) -> Tensor:
    """Gaussian values times ``scale``, rounded to multiples of 1/64 (exact float32 dot products, see above)."""
    return ((torch.randn(*shape, generator=generator, dtype=F64) * scale * 64).round() / 64).to(dtype)


def loop_distance_matrix(x: Tensor) -> Tensor:
    """The official distance, ``sqrt(clamp(|a|^2 + |b|^2 - 2 a.b, min=1e-12))``, one pair at a time in float64."""
    x = x.to(F64)
    rows = []
    for a in x:
        row = []
        for b in x:
            squared = (a * a).sum() + (b * b).sum() - 2.0 * (a * b).sum()
            row.append(squared.clamp(min=1e-12).sqrt())
        rows.append(torch.stack(row))
    return torch.stack(rows)


def sampler_layout(label_values: Sequence[int], num_instances: int) -> tuple[Tensor, Tensor]:
    """``(labels, modalities)`` of an official ``IdentitySampler`` batch after ``cat(visible, infrared)``.

    Identity ``label_values[p]`` occupies rows ``[p K, (p + 1) K)`` of the visible block and the same rows of
    the infrared block (offset by ``P K``): contiguous groups, equal counts, the same order in both blocks.
    """
    block = torch.tensor(list(label_values), dtype=torch.long).repeat_interleave(num_instances)
    modalities = torch.cat([torch.zeros_like(block), torch.ones_like(block)])
    return torch.cat([block, block]), modalities


def relabel(labels: Tensor, new_values: Sequence[int]) -> Tensor:
    """Map the distinct values of ``labels`` (in sorted order) one-to-one onto ``new_values``."""
    old = torch.unique(labels)
    assert len(new_values) >= len(old)
    lookup = {int(o): int(n) for o, n in zip(old.tolist(), new_values[: len(old)], strict=True)}
    return torch.tensor([lookup[int(v)] for v in labels.tolist()], dtype=labels.dtype)


def bijections(size: int) -> st.SearchStrategy[list[int]]:
    """``size`` distinct arbitrary (large, negative) label values: the image of a bijective relabelling."""
    return st.lists(LABEL_VALUES, min_size=size, max_size=size, unique=True)


ModalityLayout = Literal["both", "one", "mixed"]
Coincide = Literal["none", "duplicate", "identity", "all"]


@st.composite
def pkm_batches(
    draw: st.DrawFn,
    *,
    num_ids: tuple[int, int] = (1, 4),
    num_instances: tuple[int, int] = (1, 3),
    modalities: ModalityLayout = "both",
    dim: tuple[int, int] = (2, 6),
    leading: tuple[int, ...] = (),
    scale: float = 1.0,
    coincide: Coincide | Literal["any"] = "none",
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor, Tensor]:
    """A P x K x M batch ``(embeddings (*leading, N, D), labels (N,), modalities (N,))`` in shuffled order.

    Args:
        num_ids: range of P, the number of identities.
        num_instances: range of K, the rows per identity and modality.
        modalities: ``"both"``: every identity has K rows in each modality (M = 2); ``"one"``: the whole
            batch is in one (drawn) modality; ``"mixed"``: each identity has a drawn non-empty subset of the
            modalities, so some identities are present in one modality only.
        dim: range of D.
        leading: leading dimensions of the embeddings (e.g. ``(1 + K_branches,)`` for CPM), sharing the rows.
        scale: standard deviation of the embeddings (rounded to the 1/64 grid, see :func:`grid_randn`).
        coincide: make embeddings coincide: ``"duplicate"`` copies some rows onto others, ``"identity"``
            collapses every identity to one point, ``"all"`` makes all rows equal; ``"any"`` draws one.
        dtype: dtype of the embeddings.
    """
    p = draw(st.integers(*num_ids))
    k = draw(st.integers(*num_instances))
    d = draw(st.integers(*dim))
    values = draw(bijections(p))
    if modalities == "both":
        present = [(0, 1)] * p
    elif modalities == "one":
        present = [(draw(st.sampled_from((0, 1))),)] * p
    else:
        present = [draw(st.sampled_from(((0,), (1,), (0, 1)))) for _ in range(p)]
    rows = [(values[i], m) for i in range(p) for m in present[i] for _ in range(k)]
    order = draw(st.permutations(range(len(rows))))
    labels = torch.tensor([rows[i][0] for i in order], dtype=torch.long)
    mods = torch.tensor([rows[i][1] for i in order], dtype=torch.long)
    n = len(rows)

    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    x = grid_randn(*leading, n, d, generator=generator, scale=scale)
    mode = draw(st.sampled_from(("duplicate", "identity", "all"))) if coincide == "any" else coincide
    if mode == "duplicate":
        sources = draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n))
        copy = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        index = torch.tensor([s if c else i for i, (s, c) in enumerate(zip(sources, copy, strict=True))])
        x = x[..., index, :]
    elif mode == "identity":
        x = x[..., [labels.tolist().index(v) for v in labels.tolist()], :]
    elif mode == "all":
        x = x[..., :1, :].expand_as(x).clone()
    return x.to(dtype), labels, mods
