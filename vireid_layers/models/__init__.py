"""Networks assembled from the layers: DEEN :cite:`zhang2023deen` on the two-stream backbone."""

from .deen import DEEN, DEENCriterion, DEENOutput, DEENVariant, EmbedMode

__all__ = ["DEEN", "DEENCriterion", "DEENOutput", "DEENVariant", "EmbedMode"]
