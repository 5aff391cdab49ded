"""Converters that load the checkpoints of the official code bases into the library's models."""

from ._official import OfficialConversion, OfficialLoadResult
from .agw import convert_official_agw_state_dict, load_official_agw
from .deen import (
    OfficialDEENConversion,
    OfficialDEENLoadResult,
    convert_official_deen_state_dict,
    load_official_deen,
)

__all__ = [
    "OfficialConversion",
    "OfficialDEENConversion",
    "OfficialDEENLoadResult",
    "OfficialLoadResult",
    "convert_official_agw_state_dict",
    "convert_official_deen_state_dict",
    "load_official_agw",
    "load_official_deen",
]
