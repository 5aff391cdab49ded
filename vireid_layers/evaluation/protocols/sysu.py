"""The SYSU-MM01 protocol: all-search / indoor-search, single-shot / multi-shot, seeded or official galleries."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from ..._validation import check_choice, check_int
from ...data.datasets.sysu import SYSU_INDOOR_IR_CAMERAS, SYSU_INDOOR_RGB_CAMERAS, SYSU_IR_CAMERAS, SYSU_RGB_CAMERAS
from ...data.records import ImageRecord, VIReIDDataset
from ...modality import Modality
from ..exclusion import ExclusionRule, exclude_sysu_indoor_camera, exclude_sysu_indoor_camera_reversed
from .base import EvaluationProtocol
from .direction import Direction
from .results import CMCDefinition
from .sampling import candidates, permutation_sample, seeded_sample
from .sysu_permutation import SYSUPermutation, load_sysu_permutation
from .trials import TrialSelection

__all__ = ["SYSU_INFRARED_CAMERAS", "SYSU_VISIBLE_CAMERAS", "SYSUProtocol"]

#: SYSU-MM01 visible (RGB) cameras: 1, 2 indoor; 4, 5 outdoor. The same object as
#: :data:`vireid_layers.data.datasets.sysu.SYSU_RGB_CAMERAS`, under the evaluation's modality name.
SYSU_VISIBLE_CAMERAS: tuple[int, ...] = SYSU_RGB_CAMERAS
#: SYSU-MM01 infrared cameras: 3 indoor, 6 outdoor. The same object as
#: :data:`vireid_layers.data.datasets.sysu.SYSU_IR_CAMERAS`.
SYSU_INFRARED_CAMERAS: tuple[int, ...] = SYSU_IR_CAMERAS
_CAMERAS = {Modality.VISIBLE: SYSU_RGB_CAMERAS, Modality.INFRARED: SYSU_IR_CAMERAS}
_INDOOR = {Modality.VISIBLE: SYSU_INDOOR_RGB_CAMERAS, Modality.INFRARED: SYSU_INDOOR_IR_CAMERAS}


@dataclass(frozen=True)
class SYSUProtocol(EvaluationProtocol):
    """SYSU-MM01 :cite:`wu2017sysu` all-search / indoor-search, single-shot / multi-shot, over trials.

    **Standard direction (infrared→visible).** Queries: every infrared test image of cameras 3 and 6 (both
    modes), through the infrared stem. Gallery of trial :math:`t`: for every test identity (ascending) and
    every RGB camera (all-search 1, 2, 4, 5; indoor-search 1, 2) that has images of it, ``shots`` images,
    through the visible stem. Camera-3 queries never see camera-2 gallery images (same room;
    :func:`~vireid_layers.evaluation.exclude_sysu_indoor_camera`). The reported CMC is the
    identity-deduplicated one of the official code; the standard one is in the result too.

    **Galleries.**

    * ``gallery_sampling="seeded"`` (DEEN/AGW/DDAG): ``rng = random.Random(t)``, a local generator (the
      global ``random`` state is never touched); per (identity, camera) in the order above, ``rng.choice``
      over the image paths sorted as strings (``shots=1``). This is exactly the gallery of the official
      ``random.seed(t)`` + ``random.choice(sorted(files))`` when the folders hold the same image files.
      Multi-shot is defined by the official SYSU-MM01 permutation protocol (MPANet, ten images per identity
      and camera); the seeded variant generalises it as ``rng.sample(files, min(shots, n))``, which no
      official code base implements (DEEN/AGW evaluate single-shot only).
    * ``gallery_sampling="official"`` (MPANet, the SYSU-MM01 authors): the first ``shots`` instance numbers of
      ``perm[camera][identity - 1][t]`` from ``exp/rand_perm_cam.mat`` (:func:`load_sysu_permutation`, needs
      scipy: ``pip install "vireid-layers[sysu]"``) name the files ``cam{camera}/{identity:04d}/{instance:04d}.*``.

    **Visible→infrared (non-standard).** Queries: every RGB test image of cameras 1, 2, 4, 5; gallery: the
    same sampling over the infrared cameras (all-search 3, 6; indoor-search 3); camera-2 queries never see
    camera-3 images (:func:`~vireid_layers.evaluation.exclude_sysu_indoor_camera_reversed`). No published
    number uses it.

    Args:
        mode: ``"all"`` or ``"indoor"``.
        shots: images per (identity, camera) in the gallery; 1 (single-shot) or 10 (multi-shot).
        gallery_sampling: ``"seeded"`` or ``"official"``.
        permutation_file: path of ``rand_perm_cam.mat``, for ``gallery_sampling="official"``.
        direction: a :class:`Direction` (or its name); default infrared→visible, the standard one.
        num_trials: trials (galleries) averaged; 10 in every official evaluation.
        reported_cmc: the CMC shown first in tables; ``"dedup"`` as in the official code.
        permutation: an already loaded permutation (:data:`SYSUPermutation`), instead of ``permutation_file``.

    Examples:
        >>> from vireid_layers.evaluation import SYSUProtocol
        >>> p = SYSUProtocol(mode="indoor")
        >>> p.query_modality.name, p.gallery_modality.name, p.gallery_cameras, p.num_trials
        ('INFRARED', 'VISIBLE', (1, 2), 10)
        >>> p.with_direction("v2i").query_modality.name
        'VISIBLE'
    """

    mode: Literal["all", "indoor"] = "all"
    shots: int = 1
    gallery_sampling: Literal["seeded", "official"] = "seeded"
    permutation_file: str | os.PathLike[str] | None = None
    direction: Direction = Direction.INFRARED_TO_VISIBLE
    num_trials: int = 10
    reported_cmc: CMCDefinition = "dedup"
    permutation: SYSUPermutation | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_choice(self.mode, "mode", ("all", "indoor"))
        check_int(self.shots, "shots")
        check_choice(self.gallery_sampling, "gallery_sampling", ("seeded", "official"))
        check_int(self.num_trials, "num_trials")
        check_choice(self.reported_cmc, "reported_cmc", ("dedup", "standard"))
        object.__setattr__(self, "direction", Direction.parse(self.direction))
        has_perm = self.permutation_file is not None or self.permutation is not None
        if self.gallery_sampling == "official" and not has_perm:
            raise ValueError(
                "`permutation_file` (SYSU-MM01/exp/rand_perm_cam.mat) or `permutation` is required with "
                "gallery_sampling='official'"
            )
        if self.gallery_sampling == "seeded" and has_perm:
            raise ValueError("`permutation_file`/`permutation` is only used with gallery_sampling='official'")

    @property
    def name(self) -> str:
        """E.g. ``"SYSU-MM01 all-search single-shot, seeded gallery, infrared→visible"``."""
        shot = "single-shot" if self.shots == 1 else f"multi-shot ({self.shots})"
        source = "seeded gallery" if self.gallery_sampling == "seeded" else "official permutation gallery"
        return f"SYSU-MM01 {self.mode}-search {shot}, {source}, {self.direction.label}"

    @property
    def query_modality(self) -> Modality:
        """Modality of the queries: infrared in the standard direction."""
        return self.direction.query_modality

    @property
    def gallery_modality(self) -> Modality:
        """Modality of the gallery: visible in the standard direction."""
        return self.direction.gallery_modality

    @property
    def query_cameras(self) -> tuple[int, ...]:
        """All cameras of the query modality (both modes)."""
        return _CAMERAS[self.query_modality]

    @property
    def gallery_cameras(self) -> tuple[int, ...]:
        """Gallery cameras, in sampling order: indoor-search keeps the indoor ones."""
        return (_INDOOR if self.mode == "indoor" else _CAMERAS)[self.gallery_modality]

    @property
    def exclude(self) -> ExclusionRule:
        """Camera 3 and camera 2 film the same room: that pair is removed."""
        if self.direction is Direction.INFRARED_TO_VISIBLE:
            return exclude_sysu_indoor_camera
        return exclude_sysu_indoor_camera_reversed

    def query_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every test image of the query modality and cameras, sorted by (identity, camera, path)."""
        return candidates(dataset, self.query_modality, self.query_cameras)

    def gallery_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every test image of the gallery modality and cameras, sorted by (identity, camera, path)."""
        return candidates(dataset, self.gallery_modality, self.gallery_cameras)

    def _permutation(self) -> SYSUPermutation:
        if self.permutation is not None:
            return self.permutation
        if self.permutation_file is None:  # excluded by __post_init__
            raise ValueError("`permutation_file` is required with gallery_sampling='official'")
        return load_sysu_permutation(self.permutation_file)

    def _select(self, queries: list[ImageRecord], gallery: list[ImageRecord], trial: int) -> TrialSelection:
        if self.gallery_sampling == "seeded":
            chosen = seeded_sample(gallery, self.gallery_cameras, trial, self.shots)
        else:
            chosen = permutation_sample(gallery, self.gallery_cameras, self._permutation(), trial, self.shots)
        return TrialSelection(tuple(range(len(queries))), tuple(chosen))

    def settings(self) -> dict[str, Any]:
        """The protocol's parameters, JSON-serialisable."""
        return {
            "protocol": "sysu",
            "mode": self.mode,
            "direction": self.direction.value,
            "gallery_sampling": self.gallery_sampling,
            "shots": self.shots,
            "permutation_file": None if self.permutation_file is None else os.fspath(self.permutation_file),
            "num_trials": self.num_trials,
            "reported_cmc": self.reported_cmc,
            "exclude": self.exclude.__name__,
        }
