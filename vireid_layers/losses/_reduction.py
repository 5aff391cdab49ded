"""The torch-style ``reduction`` argument shared by the per-anchor losses."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from .._validation import check_choice

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> str:
    """Validate a ``reduction`` argument."""
    return check_choice(reduction, "reduction", REDUCTIONS)


def reduce(loss: Tensor, reduction: str) -> Tensor:
    """Apply ``"mean"``, ``"sum"`` or ``"none"`` to a vector of per-anchor losses (empty mean is 0)."""
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / max(loss.numel(), 1)
