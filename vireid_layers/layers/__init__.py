"""Layers of the VI-ReID methods: self-contained ``nn.Module`` s, one per file."""

from .cgsa import CGSA, graph_attention
from .dee import DEE
from .gem import GeM, gem
from .iwpa import IWPA, IWPAForm
from .mam import MAM
from .mfa import MFA, MFAForm
from .non_local import NonLocal, NonLocalForm
from .pam import PAM, PAMOutput
from .sobel import SobelCombine, SobelEdges, sobel_edges, sobel_kernels

__all__ = [
    "CGSA",
    "DEE",
    "GeM",
    "IWPA",
    "IWPAForm",
    "MAM",
    "MFA",
    "MFAForm",
    "NonLocal",
    "NonLocalForm",
    "PAM",
    "PAMOutput",
    "SobelCombine",
    "SobelEdges",
    "gem",
    "graph_attention",
    "sobel_edges",
    "sobel_kernels",
]
