"""Ranked lists: the ranking against a plain per-query reference and the metrics, and what the figure draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.colors import to_rgba

from vireid_layers.evaluation import (
    SYSUProtocol,
    exclude_sysu_indoor_camera,
    negative_cosine_similarity,
    retrieval_metrics,
)
from vireid_layers.visualize import (
    MATCH_COLOR,
    NON_MATCH_COLOR,
    QUERY_COLOR,
    plot_protocol_ranked_lists,
    plot_ranked_lists,
    rank_gallery,
)


def _problem(seed: int, q: int = 7, g: int = 11) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "distances": (torch.rand(q, g, generator=gen) * 4).round() / 4,  # many ties
        "query_ids": torch.randint(0, 4, (q,), generator=gen),
        "gallery_ids": torch.randint(0, 4, (g,), generator=gen),
        "query_cams": torch.randint(2, 4, (q,), generator=gen),
        "gallery_cams": torch.randint(1, 3, (g,), generator=gen),
    }


def _reference(p: dict[str, torch.Tensor], k: int, exclude) -> list[list[int]]:
    """Per query: gallery positions sorted by (distance, index), removed items dropped, the first k."""
    d = p["distances"].tolist()
    out = []
    for i in range(len(d)):
        kept = []
        for j in range(len(d[i])):
            removed = exclude is not None and bool(
                exclude(p["query_ids"][i : i + 1], p["query_cams"][i : i + 1], p["gallery_ids"], p["gallery_cams"])[
                    0, j
                ]
            )
            if not removed:
                kept.append(j)
        out.append(sorted(kept, key=lambda j, i=i: (d[i][j], j))[:k])
    return out


@pytest.mark.parametrize("exclude", [None, exclude_sysu_indoor_camera])
@pytest.mark.parametrize("k", [1, 4, 11, 50])
def test_rank_gallery_matches_reference(exclude, k: int) -> None:
    p = _problem(0)
    ranked = rank_gallery(**p, k=k, exclude=exclude)
    reference = _reference(p, k, exclude)
    width = min(k, p["distances"].shape[1])
    assert ranked.indices.shape == (7, width)
    for i, expected in enumerate(reference):
        n = len(expected)
        assert ranked.indices[i, :n].tolist() == expected
        assert ranked.valid[i].tolist() == [True] * n + [False] * (width - n)
        assert (ranked.indices[i, n:] == -1).all() and torch.isnan(ranked.distances[i, n:]).all()
        assert ranked.distances[i, :n].tolist() == [float(p["distances"][i, j]) for j in expected]
        assert ranked.matches[i].tolist() == [bool(p["gallery_ids"][j] == p["query_ids"][i]) for j in expected] + [
            False
        ] * (width - n)


def test_rank_one_agrees_with_retrieval_metrics() -> None:
    p = _problem(3, q=40, g=25)
    ranked = rank_gallery(**p, k=5, exclude=exclude_sysu_indoor_camera)
    metrics = retrieval_metrics(**p, exclude=exclude_sysu_indoor_camera, max_rank=5)
    kept = ~exclude_sysu_indoor_camera(p["query_ids"], p["query_cams"], p["gallery_ids"], p["gallery_cams"])
    has_match = ((p["gallery_ids"].unsqueeze(0) == p["query_ids"].unsqueeze(1)) & kept).any(1)
    for r in range(5):
        hit = ranked.matches[:, : r + 1].any(1)[has_match].double().mean()
        assert float(hit) == pytest.approx(float(metrics.cmc[r]), abs=1e-6)


@given(seed=st.integers(0, 2**16), shift=st.integers(-1000, 1000))
def test_rank_gallery_invariant_to_query_order_and_label_renaming(seed: int, shift: int) -> None:
    p = _problem(seed)
    ranked = rank_gallery(**p, k=5, exclude=exclude_sysu_indoor_camera)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(seed))
    renamed = dict(p, query_ids=p["query_ids"][perm] * 3 + shift, query_cams=p["query_cams"][perm])
    renamed["distances"] = p["distances"][perm]
    renamed["gallery_ids"] = p["gallery_ids"] * 3 + shift
    other = rank_gallery(**renamed, k=5, exclude=exclude_sysu_indoor_camera)
    assert torch.equal(other.indices, ranked.indices[perm])
    assert torch.equal(other.matches, ranked.matches[perm])


def test_rank_gallery_degenerate_and_bad_input() -> None:
    p = _problem(1, q=2, g=3)
    everything_removed = rank_gallery(**p, k=2, exclude=lambda qi, qc, gi, gc: torch.ones(2, 3, dtype=torch.bool))
    assert not everything_removed.valid.any() and (everything_removed.indices == -1).all()
    with pytest.raises(ValueError, match="non-finite"):
        rank_gallery(**dict(p, distances=torch.full((2, 3), float("nan"))))
    with pytest.raises(ValueError, match="`k`"):
        rank_gallery(**p, k=0)
    with pytest.raises(ValueError, match="query_cams"):
        rank_gallery(p["distances"], p["query_ids"], p["gallery_ids"], exclude=exclude_sysu_indoor_camera)
    with pytest.raises(ValueError, match="gallery_ids"):
        rank_gallery(p["distances"], p["query_ids"], p["gallery_ids"][:2])
    with pytest.raises(TypeError, match="query_ids"):
        rank_gallery(p["distances"], p["query_ids"].float(), p["gallery_ids"])
    with pytest.raises(ValueError, match="distances"):
        rank_gallery(torch.zeros(3), p["query_ids"], p["gallery_ids"])


def _spine_color(ax) -> tuple[float, ...]:
    colours = {tuple(s.get_edgecolor()) for s in ax.spines.values()}
    assert len(colours) == 1
    return colours.pop()


def test_plot_ranked_lists_draws_frames_ranks_and_distances(render) -> None:
    p = _problem(5, q=5, g=9)
    gen = torch.Generator().manual_seed(0)
    query_images = torch.rand(5, 3, 12, 6, generator=gen)
    gallery_images = [np.random.default_rng(j).random((12, 6, 3)) for j in range(9)]
    fig = render(
        plot_ranked_lists(
            **p,
            query_images=query_images,
            gallery_images=gallery_images,
            k=4,
            exclude=exclude_sysu_indoor_camera,
            queries=[0, 3],
            title="toy",
        )
    )
    ranked = rank_gallery(
        p["distances"][[0, 3]],
        p["query_ids"][[0, 3]],
        p["gallery_ids"],
        p["query_cams"][[0, 3]],
        p["gallery_cams"],
        k=4,
        exclude=exclude_sysu_indoor_camera,
    )
    axes = np.array(fig.axes).reshape(2, 5)
    assert fig.get_suptitle() == "toy"
    for r, q in enumerate([0, 3]):
        query_ax = axes[r, 0]
        assert query_ax.get_gid() == f"query:{q}"
        assert _spine_color(query_ax) == to_rgba(QUERY_COLOR)
        assert query_ax.get_xlabel() == f"id {int(p['query_ids'][q])} cam{int(p['query_cams'][q])}"
        np.testing.assert_allclose(query_ax.images[0].get_array(), query_images[q].permute(1, 2, 0).numpy())
        for j in range(4):
            ax = axes[r, j + 1]
            if not ranked.valid[r, j]:
                assert not ax.axison and not ax.images
                continue
            g = int(ranked.indices[r, j])
            assert ax.get_gid() == f"gallery:{g}"
            match = int(p["gallery_ids"][g]) == int(p["query_ids"][q])
            assert _spine_color(ax) == to_rgba(MATCH_COLOR if match else NON_MATCH_COLOR)
            assert ax.get_xlabel() == f"#{j + 1} {float(p['distances'][q, g]):.3f}"
            np.testing.assert_allclose(ax.images[0].get_array(), gallery_images[g], rtol=1e-6)
    assert axes[0, 1].get_title() == "rank 1" and axes[0, 0].get_title() == "query"


def test_plot_ranked_lists_spreads_queries_and_refuses_bad_images(render) -> None:
    p = _problem(2, q=9, g=4)
    images = torch.rand(9, 3, 8, 4)
    fig = render(plot_ranked_lists(**p, query_images=images, gallery_images=images[:4], k=2, queries=3))
    assert [ax.get_gid() for ax in fig.axes[::3]] == ["query:0", "query:4", "query:8"]
    normalised = (images - 0.5) / 0.2  # a network input, not a displayable image
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plot_ranked_lists(**p, query_images=normalised, gallery_images=images[:4], queries=1)
    with pytest.raises(ValueError, match="gallery_images"):
        plot_ranked_lists(**p, query_images=images, gallery_images=images[:3])
    with pytest.raises(ValueError, match="queries"):
        plot_ranked_lists(**p, query_images=images, gallery_images=images[:4], queries=[9])


def test_plot_protocol_ranked_lists_reads_the_trial_from_disk(render, tiny_synthetic) -> None:
    protocol = SYSUProtocol(num_trials=2)
    queries = protocol.query_candidates(tiny_synthetic)
    gallery = protocol.gallery_candidates(tiny_synthetic)
    ids = sorted({r.identity for r in gallery})
    onehot = torch.eye(len(ids))
    qf = onehot[[ids.index(r.identity) for r in queries]] + 0.1
    gf = onehot[[ids.index(r.identity) for r in gallery]] + 0.1
    fig = render(plot_protocol_ranked_lists(protocol, tiny_synthetic, qf, gf, trial=1, k=3, queries=2))
    assert fig.get_suptitle() == f"{protocol.name}, trial 1"
    selection = protocol.select(tiny_synthetic, 1)
    trial_gallery = [gallery[i] for i in selection.gallery]
    axes = np.array(fig.axes).reshape(2, 4)
    assert axes[0, 0].get_title() == "infrared query"
    for r in range(2):
        q = int(axes[r, 0].get_gid().split(":")[1])
        query = queries[selection.query[q]]
        for ax in axes[r, 1:]:
            if not ax.images:
                continue
            record = trial_gallery[int(ax.get_gid().split(":")[1])]
            assert not (query.camera == 3 and record.camera == 2)  # the protocol's removal rule applies
            match = record.identity == query.identity
            assert _spine_color(ax) == to_rgba(MATCH_COLOR if match else NON_MATCH_COLOR)
            assert ax.images[0].get_array().shape == (32, 16, 3)
    with pytest.raises(ValueError, match="query_features"):
        plot_protocol_ranked_lists(protocol, tiny_synthetic, qf[:-1], gf)
    assert negative_cosine_similarity(qf[:1], gf[:1]).shape == (1, 1)
