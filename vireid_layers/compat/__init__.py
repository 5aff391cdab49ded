"""Converters that load the checkpoints of the official code bases into the library's models."""

from ._official import OfficialConversion, OfficialLoadResult
from .agw import convert_official_agw_state_dict, load_official_agw
from .ddag import convert_official_ddag_state_dict, load_official_ddag
from .deen import (
    OfficialDEENConversion,
    OfficialDEENLoadResult,
    convert_official_deen_state_dict,
    load_official_deen,
)
from .detect import OfficialModel, detect_official_model, read_official_checkpoint
from .mpanet import convert_official_mpanet_state_dict, load_official_mpanet

__all__ = [
    "OfficialConversion",
    "OfficialDEENConversion",
    "OfficialDEENLoadResult",
    "OfficialLoadResult",
    "OfficialModel",
    "convert_official_agw_state_dict",
    "convert_official_ddag_state_dict",
    "convert_official_deen_state_dict",
    "convert_official_mpanet_state_dict",
    "detect_official_model",
    "load_official_agw",
    "load_official_ddag",
    "load_official_deen",
    "load_official_mpanet",
    "read_official_checkpoint",
]
