"""Pair distances against a per-pair loop, their invariances, and the histogram counts drawn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vireid_layers.visualize import pair_distances, plot_distance_histograms

GROUPS = ("same_modality_intra", "same_modality_inter", "cross_modality_intra", "cross_modality_inter")


def _reference(x: torch.Tensor, ids: list[int], mods: list[int], metric: str, normalize: bool = True) -> dict:
    """Every pair i < j in row-major order, its distance from the definition, in its group."""
    rows = x.double().tolist()
    out: dict[str, list[float]] = {g: [] for g in GROUPS}
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            a, b = rows[i], rows[j]
            na, nb = math.sqrt(sum(v * v for v in a)), math.sqrt(sum(v * v for v in b))
            if metric == "cosine":
                d = 1 - sum(p * q for p, q in zip(a, b, strict=True)) / (na * nb)
            else:
                if normalize:
                    a, b = [v / na for v in a], [v / nb for v in b]
                d = math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b, strict=True)))
            side = "same_modality" if mods[i] == mods[j] else "cross_modality"
            kind = "intra" if ids[i] == ids[j] else "inter"
            out[f"{side}_{kind}"].append(d)
    return out


def _batch(seed: int, n: int = 14) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, 5, generator=gen, dtype=torch.float64),
        torch.randint(0, 4, (n,), generator=gen),
        torch.randint(0, 2, (n,), generator=gen),
    )


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("normalize", [True, False])
def test_pair_distances_match_the_definition(metric: str, normalize: bool) -> None:
    x, ids, mods = _batch(0)
    groups = pair_distances(x, ids, mods, metric=metric, normalize=normalize)
    reference = _reference(x, ids.tolist(), mods.tolist(), metric, normalize)
    for name in GROUPS:
        got = getattr(groups, name)
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), reference[name], atol=2e-6 if metric == "euclidean" else 1e-12)
    assert sum(getattr(groups, g).numel() for g in GROUPS) == 14 * 13 // 2


def test_float32_features_give_float32_distances(render) -> None:
    x, ids, mods = _batch(4)
    groups = pair_distances(x.float(), ids, mods)
    reference = _reference(x.float(), ids.tolist(), mods.tolist(), "cosine")
    for name in GROUPS:
        assert getattr(groups, name).dtype == torch.float32
        np.testing.assert_allclose(getattr(groups, name).numpy(), reference[name], atol=1e-6)
    render(plot_distance_histograms(x.float(), ids, mods))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert pair_distances(x.bfloat16(), ids, mods).same_modality_inter.dtype == torch.float32


@given(seed=st.integers(0, 2**16), shift=st.integers(-(2**40), 2**40))
def test_pair_distances_invariances(seed: int, shift: int) -> None:
    x, ids, mods = _batch(seed, n=9)
    base = pair_distances(x, ids, mods)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(seed))
    for other in (
        pair_distances(x[perm], ids[perm], mods[perm]),  # batch order
        pair_distances(x, ids * 7 + shift, mods),  # label renaming
        pair_distances(x, ids, 1 - mods),  # swapping the modalities
    ):
        for name in GROUPS:
            a, b = getattr(base, name).sort().values, getattr(other, name).sort().values
            torch.testing.assert_close(a, b)
    for name in GROUPS:
        values = getattr(base, name)
        assert torch.isfinite(values).all() and (values >= -1e-12).all()


def test_degenerate_batches_and_bad_input(render) -> None:
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    one_identity = pair_distances(x, torch.zeros(5, dtype=torch.long), torch.tensor([0, 0, 1, 1, 1]))
    assert one_identity.same_modality_inter.numel() == 0 and one_identity.cross_modality_inter.numel() == 0
    one_modality = pair_distances(x, torch.arange(5), torch.zeros(5, dtype=torch.long))
    assert one_modality.cross_modality_intra.numel() == 0 and one_modality.same_modality_inter.numel() == 10
    single = pair_distances(x[:1], torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    assert all(v.numel() == 0 for v in single)
    fig = render(plot_distance_histograms(x[:1], torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)))
    for ax in fig.axes:
        for patch in ax.patches:
            assert np.isfinite(patch.get_data().values).all() and not patch.get_data().values.any()
    with pytest.raises(ValueError, match="non-finite"):
        pair_distances(
            torch.full((2, 2), float("nan")), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="metric"):
        pair_distances(x, torch.arange(5), torch.zeros(5, dtype=torch.long), metric="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bins"):
        plot_distance_histograms(x, torch.arange(5), torch.zeros(5, dtype=torch.long), bins=0)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_histogram_counts_match_a_plain_reference(render, metric: str) -> None:
    x, ids, mods = _batch(2, n=24)
    fig = render(plot_distance_histograms(x, ids, mods, bins=12, metric=metric, title="toy"))
    reference = _reference(x, ids.tolist(), mods.tolist(), metric)
    every = [d for values in reference.values() for d in values]
    edges = np.linspace(min(every), max(every), 13)
    width = edges[1] - edges[0]
    same_ax, cross_ax = fig.axes
    assert (same_ax.get_title(), cross_ax.get_title()) == ("same-modality pairs", "cross-modality pairs")
    assert fig.get_suptitle() == "toy" and same_ax.get_xlabel() == f"{metric} distance"
    for ax, side in ((same_ax, "same_modality"), (cross_ax, "cross_modality")):
        intra, inter = ax.patches
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        for patch, kind, text in ((intra, "intra", texts[0]), (inter, "inter", texts[1])):
            values = reference[f"{side}_{kind}"]
            data = patch.get_data()
            np.testing.assert_allclose(data.edges, edges, atol=1e-9)
            counts, _ = np.histogram(values, bins=edges)
            np.testing.assert_allclose(data.values * len(values) * width, counts, atol=1e-6)
            assert text == f"{kind}-identity (n={len(values)}, mean {np.mean(values):.3f})"
        mean_lines = [line.get_xdata()[0] for line in ax.lines]
        assert mean_lines == pytest.approx(
            [np.mean(reference[f"{side}_intra"]), np.mean(reference[f"{side}_inter"])], abs=1e-6
        )
