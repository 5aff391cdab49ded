"""WRT: the weighted regularised triplet loss of AGW :cite:`ye2021agw`."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_choice, check_embeddings, check_labels, check_nonnegative
from ..distances import pairwise_euclidean
from ._numerics import l2_normalize
from ._reduction import Reduction, check_reduction, reduce

__all__ = ["WRTForm", "WRTLoss", "wrt_loss"]

WRTForm = Literal["stable", "official"]
_FORMS = ("stable", "official")


def _softmax_weights(logits: Tensor, mask: Tensor, eps: float) -> Tensor:
    """Softmax of ``logits`` over the ``mask``-ed entries of each row, shifted by the masked row maximum."""
    shift = torch.where(mask, logits, torch.full_like(logits, -float("inf"))).amax(1, keepdim=True)
    shift = torch.where(mask.any(1, keepdim=True), shift, torch.zeros_like(shift))
    # Mask before exp: masked entries become exp(-inf) = 0 with a zero (not NaN) gradient.
    weights = torch.where(mask, logits - shift, torch.full_like(logits, -float("inf"))).exp()
    return weights / (weights.sum(1, keepdim=True) + eps)


def _official_softmax_weights(values: Tensor, mask: Tensor, eps: float) -> Tensor:
    """The official ``softmax_weights``: shift by the row maximum of ``values * mask``, ``eps`` in the denominator.

    Differentiated through the maximum too (the official code does not detach it; with ``eps`` the weights are
    not exactly shift-invariant).
    """
    shift = torch.max(values * mask, dim=1, keepdim=True)[0]
    exps = torch.exp(values - shift)
    return exps * mask / (torch.sum(exps * mask, dim=1, keepdim=True) + eps)


def wrt_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    normalize: bool = False,
    eps: float = 1e-6,
    form: WRTForm = "stable",
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Weighted regularised triplet loss: softmax-weighted positive and negative distances, soft margin.

    For anchor :math:`i` with positives :math:`P_i` (same label, itself included) and negatives :math:`N_i`:

    .. math::

        w^+_{ij} = \frac{e^{D_{ij}}}{\sum_{k \in P_i} e^{D_{ik}}}, \quad
        w^-_{ij} = \frac{e^{-D_{ij}}}{\sum_{k \in N_i} e^{-D_{ik}}}, \quad
        \mathcal{L} = \frac{1}{N} \sum_i \log\Big(1 + \exp\big(\textstyle\sum_{j \in P_i} w^+_{ij} D_{ij}
            - \sum_{j \in N_i} w^-_{ij} D_{ij}\big)\Big)

    **Two forms.** The official ``TripletLoss_WRT`` (``form="official"``) adds :math:`\epsilon = 10^{-6}` to
    both denominators and shifts only the positive logits by their maximum (the negative side is called on
    :math:`-D \odot \text{is\_neg}`, whose masked row maximum is 0); its negative weights are
    :math:`e^{-D}/(\sum e^{-D} + \epsilon)`, which fade once every negative of an anchor is far (the
    :math:`\epsilon` dominates from :math:`\min D \approx 14`) and underflow to exactly 0 from
    :math:`\min D \approx 87` (fp32): its "closest negative" then collapses towards 0 and the loss grows
    like the furthest positive distance. ``form="official"`` is that computation exactly, op for op (the
    soft margin is :func:`torch.nn.functional.soft_margin_loss`, which, as the official ``SoftMarginLoss``,
    overflows to ``inf`` once :math:`fp - cn \gtrsim 88` in float32); it is what trained the published AGW
    numbers, so the official recipe uses it. The default ``form="stable"`` shifts both sides by their masked
    maximum before :math:`\epsilon` is added, so the weights always sum to 1 and never vanish (also in
    half precision). Its positive side is the official one exactly; its negative side equals the official
    one up to a relative :math:`\epsilon\,(e^{\min D} - 1)` (below :math:`10^{-4}` for
    :math:`\min D \le 4.6`). Measured (``docs/losses.rst``): the two losses differ by :math:`1.6 \cdot
    10^{-2}` at pairwise distances around 11; around 33 the official loss is 34.3 and the stable one 0.95;
    with the official AGW network's pooled features (nearest negatives 15–56 apart) the official WRT term is
    42.44 and the stable one 18.48. In both forms an anchor without negatives gets :math:`\sum w^- D = 0`,
    as officially.

    NaN or infinite embeddings, and squared distances that overflow (float32 embeddings of norm
    :math:`\gtrsim 10^{19}` without ``normalize``), give a NaN loss (``docs/robustness_losses.rst``).
    ``normalize=True`` divides each row by its largest entry before the norm, so it normalises any finite
    row without overflow.

    Args:
        embeddings: :math:`(N, D)` embeddings (AGW: the pre-BN GeM features).
        labels: :math:`(N,)` identity labels.
        normalize: L2-normalise the embeddings first (AGW: ``False``; the MSO paper: ``True``).
        eps: the :math:`\epsilon` of both denominators (finite, :math:`\ge 0`).
        form: ``"stable"`` (default: weights that always sum to 1) or ``"official"`` (the official
            ``TripletLoss_WRT`` exactly, as the published AGW numbers were trained).
        reduction: ``"mean"`` (official), ``"sum"`` or ``"none"``.

    Returns:
        Scalar loss, or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 1.0]])
        >>> wrt_loss(x, torch.tensor([0, 0, 1, 1]))
        tensor(0.0917)
        >>> far = x * 12.0  # negatives 36 apart: the official negative weights have vanished
        >>> round(wrt_loss(far, torch.tensor([0, 0, 1, 1]), form="official").item(), 3)
        12.0
        >>> round(wrt_loss(far, torch.tensor([0, 0, 1, 1])).item(), 3)  # stable: well separated, ~0
        0.0
    """
    embeddings = check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0])
    check_nonnegative(eps, "eps")
    check_choice(form, "form", _FORMS)
    check_reduction(reduction)
    if embeddings.shape[0] == 0:  # empty batch: a graph-connected zero (static shape, compile-safe)
        return reduce(embeddings.sum(1).to(torch.promote_types(embeddings.dtype, torch.float32)) * 0.0, reduction)
    if normalize:
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            embeddings = l2_normalize(embeddings.to(torch.promote_types(embeddings.dtype, torch.float32)))
    distances = pairwise_euclidean(embeddings)
    positive = labels.unsqueeze(0) == labels.unsqueeze(1)
    negative = ~positive
    if form == "official":
        is_pos, is_neg = positive.to(distances.dtype), negative.to(distances.dtype)
        dist_ap, dist_an = distances * is_pos, distances * is_neg
        furthest_positive = torch.sum(dist_ap * _official_softmax_weights(dist_ap, is_pos, eps), dim=1)
        closest_negative = torch.sum(dist_an * _official_softmax_weights(-dist_an, is_neg, eps), dim=1)
        margin = closest_negative - furthest_positive
        losses = F.soft_margin_loss(margin, torch.ones_like(margin), reduction="none")
        return reduce(losses, reduction)
    furthest_positive = (distances * _softmax_weights(distances, positive, eps)).sum(1)
    closest_negative = (distances * _softmax_weights(-distances, negative, eps)).sum(1)
    return reduce(F.softplus(furthest_positive - closest_negative), reduction)


class WRTLoss(nn.Module):
    r"""Weighted regularised triplet loss of AGW :cite:`ye2021agw`; see :func:`wrt_loss`.

    Args:
        normalize: L2-normalise the embeddings first (AGW ``False``, MSO ``True``).
        eps: the :math:`\epsilon` added to the weight denominators.
        form: ``"stable"`` (default) or ``"official"`` (the official ``TripletLoss_WRT`` exactly; the official
            AGW recipe uses it); see :func:`wrt_loss`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - ``embeddings``: :math:`(N, D)`.
        - ``labels``: :math:`(N,)`.
        - Output: scalar, or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> WRTLoss()(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).shape
        torch.Size([])
    """

    def __init__(
        self, *, normalize: bool = False, eps: float = 1e-6, form: WRTForm = "stable", reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        self.normalize = bool(normalize)
        self.eps = check_nonnegative(eps, "eps")
        self.form = check_choice(form, "form", _FORMS)
        self.reduction = check_reduction(reduction)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Compute the loss; see :func:`wrt_loss`."""
        return wrt_loss(
            embeddings,
            labels,
            normalize=self.normalize,
            eps=self.eps,
            form=self.form,  # type: ignore[arg-type]
            reduction=self.reduction,  # type: ignore[arg-type]
        )

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        form = "" if self.form == "stable" else f", form={self.form!r}"
        return f"normalize={self.normalize}, eps={self.eps}{form}, reduction={self.reduction!r}"
