"""Center cluster loss of MPANet :cite:`wu2021mpanet`."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .._deprecation import keyword_only
from .._validation import check_choice, check_embeddings, check_labels, check_nonnegative
from ..distances import class_centers, pairwise_euclidean, safe_sqrt

__all__ = ["CenterClusterAnchors", "CenterClusterLoss", "center_cluster_loss"]

CenterClusterAnchors = Literal["official", "paper"]
_ANCHORS = ("official", "paper")


def center_cluster_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    margin: float = 0.7,
    anchors: CenterClusterAnchors = "official",
) -> Tensor:
    r"""Center cluster loss: pull samples to their identity's batch centre, push centres :math:`\rho` apart.

    With :math:`h_y` the mean of the batch embeddings of identity :math:`y` (both modalities together, not
    detached: the gradient flows through the centres into every sample), :math:`P` the number of identities
    in the batch and :math:`N = n + m` the number of samples, the paper's loss (Eq. 13) is

    .. math::

        \mathcal{L}_{cc} = \frac{1}{N} \sum_{i=1}^{N} \|f_i - h_{y_i}\|_2
          + \frac{2}{P(P-1)} \sum_{k<j} \big[\rho - \|h_k - h_j\|_2\big]_+ .

    The official code (class ``CenterTripletLoss``) computes the second term with "anchors" at the sample
    positions :math:`0, K, 2K, \dots` (:math:`K` = ``k_size`` = 8), averaging for each anchor the hinge over
    all *samples* of the other identities, then averaging over anchors. That relies on the sampler's layout.
    Here the official form (``anchors="official"``, the default) is its label-based equivalent: one anchor
    per identity, each other identity weighted by its number of samples :math:`n_j`,

    .. math::

        \frac{1}{P} \sum_{k} \frac{\sum_{j \ne k} n_j \big[\rho - \|h_k - h_j\|_2\big]_+}{\sum_{j \ne k} n_j},

    which needs no ordering. It equals the official value whenever the labels at positions
    :math:`0, K, 2K, \dots` of the batch are pairwise distinct and cover every identity of the batch, in
    particular for the official sampler's layout (every identity in one contiguous block of exactly :math:`K`
    samples, blocks in any order); on other layouts the position-based official value depends on the batch
    order and this one does not. ``anchors="paper"`` is the plain mean over identity pairs of Eq. 13. The two
    forms coincide when every identity has the same number of samples in the batch (the official sampler's
    :math:`P \times K` batches).

    Distances are computed in float32 (also under autocast). The intra term uses the difference form
    :math:`\sqrt{\max(\|f_i - h_{y_i}\|^2, 10^{-12})}`; the official code has no clamp there, so a sample
    that equals its centre (a singleton identity) gets a NaN gradient, while here it gets a zero gradient
    and contributes :math:`10^{-6}` instead of 0. The centre distances use
    :func:`~vireid_layers.distances.pairwise_euclidean` (the official ``clamp(min=1e-12).sqrt()``). A batch
    of one identity has no inter term (zero); an empty batch gives a zero that stays connected to the graph.

    A NaN or infinite embedding gives a non-finite loss (every row enters the intra term); centre distances
    that overflow (float32 centres of norm :math:`\gtrsim 10^{19}`) make the inter term NaN instead of a
    vanished hinge; a NaN or infinite ``margin`` is a :class:`ValueError` (``docs/robustness_losses.rst``).

    Args:
        embeddings: :math:`(N, D)` embeddings of both modalities (the official code uses the concatenated
            PAM features before the BN neck, cast to float32).
        labels: :math:`(N,)` identity labels; the modality plays no role.
        margin: :math:`\rho`, the least distance between centres (official 0.7).
        anchors: ``"official"`` (default: reproduces the released code on its sampler's batches and stays
            order-independent elsewhere) or ``"paper"`` (Eq. 13).

    Returns:
        Scalar float32 loss. There is no ``reduction``: the inter term averages over pairs of identity
        centres, so the loss has no per-row form.

    Examples:
        >>> x = torch.tensor([[0.0, 0.0], [0.0, 2.0], [0.5, 0.0], [0.5, 2.0]])
        >>> loss = center_cluster_loss(x, torch.tensor([0, 0, 1, 1]), margin=0.7)
        >>> round(loss.item(), 4)  # intra 1.0 + inter [0.7 - 0.5]_+ = 0.2
        1.2
    """
    embeddings = check_embeddings(embeddings)
    n = embeddings.shape[0]
    labels = check_labels(labels, n)
    check_nonnegative(margin, "margin")
    check_choice(anchors, "anchors", _ANCHORS)
    if n == 0:  # static shape: no identity, no distance (grouping needs at least one row)
        return embeddings.to(torch.promote_types(embeddings.dtype, torch.float32)).sum() * 0.0

    groups = class_centers(embeddings, labels)
    centers = groups.centers[0]  # (N, D) in float32, one row per identity slot (zero rows for unused slots)
    counts = groups.counts[0].to(centers.dtype)  # (N,)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        diff = embeddings.to(centers.dtype) - centers[groups.slot]
        intra = safe_sqrt(diff.pow(2).sum(-1))  # (N,)
        intra_term = intra.mean()

        center_distances = pairwise_euclidean(centers)
        eye = torch.eye(n, dtype=torch.bool, device=labels.device)
        pair = groups.is_slot.unsqueeze(1) & groups.is_slot.unsqueeze(0) & ~eye
        # An overflowed (inf) centre distance is not "far apart": NaN, not a hinge of 0.
        center_distances = torch.where(pair & torch.isinf(center_distances), float("nan"), center_distances)
        hinge = (margin - center_distances).relu()  # (N, N) over slots
        if anchors == "paper":
            inter = torch.where(pair, hinge, torch.zeros_like(hinge)).sum() / pair.sum().clamp_min(1)
        else:
            weight = torch.where(pair, counts.unsqueeze(0), torch.zeros_like(hinge))  # n_j for j != k
            per_anchor = (weight * hinge).sum(1) / weight.sum(1).clamp_min(1.0)  # 0 for unused slots
            inter = per_anchor.sum() / groups.is_slot.sum().clamp_min(1)
    return intra_term + inter


class CenterClusterLoss(nn.Module):
    r"""Center cluster loss :cite:`wu2021mpanet`; see :func:`center_cluster_loss`.

    Args:
        margin: :math:`\rho` (official 0.7).
        anchors: ``"official"`` (default; the released code's sample-weighted anchor average, computed from
            the labels) or ``"paper"`` (Eq. 13, the plain mean over identity pairs).

    Shape:
        - ``embeddings``: :math:`(N, D)`.
        - ``labels``: :math:`(N,)`.
        - Output: scalar.

    Examples:
        >>> criterion = CenterClusterLoss(margin=0.7)
        >>> labels = torch.tensor([0, 0, 1, 1, 2, 2])
        >>> criterion(torch.randn(6, 16), labels).shape
        torch.Size([])
    """

    @keyword_only("margin")
    def __init__(self, *, margin: float = 0.7, anchors: CenterClusterAnchors = "official") -> None:
        super().__init__()
        self.margin = check_nonnegative(margin, "margin")
        self.anchors = check_choice(anchors, "anchors", _ANCHORS)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Compute the loss; see :func:`center_cluster_loss`."""
        return center_cluster_loss(embeddings, labels, margin=self.margin, anchors=self.anchors)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"margin={self.margin}, anchors={self.anchors!r}"
