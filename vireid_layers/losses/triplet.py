"""Batch-hard triplet loss :cite:`hermans2017triplet`, as the official ``OriTripletLoss`` of AGW/DDAG/DEEN."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_embeddings, check_labels, check_positive
from ..distances import paired_euclidean, pairwise_euclidean
from ._reduction import Reduction, check_reduction, reduce

__all__ = ["HardTripletLoss", "hard_triplet_loss"]


def hard_triplet_loss(
    embeddings: Tensor, labels: Tensor, *, margin: float = 0.3, reduction: Reduction = "mean"
) -> Tensor:
    r"""Batch-hard triplet loss: the farthest positive against the nearest negative of every anchor.

    .. math::

        \mathcal{L} = \frac{1}{N} \sum_{a=1}^{N} \Big[ \max_{p:\, y_p = y_a} D_{ap}
            - \min_{n:\, y_n \ne y_a} D_{an} + m \Big]_+,
        \qquad D_{ij} = \sqrt{\max(\|x_i - x_j\|^2, 10^{-12})}

    As in the official ``OriTripletLoss``: the anchor counts among its own positives (at distance
    :math:`10^{-6}`), positives and negatives are mined over the whole batch (both modalities, original and
    generated rows alike), and distances use the ``clamp(min=1e-12).sqrt()`` expansion, here in float32 and
    without a loop over anchors. The hardest pairs are mined on the full matrix without autograd and only the
    :math:`2N` mined distances are recomputed with a gradient, which gives the official gradient (up to ties)
    at :math:`O(ND)` instead of :math:`O(N^2 D)` backward cost. An anchor without any negative (a batch of
    one identity) contributes 0 instead of crashing.

    Args:
        embeddings: :math:`(N, D)` embeddings (the official code uses the pre-BN pooled features).
        labels: :math:`(N,)` identity labels.
        margin: :math:`m` (official 0.3).
        reduction: ``"mean"`` (official), ``"sum"`` or ``"none"`` (per-anchor losses).

    Returns:
        Scalar loss, or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 1.0]])
        >>> hard_triplet_loss(x, torch.tensor([0, 0, 1, 1]), reduction="none")
        tensor([0., 0., 0., 0.])
        >>> hard_triplet_loss(x, torch.tensor([0, 1, 0, 1]), margin=0.3)
        tensor(2.3000)
    """
    embeddings = check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    check_positive(margin, "margin", allow_zero=True)
    check_reduction(reduction)
    if embeddings.shape[0] == 0:  # empty batch: a graph-connected zero (static shape, compile-safe)
        return reduce(embeddings.sum(1).to(torch.promote_types(embeddings.dtype, torch.float32)) * 0.0, reduction)
    positive = labels.unsqueeze(0) == labels.unsqueeze(1)
    with torch.no_grad():  # mine on the full matrix; only the 2N mined distances need a gradient
        distances = pairwise_euclidean(embeddings)
        positive_index = torch.where(positive, distances, torch.full_like(distances, -float("inf"))).argmax(1)
        negative_index = torch.where(positive, torch.full_like(distances, float("inf")), distances).argmin(1)
    has_negative = (~positive).any(1)
    hardest_positive = paired_euclidean(embeddings, embeddings[positive_index])
    hardest_negative = paired_euclidean(embeddings, embeddings[negative_index])
    hardest_negative = torch.where(has_negative, hardest_negative, torch.full_like(hardest_negative, float("inf")))
    return reduce((hardest_positive - hardest_negative + margin).relu(), reduction)


class HardTripletLoss(nn.Module):
    r"""Batch-hard triplet loss :cite:`hermans2017triplet`; see :func:`hard_triplet_loss`.

    Args:
        margin: :math:`m` (official 0.3).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - ``embeddings``: :math:`(N, D)`.
        - ``labels``: :math:`(N,)`.
        - Output: scalar, or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> HardTripletLoss(margin=0.3)(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).shape
        torch.Size([])
    """

    def __init__(self, margin: float = 0.3, *, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.margin = check_positive(margin, "margin", allow_zero=True)
        self.reduction = check_reduction(reduction)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Compute the loss; see :func:`hard_triplet_loss`."""
        return hard_triplet_loss(embeddings, labels, margin=self.margin, reduction=self.reduction)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"margin={self.margin}, reduction={self.reduction!r}"
