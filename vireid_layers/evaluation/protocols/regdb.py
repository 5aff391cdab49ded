"""The RegDB protocol: every test image of one modality against every test image of the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..._validation import check_choice
from ...data.records import ImageRecord, VIReIDDataset
from ...modality import Modality
from .base import EvaluationProtocol
from .direction import Direction
from .results import CMCDefinition
from .sampling import candidates
from .trials import TrialSelection

__all__ = ["RegDBProtocol"]


@dataclass(frozen=True)
class RegDBProtocol(EvaluationProtocol):
    """RegDB :cite:`nguyen2017regdb`: every test image of one modality against every test image of the other.

    The split (trial) is the dataset's: RegDB's ten splits are ten datasets, each with its own trained
    model, so this protocol has a single trial; pool the ten results with :meth:`ProtocolResult.combine`.
    Nothing is removed (the official ``eval_regdb`` gives queries camera 1 and the gallery camera 2) and the
    standard CMC is reported.

    Args:
        direction: visible→infrared (visible queries through the visible stem, thermal gallery through the
            thermal stem; the AGW/DDAG default) or infrared→visible.
        reported_cmc: the CMC shown first in tables; ``"standard"`` as in the official code.

    Examples:
        >>> from vireid_layers.evaluation import RegDBProtocol
        >>> p = RegDBProtocol("t2v")
        >>> p.query_modality.name, p.gallery_modality.name, p.exclude is None, p.num_trials
        ('INFRARED', 'VISIBLE', True, 1)
    """

    direction: Direction
    reported_cmc: CMCDefinition = "standard"

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", Direction.parse(self.direction))
        check_choice(self.reported_cmc, "reported_cmc", ("dedup", "standard"))

    @property
    def num_trials(self) -> int:  # type: ignore[override]
        """Always 1: the trial is the dataset's split."""
        return 1

    @property
    def name(self) -> str:
        """E.g. ``"RegDB visible→infrared"``."""
        return f"RegDB {self.direction.label}"

    @property
    def query_modality(self) -> Modality:
        """Modality of the queries."""
        return self.direction.query_modality

    @property
    def gallery_modality(self) -> Modality:
        """Modality of the gallery."""
        return self.direction.gallery_modality

    @property
    def exclude(self) -> None:
        """Nothing is removed."""
        return None

    def query_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every test image of the query modality, sorted by (identity, camera, path)."""
        return candidates(dataset, self.query_modality, None)

    def gallery_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every test image of the gallery modality, sorted by (identity, camera, path)."""
        return candidates(dataset, self.gallery_modality, None)

    def _check_trial(self, trial: object) -> int:
        if trial != 0 or isinstance(trial, bool):
            raise ValueError(
                f"`trial` must be 0 for RegDB, got {trial!r}: a RegDB split is a dataset (read it with its trial "
                "number) evaluated with its own model"
            )
        return 0

    def _select(self, queries: list[ImageRecord], gallery: list[ImageRecord], trial: int) -> TrialSelection:
        self._check_trial(trial)
        return TrialSelection(tuple(range(len(queries))), tuple(range(len(gallery))))

    def settings(self) -> dict[str, Any]:
        """The protocol's parameters, JSON-serialisable (the split is the dataset's: callers add ``"split"``)."""
        return {
            "protocol": "regdb",
            "mode": "all",
            "direction": self.direction.value,
            "gallery_sampling": "none",
            "shots": "all",
            "num_trials": 1,
            "reported_cmc": self.reported_cmc,
            "exclude": None,
        }
