r"""k-reciprocal re-ranking :cite:`zhong2017rerank` in torch, in memory linear in the number of images.

The widely used implementation keeps several dense :math:`(N, N)` matrices (:math:`N = Q + G`): the
distances, their argsort and the encoding :math:`V`. Here only these are kept:

* the top-:math:`K` neighbour list of every image, :math:`K = \max(k_1 + 1, k_2)`: :math:`(N, K)` indices;
* :math:`V` as sparse rows: :math:`(N, W)` column indices and weights, :math:`W` the largest support;
* the :math:`(Q, G)` result.

Distances are recomputed in row chunks of ``chunk_size`` × :math:`N` whenever they are needed, and the
Jaccard distances are accumulated over the non-zeros of the gallery rows of :math:`V`, in query chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_embeddings, check_int, check_probability

__all__ = ["k_reciprocal_rerank"]


def _rows(total: int, per_row: int, budget: int) -> int:
    """Rows per chunk so that a (rows, per_row) intermediate stays within ``budget`` elements."""
    return max(1, min(total, budget // max(per_row, 1)))


def _smallest(d: Tensor, k: int) -> Tensor:
    """Per row, the indices of the ``k`` smallest values ordered by (value, index): a tie-exact top-k.

    ``topk`` finds the k-th smallest value; every entry below it is kept, and the entries equal to it are
    kept in index order until the row has ``k``. The kept entries are then stably sorted by value.
    """
    kth = d.topk(k, dim=1, largest=False, sorted=False).values.amax(1, keepdim=True)
    below = d < kth
    tied = d == kth
    take = below | (tied & (tied.cumsum(1) <= k - below.sum(1, keepdim=True)))
    index = take.nonzero()[:, 1].view(d.shape[0], k)  # row-major: increasing index within each row
    order = d.gather(1, index).sort(dim=1, stable=True).indices
    return index.gather(1, order)


def _unique_rows(index: Tensor, pad: int) -> Tensor:
    """Per row, the distinct values of ``index`` in increasing order, then ``pad`` (``pad`` > every value)."""
    index = index.sort(dim=1).values
    repeated = torch.zeros_like(index, dtype=torch.bool)
    repeated[:, 1:] = index[:, 1:] == index[:, :-1]
    return index.masked_fill(repeated, pad).sort(dim=1).values


def _merge_rows(index: Tensor, values: Tensor, pad: int) -> tuple[Tensor, Tensor]:
    """Per row, sum the ``values`` of equal ``index`` entries; distinct indices ascending, then ``pad`` / 0."""
    index, order = index.sort(dim=1, stable=True)
    values = values.gather(1, order)
    new = torch.ones_like(index, dtype=torch.bool)
    new[:, 1:] = index[:, 1:] != index[:, :-1]
    slot = new.long().cumsum(1) - 1  # output position of each entry
    out_index = torch.full_like(index, pad).scatter_(1, slot, index)
    out_values = torch.zeros_like(values).scatter_add_(1, slot, values)
    out_values = out_values.masked_fill(out_index == pad, 0)
    return out_index, out_values


def _trim(index: Tensor, values: Tensor, pad: int) -> tuple[Tensor, Tensor]:
    """Drop the trailing columns that are padding in every row (rows keep their entries first)."""
    width = int((index != pad).sum(1).max()) if index.numel() else 0
    return index[:, : max(width, 1)], values[:, : max(width, 1)]


def k_reciprocal_rerank(
    query: Tensor,
    gallery: Tensor,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk_size: int = 1024,
) -> Tensor:
    r"""Re-rank a query × gallery retrieval with k-reciprocal encoding, in bounded memory.

    Let :math:`x_1, \dots, x_N` be the queries followed by the gallery and
    :math:`d(i, j) = \|x_i - x_j\|^2 / \max_l \|x_i - x_l\|^2` the squared Euclidean distance normalised by
    its row maximum. With :math:`N(i, k)` the :math:`k + 1` nearest neighbours of :math:`i` under :math:`d`
    (itself included; ties broken by index):

    .. math::

        R(i, k) &= \{ j \in N(i, k) : i \in N(j, k) \}, \\
        R^*(i) &= R(i, k_1) \cup \bigcup \big\{ R(c, \lfloor k_1/2 \rceil) :
            c \in R(i, k_1),\ |R(c, \lfloor k_1/2 \rceil) \cap R(i, k_1)| >
            \tfrac23 |R(c, \lfloor k_1/2 \rceil)| \big\}, \\
        V_{ij} &= \frac{e^{-d(i, j)}}{\sum_{l \in R^*(i)} e^{-d(i, l)}} [j \in R^*(i)], \qquad
        \hat V_i = \frac{1}{k_2} \sum_{j \in N(i, k_2 - 1)} V_j \ \ (\text{if } k_2 > 1), \\
        d_J(q, g) &= 1 - \frac{\sum_j \min(\hat V_{qj}, \hat V_{gj})}{\sum_j \max(\hat V_{qj}, \hat V_{gj})},
        \qquad d^*(q, g) = (1 - \lambda)\, d_J(q, g) + \lambda\, d(q, g),

    :math:`\lfloor \cdot \rceil` rounding half to even, as the authors' released code does (its
    ``np.around``), and :math:`\sum_j \max = 2 - \sum_j \min` because each :math:`\hat V_i` sums to one. This
    is the computation of the authors' implementation, which most re-identification code bases reuse, with
    ties broken by index (theirs are arbitrary).

    Memory: :math:`O(\text{chunk} \times N)` for the distance chunks, :math:`O(N (k_1 + k_2 W))` for the
    neighbour lists and the sparse :math:`V` (:math:`W` its row support), and the :math:`(Q, G)` output; no
    :math:`(N, N)` tensor is ever formed. Time: :math:`O(N^2 (D + \log N))`.

    Args:
        query: :math:`(Q, D)` query features.
        gallery: :math:`(G, D)` gallery features.
        k1: size of the k-reciprocal neighbourhood (official 20).
        k2: size of the local query expansion (official 6; 1 disables it).
        lambda_value: weight :math:`\lambda` of the original distance (official 0.3).
        chunk_size: rows of distances computed at once; intermediates stay below about
            ``chunk_size`` × :math:`(N + 1)` elements.

    Returns:
        :math:`(Q, G)` re-ranked distances (smaller is closer), float32 (float64 for float64 inputs), on the
        device of ``query``.

    Raises:
        ValueError: if ``query`` or ``gallery`` holds a NaN or an infinity (the message names the argument and
            counts the entries), or if their squared distances would overflow the compute dtype (float32
            features of norm :math:`\gtrsim 10^{19}`; pass float64 or rescale): a non-finite distance has no
            neighbours to rank (it used to fail with a raw ``RuntimeError`` of a ``view``).

    Examples:
        >>> g = torch.nn.functional.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(0)), dim=1)
        >>> d = k_reciprocal_rerank(g[:5] + 0.01, g, k1=4, k2=2)
        >>> d.shape, bool((d.argmin(1) == torch.arange(5)).all())
        (torch.Size([5, 30]), True)
    """
    query = check_embeddings(query, "query")
    gallery = check_embeddings(gallery, "gallery")
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"`query` and `gallery` must have the same feature size, got {tuple(query.shape)} and "
            f"{tuple(gallery.shape)}"
        )
    if query.device != gallery.device:
        raise ValueError(f"`query` and `gallery` must be on the same device, got {query.device} and {gallery.device}")
    k1 = check_int(k1, "k1", minimum=1)
    k2 = check_int(k2, "k2", minimum=1)
    lambda_value = check_probability(lambda_value, "lambda_value")
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)

    dtype = torch.float64 if torch.float64 in (query.dtype, gallery.dtype) else torch.float32
    num_q, num_g = query.shape[0], gallery.shape[0]
    for name, features in (("query", query), ("gallery", gallery)):
        bad = int((~torch.isfinite(features)).sum())
        if bad:
            raise ValueError(
                f"`{name}` must be finite, got {bad} non-finite entries (NaN or infinite) in features of shape "
                f"{tuple(features.shape)}: their distances have no rank"
            )
    if num_q == 0 or num_g == 0:
        return torch.empty(num_q, num_g, dtype=dtype, device=query.device)
    ctx = _Context(torch.cat([query, gallery]).to(dtype), num_q, chunk_size)
    # |x_i|^2 + |x_j|^2 - 2 x_i.x_j <= 4 max |x|^2: below the dtype's maximum, no distance can overflow.
    largest = float(ctx.squared_norms.max())
    if not largest * 4 < torch.finfo(dtype).max:
        name = "query" if float((query.to(dtype) ** 2).sum(1).max()) == largest else "gallery"
        raise ValueError(
            f"the squared distances of `query` and `gallery` overflow {dtype}: `{name}` has a squared norm of "
            f"{largest:.3g} (at most {torch.finfo(dtype).max / 4:.3g} for finite distances); rescale the features "
            "or pass float64"
        )
    neighbours = ctx.neighbours(max(k1 + 1, k2))
    full = ctx.reciprocal(neighbours, k1 + 1)
    half = ctx.reciprocal(neighbours, round(k1 / 2) + 1)  # round half to even, as np.around
    v_index, v_value, original = ctx.encode(full, half)
    if k2 > 1:
        v_index, v_value = ctx.expand(neighbours[:, :k2], v_index, v_value)
    return ctx.combine(v_index, v_value, original, lambda_value)


class _Context:
    """The features of queries then gallery, with the chunked steps of :func:`k_reciprocal_rerank`."""

    def __init__(self, x: Tensor, num_q: int, chunk_size: int) -> None:
        self.x, self.num_q = x, num_q
        self.n = x.shape[0]
        self.num_g = self.n - num_q
        self.pad = self.n  # padding column of the sparse rows: one past the last image
        self.budget = chunk_size * (self.n + 1)
        self.squared_norms = (x * x).sum(1)
        self.tiny = torch.finfo(x.dtype).tiny

    def chunks(self, total: int, per_row: int) -> list[tuple[int, int]]:
        """Row ranges such that a (rows, per_row) intermediate stays within the budget."""
        step = _rows(total, per_row, self.budget)
        return [(start, min(start + step, total)) for start in range(0, total, step)]

    def distance_rows(self, start: int, stop: int) -> Tensor:
        """Row-normalised squared Euclidean distances of rows ``start:stop`` to all images, (c, N)."""
        x, sq = self.x, self.squared_norms
        d = (sq[start:stop, None] + sq[None, :] - 2.0 * (x[start:stop] @ x.T)).clamp_min_(0)
        return d / d.amax(1, keepdim=True).clamp_min(self.tiny)

    def neighbours(self, count: int) -> Tensor:
        """(N, K) nearest neighbours in increasing distance (ties by index), K = min(count, N)."""
        count = min(self.n, count)
        out = torch.empty(self.n, count, dtype=torch.long, device=self.x.device)
        for start, stop in self.chunks(self.n, 2 * self.n):
            out[start:stop] = _smallest(self.distance_rows(start, stop), count)
        return out

    def reciprocal(self, neighbours: Tensor, width: int) -> tuple[Tensor, Tensor]:
        """``(forward, mask)``: N(i, width - 1) and which of its members j have i in N(j, width - 1)."""
        width = min(width, neighbours.shape[1])
        forward = neighbours[:, :width]
        mask = torch.empty(self.n, width, dtype=torch.bool, device=self.x.device)
        for start, stop in self.chunks(self.n, width * width):
            backward = neighbours[forward[start:stop]][:, :, :width]  # (c, width, width)
            own = torch.arange(start, stop, device=self.x.device).view(-1, 1, 1)
            mask[start:stop] = (backward == own).any(-1)
        return forward, mask

    def encode(self, full: tuple[Tensor, Tensor], half: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Sparse rows of V over the expanded sets R*(i), and the (Q, G) original distances."""
        (near, near_mask), (sub_near, sub_mask_all) = full, half
        a1, ah = near.shape[1], sub_near.shape[1]
        pad, num_q = self.pad, self.num_q
        v_index = torch.full((self.n, a1 * (ah + 1)), pad, dtype=torch.long, device=self.x.device)
        v_value = torch.zeros(self.n, a1 * (ah + 1), dtype=self.x.dtype, device=self.x.device)
        original = torch.empty(num_q, self.num_g, dtype=self.x.dtype, device=self.x.device)
        for start, stop in self.chunks(self.n, max(self.n + 1, a1 * ah * a1)):
            candidates, in_r = near[start:stop], near_mask[start:stop]  # (c, a1)
            sub, sub_mask = sub_near[candidates], sub_mask_all[candidates]  # (c, a1, ah)
            in_both = (sub.unsqueeze(-1) == candidates.view(-1, 1, 1, a1)) & in_r.view(-1, 1, 1, a1)
            overlap = (in_both.any(-1) & sub_mask).sum(-1)  # |R(c, k1/2) ∩ R(i, k1)|
            accept = in_r & (3 * overlap > 2 * sub_mask.sum(-1))  # strictly more than two thirds
            members = torch.cat(
                [
                    candidates.masked_fill(~in_r, pad),
                    sub.masked_fill(~(sub_mask & accept.unsqueeze(-1)), pad).flatten(1),
                ],
                dim=1,
            )
            members = _unique_rows(members, pad)
            d = self.distance_rows(start, stop)
            if start < num_q:
                original[start : min(stop, num_q)] = d[: min(stop, num_q) - start, num_q:]
            d = torch.cat([d, d.new_zeros(stop - start, 1)], dim=1)
            weights = torch.exp(-d.gather(1, members)).masked_fill(members == pad, 0)
            v_index[start:stop] = members
            v_value[start:stop] = weights / weights.sum(1, keepdim=True).clamp_min(self.tiny)
        return *_trim(v_index, v_value, pad), original

    def expand(self, expand: Tensor, v_index: Tensor, v_value: Tensor) -> tuple[Tensor, Tensor]:
        """Local query expansion: each row of V becomes the mean of the rows of its k2 nearest neighbours."""
        count, width = expand.shape[1], v_index.shape[1]
        new_index = torch.full((self.n, count * width), self.pad, dtype=torch.long, device=self.x.device)
        new_value = torch.zeros(self.n, count * width, dtype=self.x.dtype, device=self.x.device)
        for start, stop in self.chunks(self.n, count * width):
            idx = v_index[expand[start:stop]].flatten(1)
            val = v_value[expand[start:stop]].flatten(1)
            idx, val = _merge_rows(idx, val, self.pad)
            new_index[start:stop], new_value[start:stop] = idx, val / count
        return _trim(new_index, new_value, self.pad)

    def combine(self, v_index: Tensor, v_value: Tensor, original: Tensor, lambda_value: float) -> Tensor:
        r"""(1 - λ) Jaccard + λ original; the sum of minima runs over the shared non-zeros only.

        The gallery rows of V are stored by column (CSC); for each non-zero :math:`(q, j)` of a query row, the
        gallery non-zeros of column :math:`j` are visited, so the work is
        :math:`\sum_q \sum_{j \in \operatorname{supp} V_q} \deg_G(j)`, not :math:`Q \times \operatorname{nnz}`.
        """
        num_q, num_g, device, dtype, pad = self.num_q, self.num_g, self.x.device, self.x.dtype, self.pad
        g_index, g_value = v_index[num_q:], v_value[num_q:]
        nonzero = g_index != pad
        g_row = torch.arange(num_g, device=device).unsqueeze(1).expand_as(g_index)[nonzero]
        g_col, g_val = g_index[nonzero], g_value[nonzero]
        order = torch.argsort(g_col, stable=True)
        g_row, g_col, g_val = g_row[order], g_col[order], g_val[order]
        degree = torch.bincount(g_col, minlength=pad + 1)  # the padding column has degree 0
        first = degree.cumsum(0) - degree  # position of each column's first gallery non-zero
        q_index, q_value = v_index[:num_q], v_value[:num_q]
        pairs = degree[q_index].sum(1).cumsum(0)  # running count of (query non-zero, gallery non-zero) pairs
        out = torch.empty(num_q, num_g, dtype=dtype, device=device)
        max_rows = _rows(num_q, num_g, self.budget)
        start = 0
        while start < num_q:
            done = int(pairs[start - 1]) if start else 0
            stop = int(torch.searchsorted(pairs, done + self.budget, right=True))
            stop = min(max(stop, start + 1), start + max_rows, num_q)
            cols, vals = q_index[start:stop], q_value[start:stop]
            keep = cols != pad
            rows = torch.arange(stop - start, device=device).unsqueeze(1).expand_as(cols)[keep]
            cols, vals = cols[keep], vals[keep]
            counts = degree[cols]
            source = torch.repeat_interleave(torch.arange(cols.numel(), device=device), counts)
            offset = torch.arange(source.numel(), device=device) - torch.repeat_interleave(
                counts.cumsum(0) - counts, counts
            )
            position = first[cols][source] + offset
            shared = torch.minimum(vals[source], g_val[position])  # min(V_qj, V_gj) per shared non-zero
            flat = rows[source] * num_g + g_row[position]
            overlap = torch.zeros((stop - start) * num_g, dtype=dtype, device=device).index_add_(0, flat, shared)
            jaccard = 1 - overlap.view(stop - start, num_g) / (2 - overlap.view(stop - start, num_g))
            out[start:stop] = (1 - lambda_value) * jaccard + lambda_value * original[start:stop]
            start = stop
        return out
