"""Layers of the VI-ReID methods: self-contained ``nn.Module`` s, one per file."""

from .dee import DEE
from .mfa import MFA

__all__ = ["DEE", "MFA"]
