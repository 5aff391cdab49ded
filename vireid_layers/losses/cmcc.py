"""CMCC: the cross-modality contrastive-centre loss of MSO :cite:`gao2021mso`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_embeddings, check_labels, check_modalities
from ..distances import class_modality_centers, paired_euclidean, pairwise_euclidean
from ._numerics import l2_normalize, nonfinite_marker

__all__ = ["CMCCLoss", "cmcc_loss"]


def cmcc_loss(embeddings: Tensor, labels: Tensor, modalities: Tensor, *, normalize: bool = True) -> Tensor:
    r"""Cross-modality contrastive-centre loss: each identity's modality gap against its nearest other identity.

    With :math:`g_i` the (L2-normalised) embeddings, the centre of identity :math:`k` in modality :math:`m`,
    the identity centre, and the two distances of the paper (Eq. 4–5) are

    .. math::

        c_k^m = \frac{1}{|\{i : y_i = k, m_i = m\}|} \sum_{y_i = k,\ m_i = m} g_i, \qquad
        c_k = \tfrac12\big(c_k^{\text{rgb}} + c_k^{\text{ir}}\big), \\
        d_{\text{intra}}(k) = \|c_k^{\text{rgb}} - c_k^{\text{ir}}\|_2, \qquad
        \tilde d_{\text{inter}}(k) = \min_{j \ne k} \|c_k - c_j\|_2, \\
        \mathcal{L}_{cmcc} = \frac{1}{n} \sum_{k=1}^{n}
            \log\big(1 + e^{-(\tilde d_{\text{inter}}(k) - d_{\text{intra}}(k))}\big)
          = \frac{1}{n} \sum_{k=1}^{n} \operatorname{softplus}\big(d_{\text{intra}}(k)
            - \tilde d_{\text{inter}}(k)\big)

    The sum runs over the :math:`n` identities of the batch present in **both** modalities; an identity seen
    in one modality only has no :math:`d_{\text{intra}}` and takes no part (neither as an anchor nor as a
    neighbour). :math:`c_k` is the mean of the two modality centres, as the paper writes it (equal to the
    mean of all the identity's rows when both modalities have as many, as with the paper's sampler).

    There is no official code. Centres are grouped by ``labels`` and ``modalities`` with ``index_add`` (no
    batch-order assumption, unlike the third-party code, which chunks the batch), the softplus is the stable
    form of :math:`\log(1 + e^{z})`, and distances use the library's safe square root (at least fp32), so coinciding
    centres give finite gradients. A batch without any identity in both modalities gives a zero that stays
    connected to the graph; with one such identity :math:`\tilde d_{\text{inter}} = +\infty` and its term is
    :math:`\operatorname{softplus}(-\infty) = 0`, with zero (finite) gradients.

    A NaN or infinite embedding gives a NaN loss, also in a row that takes no part (an identity seen in one
    modality only), and so do centre distances that overflow (``normalize=False`` with float32 embeddings of
    norm :math:`\gtrsim 10^{19}`), instead of an "infinitely far" neighbour and a zero term
    (``docs/robustness_losses.rst``). ``normalize=True`` divides each row by its largest entry before the
    norm, so it normalises any finite row without overflow.

    Args:
        embeddings: :math:`(N, D)` embeddings (MSO: the 2048-d BN-neck outputs).
        labels: :math:`(N,)` identity labels.
        modalities: :math:`(N,)` modality of every row, 0 = visible, 1 = infrared.
        normalize: L2-normalise the embeddings first (the paper's :math:`g`, default) or use them as they are
            (the third-party MSO code).

    Returns:
        Scalar loss, in the precision of :mod:`vireid_layers.distances` (at least float32). There is no
        ``reduction``: the loss averages over identities seen in both modalities, so it has no per-row form.

    Examples:
        >>> embeddings = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
        >>> cmcc_loss(embeddings, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]))
        tensor(0.5909)
    """
    embeddings = check_embeddings(embeddings)
    n = embeddings.shape[0]
    labels = check_labels(labels, n)
    modalities = check_modalities(modalities, n)
    if not isinstance(normalize, bool):
        raise TypeError(f"`normalize` must be a bool, got {type(normalize).__name__} {normalize!r}")
    if n == 0:  # static shape: no identity at all, a zero connected to the graph
        return embeddings.to(torch.promote_types(embeddings.dtype, torch.float32)).sum() * 0.0
    marker = nonfinite_marker(embeddings)  # NaN if any entry is (rows that take no part included)
    if normalize:
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            embeddings = l2_normalize(embeddings.to(torch.promote_types(embeddings.dtype, torch.float32)))
    centers = class_modality_centers(embeddings, labels, modalities)
    visible, infrared = centers.centers[0], centers.centers[1]  # (N, D), indexed by identity slot
    # One slot per identity seen in both modalities.
    valid = centers.is_slot & (centers.counts[0] > 0) & (centers.counts[1] > 0)

    intra = paired_euclidean(visible, infrared)  # (N,)
    distances = pairwise_euclidean((visible + infrared) / 2)  # (N, N) between identity centres
    others = valid.unsqueeze(0) & ~torch.eye(n, dtype=torch.bool, device=valid.device)
    inter = torch.where(others, distances, torch.full_like(distances, float("inf"))).amin(-1)  # inf: no other
    # An overflowed distance is not "infinitely far": NaN, not a vanishing term.
    inter = torch.where((others & ~torch.isfinite(distances)).any(-1), float("nan"), inter)

    per_identity = F.softplus(intra - inter)  # softplus(-inf) = 0 with a zero gradient
    total = torch.where(valid, per_identity, torch.zeros_like(per_identity)).sum()
    return total / valid.sum().clamp_min(1) + marker.to(total.dtype)


class CMCCLoss(nn.Module):
    r"""Cross-modality contrastive-centre loss of MSO :cite:`gao2021mso`; see :func:`cmcc_loss`.

    Args:
        normalize: L2-normalise the embeddings first (the paper, default) or not (the third-party code).

    Shape:
        - ``embeddings``: :math:`(N, D)`.
        - ``labels``, ``modalities``: :math:`(N,)`.
        - Output: scalar.

    Examples:
        >>> criterion = CMCCLoss()
        >>> labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
        >>> modalities = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        >>> criterion(torch.randn(8, 2048), labels, modalities).shape
        torch.Size([])
    """

    def __init__(self, *, normalize: bool = True) -> None:
        super().__init__()
        if not isinstance(normalize, bool):
            raise TypeError(f"`normalize` must be a bool, got {type(normalize).__name__} {normalize!r}")
        self.normalize = normalize

    def forward(self, embeddings: Tensor, labels: Tensor, modalities: Tensor) -> Tensor:
        """Compute the loss; see :func:`cmcc_loss`."""
        return cmcc_loss(embeddings, labels, modalities, normalize=self.normalize)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"normalize={self.normalize}"
