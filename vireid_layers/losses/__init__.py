"""Losses of the VI-ReID methods: one concept per file, each a function plus a module."""

from .cpm import CPMLoss, cpm_loss
from .orthogonal import OrthogonalLoss, orthogonal_loss
from .triplet import HardTripletLoss, hard_triplet_loss
from .wrt import WRTLoss, wrt_loss

__all__ = [
    "CPMLoss",
    "HardTripletLoss",
    "OrthogonalLoss",
    "WRTLoss",
    "cpm_loss",
    "hard_triplet_loss",
    "orthogonal_loss",
    "wrt_loss",
]
