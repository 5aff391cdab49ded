"""Retrieval metrics for re-identification: CMC (standard and identity-deduplicated), mAP and mINP.

Everything is vectorised in torch and runs on the device of the distance matrix, in chunks of queries so
that memory stays bounded for large galleries. Ties between equal distances are broken deterministically
by gallery index (as a stable sort would), where the official numpy code breaks them arbitrarily.

No row is sorted: every (query, gallery) pair gets a 64-bit key ordered as (distance, gallery index), and
the rank of each true match is the number of gallery items with a smaller key, counted in one comparison
pass per match (a query has few true matches; a chunk with very many falls back to one sort of its keys).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .._validation import check_choice, check_shape, check_tensor
from .exclusion import (  # the removal rules live in exclusion.py; re-exported here for former imports
    ExclusionRule,
    exclude_same_camera,
    exclude_same_identity_and_camera,
    exclude_sysu_indoor_camera,
)

__all__ = [
    "ExclusionRule",
    "MissingMatchWarning",
    "MissingMatches",
    "RetrievalMetrics",
    "exclude_same_camera",
    "exclude_same_identity_and_camera",
    "exclude_sysu_indoor_camera",
    "retrieval_metrics",
]

_EXCLUDED = torch.iinfo(torch.int32).max  # 32-bit order key of a removed gallery item: after every distance
_EXCLUDED_KEY = _EXCLUDED << 32  # the smallest 64-bit key of a removed item
_NO_MATCH = torch.iinfo(torch.int64).max  # padding of the match keys: after every item
_MAX_COUNTED_MATCHES = 64  # above this many matches in a chunk, ranks come from one sort instead of counting
_CPU_CHUNK_PAIRS = 1 << 18  # on CPU, a chunk holds at most about this many (query, gallery) pairs (cache)
_MAX_CHUNK_PAIRS = 1 << 30  # on any device: keeps the dense ranks of non-float32 distances below _EXCLUDED


MissingMatches = Literal["warn", "raise", "skip"]
"""What :func:`retrieval_metrics` does with queries that have no true match left: see its ``missing_matches``."""
_MISSING_MATCHES = ("warn", "raise", "skip")
_LISTED_QUERIES = 10  # query indices named in a missing-match message


class MissingMatchWarning(UserWarning):
    """Some queries have no true match in the gallery after exclusion and were left out of every metric.

    Issued by :func:`retrieval_metrics` with ``missing_matches="warn"`` (the default). Pass
    ``missing_matches="skip"`` where the protocol expects such queries, or ``"raise"`` to make them an error;
    or filter this class with :mod:`warnings`.
    """


@dataclass(frozen=True)
class RetrievalMetrics:
    """Result of :func:`retrieval_metrics`; rates are fractions in [0, 1].

    Attributes:
        cmc: :math:`(R,)` standard CMC: fraction of valid queries with a true match within the top ``k``.
        cmc_dedup: :math:`(R,)` identity-deduplicated CMC reported by the official SYSU-MM01/LLCM code: ranks
            count distinct gallery identities, so repeated wrong identities take one rank.
        mAP: mean average precision over valid queries.
        mINP: mean inverse negative penalty (matches / rank of the last match) over valid queries.
        num_valid: queries with at least one true match left after exclusion (always at least 1).
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
    missing_matches: MissingMatches = "warn",
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

    The rows are not sorted: :math:`r_i` is one plus the number of kept items that precede the match in the
    (distance, gallery index) order, counted with one comparison pass over the row per match.

    **Nothing that cannot be scored is scored.** Non-finite distances (NaN, :math:`\pm\infty`) are a
    :class:`ValueError` that names ``distances`` and counts the non-finite entries: a NaN ranks nowhere, and
    an all-NaN matrix used to score mAP 0.425. An empty gallery, and a call where *no* query keeps a true match
    (``num_valid == 0``, e.g. disjoint query and gallery identities, or an empty query set), are a
    :class:`ValueError` too, never an mAP of 0 that looks like a (bad) result. A query that alone has no true
    match left is left out of every metric and of the denominators (the official code's ``continue``); what
    else happens is ``missing_matches``: ``"warn"`` (default) issues a :class:`MissingMatchWarning` with their
    count and first indices, ``"raise"`` makes it a :class:`ValueError`, and ``"skip"`` is for a protocol
    that expects such queries (SYSU-MM01's camera-3 queries whose identity's only gallery images are from
    camera 2). See ``docs/robustness_losses.rst``.

    Args:
        distances: :math:`(Q, G)` distances (smaller is closer); pass ``-similarity`` for similarities.
        query_ids: :math:`(Q,)` identity labels of the queries.
        gallery_ids: :math:`(G,)` identity labels of the gallery.
        query_cams: :math:`(Q,)` cameras of the queries (needed by ``exclude``).
        gallery_cams: :math:`(G,)` cameras of the gallery.
        exclude: rule returning a :math:`(Q, G)` mask of gallery items to remove per query, e.g.
            :func:`exclude_sysu_indoor_camera` or :func:`exclude_same_identity_and_camera`; ``None`` keeps all.
        max_rank: length :math:`R` of the CMC curves (capped at the gallery size).
        chunk_size: at most this many queries are processed at once (on CPU fewer for a large gallery, so
            that a chunk of about :math:`2^{18}` query-gallery pairs stays in cache); peak memory is
            :math:`O(\text{chunk} \times G)`. The results do not depend on it.
        missing_matches: queries without any true match left: ``"warn"`` (default), ``"raise"`` or ``"skip"``
            (expected by the caller: silent). Either way they are left out of the metrics.

    Returns:
        :class:`RetrievalMetrics`.

    Raises:
        ValueError: on non-finite distances, an empty gallery, no valid query at all, or (with
            ``missing_matches="raise"``) any query without a true match.

    Examples:
        >>> d = torch.tensor([[0.1, 0.5, 0.3], [0.9, 0.2, 0.4]])
        >>> m = retrieval_metrics(d, torch.tensor([1, 2]), torch.tensor([1, 2, 1]), max_rank=3)
        >>> m.cmc.tolist(), round(m.mAP, 4)
        ([1.0, 1.0, 1.0], 1.0)
    """
    distances, query_ids, gallery_ids = _check_arguments(
        distances, query_ids, gallery_ids, query_cams, gallery_cams, exclude, max_rank, chunk_size
    )
    check_choice(missing_matches, "missing_matches", _MISSING_MATCHES)
    num_q, num_g = distances.shape
    device = distances.device
    query_ids, gallery_ids = query_ids.to(device), gallery_ids.to(device)
    if exclude is not None:
        query_cams, gallery_cams = query_cams.to(device), gallery_cams.to(device)
    max_rank = min(max_rank, num_g)
    # Gallery identities as 0..U-1 (U: a query identity absent from the gallery); gallery positions grouped
    # by identity, so that the candidate matches of a query are a slice of `by_identity`.
    unique_ids, gallery_index, id_counts = torch.unique(gallery_ids, return_inverse=True, return_counts=True)
    num_ids = unique_ids.numel()
    pos = torch.searchsorted(unique_ids, query_ids).clamp_max(max(num_ids - 1, 0))
    query_index = torch.where(unique_ids[pos] == query_ids, pos, torch.full_like(pos, num_ids)) if num_ids else pos
    by_identity = torch.argsort(gallery_index, stable=True)
    id_counts = torch.cat([id_counts, id_counts.new_zeros(1)])  # the absent identity has no gallery item
    id_offsets = id_counts.cumsum(0) - id_counts
    rows = min(chunk_size, max(1, _MAX_CHUNK_PAIRS // max(num_g, 1)))
    if device.type == "cpu":  # a chunk that stays in cache is faster on CPU; GPUs want large chunks
        rows = min(rows, max(1, _CPU_CHUNK_PAIRS // max(num_g, 1)))

    cmc_hits = torch.zeros(max_rank, dtype=torch.int64, device=device)
    dedup_hits = torch.zeros(max_rank, dtype=torch.int64, device=device)
    ap_all = torch.full((num_q,), float("nan"), dtype=torch.float64, device=device)
    inp_sum = torch.zeros((), dtype=torch.float64, device=device)
    num_valid = torch.zeros((), dtype=torch.int64, device=device)
    cutoffs = torch.arange(1, max_rank + 1, device=device)
    positions = torch.arange(num_g, device=device)
    for start in range(0, num_q, rows):  # chunks bound memory; everything inside is vectorised
        stop = min(start + rows, num_q)
        q_index = query_index[start:stop]
        num_candidates = id_counts[q_index]
        most = int(num_candidates.max())
        if most == 0:
            continue  # no query of the chunk has its identity in the gallery: none is valid
        key32 = _order_keys32(distances[start:stop])
        if exclude is not None:
            dropped = exclude(query_ids[start:stop], query_cams[start:stop], gallery_ids, gallery_cams)
            key32 = torch.where(dropped.to(torch.bool), _EXCLUDED, key32)  # after every kept item
        key = key32.long()
        key <<= 32
        key |= positions  # unique keys: (distance, gallery index) order; removed items last

        # Keys of the true matches, ascending; removed candidates and padding become _NO_MATCH.
        slots = torch.arange(most, device=device)
        candidates = by_identity[(id_offsets[q_index].unsqueeze(1) + slots).clamp_max(num_g - 1)]
        match_keys = key.gather(1, candidates)
        is_match = (slots < num_candidates.unsqueeze(1)) & (match_keys < _EXCLUDED_KEY)
        match_keys = torch.where(is_match, match_keys, _NO_MATCH).sort(dim=1).values
        num_matches = is_match.sum(1)
        valid = num_matches > 0
        most = int(num_matches.max())
        if most == 0:
            continue
        match_keys = match_keys[:, :most]

        ranks = _match_ranks(key, match_keys)
        # Deduplicated rank: the distinct identities whose first kept item precedes the first match.
        first_of_id = torch.full((stop - start, num_ids), _NO_MATCH, dtype=torch.int64, device=device)
        first_of_id.scatter_reduce_(1, gallery_index.expand(stop - start, -1), key, reduce="amin")
        dedup_rank = (first_of_id < match_keys[:, :1]).sum(1, dtype=torch.int32) + 1

        # AP = mean over matches of i / r_i, summed in order (cumsum) so that it does not depend on the chunk.
        i = torch.arange(1, most + 1, device=device, dtype=torch.float64)
        precision = torch.where(i <= num_matches.unsqueeze(1), i / ranks, 0.0)
        ap = precision.cumsum(1)[:, -1] / num_matches
        last = ranks.gather(1, (num_matches - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
        inp = num_matches / last.double()
        cmc_hits += ((ranks[:, :1] <= cutoffs) & valid.unsqueeze(1)).sum(0)
        dedup_hits += ((dedup_rank.unsqueeze(1) <= cutoffs) & valid.unsqueeze(1)).sum(0)
        ap_all[start:stop] = torch.where(valid, ap, float("nan"))
        inp_sum += torch.where(valid, inp, 0.0).sum()
        num_valid += valid.sum()
    count = int(num_valid)
    _check_valid_queries(ap_all, count, missing_matches)
    valid_ap = ap_all[~torch.isnan(ap_all)]
    return RetrievalMetrics(
        cmc=(cmc_hits.double() / count).float(),
        cmc_dedup=(dedup_hits.double() / count).float(),
        mAP=float(valid_ap.sum()) / count,
        mINP=float(inp_sum) / count,
        num_valid=count,
        average_precision=ap_all,
    )


def _check_valid_queries(average_precision: Tensor, num_valid: int, missing_matches: str) -> None:
    """Refuse a call without any valid query; warn about (or refuse) queries without a true match."""
    num_q = average_precision.shape[0]
    if num_valid == 0:
        raise ValueError(
            f"no query has a true match in the gallery after exclusion (0 valid of {num_q} queries): the metrics "
            "are undefined; check that `query_ids` and `gallery_ids` share identities and the `exclude` rule"
        )
    missing = num_q - num_valid
    if missing == 0 or missing_matches == "skip":
        return
    first = torch.isnan(average_precision).nonzero().flatten()[:_LISTED_QUERIES].tolist()
    more = ", ..." if missing > len(first) else ""
    message = (
        f"{missing} of {num_q} queries have no true match in the gallery after exclusion (query indices "
        f"{', '.join(map(str, first))}{more}) and are left out of every metric"
    )
    if missing_matches == "raise":
        raise ValueError(f"{message}; pass `missing_matches='skip'` if the protocol expects it")
    warnings.warn(
        f"{message}; pass `missing_matches='skip'` if the protocol expects it, or 'raise' to refuse",
        MissingMatchWarning,
        stacklevel=3,
    )


def _check_arguments(
    distances: Tensor,
    query_ids: Tensor,
    gallery_ids: Tensor,
    query_cams: Tensor | None,
    gallery_cams: Tensor | None,
    exclude: ExclusionRule | None,
    max_rank: int,
    chunk_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
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
    if num_g == 0:
        raise ValueError(f"the gallery is empty: `distances` has shape {tuple(distances.shape)}, nothing to rank")
    if distances.is_floating_point() or distances.is_complex():
        bad = int((~torch.isfinite(distances)).sum())
        if bad:
            nan = int(torch.isnan(distances).sum())
            raise ValueError(
                f"`distances` must be finite, got {bad} non-finite entries ({nan} NaN, {bad - nan} infinite) of "
                f"{num_q * num_g} in a matrix of shape {tuple(distances.shape)}: a NaN or infinite distance has "
                "no rank (check the features for NaN and the distance for overflow)"
            )
    if max_rank < 1:
        raise ValueError(f"`max_rank` must be >= 1, got {max_rank}")
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}")
    return distances, query_ids, gallery_ids


def _match_ranks(key: Tensor, match_keys: Tensor) -> Tensor:
    r"""1-based ranks of the match keys among the keys: the items with a smaller key, plus one.

    ``key`` is :math:`(q, G)` with distinct values per row, ``match_keys`` is :math:`(q, m)`. For few
    matches, one comparison pass per match column (:math:`O(m \, q G)`, no sort); for many, one sort of
    ``key`` and a binary search (:math:`O(q G \log G)`).
    """
    most = match_keys.shape[1]
    if most <= _MAX_COUNTED_MATCHES:
        counts = [(key < match_keys[:, j, None]).sum(1, dtype=torch.int32) for j in range(most)]  # int32: no int64 copy
        return torch.stack(counts, dim=1) + 1
    return torch.searchsorted(key.sort(dim=1).values, match_keys.contiguous()) + 1


def _order_keys32(distances: Tensor) -> Tensor:
    """``(q, G)`` int32 keys in the order of the (finite) distances: equal distances get equal keys, -0 == +0.

    Float32 (and the exactly convertible float16/bfloat16) distances map to their IEEE bits with the magnitude
    bits of negative numbers flipped, which orders them as numbers; other dtypes (float64, integers) get their
    dense rank within the chunk, from one sort.
    """
    if distances.dtype in (torch.float32, torch.float16, torch.bfloat16):
        d = distances.float() + 0.0  # a fresh float32 copy, in which -0.0 has become +0.0
        bits = d.view(torch.int32)
        return bits ^ ((bits >> 31) & _EXCLUDED)
    _, rank = torch.unique(distances, return_inverse=True)
    return rank.to(torch.int32)
