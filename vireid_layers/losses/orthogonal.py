"""The orthogonal loss between DEE branches of DEEN :cite:`zhang2023deen`."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .._validation import check_choice, check_embeddings
from ._numerics import nonfinite_marker

__all__ = ["OrthogonalLoss", "OrthogonalNormalization", "orthogonal_loss"]

OrthogonalNormalization = Literal["official", "mean", "sum"]
_NORMALIZATIONS = ("official", "mean", "sum")


def orthogonal_loss(generated: Tensor, *, normalization: OrthogonalNormalization = "official") -> Tensor:
    r"""Sum of the inner products between the embeddings that different DEE branches generate for a sample.

    .. math::

        \mathcal{L}_{ort} = \frac{1}{Z} \sum_{n=1}^{N} \sum_{1 \le a < b \le K}
            \big\langle f_+^{a}(n),\, f_+^{b}(n) \big\rangle

    Eq. 6 of the paper is the inner sum. The official code (``normalization="official"``, the default)
    divides by :math:`Z = (K + 1) N`, the number of rows after DEE (original plus generated; :math:`3B_0`
    in the paper's notation), and is used with weight :math:`\lambda_2 = 0.01`. ``"mean"`` divides by
    :math:`Z = N` and ``"sum"`` uses :math:`Z = 1`. The inner products are raw (not cosine), signed, and
    accumulated in float32. A NaN or infinite entry gives a NaN loss, also with a single branch (no pair to
    carry it; ``docs/robustness_losses.rst``).

    Args:
        generated: :math:`(K, N, D)` generated embeddings; the official code uses the pre-BN pooled features
            of the generated rows.
        normalization: ``"official"``, ``"mean"`` or ``"sum"``.

    Returns:
        Scalar loss; zero (graph-connected) for a single branch.

    Examples:
        >>> g = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])  # K = 2 branches, N = 1 sample
        >>> orthogonal_loss(g, normalization="sum")
        tensor(11.)
        >>> orthogonal_loss(g)  # official: divided by (K + 1) N = 3
        tensor(3.6667)
    """
    generated = check_embeddings(generated, "generated", 3)
    check_choice(normalization, "normalization", _NORMALIZATIONS)
    k, n = generated.shape[0], generated.shape[1]
    with torch.autocast(device_type=generated.device.type, enabled=False):
        g = generated.to(torch.promote_types(generated.dtype, torch.float32))
        gram = torch.einsum("and,bnd->nab", g, g)  # (N, K, K) per-sample Gram matrices
        total = torch.triu(gram, diagonal=1).sum() + nonfinite_marker(g)  # triu drops the diagonal, marker keeps NaN
    if normalization == "official":
        return total / max((k + 1) * n, 1)
    if normalization == "mean":
        return total / max(n, 1)
    return total


class OrthogonalLoss(nn.Module):
    r"""Orthogonality between DEE branches :cite:`zhang2023deen`; see :func:`orthogonal_loss`.

    Args:
        normalization: ``"official"`` (default, divide by :math:`(K + 1) N`), ``"mean"`` (by :math:`N`) or
            ``"sum"`` (Eq. 6 summed over the batch).

    Shape:
        - ``generated``: :math:`(K, N, D)`.
        - Output: scalar.

    Examples:
        >>> OrthogonalLoss()(torch.randn(2, 4, 8)).shape
        torch.Size([])
    """

    def __init__(self, *, normalization: OrthogonalNormalization = "official") -> None:
        super().__init__()
        self.normalization = check_choice(normalization, "normalization", _NORMALIZATIONS)

    def forward(self, generated: Tensor) -> Tensor:
        """Compute the loss; see :func:`orthogonal_loss`."""
        return orthogonal_loss(generated, normalization=self.normalization)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"normalization={self.normalization!r}"
