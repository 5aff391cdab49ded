"""The orthogonal loss between DEE branches of DEEN :cite:`zhang2023deen`."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .._deprecation import renamed_keyword
from .._validation import check_choice, check_embeddings
from ._numerics import nonfinite_marker

__all__ = ["OrthogonalLoss", "OrthogonalNormalization", "OrthogonalReduction", "orthogonal_loss"]

OrthogonalReduction = Literal["official", "mean", "sum", "none"]
_REDUCTIONS = ("official", "mean", "sum", "none")
#: The values of the former ``normalization`` keyword (renamed ``reduction``; ``"none"`` is new).
OrthogonalNormalization = Literal["official", "mean", "sum"]
_NORMALIZATIONS = ("official", "mean", "sum")


@renamed_keyword("normalization", "reduction", choices=_NORMALIZATIONS)
def orthogonal_loss(generated: Tensor, *, reduction: OrthogonalReduction = "official") -> Tensor:
    r"""Sum of the inner products between the embeddings that different DEE branches generate for a sample.

    .. math::

        \mathcal{L}_{ort} = \frac{1}{Z} \sum_{n=1}^{N} \sum_{1 \le a < b \le K}
            \big\langle f_+^{a}(n),\, f_+^{b}(n) \big\rangle

    Eq. 6 of the paper is the inner sum, the per-sample loss. The official code (``reduction="official"``, the
    default) divides by :math:`Z = (K + 1) N`, the number of rows after DEE (original plus generated;
    :math:`3B_0` in the paper's notation), and is used with weight :math:`\lambda_2 = 0.01`. ``"mean"`` divides
    by :math:`Z = N`, ``"sum"`` uses :math:`Z = 1`, and ``"none"`` returns the :math:`N` per-sample sums. The
    inner products are raw (not cosine), signed, and accumulated in float32. A NaN or infinite entry gives a
    NaN loss (in its own sample's row with ``"none"``), also with a single branch (no pair to carry it;
    ``docs/robustness_losses.rst``).

    Args:
        generated: :math:`(K, N, D)` generated embeddings; the official code uses the pre-BN pooled features
            of the generated rows.
        reduction: ``"official"``, ``"mean"``, ``"sum"`` or ``"none"`` (formerly ``normalization``, which
            still works, with a :class:`FutureWarning`, for one release).

    Returns:
        Scalar loss, or :math:`(N,)` with ``reduction="none"``; zero (graph-connected) for a single branch.

    Examples:
        >>> g = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])  # K = 2 branches, N = 1 sample
        >>> orthogonal_loss(g, reduction="sum")
        tensor(11.)
        >>> orthogonal_loss(g)  # official: divided by (K + 1) N = 3
        tensor(3.6667)
    """
    generated = check_embeddings(generated, "generated", 3)
    check_choice(reduction, "reduction", _REDUCTIONS)
    k, n = generated.shape[0], generated.shape[1]
    with torch.autocast(device_type=generated.device.type, enabled=False):
        g = generated.to(torch.promote_types(generated.dtype, torch.float32))
        gram = torch.einsum("and,bnd->nab", g, g)  # (N, K, K) per-sample Gram matrices
        if reduction == "none":  # per sample: a NaN in sample n reaches row n only
            return torch.triu(gram, diagonal=1).sum((1, 2)) + nonfinite_marker(g, (0, 2))
        total = torch.triu(gram, diagonal=1).sum() + nonfinite_marker(g)  # triu drops the diagonal, marker keeps NaN
    if reduction == "official":
        return total / max((k + 1) * n, 1)
    if reduction == "mean":
        return total / max(n, 1)
    return total


class OrthogonalLoss(nn.Module):
    r"""Orthogonality between DEE branches :cite:`zhang2023deen`; see :func:`orthogonal_loss`.

    Args:
        reduction: ``"official"`` (default, divide by :math:`(K + 1) N`), ``"mean"`` (by :math:`N`), ``"sum"``
            (Eq. 6 summed over the batch) or ``"none"`` (per sample); formerly ``normalization``.

    Shape:
        - ``generated``: :math:`(K, N, D)`.
        - Output: scalar, or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> OrthogonalLoss()(torch.randn(2, 4, 8)).shape
        torch.Size([])
    """

    @renamed_keyword("normalization", "reduction", choices=_NORMALIZATIONS)
    def __init__(self, *, reduction: OrthogonalReduction = "official") -> None:
        super().__init__()
        self.reduction = check_choice(reduction, "reduction", _REDUCTIONS)

    def forward(self, generated: Tensor) -> Tensor:
        """Compute the loss; see :func:`orthogonal_loss`."""
        return orthogonal_loss(generated, reduction=self.reduction)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"reduction={self.reduction!r}"
