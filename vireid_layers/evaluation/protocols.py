r"""Evaluation protocols of SYSU-MM01, RegDB and LLCM, the direction switch, and mean ± std over trials.

A protocol is a small frozen object that answers four questions about a :class:`~vireid_layers.data.VIReIDDataset`:

* which test images are the **queries** and which form the **gallery** of trial :math:`t`
  (:meth:`EvaluationProtocol.query`, :meth:`EvaluationProtocol.gallery`);
* which **stem** (modality branch of the model) each side goes through
  (:attr:`~EvaluationProtocol.query_modality`, :attr:`~EvaluationProtocol.gallery_modality`);
* which gallery items a query must **not** see (:attr:`~EvaluationProtocol.exclude`, a rule of
  :mod:`vireid_layers.evaluation.metrics`);
* which CMC definition is **reported** (:attr:`~EvaluationProtocol.reported_cmc`; both are always computed).

The one-argument direction switch is ``direction``: it picks the query and gallery sets *and* the stems
together, so a visible→infrared evaluation can never send visible queries through the infrared stem.

:func:`evaluate_protocol` runs a protocol end to end from an ``extract(records, modality)`` callable:
features of every image used by any trial are extracted once, through the stem of its side, and each trial
ranks its gallery by cosine similarity (see :func:`negative_cosine_similarity`).

Strings name protocols only at the configuration boundary (:func:`build_protocol`, :data:`PROTOCOLS`); the
protocol classes take validated values and contain no dispatch on names.
"""

from __future__ import annotations

import abc
import enum
import functools
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_choice, check_int, check_shape
from ..data.records import ImageRecord, VIReIDDataset
from ..modality import Modality
from .metrics import (
    ExclusionRule,
    RetrievalMetrics,
    exclude_same_identity_and_camera,
    exclude_sysu_indoor_camera,
    retrieval_metrics,
)

__all__ = [
    "PROTOCOLS",
    "SYSU_INFRARED_CAMERAS",
    "SYSU_VISIBLE_CAMERAS",
    "CMCDefinition",
    "Direction",
    "EvaluationProtocol",
    "LLCMProtocol",
    "ProtocolResult",
    "RegDBProtocol",
    "SYSUPermutation",
    "SYSUProtocol",
    "TrialResult",
    "TrialSelection",
    "build_protocol",
    "evaluate_protocol",
    "exclude_sysu_indoor_camera_reversed",
    "load_sysu_permutation",
    "negative_cosine_similarity",
    "parse_sysu_permutation",
    "register_protocol",
]

CMCDefinition = Literal["standard", "dedup"]
"""``"standard"``: rank of the first true match; ``"dedup"``: rank among distinct gallery identities."""

#: SYSU-MM01 visible (RGB) cameras: 1, 2 indoor; 4, 5 outdoor.
SYSU_VISIBLE_CAMERAS: tuple[int, ...] = (1, 2, 4, 5)
#: SYSU-MM01 infrared cameras: 3 indoor, 6 outdoor.
SYSU_INFRARED_CAMERAS: tuple[int, ...] = (3, 6)
_SYSU_INDOOR = {Modality.VISIBLE: (1, 2), Modality.INFRARED: (3,)}

#: Ranks reported by :class:`ProtocolResult` (the usual Rank-1/5/10/20).
_RANKS: tuple[int, ...] = (1, 5, 10, 20)

SYSUPermutation = Mapping[int, Sequence[Sequence[Sequence[int]]]]
"""The official SYSU-MM01 gallery permutation: ``perm[camera][identity - 1][trial]`` is a sequence of 1-based
instance numbers; the first ``shots`` of them name the gallery files ``cam{camera}/{identity:04d}/{instance:04d}.*``.
"""


# --------------------------------------------------------------------------------------------------------------
# Direction
# --------------------------------------------------------------------------------------------------------------


class Direction(str, enum.Enum):
    """Which modality queries and which modality forms the gallery.

    The value also fixes the stem each side goes through: queries through the stem of
    :attr:`query_modality`, the gallery through that of :attr:`gallery_modality`.

    Examples:
        >>> Direction.parse("v2i")
        <Direction.VISIBLE_TO_INFRARED: 'visible_to_infrared'>
        >>> d = Direction.parse("infrared_to_visible")
        >>> d.query_modality.name, d.gallery_modality.name, d.short, d.reversed.short
        ('INFRARED', 'VISIBLE', 'i2v', 'v2i')
    """

    VISIBLE_TO_INFRARED = "visible_to_infrared"
    INFRARED_TO_VISIBLE = "infrared_to_visible"

    @classmethod
    def parse(cls, value: Direction | str) -> Direction:
        """Accept a :class:`Direction`, its value, or a short alias (``"v2i"``, ``"i2v"``, ``"v2t"``, ``"t2v"``).

        Raises:
            ValueError: unknown name; the message lists the accepted ones.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().lower()
            if key in _DIRECTION_ALIASES:
                return cls(_DIRECTION_ALIASES[key])
        raise ValueError(f"`direction` must be one of {sorted(_DIRECTION_ALIASES)}, got {value!r}")

    @property
    def query_modality(self) -> Modality:
        """Modality of the queries (and the stem they go through)."""
        return Modality.VISIBLE if self is Direction.VISIBLE_TO_INFRARED else Modality.INFRARED

    @property
    def gallery_modality(self) -> Modality:
        """Modality of the gallery (and the stem it goes through)."""
        return Modality.INFRARED if self is Direction.VISIBLE_TO_INFRARED else Modality.VISIBLE

    @property
    def reversed(self) -> Direction:
        """The opposite direction."""
        return Direction.INFRARED_TO_VISIBLE if self is Direction.VISIBLE_TO_INFRARED else Direction.VISIBLE_TO_INFRARED

    @property
    def short(self) -> str:
        """``"v2i"`` or ``"i2v"``."""
        return "v2i" if self is Direction.VISIBLE_TO_INFRARED else "i2v"

    @property
    def label(self) -> str:
        """Human-readable label, ``"visible→infrared"`` or ``"infrared→visible"``."""
        return "visible→infrared" if self is Direction.VISIBLE_TO_INFRARED else "infrared→visible"


_DIRECTION_ALIASES = {
    "visible_to_infrared": "visible_to_infrared",
    "infrared_to_visible": "infrared_to_visible",
    "v2i": "visible_to_infrared",
    "i2v": "infrared_to_visible",
    "v2t": "visible_to_infrared",
    "t2v": "infrared_to_visible",
    "visible_to_thermal": "visible_to_infrared",
    "thermal_to_visible": "infrared_to_visible",
}


# --------------------------------------------------------------------------------------------------------------
# Selection helpers
# --------------------------------------------------------------------------------------------------------------


def exclude_sysu_indoor_camera_reversed(q_ids: Tensor, q_cams: Tensor, g_ids: Tensor, g_cams: Tensor) -> Tensor:
    """SYSU-MM01 rule for the (non-standard) visible→infrared direction: a camera-2 query never sees camera 3.

    The mirror image of :func:`~vireid_layers.evaluation.metrics.exclude_sysu_indoor_camera`: cameras 2 (RGB)
    and 3 (IR) film the same indoor room, so the pair is removed whichever side queries.
    """
    return (q_cams.unsqueeze(1) == 2) & (g_cams.unsqueeze(0) == 3)


def _sort_key(record: ImageRecord) -> tuple[int, int, str]:
    return (record.identity, record.camera, str(record.path))


def _candidates(dataset: VIReIDDataset, modality: Modality, cameras: Iterable[int] | None) -> list[ImageRecord]:
    """Test records of one modality (and cameras), sorted by (identity, camera, path)."""
    if not isinstance(dataset, VIReIDDataset):
        raise TypeError(f"`dataset` must be a VIReIDDataset, got {type(dataset).__name__}")
    return sorted(dataset.select(dataset.test, modality=modality, cameras=cameras), key=_sort_key)


def _groups(records: Sequence[ImageRecord]) -> dict[tuple[int, int], list[int]]:
    """Indices of ``records`` per (identity, camera); within a group in the order of ``records``."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault((record.identity, record.camera), []).append(index)
    return groups


def _seeded_sample(records: Sequence[ImageRecord], cameras: Sequence[int], seed: int, shots: int) -> list[int]:
    """The official DEEN/AGW gallery draw, with a local ``random.Random(seed)``.

    ``records`` must be sorted by (identity, camera, path). For each identity (ascending) and each camera of
    ``cameras`` (in that order) that has images, one index is drawn with ``rng.choice`` over the group
    (``shots == 1``), or ``min(shots, n)`` with ``rng.sample`` (returned in path order).
    """
    groups = _groups(records)
    rng = random.Random(seed)
    chosen: list[int] = []
    for identity in sorted({r.identity for r in records}):
        for camera in cameras:
            members = groups.get((identity, camera))
            if not members:
                continue
            if shots == 1:
                chosen.append(rng.choice(members))
            else:
                chosen.extend(sorted(rng.sample(members, min(shots, len(members)))))
    return chosen


def _instance_number(record: ImageRecord) -> int | None:
    stem = Path(record.path).stem
    return int(stem) if stem.isdigit() else None


def _permutation_sample(
    records: Sequence[ImageRecord], cameras: Sequence[int], permutation: SYSUPermutation, trial: int, shots: int
) -> list[int]:
    """MPANet's reading of ``rand_perm_cam.mat``: the first ``shots`` instances of ``perm[cam][id - 1][trial]``."""
    groups = _groups(records)
    chosen: list[int] = []
    for identity in sorted({r.identity for r in records}):
        for camera in cameras:
            members = groups.get((identity, camera))
            per_id = permutation.get(camera, ())
            if not members or not 1 <= identity <= len(per_id) or len(per_id[identity - 1]) == 0:
                continue  # the official MATLAB code skips empty permutations the same way
            rows = per_id[identity - 1]
            if trial >= len(rows):
                raise ValueError(
                    f"`trial` {trial} is out of range: the permutation has {len(rows)} trials for camera {camera}, "
                    f"identity {identity}"
                )
            by_instance = {_instance_number(records[i]): i for i in members}
            picked = []
            for instance in list(rows[trial])[:shots]:
                index = by_instance.get(int(instance))
                if index is None:
                    raise ValueError(
                        f"the SYSU-MM01 permutation selects cam{camera}/{identity:04d}/{int(instance):04d}, which is "
                        "not among the dataset's test records: the permutation file does not match the dataset"
                    )
                picked.append(index)
            chosen.extend(sorted(picked))
    return chosen


def parse_sysu_permutation(cells: Any) -> dict[int, tuple[tuple[tuple[int, ...], ...], ...]]:
    """Convert the ``rand_perm_cam`` variable of ``scipy.io.loadmat`` into plain tuples.

    The MATLAB file holds a 6-element cell (one per camera) of per-identity cells (identity ``1..533``), each a
    ``trials × n`` matrix of 1-based instance numbers (empty when the camera never saw the identity). scipy
    returns nested ``object`` arrays; singleton wrappers are unwrapped.

    Args:
        cells: ``loadmat(path)["rand_perm_cam"]``.

    Returns:
        ``{camera: per_identity}`` with ``per_identity[identity - 1][trial]`` a tuple of instance numbers; see
        :data:`SYSUPermutation`.

    Examples:
        >>> import numpy as np
        >>> inner = np.empty((2, 1), dtype=object)
        >>> inner[0, 0] = np.array([[2.0, 1.0], [1.0, 2.0]])
        >>> inner[1, 0] = np.zeros((0, 0))
        >>> outer = np.empty((1, 1), dtype=object)
        >>> outer[0, 0] = inner
        >>> parse_sysu_permutation(outer)
        {1: (((2, 1), (1, 2)), ())}
    """
    import numpy as np

    def is_cell(x: Any) -> bool:
        return isinstance(x, np.ndarray) and x.dtype == object and x.size > 0

    def is_camera_cell(x: Any) -> bool:  # a cell whose entries are numeric matrices (or empty)
        return is_cell(x) and not any(is_cell(e) for e in x.reshape(-1))

    def camera_cells(x: Any) -> list[Any]:  # descend through wrappers down to the per-camera cells
        if is_camera_cell(x):
            return [x]
        if not is_cell(x):
            raise ValueError(f"expected a MATLAB cell array (numpy object array), got {type(x).__name__}")
        return [cell for e in x.reshape(-1) for cell in camera_cells(e)]

    out: dict[int, tuple[tuple[tuple[int, ...], ...], ...]] = {}
    for camera, cell in enumerate(
        camera_cells(np.asarray(cells, dtype=object) if not isinstance(cells, np.ndarray) else cells), start=1
    ):
        per_identity = []
        for entry in cell.reshape(-1):
            matrix = np.asarray(entry, dtype=float)
            if matrix.size == 0:
                per_identity.append(())
                continue
            per_identity.append(tuple(tuple(int(v) for v in np.rint(row)) for row in np.atleast_2d(matrix)))
        out[camera] = tuple(per_identity)
    return out


@functools.lru_cache(maxsize=4)
def _load_permutation_cached(path: str) -> dict[int, tuple[tuple[tuple[int, ...], ...], ...]]:
    try:
        import scipy.io
    except ImportError as err:
        raise ImportError(
            "reading the official SYSU-MM01 permutation file (exp/rand_perm_cam.mat) needs scipy: "
            "`pip install scipy`, or use SYSUProtocol(gallery_sampling='seeded') (the DEEN/AGW galleries)"
        ) from err
    mat = scipy.io.loadmat(path)
    if "rand_perm_cam" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path} has no variable 'rand_perm_cam' (variables: {keys})")
    return parse_sysu_permutation(mat["rand_perm_cam"])


def load_sysu_permutation(path: str | os.PathLike[str]) -> dict[int, tuple[tuple[tuple[int, ...], ...], ...]]:
    """Read the official SYSU-MM01 ``exp/rand_perm_cam.mat`` (needs scipy, imported only here; cached).

    Args:
        path: the ``.mat`` file.

    Returns:
        The permutation as :func:`parse_sysu_permutation` returns it.

    Raises:
        ImportError: scipy is not installed (the message says how to proceed).
        FileNotFoundError: ``path`` does not exist.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`permutation_file` {path} does not exist (expected SYSU-MM01/exp/rand_perm_cam.mat)")
    return _load_permutation_cached(path)


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialSelection:
    """Indices of one trial's queries and gallery into the protocol's candidate lists.

    Attributes:
        query: positions in :meth:`EvaluationProtocol.query_candidates`.
        gallery: positions in :meth:`EvaluationProtocol.gallery_candidates`.
    """

    query: tuple[int, ...]
    gallery: tuple[int, ...]


@dataclass(frozen=True)
class TrialResult:
    """Metrics of one trial.

    Attributes:
        trial: trial number (the seed of a seeded gallery).
        num_query: number of queries.
        num_gallery: number of gallery images.
        metrics: the :class:`~vireid_layers.evaluation.metrics.RetrievalMetrics` of the trial.
    """

    trial: int
    num_query: int
    num_gallery: int
    metrics: RetrievalMetrics

    def values(self, ranks: Sequence[int] = _RANKS) -> dict[str, float]:
        """``rank{k}`` (standard CMC), ``rank{k}_dedup`` (deduplicated CMC), ``mAP`` and ``mINP`` as fractions.

        A rank beyond the gallery size takes the last CMC value (no further gallery item can match).
        """
        out: dict[str, float] = {}
        for dedup, suffix in ((False, ""), (True, "_dedup")):
            curve = self.metrics.cmc_dedup if dedup else self.metrics.cmc
            for k in ranks:
                out[f"rank{k}{suffix}"] = float(curve[min(k, curve.numel()) - 1]) if curve.numel() else 0.0
        out["mAP"] = self.metrics.mAP
        out["mINP"] = self.metrics.mINP
        return out


@dataclass(frozen=True)
class ProtocolResult:
    r"""Per-trial metrics of a protocol and their mean ± standard deviation over trials.

    Keys of :attr:`mean` / :attr:`std`: ``rank1, rank5, rank10, rank20`` (standard CMC),
    ``rank1_dedup, ...`` (identity-deduplicated CMC), ``mAP`` and ``mINP``, all fractions in :math:`[0, 1]`.
    The standard deviation is the sample one, :math:`\sqrt{\sum_t (x_t - \bar x)^2 / (T - 1)}`, and 0 for a
    single trial.

    Attributes:
        protocol: the protocol's :attr:`~EvaluationProtocol.name`.
        settings: the protocol's :meth:`~EvaluationProtocol.settings` (JSON-serialisable).
        reported_cmc: ``"dedup"`` or ``"standard"``: the CMC the protocol's reference code reports.
        trials: one :class:`TrialResult` per trial.
        ranks: the CMC ranks summarised.
    """

    protocol: str
    settings: dict[str, Any]
    reported_cmc: CMCDefinition
    trials: tuple[TrialResult, ...]
    ranks: tuple[int, ...] = _RANKS
    mean: dict[str, float] = field(init=False, repr=False)
    std: dict[str, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.trials:
            raise ValueError("`trials` must hold at least one TrialResult")
        table = [t.values(self.ranks) for t in self.trials]
        mean, std = {}, {}
        for key in table[0]:
            xs = [row[key] for row in table]
            mu = math.fsum(xs) / len(xs)
            mean[key] = mu
            std[key] = math.sqrt(math.fsum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def num_trials(self) -> int:
        """Number of trials."""
        return len(self.trials)

    def reported(self) -> dict[str, tuple[float, float]]:
        """``{"rank1": (mean, std), ..., "mAP": ..., "mINP": ...}`` with the ranks of :attr:`reported_cmc`."""
        suffix = "_dedup" if self.reported_cmc == "dedup" else ""
        out = {f"rank{k}": (self.mean[f"rank{k}{suffix}"], self.std[f"rank{k}{suffix}"]) for k in self.ranks}
        out["mAP"] = (self.mean["mAP"], self.std["mAP"])
        out["mINP"] = (self.mean["mINP"], self.std["mINP"])
        return out

    def format_table(self, *, digits: int = 2) -> str:
        """A markdown table in percent, mean ± std over trials, one row per CMC definition (reported first).

        Examples:
            >>> m = retrieval_metrics(torch.tensor([[0.1, 0.9]]), torch.tensor([1]), torch.tensor([1, 2]))
            >>> r = ProtocolResult("toy", {}, "standard", (TrialResult(0, 1, 2, m),))
            >>> lines = r.format_table().splitlines()
            >>> lines[0]
            '**toy**: 1 trial, mean ± std (%)'
            >>> lines[2]
            '| CMC | Rank-1 | Rank-5 | Rank-10 | Rank-20 | mAP | mINP |'
            >>> lines[4].split(" | ")[:2]
            ['| standard (reported)', '100.00 ± 0.00']
        """

        def cell(key: str) -> str:
            return f"{100 * self.mean[key]:.{digits}f} ± {100 * self.std[key]:.{digits}f}"

        labels = {"standard": "standard", "dedup": "identity-deduplicated"}
        order = ["dedup", "standard"] if self.reported_cmc == "dedup" else ["standard", "dedup"]
        header = "| CMC | " + " | ".join(f"Rank-{k}" for k in self.ranks) + " | mAP | mINP |"
        align = "|:--|" + "--:|" * (len(self.ranks) + 2)
        rows = []
        for definition in order:
            suffix = "_dedup" if definition == "dedup" else ""
            label = labels[definition] + (" (reported)" if definition == self.reported_cmc else "")
            cells = [cell(f"rank{k}{suffix}") for k in self.ranks] + [cell("mAP"), cell("mINP")]
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
        plural = "trial" if self.num_trials == 1 else "trials"
        title = f"**{self.protocol}**: {self.num_trials} {plural}, mean ± std (%)"
        return "\n".join([title, "", header, align, *rows])

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary: settings, mean, std, the reported metrics and every trial's values."""
        return {
            "protocol": self.protocol,
            "settings": dict(self.settings),
            "reported_cmc": self.reported_cmc,
            "num_trials": self.num_trials,
            "ranks": list(self.ranks),
            "mean": dict(self.mean),
            "std": dict(self.std),
            "reported": {k: {"mean": m, "std": s} for k, (m, s) in self.reported().items()},
            "trials": [
                {
                    "trial": t.trial,
                    "num_query": t.num_query,
                    "num_gallery": t.num_gallery,
                    "num_valid": t.metrics.num_valid,
                    **t.values(self.ranks),
                }
                for t in self.trials
            ],
        }

    @classmethod
    def combine(cls, results: Sequence[ProtocolResult]) -> ProtocolResult:
        """Pool the trials of several results of the same protocol, e.g. the ten RegDB splits.

        Each RegDB split is its own dataset (and model), so each gives a one-trial result; ``combine`` makes
        the mean ± std over splits. Trials are renumbered ``0..T-1`` in the order given.

        Raises:
            ValueError: ``results`` is empty or mixes protocols.
        """
        results = list(results)
        if not results:
            raise ValueError("`results` must hold at least one ProtocolResult")
        first = results[0]
        for r in results[1:]:
            if r.protocol != first.protocol or r.reported_cmc != first.reported_cmc or r.ranks != first.ranks:
                raise ValueError(f"`results` mixes protocols: {first.protocol!r} and {r.protocol!r}")
        trials = [t for r in results for t in r.trials]
        renumbered = tuple(replace(t, trial=i) for i, t in enumerate(trials))
        return cls(first.protocol, dict(first.settings), first.reported_cmc, renumbered, first.ranks)


# --------------------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------------------


def _feature_pair(query: Tensor, gallery: Tensor) -> tuple[Tensor, Tensor]:
    """Check ``(Q, D)`` and ``(G, D)`` features; both in float32 (float64 if either is), on the query's device."""
    query = check_shape(query, "query", "(Q, D)", 2)
    gallery = check_shape(gallery, "gallery", "(G, D)", 2)
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"`query` and `gallery` must have the same feature size, got {tuple(query.shape)} and "
            f"{tuple(gallery.shape)}"
        )
    dtype = torch.float64 if torch.float64 in (query.dtype, gallery.dtype) else torch.float32
    return query.to(dtype), gallery.to(device=query.device, dtype=dtype)


def negative_cosine_similarity(query: Tensor, gallery: Tensor) -> Tensor:
    r"""The distance every protocol ranks by: minus the cosine similarity of L2-normalised features.

    .. math:: d(q, g) = -\frac{q^\top g}{\|q\|\,\|g\|}

    This is what AGW/DDAG/DEEN pass to their evaluation (``-similarity`` of L2-normalised features); MPANet's
    squared Euclidean distance of L2-normalised features, :math:`2 - 2\cos`, ranks identically. Computed in
    float32 (float64 inputs stay float64).

    Args:
        query: :math:`(Q, D)` features.
        gallery: :math:`(G, D)` features.

    Returns:
        :math:`(Q, G)` distances.

    Examples:
        >>> negative_cosine_similarity(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        tensor([[-1., -0.]])
    """
    q, g = _feature_pair(query, gallery)
    return -(F.normalize(q, dim=1) @ F.normalize(g, dim=1).T)


def negative_dot_product(query: Tensor, gallery: Tensor) -> Tensor:
    r"""Minus the plain dot product: the ranking of DEEN's ``test.py`` for flip-summed features.

    .. math:: d(q, g) = -q^\top g

    DEEN adds the L2-normalised features of an image and of its horizontal flip without normalising the sum
    again, and ranks by this dot product; for unit-norm features it equals
    :func:`negative_cosine_similarity`. Use it with ``extract_features(..., flip="sum", normalize=False)`` on a
    model whose embedding is already L2-normalised (:meth:`~vireid_layers.models.DEEN.embed`). Computed in
    float32 (float64 inputs stay float64).

    Args:
        query: :math:`(Q, D)` features.
        gallery: :math:`(G, D)` features.

    Returns:
        :math:`(Q, G)` distances.

    Examples:
        >>> negative_dot_product(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        tensor([[-2., -0.]])
    """
    q, g = _feature_pair(query, gallery)
    return -(q @ g.T)


Distance = Callable[[Tensor, Tensor], Tensor]
Extractor = Callable[[list[ImageRecord], Modality], Tensor]


def _check_trials(trials: Iterable[int] | None, default: int) -> list[int]:
    if trials is None:
        return list(range(default))
    out = list(trials)
    for t in out:
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"`trials` must hold non-negative integers, got {out!r}")
    if not out:
        raise ValueError("`trials` must not be empty")
    return out


class EvaluationProtocol(abc.ABC):
    """The interface shared by :class:`SYSUProtocol`, :class:`RegDBProtocol` and :class:`LLCMProtocol`.

    A protocol chooses from ``dataset.test``: its *candidates* (every record that may be a query, and every
    record that may be in a gallery, sorted by identity, camera and path so that nothing depends on the order
    of the reader) and, for each trial, the positions of that trial's queries and gallery among them
    (:meth:`select`). Everything else (:meth:`query`, :meth:`gallery`, :meth:`evaluate`) follows.
    """

    num_trials: int
    reported_cmc: CMCDefinition

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """A description such as ``"SYSU-MM01 all-search single-shot, seeded gallery, infrared→visible"``."""

    @property
    @abc.abstractmethod
    def query_modality(self) -> Modality:
        """Modality of the queries: the stem they go through."""

    @property
    @abc.abstractmethod
    def gallery_modality(self) -> Modality:
        """Modality of the gallery: the stem it goes through."""

    @property
    @abc.abstractmethod
    def exclude(self) -> ExclusionRule | None:
        """The gallery-removal rule passed to :func:`~vireid_layers.evaluation.metrics.retrieval_metrics`."""

    @abc.abstractmethod
    def query_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every record that is a query in some trial, sorted by (identity, camera, path)."""

    @abc.abstractmethod
    def gallery_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every record that may be in a gallery, sorted by (identity, camera, path)."""

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """The protocol's parameters, JSON-serialisable."""

    @abc.abstractmethod
    def _select(self, queries: list[ImageRecord], gallery: list[ImageRecord], trial: int) -> TrialSelection:
        """Positions of trial ``trial``'s queries and gallery in the candidate lists."""

    def _check_trial(self, trial: object) -> int:
        if isinstance(trial, bool) or not isinstance(trial, int) or trial < 0:
            raise ValueError(f"`trial` must be a non-negative int, got {trial!r}")
        return trial

    def _candidate_lists(self, dataset: VIReIDDataset) -> tuple[list[ImageRecord], list[ImageRecord]]:
        queries, gallery = self.query_candidates(dataset), self.gallery_candidates(dataset)
        for side, records, modality in (
            ("query", queries, self.query_modality),
            ("gallery", gallery, self.gallery_modality),
        ):
            if not records:
                raise ValueError(
                    f"{self.name}: dataset {dataset.name!r} has no {modality.name.lower()} test records for the "
                    f"{side} side"
                )
        return queries, gallery

    def select(self, dataset: VIReIDDataset, trial: int = 0) -> TrialSelection:
        """Positions of trial ``trial``'s queries and gallery among the candidates."""
        trial = self._check_trial(trial)
        queries, gallery = self._candidate_lists(dataset)
        return self._select(queries, gallery, trial)

    def query(self, dataset: VIReIDDataset, trial: int = 0) -> list[ImageRecord]:
        """The query records of trial ``trial`` (the same for every trial except in the LLCM compat mode)."""
        trial = self._check_trial(trial)
        queries, gallery = self._candidate_lists(dataset)
        return [queries[i] for i in self._select(queries, gallery, trial).query]

    def gallery(self, dataset: VIReIDDataset, trial: int = 0) -> list[ImageRecord]:
        """The gallery records of trial ``trial``."""
        trial = self._check_trial(trial)
        queries, gallery = self._candidate_lists(dataset)
        return [gallery[i] for i in self._select(queries, gallery, trial).gallery]

    def with_direction(self, direction: Direction | str) -> EvaluationProtocol:
        """The same protocol in another direction (a copy; ``self`` is frozen)."""
        return replace(self, direction=Direction.parse(direction))  # type: ignore[type-var]

    def evaluate(
        self,
        query_features: Tensor,
        gallery_features: Tensor | Callable[[int], Tensor],
        dataset: VIReIDDataset,
        *,
        trials: Iterable[int] | None = None,
        distance: Distance = negative_cosine_similarity,
        max_rank: int = 20,
        chunk_size: int = 1024,
    ) -> ProtocolResult:
        """Metrics of every trial from features that are already extracted.

        Args:
            query_features: :math:`(Q_c, D)` features of :meth:`query_candidates`, row for row.
            gallery_features: :math:`(G_c, D)` features of :meth:`gallery_candidates`, row for row; or a
                callable ``trial -> (G_t, D)`` giving the features of :meth:`gallery` ``(dataset, trial)``.
            dataset: the dataset the candidates come from.
            trials: trials to run; default ``range(num_trials)``.
            distance: ``(query, gallery) -> (Q, G)`` distances; default :func:`negative_cosine_similarity`.
            max_rank: CMC length passed to :func:`~vireid_layers.evaluation.metrics.retrieval_metrics`.
            chunk_size: queries ranked at once by ``retrieval_metrics``.

        Returns:
            :class:`ProtocolResult`.
        """
        queries, gallery = self._candidate_lists(dataset)
        query_features = check_shape(query_features, "query_features", "(Q, D)", 2)
        if query_features.shape[0] != len(queries):
            raise ValueError(
                f"`query_features` must have one row per query candidate ({len(queries)}), got shape "
                f"{tuple(query_features.shape)}"
            )
        if isinstance(gallery_features, Tensor):
            gallery_features = check_shape(gallery_features, "gallery_features", "(G, D)", 2)
            if gallery_features.shape[0] != len(gallery):
                raise ValueError(
                    f"`gallery_features` must have one row per gallery candidate ({len(gallery)}), got shape "
                    f"{tuple(gallery_features.shape)}"
                )
            table = gallery_features

            def gallery_rows(trial: int, index: Sequence[int]) -> Tensor:
                return table[torch.as_tensor(index, dtype=torch.long, device=table.device)]

        elif callable(gallery_features):
            per_trial = gallery_features

            def gallery_rows(trial: int, index: Sequence[int]) -> Tensor:
                out = check_shape(per_trial(trial), "gallery_features(trial)", "(G, D)", 2)
                if out.shape[0] != len(index):
                    raise ValueError(
                        f"`gallery_features({trial})` must have one row per gallery image of the trial "
                        f"({len(index)}), got shape {tuple(out.shape)}"
                    )
                return out

        else:
            raise TypeError(
                "`gallery_features` must be a Tensor or a callable trial -> Tensor, got "
                f"{type(gallery_features).__name__}"
            )

        def query_rows(index: Sequence[int]) -> Tensor:
            return query_features[torch.as_tensor(index, dtype=torch.long, device=query_features.device)]

        selections = [(t, self._select(queries, gallery, t)) for t in _check_trials(trials, self.num_trials)]
        return _run_trials(self, queries, gallery, selections, query_rows, gallery_rows, distance, max_rank, chunk_size)


def _ids_cams(records: Sequence[ImageRecord], index: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    ids = torch.tensor([records[i].identity for i in index], dtype=torch.long, device=device)
    cams = torch.tensor([records[i].camera for i in index], dtype=torch.long, device=device)
    return ids, cams


def _run_trials(
    protocol: EvaluationProtocol,
    queries: list[ImageRecord],
    gallery: list[ImageRecord],
    selections: list[tuple[int, TrialSelection]],
    query_rows: Callable[[Sequence[int]], Tensor],
    gallery_rows: Callable[[int, Sequence[int]], Tensor],
    distance: Distance,
    max_rank: int,
    chunk_size: int,
) -> ProtocolResult:
    results = []
    for trial, selection in selections:
        qf = query_rows(selection.query)
        gf = gallery_rows(trial, selection.gallery)
        distances = distance(qf, gf)
        q_ids, q_cams = _ids_cams(queries, selection.query, distances.device)
        g_ids, g_cams = _ids_cams(gallery, selection.gallery, distances.device)
        metrics = retrieval_metrics(
            distances,
            q_ids,
            g_ids,
            q_cams,
            g_cams,
            exclude=protocol.exclude,
            max_rank=max_rank,
            chunk_size=chunk_size,
        )
        results.append(TrialResult(trial, len(selection.query), len(selection.gallery), metrics))
    return ProtocolResult(protocol.name, protocol.settings(), protocol.reported_cmc, tuple(results))


@dataclass(frozen=True)
class SYSUProtocol(EvaluationProtocol):
    """SYSU-MM01 :cite:`wu2017sysu` all-search / indoor-search, single-shot / multi-shot, over trials.

    **Standard direction (infrared→visible).** Queries: every infrared test image of cameras 3 and 6 (both
    modes), through the infrared stem. Gallery of trial :math:`t`: for every test identity (ascending) and
    every RGB camera (all-search 1, 2, 4, 5; indoor-search 1, 2) that has images of it, ``shots`` images,
    through the visible stem. Camera-3 queries never see camera-2 gallery images (same room;
    :func:`~vireid_layers.evaluation.metrics.exclude_sysu_indoor_camera`). The reported CMC is the
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
      ``perm[camera][identity - 1][t]`` from ``exp/rand_perm_cam.mat`` (:func:`load_sysu_permutation`,
      needs scipy) name the files ``cam{camera}/{identity:04d}/{instance:04d}.*``.

    **Visible→infrared (non-standard).** Queries: every RGB test image of cameras 1, 2, 4, 5; gallery: the
    same sampling over the infrared cameras (all-search 3, 6; indoor-search 3); camera-2 queries never see
    camera-3 images (:func:`exclude_sysu_indoor_camera_reversed`). No published number uses it.

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
        return SYSU_INFRARED_CAMERAS if self.query_modality is Modality.INFRARED else SYSU_VISIBLE_CAMERAS

    @property
    def gallery_cameras(self) -> tuple[int, ...]:
        """Gallery cameras, in sampling order: indoor-search keeps the indoor ones."""
        if self.mode == "indoor":
            return _SYSU_INDOOR[self.gallery_modality]
        return SYSU_VISIBLE_CAMERAS if self.gallery_modality is Modality.VISIBLE else SYSU_INFRARED_CAMERAS

    @property
    def exclude(self) -> ExclusionRule:
        """Camera 3 and camera 2 film the same room: that pair is removed."""
        if self.direction is Direction.INFRARED_TO_VISIBLE:
            return exclude_sysu_indoor_camera
        return exclude_sysu_indoor_camera_reversed

    def query_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every test image of the query modality and cameras, sorted by (identity, camera, path)."""
        return _candidates(dataset, self.query_modality, self.query_cameras)

    def gallery_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every test image of the gallery modality and cameras, sorted by (identity, camera, path)."""
        return _candidates(dataset, self.gallery_modality, self.gallery_cameras)

    def _permutation(self) -> SYSUPermutation:
        if self.permutation is not None:
            return self.permutation
        if self.permutation_file is None:  # excluded by __post_init__
            raise ValueError("`permutation_file` is required with gallery_sampling='official'")
        return load_sysu_permutation(self.permutation_file)

    def _select(self, queries: list[ImageRecord], gallery: list[ImageRecord], trial: int) -> TrialSelection:
        if self.gallery_sampling == "seeded":
            chosen = _seeded_sample(gallery, self.gallery_cameras, trial, self.shots)
        else:
            chosen = _permutation_sample(gallery, self.gallery_cameras, self._permutation(), trial, self.shots)
        return TrialSelection(tuple(range(len(queries))), tuple(chosen))

    def settings(self) -> dict[str, Any]:
        """The protocol's parameters, JSON-serialisable."""
        return {
            "dataset": "sysu",
            "mode": self.mode,
            "shots": self.shots,
            "gallery_sampling": self.gallery_sampling,
            "permutation_file": None if self.permutation_file is None else os.fspath(self.permutation_file),
            "direction": self.direction.value,
            "num_trials": self.num_trials,
            "reported_cmc": self.reported_cmc,
            "exclude": self.exclude.__name__,
        }


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
        return _candidates(dataset, self.query_modality, None)

    def gallery_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every test image of the gallery modality, sorted by (identity, camera, path)."""
        return _candidates(dataset, self.gallery_modality, None)

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
        """The protocol's parameters, JSON-serialisable."""
        return {
            "dataset": "regdb",
            "direction": self.direction.value,
            "num_trials": 1,
            "reported_cmc": self.reported_cmc,
            "exclude": None,
        }


@dataclass(frozen=True)
class LLCMProtocol(EvaluationProtocol):
    """LLCM :cite:`zhang2023deen`: all images of one modality against ten random single-shot galleries.

    Queries: every test image of the query modality, through its stem. Gallery of trial :math:`t`: with a
    local ``random.Random(t)``, one image per (identity ascending, camera ascending) of the gallery modality,
    ``rng.choice`` over the paths sorted as strings, which reproduces the official ``random.seed(t)`` draw.
    Cameras are those present in ``dataset.test`` (VIS 1-9, NIR 1, 2, 4-9 in the published data). Gallery
    images of the query's identity seen by the query's camera number are removed
    (:func:`~vireid_layers.evaluation.metrics.exclude_same_identity_and_camera`; VIS camN and NIR camN are
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
        return _candidates(dataset, self.query_modality, None)

    def gallery_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every test image of the gallery modality, sorted by (identity, camera, path)."""
        return _candidates(dataset, self.gallery_modality, None)

    def _select(self, queries: list[ImageRecord], gallery: list[ImageRecord], trial: int) -> TrialSelection:
        if self.official_vis_to_ir_compat:
            cameras = sorted({r.camera for r in queries})
            return TrialSelection(tuple(_seeded_sample(queries, cameras, trial, 1)), tuple(range(len(gallery))))
        cameras = sorted({r.camera for r in gallery})
        return TrialSelection(tuple(range(len(queries))), tuple(_seeded_sample(gallery, cameras, trial, 1)))

    def settings(self) -> dict[str, Any]:
        """The protocol's parameters, JSON-serialisable."""
        return {
            "dataset": "llcm",
            "direction": self.direction.value,
            "official_vis_to_ir_compat": self.official_vis_to_ir_compat,
            "num_trials": self.num_trials,
            "reported_cmc": self.reported_cmc,
            "exclude": self.exclude.__name__,
        }


# --------------------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------------------


def evaluate_protocol(
    protocol: EvaluationProtocol,
    dataset: VIReIDDataset,
    extract: Extractor,
    *,
    trials: Iterable[int] | None = None,
    distance: Distance = negative_cosine_similarity,
    max_rank: int = 20,
    chunk_size: int = 1024,
) -> ProtocolResult:
    """Evaluate a protocol on a dataset: extract features through the right stems, rank, average over trials.

    The union of the images used by the requested trials is extracted once per side (galleries are subsets
    of the candidates, so no image is extracted twice): ``extract(query_records, protocol.query_modality)``
    and ``extract(gallery_records, protocol.gallery_modality)``, records in (identity, camera, path) order.
    Each trial then ranks its gallery by :func:`negative_cosine_similarity` (features L2-normalised) and is
    scored by :func:`~vireid_layers.evaluation.metrics.retrieval_metrics` with the protocol's removal rule.

    Args:
        protocol: a :class:`SYSUProtocol`, :class:`RegDBProtocol`, :class:`LLCMProtocol` or other
            :class:`EvaluationProtocol`.
        dataset: the dataset whose ``test`` records are evaluated.
        extract: ``(records, modality) -> (len(records), D)`` features, e.g. a loader over
            ``ImageDataset(records, transform)`` fed to :func:`~vireid_layers.evaluation.extract_features`.
        trials: trials to run; default ``range(protocol.num_trials)``.
        distance: ``(query, gallery) -> (Q, G)`` distances.
        max_rank: CMC length.
        chunk_size: queries ranked at once by ``retrieval_metrics``.

    Returns:
        :class:`ProtocolResult`: per-trial metrics and mean ± std.

    Examples:
        >>> from pathlib import Path
        >>> from vireid_layers.data import ImageRecord, VIReIDDataset
        >>> recs = [ImageRecord(Path(f"/r/{m.name}/{i}.jpg"), i, 1 + m, m) for i in range(3) for m in Modality]
        >>> ds = VIReIDDataset("toy", Path("/r"), (), tuple(recs))
        >>> onehot = lambda rs, modality: torch.eye(3)[[r.identity for r in rs]]
        >>> result = evaluate_protocol(RegDBProtocol("v2i"), ds, onehot)
        >>> result.mean["rank1"], result.num_trials
        (1.0, 1)
    """
    if not isinstance(protocol, EvaluationProtocol):
        raise TypeError(f"`protocol` must be an EvaluationProtocol, got {type(protocol).__name__}")
    if not callable(extract):
        raise TypeError(f"`extract` must be callable (records, modality) -> Tensor, got {type(extract).__name__}")
    queries, gallery = protocol._candidate_lists(dataset)
    selections = [(t, protocol._select(queries, gallery, t)) for t in _check_trials(trials, protocol.num_trials)]

    def extract_union(
        records: list[ImageRecord], used: Iterable[int], modality: Modality, side: str
    ) -> tuple[Tensor, dict[int, int]]:
        index = sorted(set(used))
        features = extract([records[i] for i in index], modality)
        features = check_shape(features, f"extract(...) for the {side}", "(N, D)", 2)
        if features.shape[0] != len(index):
            raise ValueError(
                f"`extract` must return one row per record: got shape {tuple(features.shape)} for {len(index)} "
                f"{side} records"
            )
        return features, {i: p for p, i in enumerate(index)}

    q_used = (i for _, s in selections for i in s.query)
    g_used = (i for _, s in selections for i in s.gallery)
    q_features, q_pos = extract_union(queries, q_used, protocol.query_modality, "query")
    g_features, g_pos = extract_union(gallery, g_used, protocol.gallery_modality, "gallery")

    def query_rows(index: Sequence[int]) -> Tensor:
        return q_features[torch.tensor([q_pos[i] for i in index], dtype=torch.long, device=q_features.device)]

    def gallery_rows(trial: int, index: Sequence[int]) -> Tensor:
        return g_features[torch.tensor([g_pos[i] for i in index], dtype=torch.long, device=g_features.device)]

    return _run_trials(protocol, queries, gallery, selections, query_rows, gallery_rows, distance, max_rank, chunk_size)


# --------------------------------------------------------------------------------------------------------------
# Registry (configuration / CLI boundary only)
# --------------------------------------------------------------------------------------------------------------

ProtocolFactory = Callable[..., EvaluationProtocol]

#: Protocol factories by name, for configuration files and command lines: ``build_protocol(name, **kwargs)``.
PROTOCOLS: dict[str, ProtocolFactory] = {}


def register_protocol(name: str, factory: ProtocolFactory) -> None:
    """Add a protocol factory to :data:`PROTOCOLS`.

    Raises:
        TypeError: ``name`` is not a string or ``factory`` is not callable.
        ValueError: ``name`` is already registered.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a non-empty str, got {name!r}")
    if not callable(factory):
        raise TypeError(f"`factory` must be callable, got {type(factory).__name__}")
    if name in PROTOCOLS:
        raise ValueError(f"`name` {name!r} is already registered in PROTOCOLS")
    PROTOCOLS[name] = factory


def build_protocol(name: str, **kwargs: Any) -> EvaluationProtocol:
    """Build a registered protocol by name, with keyword arguments for its class.

    Examples:
        >>> build_protocol("sysu-indoor-multi").name
        'SYSU-MM01 indoor-search multi-shot (10), seeded gallery, infrared→visible'
        >>> build_protocol("llcm-v2i").query_modality.name
        'VISIBLE'

    Raises:
        ValueError: unknown ``name``; the message lists the registered ones.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"`name` must be one of {sorted(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name](**kwargs)


def _preset(cls: type[EvaluationProtocol], **fixed: Any) -> ProtocolFactory:
    def factory(**kwargs: Any) -> EvaluationProtocol:
        clash = sorted(set(kwargs) & set(fixed))
        if clash:
            raise ValueError(f"this preset fixes {clash}; use the generic protocol name to choose them")
        return cls(**fixed, **kwargs)

    return factory


register_protocol("sysu", SYSUProtocol)
register_protocol("sysu-all-single", _preset(SYSUProtocol, mode="all", shots=1))
register_protocol("sysu-all-multi", _preset(SYSUProtocol, mode="all", shots=10))
register_protocol("sysu-indoor-single", _preset(SYSUProtocol, mode="indoor", shots=1))
register_protocol("sysu-indoor-multi", _preset(SYSUProtocol, mode="indoor", shots=10))
register_protocol("regdb", RegDBProtocol)
register_protocol("regdb-v2i", _preset(RegDBProtocol, direction=Direction.VISIBLE_TO_INFRARED))
register_protocol("regdb-i2v", _preset(RegDBProtocol, direction=Direction.INFRARED_TO_VISIBLE))
register_protocol("llcm", LLCMProtocol)
register_protocol("llcm-v2i", _preset(LLCMProtocol, direction=Direction.VISIBLE_TO_INFRARED))
register_protocol("llcm-i2v", _preset(LLCMProtocol, direction=Direction.INFRARED_TO_VISIBLE))
register_protocol(
    "llcm-official-vis-to-ir",
    _preset(LLCMProtocol, direction=Direction.VISIBLE_TO_INFRARED, official_vis_to_ir_compat=True),
)
