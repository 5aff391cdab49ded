"""Converters that load the checkpoints of the official code bases into the library's models."""

from .deen import (
    OfficialDEENConversion,
    OfficialDEENLoadResult,
    convert_official_deen_state_dict,
    load_official_deen,
)

__all__ = [
    "OfficialDEENConversion",
    "OfficialDEENLoadResult",
    "convert_official_deen_state_dict",
    "load_official_deen",
]
