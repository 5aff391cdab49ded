"""Networks assembled from the layers: DEEN :cite:`zhang2023deen` and AGW :cite:`ye2021agw`."""

from .agw import AGW, OFFICIAL_NON_LOCAL_BLOCKS, AGWCriterion, AGWFeature, AGWMethod, AGWOutput
from .deen import DEEN, DEENCriterion, DEENOutput, DEENVariant, EmbedMode

__all__ = [
    "AGW",
    "AGWCriterion",
    "AGWFeature",
    "AGWMethod",
    "AGWOutput",
    "DEEN",
    "DEENCriterion",
    "DEENOutput",
    "DEENVariant",
    "EmbedMode",
    "OFFICIAL_NON_LOCAL_BLOCKS",
]
