"""Networks assembled from the layers: DEEN, AGW, DDAG and MPANet.

DEEN :cite:`zhang2023deen`, AGW :cite:`ye2021agw`, DDAG :cite:`ye2020ddag` and MPANet :cite:`wu2021mpanet`.
"""

from .agw import AGW, OFFICIAL_NON_LOCAL_BLOCKS, AGWCriterion, AGWFeature, AGWMethod, AGWOutput
from .ddag import DDAG, DDAGFeature, DDAGOutput
from .ddag_criterion import DDAGCriterion
from .deen import DEEN, DEENCriterion, DEENOutput, DEENVariant, EmbedMode
from .mpanet import MPANet, MPANetOutput
from .mpanet_criterion import MPANetCriterion
from .mso import MSO, MSOFeature, MSOOutput, VGGWeights
from .mso_criterion import MSOCriterion

__all__ = [
    "AGW",
    "AGWCriterion",
    "AGWFeature",
    "AGWMethod",
    "AGWOutput",
    "DDAG",
    "DDAGCriterion",
    "DDAGFeature",
    "DDAGOutput",
    "DEEN",
    "DEENCriterion",
    "DEENOutput",
    "DEENVariant",
    "EmbedMode",
    "MPANet",
    "MPANetCriterion",
    "MPANetOutput",
    "MSO",
    "MSOCriterion",
    "MSOFeature",
    "MSOOutput",
    "OFFICIAL_NON_LOCAL_BLOCKS",
    "VGGWeights",
]
