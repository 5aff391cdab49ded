"""Batch-hard triplet loss :cite:`hermans2017triplet`, as the official ``OriTripletLoss`` of AGW/DDAG/DEEN."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .._deprecation import keyword_only
from .._validation import check_embeddings, check_labels, check_nonnegative
from ..distances import MIN_DISTANCE, pairwise_euclidean
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
    without a loop over anchors. An anchor without any negative (a batch of one identity) contributes 0 instead
    of crashing.

    The hardest pairs are mined (``argmax``/``argmin``) on the full distance matrix without autograd; only the
    :math:`2N` mined distances are recomputed, as norms of row differences, by one autograd node with its
    backward pass written out: :math:`O(ND)` backward cost instead of the :math:`O(N^2 D)` of differentiating
    the matrix, and one ``index_add`` instead of autograd's gather and norm backward (the measured speed is in
    ``benchmarks/results/``). The mined indices are constants of the backward pass, which gives the official
    gradient up to ties.
    What it costs: the loss is differentiable once (with ``create_graph=True`` its gradient carries no graph,
    so no second derivative), and it keeps the :math:`2N \times D` row differences for the backward pass, as
    autograd kept the gathered rows.

    Non-finite values are never hidden (``docs/robustness_losses.rst``): an anchor whose row of the mining
    distance matrix holds a NaN or an infinity (a NaN or infinite embedding anywhere in the batch, or squared
    distances that overflowed, e.g. float32 embeddings of norm :math:`10^{20}`) gets a NaN loss and NaN
    gradients, as :func:`torch.nn.functional.triplet_margin_loss` gives for a NaN input, also when it has no
    negative; a NaN or infinite ``margin`` is a :class:`ValueError`.

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
    check_nonnegative(margin, "margin")
    check_reduction(reduction)
    if embeddings.shape[0] == 0:  # empty batch: a graph-connected zero (static shape, compile-safe)
        return reduce(embeddings.sum(1).to(torch.promote_types(embeddings.dtype, torch.float32)) * 0.0, reduction)
    positive = labels.unsqueeze(0) == labels.unsqueeze(1)
    with torch.no_grad():  # mine on the full matrix; only the 2N mined distances need a gradient
        distances = pairwise_euclidean(embeddings)
        positive_index = distances.masked_fill(~positive, -float("inf")).argmax(1)
        negative_index = distances.masked_fill(positive, float("inf")).argmin(1)
        # A NaN or inf in a row (NaN input, overflowed squared distances) makes its mining meaningless.
        poisoned = ~torch.isfinite(distances).all(1)
    has_negative = (~positive).any(1)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        x = embeddings.to(torch.promote_types(embeddings.dtype, torch.float32))
        index = torch.cat([positive_index, negative_index])
        losses = _HardestPairHinge.apply(x, index, has_negative, poisoned, float(margin))
    return reduce(losses, reduction)


class _HardestPairHinge(torch.autograd.Function):
    r"""The per-anchor hinges from the rows and the mined indices, as one autograd node with its backward written out.

    Forward: the differences :math:`v = x_b - x_a` from every anchor :math:`a` to its mined positive and negative
    :math:`b` (one ``index_select`` of :math:`2N` rows, the anchors subtracted in place), the distances
    :math:`\max(\lVert v \rVert, 10^{-6})` (the values of :func:`~vireid_layers.distances.paired_euclidean`),
    the hinges, and, for the backward pass, the derivative :math:`c = \pm 1` of each anchor's loss with respect
    to its two distances where the hinge is active (0 where it is not, as ``relu``'s autograd backward at 0),
    divided by the distance (0 where the clamp is active, as the clamp's and the norm's autograd backward).
    An anchor flagged ``poisoned`` (its mining row was not finite) or whose distances are not finite gets a NaN
    loss and a NaN slope, so NaN reaches its value and the gradients of its rows instead of a masked 0.
    Backward: :math:`g\, c\, (x_a - x_b) / \lVert x_a - x_b \rVert` is added to the gradient of the anchor row
    and subtracted from that of the mined row (``index_add``). The mined indices are constants of the backward
    pass, which gives the gradient of the official max/min (up to ties). Not twice differentiable.

    Inputs ``embeddings`` :math:`(N, D)` in float32 or float64, ``index`` :math:`(2N,)` (the hardest positives,
    then the hardest negatives), ``has_negative`` and ``poisoned`` :math:`(N,)`; returns the :math:`(N,)`
    per-anchor losses.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, embeddings: Tensor, index: Tensor, has_negative: Tensor, poisoned: Tensor, margin: float
    ) -> Tensor:
        # v = x_b - x_a from every anchor a to its mined row b, in the gathered rows' own buffer: (2, N, D).
        diff = embeddings.index_select(0, index).view(2, *embeddings.shape).sub_(embeddings)
        norm = torch.linalg.vector_norm(diff, dim=-1)  # (2, N): anchor-positive, anchor-negative
        hardest_positive, hardest_negative = norm.clamp_min(MIN_DISTANCE).unbind(0)
        args = hardest_positive - hardest_negative + margin
        args = torch.where(poisoned, float("nan"), args)  # NaN stays NaN below (clamp and where keep it)
        active = (args > 0) & has_negative  # an anchor without negatives contributes 0
        slope = torch.where(torch.isnan(args), args, active.to(diff.dtype))  # NaN: a NaN gradient, not 0
        # d loss / d distance (+1 positive, -1 negative), divided by the distance, 0 where the clamp is active
        # (a NaN distance is not "clamped": it keeps its NaN); negated, so that factor * v = c (x_a - x_b) / ||.||.
        factor = torch.stack([-slope, slope]) / norm.clamp_min(MIN_DISTANCE)
        factor = torch.where(norm < MIN_DISTANCE, 0.0, factor)
        ctx.save_for_backward(index, factor, diff)
        # relu(args), and for an anchor without negatives 0 (NaN * 0 = NaN: a NaN is not masked out).
        return torch.where(has_negative, args.clamp_min(0.0), args * 0.0 + 0.0)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        index, factor, diff = ctx.saved_tensors
        g = (factor * grad).unsqueeze(-1) * diff  # (2, N, D): d loss / d x_a through each pair; -d loss / d x_b
        grad_embeddings = g.sum(0).index_add_(0, index, g.flatten(0, 1), alpha=-1.0)
        return grad_embeddings, None, None, None, None


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

    @keyword_only("margin")
    def __init__(self, *, margin: float = 0.3, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.margin = check_nonnegative(margin, "margin")
        self.reduction = check_reduction(reduction)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Compute the loss; see :func:`hard_triplet_loss`."""
        return hard_triplet_loss(embeddings, labels, margin=self.margin, reduction=self.reduction)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"margin={self.margin}, reduction={self.reduction!r}"
