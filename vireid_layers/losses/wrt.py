"""WRT: the weighted regularised triplet loss of AGW :cite:`ye2021agw`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_embeddings, check_labels, check_positive
from ..distances import pairwise_euclidean
from ._reduction import Reduction, check_reduction, reduce

__all__ = ["WRTLoss", "wrt_loss"]


def _softmax_weights(logits: Tensor, mask: Tensor, eps: float) -> Tensor:
    """Softmax of ``logits`` over the ``mask``-ed entries of each row, shifted by the masked row maximum."""
    shift = torch.where(mask, logits, torch.full_like(logits, -float("inf"))).amax(1, keepdim=True)
    shift = torch.where(mask.any(1, keepdim=True), shift, torch.zeros_like(shift))
    # Mask before exp: masked entries become exp(-inf) = 0 with a zero (not NaN) gradient.
    weights = torch.where(mask, logits - shift, torch.full_like(logits, -float("inf"))).exp()
    return weights / (weights.sum(1, keepdim=True) + eps)


def wrt_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    normalize: bool = False,
    eps: float = 1e-6,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Weighted regularised triplet loss: softmax-weighted positive and negative distances, soft margin.

    For anchor :math:`i` with positives :math:`P_i` (same label, itself included) and negatives :math:`N_i`:

    .. math::

        w^+_{ij} = \frac{e^{D_{ij}}}{\sum_{k \in P_i} e^{D_{ik}}}, \quad
        w^-_{ij} = \frac{e^{-D_{ij}}}{\sum_{k \in N_i} e^{-D_{ik}}}, \quad
        \mathcal{L} = \frac{1}{N} \sum_i \log\Big(1 + \exp\big(\textstyle\sum_{j \in P_i} w^+_{ij} D_{ij}
            - \sum_{j \in N_i} w^-_{ij} D_{ij}\big)\Big)

    The official ``TripletLoss_WRT`` adds :math:`\epsilon = 10^{-6}` to both denominators and shifts only the
    positive logits by their maximum; its negative weights are :math:`e^{-D}/(\sum e^{-D} + \epsilon)`, which
    fade once every negative of an anchor is far (the :math:`\epsilon` dominates from
    :math:`\min D \approx 14`) and underflow to exactly 0 from :math:`\min D \approx 87` (fp32). Here both
    sides are shifted by their masked maximum before :math:`\epsilon` is added, so the weights always sum to
    1. The positive side is the official one exactly; the negative side equals it up to a relative
    :math:`\epsilon\,(e^{\min D} - 1)` (below :math:`10^{-4}` for :math:`\min D \le 4.6`). An anchor
    without negatives gets :math:`\sum w^- D = 0`, as officially.

    Args:
        embeddings: :math:`(N, D)` embeddings (AGW: the pre-BN GeM features).
        labels: :math:`(N,)` identity labels.
        normalize: L2-normalise the embeddings first (AGW: ``False``; the MSO paper: ``True``).
        eps: the :math:`\epsilon` of both denominators.
        reduction: ``"mean"`` (official), ``"sum"`` or ``"none"``.

    Returns:
        Scalar loss, or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 1.0]])
        >>> wrt_loss(x, torch.tensor([0, 0, 1, 1]))
        tensor(0.0917)
    """
    embeddings = check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    check_positive(eps, "eps", allow_zero=True)
    check_reduction(reduction)
    if embeddings.shape[0] == 0:  # empty batch: a graph-connected zero (static shape, compile-safe)
        return reduce(embeddings.sum(1).to(torch.promote_types(embeddings.dtype, torch.float32)) * 0.0, reduction)
    if normalize:
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            x = embeddings.to(torch.promote_types(embeddings.dtype, torch.float32))
            embeddings = x / (x.norm(2, dim=-1, keepdim=True) + 1e-12)
    distances = pairwise_euclidean(embeddings)
    positive = labels.unsqueeze(0) == labels.unsqueeze(1)
    negative = ~positive
    furthest_positive = (distances * _softmax_weights(distances, positive, eps)).sum(1)
    closest_negative = (distances * _softmax_weights(-distances, negative, eps)).sum(1)
    return reduce(F.softplus(furthest_positive - closest_negative), reduction)


class WRTLoss(nn.Module):
    r"""Weighted regularised triplet loss of AGW :cite:`ye2021agw`; see :func:`wrt_loss`.

    Args:
        normalize: L2-normalise the embeddings first (AGW ``False``, MSO ``True``).
        eps: the :math:`\epsilon` added to the weight denominators.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - ``embeddings``: :math:`(N, D)`.
        - ``labels``: :math:`(N,)`.
        - Output: scalar, or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> WRTLoss()(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).shape
        torch.Size([])
    """

    def __init__(self, *, normalize: bool = False, eps: float = 1e-6, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.normalize = bool(normalize)
        self.eps = check_positive(eps, "eps", allow_zero=True)
        self.reduction = check_reduction(reduction)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Compute the loss; see :func:`wrt_loss`."""
        return wrt_loss(
            embeddings,
            labels,
            normalize=self.normalize,
            eps=self.eps,
            reduction=self.reduction,  # type: ignore[arg-type]
        )

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"normalize={self.normalize}, eps={self.eps}, reduction={self.reduction!r}"
