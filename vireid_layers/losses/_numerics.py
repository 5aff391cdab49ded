"""What the losses share about non-finite values: finite hyperparameters, NaN that propagates, safe normalisation.

The contract (``docs/robustness_losses.rst``): a loss never turns a non-finite input, or a distance that
overflowed, into a plausible finite number. A NaN or an infinity anywhere in a floating-point input gives a
non-finite loss (NaN, as :func:`torch.nn.functional.triplet_margin_loss` does), even where the offending row is
masked out of the computation; a non-finite hyperparameter is a :class:`ValueError`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_positive

__all__ = ["at_least_float32", "check_finite_nonnegative", "l2_normalize", "nonfinite_marker"]


def at_least_float32(x: Tensor) -> Tensor:
    """Half precision promoted to float32; float32 and float64 as they are (never cast down, unlike ``.float()``)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def check_finite_nonnegative(value: float, name: str, *, allow_zero: bool = True) -> float:
    """Check a real hyperparameter that must be finite and ``>= 0`` (``> 0`` without ``allow_zero``).

    :func:`~vireid_layers._validation.check_positive` alone lets NaN through (``nan < 0`` is false) and
    accepts ``inf``; a NaN margin silently made every hinge inactive.
    """
    value = check_positive(value, name, allow_zero=allow_zero)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value}")
    return value


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
