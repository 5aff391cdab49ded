"""The LLCM protocol: all images of one modality against ten random single-shot galleries of the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..._validation import check_choice, check_int
from ...data.records import ImageRecord, VIReIDDataset
from ...modality import Modality
from ..exclusion import ExclusionRule, exclude_same_identity_and_camera
from .base import EvaluationProtocol
from .direction import Direction
from .results import CMCDefinition
from .sampling import candidates, seeded_sample
from .trials import TrialSelection

__all__ = ["LLCMProtocol"]


@dataclass(frozen=True)
class LLCMProtocol(EvaluationProtocol):
    """LLCM :cite:`zhang2023deen`: all images of one modality against ten random single-shot galleries.

    Queries: every test image of the query modality, through its stem. Gallery of trial :math:`t`: with a
    local ``random.Random(t)``, one image per (identity ascending, camera ascending) of the gallery modality,
    ``rng.choice`` over the paths sorted as strings, which reproduces the official ``random.seed(t)`` draw.
    Cameras are those present in ``dataset.test`` (VIS 1-9, NIR 1, 2, 4-9 in the published data). Gallery
    images of the query's identity seen by the query's camera number are removed
    (:func:`~vireid_layers.evaluation.exclude_same_identity_and_camera`; VIS camN and NIR camN are
    the same place). The identity-deduplicated CMC is reported, as ``eval_llcm`` does.

    ``direction="visible_to_infrared"`` is a true visible→infrared evaluation: visible queries, sampled
    infrared gallery. The official code's "VIS to IR" mode (``test_mode = [2, 1]``) evaluates something else
    (reference §2.3): it samples one **infrared** image per (identity, camera) per trial and uses them as the
    **queries** against the **full visible** gallery (an infrared→visible evaluation with sub-sampled
    queries). That behaviour is available, for comparison with published "VIS to IR" numbers, as
    :meth:`official_sampled_infrared_queries` (``official_vis_to_ir_compat=True``).

    Args:
        direction: :class:`Direction` or its name. Official default: infrared→visible.
        official_vis_to_ir_compat: reproduce the official "VIS to IR" evaluation described above (requires
            ``direction="visible_to_infrared"``, the label the official code gives it).
        num_trials: random galleries averaged (10 officially).
        reported_cmc: the CMC shown first in tables; ``"dedup"`` as in the official code.

    Examples:
        >>> from vireid_layers.evaluation import LLCMProtocol
        >>> p = LLCMProtocol("v2i")
        >>> p.query_modality.name, p.gallery_modality.name
        ('VISIBLE', 'INFRARED')
        >>> c = LLCMProtocol.official_sampled_infrared_queries()
        >>> c.query_modality.name, c.gallery_modality.name, c.sampled_side
        ('INFRARED', 'VISIBLE', 'query')
    """

    direction: Direction
    official_vis_to_ir_compat: bool = False
    num_trials: int = 10
    reported_cmc: CMCDefinition = "dedup"

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", Direction.parse(self.direction))
        if not isinstance(self.official_vis_to_ir_compat, bool):
            raise TypeError(
                f"`official_vis_to_ir_compat` must be a bool, got {type(self.official_vis_to_ir_compat).__name__}"
            )
        if self.official_vis_to_ir_compat and self.direction is not Direction.VISIBLE_TO_INFRARED:
            raise ValueError(
                "`official_vis_to_ir_compat=True` reproduces the official 'VIS to IR' mode and needs "
                f"direction='visible_to_infrared', got {self.direction.value!r}"
            )
        check_int(self.num_trials, "num_trials")
        check_choice(self.reported_cmc, "reported_cmc", ("dedup", "standard"))

    @classmethod
    def official_sampled_infrared_queries(cls, num_trials: int = 10) -> LLCMProtocol:
        """The official DEEN "VIS to IR" evaluation: sampled-infrared queries against the full visible gallery.

        Per trial :math:`t`, one infrared image per (identity, camera) drawn with ``random.Random(t)`` is a
        query (infrared stem), and every visible test image is in the gallery (visible stem). Use it only to
        compare with numbers published as LLCM "VIS to IR"; it is not a visible-query evaluation.
        """
        return cls(Direction.VISIBLE_TO_INFRARED, official_vis_to_ir_compat=True, num_trials=num_trials)

    @property
    def sampled_side(self) -> Literal["query", "gallery"]:
        """Which side is drawn per trial: the gallery, or the queries in the compat mode."""
        return "query" if self.official_vis_to_ir_compat else "gallery"

    @property
    def name(self) -> str:
        """E.g. ``"LLCM visible→infrared"``."""
        if self.official_vis_to_ir_compat:
            return "LLCM official 'VIS to IR' compat (sampled infrared queries, full visible gallery)"
        return f"LLCM {self.direction.label}"

    @property
    def query_modality(self) -> Modality:
        """Modality of the queries (infrared in the compat mode)."""
        return Modality.INFRARED if self.official_vis_to_ir_compat else self.direction.query_modality

    @property
    def gallery_modality(self) -> Modality:
        """Modality of the gallery (visible in the compat mode)."""
        return Modality.VISIBLE if self.official_vis_to_ir_compat else self.direction.gallery_modality

    @property
    def exclude(self) -> ExclusionRule:
        """Same identity and same camera number."""
        return exclude_same_identity_and_camera

    def query_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every test image of the query modality, sorted by (identity, camera, path)."""
        return candidates(dataset, self.query_modality, None)

    def gallery_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every test image of the gallery modality, sorted by (identity, camera, path)."""
        return candidates(dataset, self.gallery_modality, None)

    def _select(self, queries: list[ImageRecord], gallery: list[ImageRecord], trial: int) -> TrialSelection:
        if self.official_vis_to_ir_compat:
            cameras = sorted({r.camera for r in queries})
            return TrialSelection(tuple(seeded_sample(queries, cameras, trial, 1)), tuple(range(len(gallery))))
        cameras = sorted({r.camera for r in gallery})
        return TrialSelection(tuple(range(len(queries))), tuple(seeded_sample(gallery, cameras, trial, 1)))

    def settings(self) -> dict[str, Any]:
        """The protocol's parameters, JSON-serialisable."""
        return {
            "protocol": "llcm",
            "mode": "all",
            "direction": self.direction.value,
            "gallery_sampling": "seeded",
            "sampled_side": self.sampled_side,
            "shots": "all" if self.official_vis_to_ir_compat else 1,
            "official_vis_to_ir_compat": self.official_vis_to_ir_compat,
            "num_trials": self.num_trials,
            "reported_cmc": self.reported_cmc,
            "exclude": self.exclude.__name__,
        }
