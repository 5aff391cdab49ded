"""vireid-layers: correct, fast, tested building blocks for visible-infrared person re-identification.

The flat public API: every layer, loss, the two-stream backbone builder and the modality convention.
Distances and centres live in :mod:`vireid_layers.distances`.
"""

from ._version import __version__
from .backbones import TwoStreamBackbone, build_two_stream_backbone
from .layers import DEE, MFA
from .losses import (
    CPMLoss,
    HardTripletLoss,
    OrthogonalLoss,
    WRTLoss,
    cpm_loss,
    hard_triplet_loss,
    orthogonal_loss,
    wrt_loss,
)
from .modality import Modality, merge_by_modality, split_by_modality

__all__ = [
    "DEE",
    "MFA",
    "CPMLoss",
    "HardTripletLoss",
    "Modality",
    "OrthogonalLoss",
    "TwoStreamBackbone",
    "WRTLoss",
    "__version__",
    "build_two_stream_backbone",
    "cpm_loss",
    "hard_triplet_loss",
    "merge_by_modality",
    "orthogonal_loss",
    "split_by_modality",
    "wrt_loss",
]
