"""Embedding maps: PCA against numpy's SVD, t-SNE through scikit-learn or the PCA fallback, and the scatter drawn."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.markers import MarkerStyle

from vireid_layers.visualize import plot_embedding_map, project_embeddings, resolve_projection

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def _numpy_pca(x: np.ndarray) -> np.ndarray:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def test_pca_matches_numpy_svd_and_its_sign_convention() -> None:
    x = torch.randn(30, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = project_embeddings(x, method="pca")
    assert out.shape == (30, 2) and out.dtype == torch.float32
    reference = _numpy_pca(x.numpy())
    np.testing.assert_allclose(np.abs(out.double().numpy()), np.abs(reference), atol=1e-6)
    # The sign convention: the largest coordinate of each principal axis is positive.
    unit = torch.nn.functional.normalize(x, dim=1)
    axes = torch.linalg.lstsq(unit - unit.mean(0), out.double()).solution.T  # (2, D) recovered from the output
    pivots = axes.gather(1, axes.abs().argmax(1, keepdim=True))
    assert (pivots > 0).all()
    assert out.double().mean(0).abs().max() < 1e-6
    assert out[:, 0].var() >= out[:, 1].var()


def test_randomized_pca_of_large_inputs_matches_numpy_svd() -> None:
    gen = torch.Generator().manual_seed(6)
    signal = torch.randn(600, 3, generator=gen, dtype=torch.float64) * torch.tensor([30.0, 12.0, 5.0])
    x = signal @ torch.randn(3, 530, generator=gen, dtype=torch.float64) + 0.1 * torch.randn(
        600, 530, generator=gen, dtype=torch.float64
    )
    out = project_embeddings(x, method="pca", normalize=False)  # min(N, D) > 512: the randomized SVD
    centred = x.numpy() - x.numpy().mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:2].T
    scale = np.abs(reference).max()
    np.testing.assert_allclose(np.abs(out.double().numpy()), np.abs(reference), atol=1e-5 * scale)


def test_pca_without_normalisation_and_degenerate_inputs() -> None:
    x = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    out = project_embeddings(x, method="pca", normalize=False)
    torch.testing.assert_close(out, torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    assert torch.equal(project_embeddings(torch.ones(1, 4), method="pca"), torch.zeros(1, 2))
    one_dim = project_embeddings(torch.tensor([[1.0], [2.0], [4.0]]), method="pca", normalize=False)
    assert torch.equal(one_dim[:, 1], torch.zeros(3)) and one_dim[:, 0].tolist() == pytest.approx(
        [-4 / 3, -1 / 3, 5 / 3]
    )
    assert project_embeddings(torch.zeros(0, 3), method="pca").shape == (0, 2)
    assert torch.isfinite(project_embeddings(torch.ones(5, 3), method="pca")).all()  # coinciding points


@given(seed=st.integers(0, 2**16), n=st.integers(2, 12))
def test_pca_is_finite_and_equivariant_to_row_order(seed: int, n: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    perm = torch.randperm(n, generator=gen)
    out = project_embeddings(x, method="pca")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(project_embeddings(x[perm], method="pca"), out[perm], atol=1e-5, rtol=1e-5)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        project_embeddings(torch.tensor([[float("nan"), 1.0], [1.0, 1.0]]), method="pca")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        project_embeddings(torch.zeros(3), method="pca")
    with pytest.raises(TypeError, match="floating-point"):
        project_embeddings(torch.zeros(3, 2, dtype=torch.long), method="pca")
    with pytest.raises(ValueError, match="`method`"):
        project_embeddings(torch.zeros(3, 2), method="umap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="perplexity"):
        project_embeddings(torch.zeros(3, 2), method="pca", perplexity=0)


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn is not installed")
def test_tsne_is_deterministic_and_finite() -> None:
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    first = project_embeddings(x, method="tsne", seed=3)
    assert first.shape == (40, 2) and torch.isfinite(first).all()
    assert torch.equal(first, project_embeddings(x, method="tsne", seed=3))
    assert resolve_projection("auto") == "tsne"
    # Too few points for a perplexity: PCA.
    assert torch.equal(project_embeddings(x[:4], method="tsne"), project_embeddings(x[:4], method="pca"))


def test_auto_falls_back_to_pca_without_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(2))
    assert resolve_projection("auto") == "pca"
    assert torch.equal(project_embeddings(x), project_embeddings(x, method="pca"))
    with pytest.raises(ImportError, match="scikit-learn"):
        project_embeddings(x, method="tsne")


def _marker_vertices(marker: str) -> np.ndarray:
    style = MarkerStyle(marker)
    return style.get_path().transformed(style.get_transform()).vertices


def test_plot_embedding_map_points_colours_and_markers(render) -> None:
    gen = torch.Generator().manual_seed(4)
    ids = torch.tensor([10, 20, 30, 40]).repeat(5)
    modalities = torch.tensor([0, 1, 1, 0, 1]).repeat_interleave(4)
    features = torch.randn(20, 6, generator=gen)
    fig = render(plot_embedding_map(features, ids, modalities, method="pca"))
    ax = fig.axes[0]
    points = project_embeddings(features, method="pca").numpy()
    visible, infrared = ax.collections
    assert [visible.get_label(), infrared.get_label()] == ["visible", "infrared"]
    for collection, modality, marker in ((visible, 0, "o"), (infrared, 1, "^")):
        rows = (modalities == modality).numpy()
        np.testing.assert_allclose(collection.get_offsets(), points[rows], rtol=1e-6)
        np.testing.assert_allclose(collection.get_paths()[0].vertices, _marker_vertices(marker))
        colours = collection.get_facecolors()
        assert len(colours) == rows.sum()
        for a, id_a in zip(colours, ids[rows].tolist(), strict=True):
            for b, id_b in zip(colours, ids[rows].tolist(), strict=True):
                assert np.array_equal(a, b) == (id_a == id_b)
    # The same identity has the same colour in both modalities.
    first_visible = visible.get_facecolors()[ids[modalities == 0].tolist().index(20)]
    first_infrared = infrared.get_facecolors()[ids[modalities == 1].tolist().index(20)]
    assert np.array_equal(first_visible, first_infrared)
    assert ax.get_title() == "PCA of the embeddings (4 identities, 20 images)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["visible", "infrared"]


def test_plot_embedding_map_one_modality_many_identities_and_bad_input(render) -> None:
    features = torch.randn(30, 4, generator=torch.Generator().manual_seed(5))
    fig = render(plot_embedding_map(features, torch.arange(30), torch.ones(30, dtype=torch.long), method="pca"))
    (only,) = fig.axes[0].collections
    assert only.get_label() == "infrared" and len(np.unique(only.get_facecolors(), axis=0)) == 30
    with pytest.raises(ValueError, match="modalities"):
        plot_embedding_map(features, torch.arange(30), torch.full((30,), 2), method="pca")
    with pytest.raises(ValueError, match="identities"):
        plot_embedding_map(features, torch.arange(29), torch.zeros(30, dtype=torch.long), method="pca")
