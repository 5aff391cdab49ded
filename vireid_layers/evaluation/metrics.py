"""Retrieval metrics for re-identification: CMC (standard and identity-deduplicated), mAP and mINP.

Everything is vectorised in torch and runs on the device of the distance matrix, in chunks of queries so
that memory stays bounded for large galleries. Ties between equal distances are broken deterministically
by gallery index (a stable sort), where the official numpy code breaks them arbitrarily.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_shape, check_tensor

__all__ = [
    "ExclusionRule",
    "RetrievalMetrics",
    "exclude_same_camera",
    "exclude_same_identity_and_camera",
    "exclude_sysu_indoor_camera",
    "retrieval_metrics",
]

ExclusionRule = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``rule(query_ids, query_cams, gallery_ids, gallery_cams) -> (Q, G) bool`` mask of gallery items to drop."""


def exclude_same_identity_and_camera(q_ids: Tensor, q_cams: Tensor, g_ids: Tensor, g_cams: Tensor) -> Tensor:
    """Drop gallery items of the query's identity seen by the query's camera (Market-1501, LLCM rule)."""
    return (g_ids.unsqueeze(0) == q_ids.unsqueeze(1)) & (g_cams.unsqueeze(0) == q_cams.unsqueeze(1))


def exclude_sysu_indoor_camera(q_ids: Tensor, q_cams: Tensor, g_ids: Tensor, g_cams: Tensor) -> Tensor:
    """SYSU-MM01 rule: a camera-3 query never sees camera-2 gallery items, of any identity (same room)."""
    return (q_cams.unsqueeze(1) == 3) & (g_cams.unsqueeze(0) == 2)


def exclude_same_camera(q_ids: Tensor, q_cams: Tensor, g_ids: Tensor, g_cams: Tensor) -> Tensor:
    """Drop every gallery item from the query's camera, of any identity (MPANet's SYSU rule after 3 → 2)."""
    return g_cams.unsqueeze(0) == q_cams.unsqueeze(1)


@dataclass(frozen=True)
class RetrievalMetrics:
    """Result of :func:`retrieval_metrics`; rates are fractions in [0, 1].

    Attributes:
        cmc: :math:`(R,)` standard CMC: fraction of valid queries with a true match within the top ``k``.
        cmc_dedup: :math:`(R,)` identity-deduplicated CMC reported by the official SYSU-MM01/LLCM code: ranks
            count distinct gallery identities, so repeated wrong identities take one rank.
        mAP: mean average precision over valid queries.
        mINP: mean inverse negative penalty (matches / rank of the last match) over valid queries.
        num_valid: queries with at least one true match left after exclusion.
        average_precision: :math:`(Q,)` per-query AP (NaN for invalid queries).
    """

    cmc: Tensor
    cmc_dedup: Tensor
    mAP: float  # noqa: N815 - the field's name for the metric
    mINP: float  # noqa: N815
    num_valid: int
    average_precision: Tensor

    def rank(self, k: int, *, dedup: bool = False) -> float:
        """Rank-``k`` accuracy (1-based)."""
        curve = self.cmc_dedup if dedup else self.cmc
        return float(curve[k - 1])


def retrieval_metrics(
    distances: Tensor,
    query_ids: Tensor,
    gallery_ids: Tensor,
    query_cams: Tensor | None = None,
    gallery_cams: Tensor | None = None,
    *,
    exclude: ExclusionRule | None = None,
    max_rank: int = 20,
    chunk_size: int = 1024,
) -> RetrievalMetrics:
    r"""CMC, mAP and mINP of a query × gallery distance matrix, vectorised and chunked over queries.

    For query :math:`q` let the gallery be sorted by increasing distance (ties by gallery index), with the
    items selected by ``exclude`` removed, and let :math:`r_1 < \dots < r_{G_q}` be the 1-based ranks of its
    :math:`G_q` true matches. A query is *valid* when :math:`G_q > 0`. Then

    .. math::

        \mathrm{AP}_q = \frac{1}{G_q} \sum_{i=1}^{G_q} \frac{i}{r_i}, \qquad
        \mathrm{INP}_q = \frac{G_q}{r_{G_q}}, \qquad
        \mathrm{CMC}(k) = \frac{1}{|V|} \sum_{q \in V} [r_1 \le k]

    and mAP, mINP are the means over valid queries :math:`V`. The deduplicated CMC replaces :math:`r_1` by the
    rank of the query's identity in the list of distinct gallery identities (each identity at its first
    occurrence), as the official SYSU-MM01/LLCM evaluation of AGW/DDAG/DEEN does.

    Args:
        distances: :math:`(Q, G)` distances (smaller is closer); pass ``-similarity`` for similarities.
        query_ids: :math:`(Q,)` identity labels of the queries.
        gallery_ids: :math:`(G,)` identity labels of the gallery.
        query_cams: :math:`(Q,)` cameras of the queries (needed by ``exclude``).
        gallery_cams: :math:`(G,)` cameras of the gallery.
        exclude: rule returning a :math:`(Q, G)` mask of gallery items to remove per query, e.g.
            :func:`exclude_sysu_indoor_camera` or :func:`exclude_same_identity_and_camera`; ``None`` keeps all.
        max_rank: length :math:`R` of the CMC curves (capped at the gallery size).
        chunk_size: queries processed at once; peak memory is :math:`O(\text{chunk} \times G)`.

    Returns:
        :class:`RetrievalMetrics`.

    Examples:
        >>> d = torch.tensor([[0.1, 0.5, 0.3], [0.9, 0.2, 0.4]])
        >>> m = retrieval_metrics(d, torch.tensor([1, 2]), torch.tensor([1, 2, 1]), max_rank=3)
        >>> m.cmc.tolist(), round(m.mAP, 4)
        ([1.0, 1.0, 1.0], 1.0)
    """
    distances = check_shape(distances, "distances", "(Q, G)", 2)
    num_q, num_g = distances.shape
    query_ids = check_shape(query_ids, "query_ids", f"({num_q},)", 1)
    gallery_ids = check_shape(gallery_ids, "gallery_ids", f"({num_g},)", 1)
    if query_ids.shape[0] != num_q or gallery_ids.shape[0] != num_g:
        raise ValueError(
            f"`query_ids` and `gallery_ids` must have lengths {num_q} and {num_g} to match `distances` of shape "
            f"{tuple(distances.shape)}, got {tuple(query_ids.shape)} and {tuple(gallery_ids.shape)}"
        )
    if exclude is not None:
        if query_cams is None or gallery_cams is None:
            raise ValueError("`query_cams` and `gallery_cams` are required when an `exclude` rule is given")
        check_tensor(query_cams, "query_cams")
        check_tensor(gallery_cams, "gallery_cams")
        if query_cams.shape != (num_q,) or gallery_cams.shape != (num_g,):
            raise ValueError(
                f"`query_cams` and `gallery_cams` must have shapes ({num_q},) and ({num_g},), got "
                f"{tuple(query_cams.shape)} and {tuple(gallery_cams.shape)}"
            )
    if max_rank < 1:
        raise ValueError(f"`max_rank` must be >= 1, got {max_rank}")
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}")
    device = distances.device
    query_ids, gallery_ids = query_ids.to(device), gallery_ids.to(device)
    max_rank = min(max_rank, num_g)
    # Gallery identities as 0..U-1 for the deduplicated ranks; queries whose id is absent get U (never matches).
    unique_ids, gallery_index = torch.unique(gallery_ids, return_inverse=True)
    num_ids = unique_ids.numel()
    pos = torch.searchsorted(unique_ids, query_ids).clamp_max(max(num_ids - 1, 0))
    query_index = torch.where(unique_ids[pos] == query_ids, pos, torch.full_like(pos, num_ids)) if num_ids else pos

    cmc_hits = torch.zeros(max_rank, dtype=torch.float64, device=device)
    dedup_hits = torch.zeros(max_rank, dtype=torch.float64, device=device)
    ap_all = torch.full((num_q,), float("nan"), dtype=torch.float64, device=device)
    inp_sum, num_valid = 0.0, 0
    ranks = torch.arange(1, max_rank + 1, device=device)
    for start in range(0, num_q, chunk_size):  # chunks bound memory; everything inside is vectorised
        stop = min(start + chunk_size, num_q)
        q_ids = query_ids[start:stop]
        order = torch.sort(distances[start:stop], dim=1, stable=True).indices  # (q, G)
        keep = torch.ones_like(order, dtype=torch.bool)
        if exclude is not None:
            q_cams = query_cams[start:stop].to(device)
            dropped = exclude(q_ids, q_cams, gallery_ids, gallery_cams.to(device))
            keep = ~torch.gather(dropped, 1, order)
        matches = (gallery_ids[order] == q_ids.unsqueeze(1)) & keep
        kept_rank = torch.cumsum(keep, dim=1)  # 1-based rank among kept items
        num_matches = matches.sum(1)
        valid = num_matches > 0
        cum_matches = torch.cumsum(matches, dim=1).double()
        precision = torch.where(matches, cum_matches / kept_rank.double(), torch.zeros_like(cum_matches))
        ap = precision.sum(1) / num_matches.clamp_min(1).double()
        big = torch.full_like(kept_rank, num_g + 1)
        first = torch.where(matches, kept_rank, big).amin(1)
        last = torch.where(matches, kept_rank, torch.zeros_like(kept_rank)).amax(1)
        inp = num_matches.double() / last.clamp_min(1).double()
        # Deduplicated rank: distinct identities whose first kept occurrence precedes the query identity's.
        id_sorted = gallery_index[order]
        first_of_id = torch.full((stop - start, num_ids + 1), num_g + 1, dtype=kept_rank.dtype, device=device)
        first_of_id.scatter_reduce_(1, id_sorted, torch.where(keep, kept_rank, big), reduce="amin")
        own_first = torch.gather(first_of_id, 1, query_index[start:stop].unsqueeze(1))
        dedup_rank = (first_of_id[:, :num_ids] < own_first).sum(1) + 1

        cmc_hits += ((first.unsqueeze(1) <= ranks) & valid.unsqueeze(1)).sum(0)
        dedup_hits += ((dedup_rank.unsqueeze(1) <= ranks) & valid.unsqueeze(1)).sum(0)
        ap_all[start:stop] = torch.where(valid, ap, torch.full_like(ap, float("nan")))
        inp_sum += float(inp[valid].sum())
        num_valid += int(valid.sum())
    denominator = max(num_valid, 1)
    valid_ap = ap_all[~torch.isnan(ap_all)]
    return RetrievalMetrics(
        cmc=(cmc_hits / denominator).float(),
        cmc_dedup=(dedup_hits / denominator).float(),
        mAP=float(valid_ap.sum()) / denominator,
        mINP=inp_sum / denominator,
        num_valid=num_valid,
        average_precision=ap_all,
    )
