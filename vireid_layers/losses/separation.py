"""Separation loss of the MPANet pattern maps :cite:`wu2021mpanet`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_floating, check_shape
from ._numerics import nonfinite_marker
from ._reduction import Reduction, check_reduction, reduce

__all__ = ["SeparationLoss", "separation_loss"]


def separation_loss(masks: Tensor, *, reduction: Reduction = "mean") -> Tensor:
    r"""Mean pairwise overlap of the :math:`l` pattern maps of each image (equation 7 of :cite:`wu2021mpanet`).

    With the maps of one image reshaped to :math:`M \in \mathbb{R}^{hw \times l}`,

    .. math::

        \mathcal{L}_{sep} = \frac{2}{l(l-1)} \sum_{i=1}^{l-1} \sum_{j=i+1}^{l} (M^\top M)_{ij}
          = \frac{2}{l(l-1)} \sum_{i<j} \sum_{u=1}^{hw} M_{ui} M_{uj}

    is computed for every image. The paper defines it per image and says nothing about the batch; the
    official code sums the strict upper triangles of all :math:`N` Gram matrices and divides by
    :math:`N\,l(l-1)/2`, which is the batch mean of the per-image values: ``reduction="mean"`` (the default)
    is the official loss, ``"none"`` returns the per-image values of Eq. 7 and ``"sum"`` their sum over the
    batch.

    The maps are not normalised (neither in the paper nor in the code), so the loss scales with the number of
    positions :math:`hw`: two independent maps near 0.5 give :math:`\approx 0.25\,hw` per pair, about 48 for
    the :math:`24 \times 8` maps of MPANet at initialisation. Its weight (official :math:`\lambda_1 = 0.5`) is
    therefore tied to the input resolution. The Gram matrices are computed in at least float32, also under
    autocast. With :math:`l = 1` there is no pair and the loss is a zero that stays connected to the graph
    (the official code divides by zero). A NaN or infinite value in an image's maps makes its loss NaN, also
    with :math:`l = 1` (``docs/robustness_losses.rst``).

    Args:
        masks: :math:`(N, l, H, W)` pattern maps, e.g. :attr:`PAMOutput.masks <vireid_layers.PAMOutput.masks>`
            (values in :math:`(0, 1)` after the sigmoid).
        reduction: ``"mean"`` (official), ``"sum"`` or ``"none"``.

    Returns:
        Scalar loss, or :math:`(N,)` per-image losses with ``reduction="none"``.

    Examples:
        >>> masks = torch.zeros(1, 3, 2, 2)
        >>> masks[0, 0, 0, 0] = masks[0, 1, 0, 0] = 1.0  # maps 0 and 1 overlap at one position
        >>> separation_loss(masks)
        tensor(0.3333)
        >>> separation_loss(torch.full((4, 6, 24, 8), 0.5), reduction="none")
        tensor([48., 48., 48., 48.])
    """
    masks = check_floating(check_shape(masks, "masks", "(N, L, H, W)"), "masks")
    check_reduction(reduction)
    num_parts = masks.shape[1]
    pairs = max(num_parts * (num_parts - 1) // 2, 1)
    with torch.autocast(device_type=masks.device.type, enabled=False):
        flat = masks.to(torch.promote_types(masks.dtype, torch.float32)).flatten(2)  # (N, l, hw)
        gram = torch.bmm(flat, flat.transpose(1, 2))  # (N, l, l)
        upper = torch.ones(num_parts, num_parts, dtype=torch.bool, device=masks.device).triu(1)
        per_image = torch.where(upper, gram, torch.zeros_like(gram)).sum(dim=(1, 2)) / pairs
        per_image = per_image + nonfinite_marker(flat, (1, 2))  # the diagonal is masked out; its NaN is not
    return reduce(per_image, reduction)


class SeparationLoss(nn.Module):
    r"""Separation loss of the pattern maps :cite:`wu2021mpanet`; see :func:`separation_loss`.

    Args:
        reduction: ``"mean"`` (official: the batch mean of the per-image Eq. 7), ``"sum"`` or ``"none"``.

    Shape:
        - ``masks``: :math:`(N, l, H, W)`.
        - Output: scalar, or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> SeparationLoss()(torch.rand(4, 6, 24, 8)).shape
        torch.Size([])
    """

    def __init__(self, *, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, masks: Tensor) -> Tensor:
        """Compute the loss; see :func:`separation_loss`."""
        return separation_loss(masks, reduction=self.reduction)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"reduction={self.reduction!r}"
