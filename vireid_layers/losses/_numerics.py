"""What the losses share about non-finite values: NaN that propagates, safe normalisation, no precision loss.

The contract (``docs/robustness_losses.rst``): a loss never turns a non-finite input, or a distance that
overflowed, into a plausible finite number. A NaN or an infinity anywhere in a floating-point input gives a
non-finite loss (NaN, as :func:`torch.nn.functional.triplet_margin_loss` does), even where the offending row is
masked out of the computation; a non-finite hyperparameter is a :class:`ValueError`
(:func:`~vireid_layers._validation.check_positive` and
:func:`~vireid_layers._validation.check_nonnegative`, the library's one validation module).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..distances import at_least_float32

__all__ = ["at_least_float32", "l2_normalize", "nonfinite_marker"]


def nonfinite_marker(x: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """``0`` where every entry of ``x`` is finite, NaN otherwise (summed over ``dim``, all dims if ``None``).

    ``(x * 0).sum()``: one element-wise pass, no host synchronisation, connected to the graph with a zero
    gradient. Adding it to a loss makes a non-finite entry that the loss masks out (a row of an identity seen
    in one modality, a single DEE branch) still give a NaN loss. Finite entries never overflow here (``x * 0``
    is exactly 0), so large but finite inputs are not flagged.
    """
    zero = x * 0
    return zero.sum() if dim is None else zero.sum(dim)


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    r"""``x / (||x|| + eps)`` along the last dimension, without overflow in the norm.

    The rows are first divided by their largest absolute entry :math:`s` (a constant of the backward pass):
    :math:`(x / s) / (\lVert x / s \rVert + \epsilon / s)` is the same function of :math:`x` (so the gradient is
    the same), but its squared norm cannot overflow, where ``x.norm()`` of a float32 row of size ``1e20`` is
    ``inf`` and the "normalised" row became 0. NaN or infinite entries give NaN rows.
    """
    scale = x.detach().abs().amax(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    y = x / scale
    return y / (torch.linalg.vector_norm(y, dim=-1, keepdim=True) + eps / scale)
