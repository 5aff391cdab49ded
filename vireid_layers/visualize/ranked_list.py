"""Cross-modality ranked lists: each query with its top-k gallery images, true matches framed green, false red."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from ..data.records import ImageRecord, VIReIDDataset
from ..evaluation.metrics import ExclusionRule
from ..evaluation.protocols import EvaluationProtocol, negative_cosine_similarity
from ._drawing import (
    MATCH_COLOR,
    MODALITY_NAMES,
    NON_MATCH_COLOR,
    QUERY_COLOR,
    ImageLike,
    as_display_image,
    check_vector,
    frame,
    new_figure,
    spread,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RankedLists", "plot_protocol_ranked_lists", "plot_ranked_lists", "rank_gallery"]


class RankedLists(NamedTuple):
    """The top-:math:`k` gallery items of each query, as :func:`rank_gallery` returns them.

    Slot :math:`j` of a row is rank :math:`j + 1`. A query with fewer than :math:`k` kept gallery items has
    empty slots at the end (``valid`` false, ``indices`` -1, ``distances`` NaN, ``matches`` false).

    Attributes:
        indices: :math:`(Q, k)` gallery positions, long.
        distances: :math:`(Q, k)` their distances.
        matches: :math:`(Q, k)` bool: the gallery item has the query's identity.
        valid: :math:`(Q, k)` bool: the slot holds a gallery item.
    """

    indices: Tensor
    distances: Tensor
    matches: Tensor
    valid: Tensor


def rank_gallery(
    distances: Tensor,
    query_ids: Tensor,
    gallery_ids: Tensor,
    query_cams: Tensor | None = None,
    gallery_cams: Tensor | None = None,
    *,
    k: int = 10,
    exclude: ExclusionRule | None = None,
) -> RankedLists:
    r"""The :math:`k` nearest gallery items of every query, in the order the retrieval metrics rank them.

    Each row is sorted by (distance, gallery index), a stable sort, so ties go to the lower gallery index as in
    :func:`~vireid_layers.evaluation.retrieval_metrics`; the items selected by ``exclude`` are removed first, so
    rank :math:`r` here is the rank :math:`r` the metrics count. All queries are ranked at once (no loop).

    Args:
        distances: :math:`(Q, G)` distances, smaller is closer; finite.
        query_ids: :math:`(Q,)` identities of the queries.
        gallery_ids: :math:`(G,)` identities of the gallery.
        query_cams: :math:`(Q,)` cameras of the queries (needed by ``exclude``).
        gallery_cams: :math:`(G,)` cameras of the gallery.
        k: list length (at least 1; capped at :math:`G`).
        exclude: a removal rule of :mod:`vireid_layers.evaluation.metrics`, or ``None``.

    Returns:
        :class:`RankedLists` of shape :math:`(Q, \min(k, G))`.

    Raises:
        TypeError, ValueError: bad shapes or types, non-finite distances, ``exclude`` without cameras.

    Examples:
        >>> d = torch.tensor([[0.3, 0.1, 0.2], [0.5, 0.5, 0.1]])
        >>> ranked = rank_gallery(d, torch.tensor([7, 8]), torch.tensor([8, 7, 7]), k=2)
        >>> ranked.indices.tolist(), ranked.matches.tolist()
        ([[1, 2], [2, 0]], [[True, True], [False, True]])
    """
    if not isinstance(distances, Tensor) or distances.ndim != 2:
        shape = tuple(distances.shape) if isinstance(distances, Tensor) else type(distances).__name__
        raise ValueError(f"`distances` must be a (Q, G) tensor, got {shape}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be an int >= 1, got {k!r}")
    num_q, num_g = distances.shape
    query_ids = check_vector(query_ids, num_q, "query_ids")
    gallery_ids = check_vector(gallery_ids, num_g, "gallery_ids")
    d = distances.detach().cpu()
    if not d.is_floating_point():
        d = d.double()
    if not bool(torch.isfinite(d).all()):
        raise ValueError("`distances` holds non-finite values (NaN or inf): the ranking would be meaningless")
    keep = torch.ones(num_q, num_g, dtype=torch.bool)
    if exclude is not None:
        if query_cams is None or gallery_cams is None:
            raise ValueError("`query_cams` and `gallery_cams` are required when an `exclude` rule is given")
        q_cams = check_vector(query_cams, num_q, "query_cams")
        g_cams = check_vector(gallery_cams, num_g, "gallery_cams")
        keep = ~exclude(query_ids, q_cams, gallery_ids, g_cams).to(torch.bool)
    k = min(k, num_g)
    # Removed items sort after every kept one (+inf); the stable sort breaks ties by gallery index.
    values, order = torch.sort(d.masked_fill(~keep, float("inf")), dim=1, stable=True)
    values, order = values[:, :k], order[:, :k]
    valid = torch.isfinite(values)
    matches = (gallery_ids[order] == query_ids.unsqueeze(1)) & valid
    indices = torch.where(valid, order, -1)
    return RankedLists(indices, torch.where(valid, values, float("nan")), matches, valid)


def plot_ranked_lists(
    distances: Tensor,
    query_ids: Tensor,
    gallery_ids: Tensor,
    query_cams: Tensor | None = None,
    gallery_cams: Tensor | None = None,
    *,
    query_images: Sequence[ImageLike],
    gallery_images: Sequence[ImageLike],
    k: int = 10,
    exclude: ExclusionRule | None = None,
    queries: int | Sequence[int] = 6,
    query_label: str = "query",
    title: str | None = None,
    image_width: float = 0.75,
) -> Figure:
    """Draw ranked lists: one row per query, its image and its top-:math:`k` gallery images.

    The query is framed blue; each gallery image is framed green when it has the query's identity and red
    otherwise, with its rank and distance written under it (the ranking of :func:`rank_gallery`, so the items
    removed by ``exclude`` never appear). Under the query are its identity and camera. Only the images drawn
    are read.

    Args:
        distances: :math:`(Q, G)` distances, smaller is closer.
        query_ids: :math:`(Q,)` identities of the queries.
        gallery_ids: :math:`(G,)` identities of the gallery.
        query_cams: :math:`(Q,)` cameras of the queries (shown, and needed by ``exclude``).
        gallery_cams: :math:`(G,)` cameras of the gallery.
        query_images: :math:`Q` images (paths, PIL images, arrays or tensors in :math:`[0, 1]`), in the
            order of the rows of ``distances``.
        gallery_images: :math:`G` images, in the order of its columns.
        k: gallery images per row.
        exclude: the protocol's removal rule, or ``None``.
        queries: the rows to draw: their positions, or a number of rows spread evenly over the queries.
        query_label: title of the query column (e.g. ``"infrared query"``).
        title: figure title.
        image_width: width of one image cell in inches.

    Returns:
        The figure: one axes per drawn image, each with its frame (spines) and its caption (x label).

    Examples:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from vireid_layers.visualize import plot_ranked_lists
        >>> images = torch.rand(4, 3, 8, 4)
        >>> d = torch.tensor([[0.1, 0.4, 0.2], [0.3, 0.2, 0.9]])
        >>> fig = plot_ranked_lists(
        ...     d, torch.tensor([1, 2]), torch.tensor([1, 2, 3]),
        ...     query_images=images[:2], gallery_images=images[1:], k=2, queries=2,
        ... )
        >>> [ax.get_xlabel() for ax in fig.axes[:3]]
        ['id 1', '#1 0.100', '#2 0.200']
    """
    if len(query_images) != distances.shape[0] or len(gallery_images) != distances.shape[1]:
        raise ValueError(
            f"`query_images` and `gallery_images` must hold {distances.shape[0]} and {distances.shape[1]} images "
            f"to match `distances` of shape {tuple(distances.shape)}, got {len(query_images)} and "
            f"{len(gallery_images)}"
        )
    rows = spread(distances.shape[0], queries, "queries")
    index = torch.tensor(rows, dtype=torch.long)
    q_ids = check_vector(query_ids, distances.shape[0], "query_ids")[index]
    q_cams = None if query_cams is None else check_vector(query_cams, distances.shape[0], "query_cams")[index]
    ranked = rank_gallery(distances[index], q_ids, gallery_ids, q_cams, gallery_cams, k=k, exclude=exclude)
    columns = 1 + ranked.indices.shape[1]
    first = as_display_image(query_images[rows[0]], "query_images")
    cell_h = first.shape[0] / first.shape[1] * image_width * 0.92 + 0.3  # the image at the cell's width, the caption
    top, bottom = (0.75 if title else 0.35), 0.3  # inches: title and column headers; the last captions
    height = cell_h * len(rows) + top + bottom
    fig = new_figure(image_width * (columns + 0.3), height)
    axes = fig.subplots(len(rows), columns, squeeze=False, gridspec_kw={"wspace": 0.08, "hspace": 0.25})
    for r, q in enumerate(rows):
        ax = axes[r, 0]
        ax.imshow(as_display_image(query_images[q], "query_images"))
        frame(ax, QUERY_COLOR)
        camera = "" if q_cams is None else f" cam{int(q_cams[r])}"
        ax.set_xlabel(f"id {int(q_ids[r])}{camera}", fontsize=7)
        ax.set_gid(f"query:{q}")
        if r == 0:
            ax.set_title(query_label, fontsize=8)
        for j in range(columns - 1):
            ax = axes[r, j + 1]
            if not bool(ranked.valid[r, j]):
                ax.set_axis_off()
                continue
            g = int(ranked.indices[r, j])
            ax.imshow(as_display_image(gallery_images[g], "gallery_images"))
            frame(ax, MATCH_COLOR if bool(ranked.matches[r, j]) else NON_MATCH_COLOR)
            ax.set_xlabel(f"#{j + 1} {float(ranked.distances[r, j]):.3f}", fontsize=7)
            ax.set_gid(f"gallery:{g}")
            if r == 0:
                ax.set_title(f"rank {j + 1}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.12 / height, va="top")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=bottom / height, top=1 - top / height)
    return fig


def plot_protocol_ranked_lists(
    protocol: EvaluationProtocol,
    dataset: VIReIDDataset,
    query_features: Tensor,
    gallery_features: Tensor,
    *,
    trial: int = 0,
    k: int = 10,
    queries: int | Sequence[int] = 6,
    distance: Callable[[Tensor, Tensor], Tensor] = negative_cosine_similarity,
    title: str | None = None,
) -> Figure:
    """Ranked lists of one trial of a protocol: its queries against its gallery, read from the image files.

    The features are those of the protocol's candidates, row for row (what
    :meth:`~vireid_layers.evaluation.EvaluationProtocol.evaluate` takes); the trial's queries and gallery
    are picked from them, ranked by ``distance`` with the protocol's removal rule, and drawn by
    :func:`plot_ranked_lists` from the records' files.

    Args:
        protocol: the evaluation protocol (its direction sets which modality queries).
        dataset: the dataset whose test records the protocol selects.
        query_features: :math:`(Q_c, D)` features of ``protocol.query_candidates(dataset)``.
        gallery_features: :math:`(G_c, D)` features of ``protocol.gallery_candidates(dataset)``.
        trial: the trial (gallery draw) to show.
        k: gallery images per query.
        queries: the rows to draw: positions among the trial's queries, or how many to spread over them.
        distance: ``(query, gallery) -> (Q, G)`` distances (default: the protocols' cosine ranking).
        title: figure title; default the protocol's name and the trial.

    Returns:
        The figure of :func:`plot_ranked_lists`.
    """
    queries_c = protocol.query_candidates(dataset)
    gallery_c = protocol.gallery_candidates(dataset)
    for name, features, records in (
        ("query_features", query_features, queries_c),
        ("gallery_features", gallery_features, gallery_c),
    ):
        if not isinstance(features, Tensor) or features.ndim != 2 or features.shape[0] != len(records):
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"`{name}` must have one row per candidate ({len(records)}, D), got {shape}")
    selection = protocol.select(dataset, trial)
    q_index = torch.tensor(selection.query, dtype=torch.long, device=query_features.device)
    g_index = torch.tensor(selection.gallery, dtype=torch.long, device=gallery_features.device)
    return _trial_ranked_lists(
        protocol,
        [queries_c[i] for i in selection.query],
        [gallery_c[i] for i in selection.gallery],
        distance(query_features[q_index], gallery_features[g_index]),
        k=k,
        queries=queries,
        title=title if title is not None else f"{protocol.name}, trial {trial}",
    )


def _trial_ranked_lists(
    protocol: EvaluationProtocol,
    query_records: Sequence[ImageRecord],
    gallery_records: Sequence[ImageRecord],
    distances: Tensor,
    *,
    k: int,
    queries: int | Sequence[int],
    title: str | None,
) -> Figure:
    """:func:`plot_ranked_lists` of records (images read from their paths) with the protocol's removal rule."""

    def column(records: Sequence[ImageRecord], field: str) -> Tensor:
        return torch.tensor([getattr(r, field) for r in records], dtype=torch.long)

    modality = MODALITY_NAMES[int(protocol.query_modality)]
    return plot_ranked_lists(
        distances,
        column(query_records, "identity"),
        column(gallery_records, "identity"),
        column(query_records, "camera"),
        column(gallery_records, "camera"),
        query_images=[r.path for r in query_records],
        gallery_images=[r.path for r in gallery_records],
        k=k,
        exclude=protocol.exclude,
        queries=queries,
        query_label=f"{modality} query",
        title=title,
    )
