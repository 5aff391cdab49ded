"""Input checks shared by the layers: rank, floating dtype, channels and a usable spatial size.

Every check reads only shapes and dtypes (static under ``torch.compile``) and raises :class:`TypeError` or
:class:`ValueError` naming the argument, the expected and the received value. An empty batch (:math:`N = 0`) is
legal everywhere: the layers return an empty output of the right shape, as ``torchvision.ops`` do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_shape

__all__ = ["check_batch_statistics", "check_floating", "check_map", "matmul_chain"]


def check_floating(x: Tensor, name: str) -> Tensor:
    """Raise :class:`TypeError` unless ``x`` has a floating-point dtype (integer, bool and complex are refused)."""
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_map(
    x: object,
    name: str,
    channels: int | None = None,
    *,
    min_height: int = 1,
    min_width: int = 1,
    min_positions: int = 1,
    why: str = "",
) -> Tensor:
    """Check a floating-point :math:`(N, C, H, W)` feature map with a non-empty (large enough) spatial size.

    Args:
        x: the tensor to check.
        name: the argument's name, for the message.
        channels: the required :math:`C`, or ``None`` for any.
        min_height: the smallest legal :math:`H`.
        min_width: the smallest legal :math:`W`.
        min_positions: the smallest legal :math:`H W`.
        why: the reason for the minimum size, appended to the message.

    Returns:
        ``x``.
    """
    spelled = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
    x = check_shape(x, name, spelled, 4)
    check_floating(x, name)
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"`{name}` must have shape {spelled}, got shape {tuple(x.shape)}")
    h, w = x.shape[2], x.shape[3]
    if h < min_height or w < min_width or h * w < min_positions:
        need = f"H >= {min_height}, W >= {min_width}" + (f", H*W >= {min_positions}" if min_positions > 1 else "")
        reason = f" ({why})" if why else ""
        raise ValueError(f"`{name}` must have a spatial size with {need}{reason}, got shape {tuple(x.shape)}")
    return x


def check_batch_statistics(x: Tensor, name: str, training: bool, *, per_position: bool) -> None:
    """Refuse a map whose BatchNorm would have a single value per channel in training mode.

    ``per_position=True`` for a ``BatchNorm2d`` (the statistics pool :math:`N H W` values), ``False`` for a
    ``BatchNorm1d`` on pooled features (:math:`N` values). An empty batch passes (its output is empty).
    """
    if not training:
        return
    values = x.shape[0] * (x.shape[2] * x.shape[3] if per_position else 1)
    if values == 1:
        what = "N*H*W" if per_position else "N"
        raise ValueError(
            f"`{name}` gives its BatchNorm a single value per channel ({what} = 1) in training mode, where batch "
            f"statistics need at least 2; got shape {tuple(x.shape)}. Use a larger batch or eval mode"
        )


def matmul_chain(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    r"""``a @ b @ c`` for batched :math:`(B, p, q)`, :math:`(B, q, r)`, :math:`(B, r, s)`, in the cheaper order.

    :math:`(ab)c` costs :math:`p r (q + s)` multiply-adds per batch element and holds a :math:`p \times r`
    intermediate; :math:`a(bc)` costs :math:`q s (p + r)` and holds a :math:`q \times s` one. The order with
    fewer multiplications is taken (ties: :math:`(ab)c`). The choice reads only shapes, so it is fixed under
    ``torch.compile``; both orders give the same value up to rounding.
    """
    p, q, r, s = a.shape[-2], a.shape[-1], b.shape[-1], c.shape[-1]
    if p * r * (q + s) <= q * s * (p + r):
        return torch.matmul(torch.matmul(a, b), c)
    return torch.matmul(a, torch.matmul(b, c))
