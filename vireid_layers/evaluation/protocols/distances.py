"""The distances protocols rank by: minus the cosine similarity, minus the dot product, squared Euclidean."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_shape
from ...distances import pairwise_squared_euclidean

__all__ = ["Distance", "negative_cosine_similarity", "negative_dot_product", "squared_euclidean_distance"]

Distance = Callable[[Tensor, Tensor], Tensor]
"""``distance(query (Q, D), gallery (G, D)) -> (Q, G)``: smaller is closer."""


def _feature_pair(query: Tensor, gallery: Tensor) -> tuple[Tensor, Tensor]:
    """Check ``(Q, D)`` and ``(G, D)`` features; both in float32 (float64 if either is), on the query's device."""
    query = check_shape(query, "query", "(Q, D)", 2)
    gallery = check_shape(gallery, "gallery", "(G, D)", 2)
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"`query` and `gallery` must have the same feature size, got {tuple(query.shape)} and "
            f"{tuple(gallery.shape)}"
        )
    dtype = torch.float64 if torch.float64 in (query.dtype, gallery.dtype) else torch.float32
    return query.to(dtype), gallery.to(device=query.device, dtype=dtype)


def negative_cosine_similarity(query: Tensor, gallery: Tensor) -> Tensor:
    r"""The distance every protocol ranks by: minus the cosine similarity of L2-normalised features.

    .. math:: d(q, g) = -\frac{q^\top g}{\|q\|\,\|g\|}

    This is what AGW/DDAG/DEEN pass to their evaluation (``-similarity`` of L2-normalised features); MPANet's
    squared Euclidean distance of L2-normalised features, :math:`2 - 2\cos`, ranks identically. Computed in
    float32 (float64 inputs stay float64).

    Args:
        query: :math:`(Q, D)` features.
        gallery: :math:`(G, D)` features.

    Returns:
        :math:`(Q, G)` distances.

    Raises:
        ValueError: a side is not 2-D, or the feature sizes differ.

    Examples:
        >>> import torch
        >>> from vireid_layers.evaluation import negative_cosine_similarity
        >>> negative_cosine_similarity(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        tensor([[-1., -0.]])
    """
    q, g = _feature_pair(query, gallery)
    return -(F.normalize(q, dim=1) @ F.normalize(g, dim=1).T)


def negative_dot_product(query: Tensor, gallery: Tensor) -> Tensor:
    r"""Minus the plain dot product: the ranking of DEEN's ``test.py`` for flip-summed features.

    .. math:: d(q, g) = -q^\top g

    DEEN adds the L2-normalised features of an image and of its horizontal flip without normalising the sum
    again, and ranks by this dot product; for unit-norm features it equals
    :func:`negative_cosine_similarity`. Use it with ``extract_features(..., flip="sum", normalize=False)`` on a
    model whose embedding is already L2-normalised (:meth:`~vireid_layers.models.DEEN.embed`). Computed in
    float32 (float64 inputs stay float64).

    Args:
        query: :math:`(Q, D)` features.
        gallery: :math:`(G, D)` features.

    Returns:
        :math:`(Q, G)` distances.

    Raises:
        ValueError: a side is not 2-D, or the feature sizes differ.

    Examples:
        >>> import torch
        >>> from vireid_layers.evaluation import negative_dot_product
        >>> negative_dot_product(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        tensor([[-2., -0.]])
    """
    q, g = _feature_pair(query, gallery)
    return -(q @ g.T)


def squared_euclidean_distance(query: Tensor, gallery: Tensor) -> Tensor:
    r"""The squared Euclidean distance: the ranking of MPANet's official RegDB evaluation (unnormalised features).

    .. math:: d(q, g) = \lVert q - g \rVert_2^2

    Computed as :func:`~vireid_layers.distances.pairwise_squared_euclidean` (no square root: the order is the
    same), clamped at 0 against rounding; float32 (float64 inputs stay float64).

    Args:
        query: :math:`(Q, D)` features.
        gallery: :math:`(G, D)` features.

    Returns:
        :math:`(Q, G)` distances.

    Raises:
        ValueError: a side is not 2-D, or the feature sizes differ.

    Examples:
        >>> import torch
        >>> from vireid_layers.evaluation import squared_euclidean_distance
        >>> squared_euclidean_distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
        tensor([[25.,  1.]])
    """
    q, g = _feature_pair(query, gallery)
    return pairwise_squared_euclidean(q, g).clamp_min(0)
