"""The one path from a protocol to its scored trials: a :class:`TrialPlan`, then :func:`score_trials`.

:meth:`EvaluationProtocol.plan <vireid_layers.evaluation.EvaluationProtocol.plan>` chooses the records;
:func:`score_trials` ranks and scores every trial from features given row by row. Both
:meth:`EvaluationProtocol.evaluate <vireid_layers.evaluation.EvaluationProtocol.evaluate>` (features already
extracted) and :func:`~vireid_layers.evaluation.evaluate_protocol` (features extracted on demand) go through
them, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ...data.records import ImageRecord
from ..metrics import retrieval_metrics
from ..rerank import k_reciprocal_rerank
from .distances import Distance
from .results import ProtocolResult, TrialResult
from .settings import callable_name

if TYPE_CHECKING:
    from .base import EvaluationProtocol

__all__ = ["TrialPlan", "TrialSelection", "check_trials", "score_trials"]


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
class TrialPlan:
    """What a protocol evaluates on a dataset: the candidates of each side and each trial's selection.

    Returned by :meth:`EvaluationProtocol.plan <vireid_layers.evaluation.EvaluationProtocol.plan>`.

    Attributes:
        dataset: the name of the dataset the records come from.
        queries: every record that may be a query, sorted by (identity, camera, path).
        gallery: every record that may be in a gallery, sorted alike.
        trials: the trial numbers, in evaluation order.
        selections: one :class:`TrialSelection` per trial, positions into ``queries`` and ``gallery``.

    Examples:
        >>> from pathlib import Path
        >>> from vireid_layers import Modality
        >>> from vireid_layers.data import ImageRecord, VIReIDDataset
        >>> from vireid_layers.evaluation import RegDBProtocol
        >>> recs = [ImageRecord(Path(f"/r/{m.name}/{i}.jpg"), i, 1 + m, m) for i in range(3) for m in Modality]
        >>> plan = RegDBProtocol("v2i").plan(VIReIDDataset("toy", Path("/r"), (), tuple(recs)))
        >>> plan.trials, plan.used_gallery(), [r.identity for r in plan.query_records(0)]
        ((0,), [0, 1, 2], [0, 1, 2])
    """

    dataset: str
    queries: tuple[ImageRecord, ...]
    gallery: tuple[ImageRecord, ...]
    trials: tuple[int, ...]
    selections: tuple[TrialSelection, ...]

    def used_queries(self) -> list[int]:
        """Sorted positions of the queries used by any trial (each extracted once)."""
        return sorted({i for s in self.selections for i in s.query})

    def used_gallery(self) -> list[int]:
        """Sorted positions of the gallery images used by any trial (each extracted once)."""
        return sorted({i for s in self.selections for i in s.gallery})

    def query_records(self, index: int) -> list[ImageRecord]:
        """The query records of the ``index``-th trial of the plan."""
        return [self.queries[i] for i in self.selections[index].query]

    def gallery_records(self, index: int) -> list[ImageRecord]:
        """The gallery records of the ``index``-th trial of the plan."""
        return [self.gallery[i] for i in self.selections[index].gallery]


def check_trials(trials: Iterable[int] | None, default: int) -> list[int]:
    """``range(default)`` for ``None``, else the trials as a non-empty list of non-negative ints."""
    if trials is None:
        return list(range(default))
    out = list(trials)
    for t in out:
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"`trials` must hold non-negative integers, got {out!r}")
    if not out:
        raise ValueError("`trials` must not be empty")
    return out


def _ids_cams(records: Sequence[ImageRecord], index: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    ids = torch.tensor([records[i].identity for i in index], dtype=torch.long, device=device)
    cams = torch.tensor([records[i].camera for i in index], dtype=torch.long, device=device)
    return ids, cams


def score_trials(
    protocol: EvaluationProtocol,
    plan: TrialPlan,
    query_rows: Callable[[int, Sequence[int]], Tensor],
    gallery_rows: Callable[[int, Sequence[int]], Tensor],
    *,
    distance: Distance,
    rerank: Mapping[str, Any] | None,
    settings: Mapping[str, Any],
    max_rank: int,
    chunk_size: int,
) -> ProtocolResult:
    """Rank and score every trial of ``plan``; with ``rerank``, the plain ranking becomes the baseline.

    Args:
        protocol: the protocol that made ``plan`` (removal rule, reported CMC, settings).
        plan: :meth:`EvaluationProtocol.plan <vireid_layers.evaluation.EvaluationProtocol.plan>`.
        query_rows: ``(trial, positions) -> (Q_t, D)`` features of those query candidates.
        gallery_rows: ``(trial, positions) -> (G_t, D)`` features of those gallery candidates.
        distance: ``(query, gallery) -> (Q, G)``: the plain ranking.
        rerank: validated parameters (:func:`~vireid_layers.evaluation.protocols.settings.rerank_parameters`),
            or ``None``: the re-ranked distances are ``k_reciprocal_rerank(query, gallery, **params)``.
        settings: the caller's validated settings (feature, flip, selection, ...).
        max_rank: CMC length.
        chunk_size: queries ranked at once.

    Returns:
        The :class:`~vireid_layers.evaluation.ProtocolResult`: the re-ranked one with the plain one as its
        baseline when ``rerank`` is given, else the plain one.
    """
    protocol_settings = protocol.settings()
    seeded = protocol_settings.get("gallery_sampling") == "seeded"
    run = {
        **protocol_settings,
        "dataset": plan.dataset,
        "trials": list(plan.trials),
        "gallery_seeds": list(plan.trials) if seeded else None,
        "distance": callable_name(distance),
        "rerank": None,
        **settings,
    }
    plain, reranked = [], []
    for trial, selection in zip(plan.trials, plan.selections, strict=True):
        qf = query_rows(trial, selection.query)
        gf = gallery_rows(trial, selection.gallery)
        distances = [distance(qf, gf)]
        if rerank is not None:
            params = {k: v for k, v in rerank.items() if k != "method"}
            distances.append(k_reciprocal_rerank(qf, gf.to(qf.device), **params))
        for d, out in zip(distances, (plain, reranked), strict=False):
            q_ids, q_cams = _ids_cams(plan.queries, selection.query, d.device)
            g_ids, g_cams = _ids_cams(plan.gallery, selection.gallery, d.device)
            # A query whose true matches were all removed is left out, as the official evaluation code does;
            # the trial's num_valid says how many queries were scored.
            metrics = retrieval_metrics(
                d,
                q_ids,
                g_ids,
                q_cams,
                g_cams,
                exclude=protocol.exclude,
                max_rank=max_rank,
                chunk_size=chunk_size,
                missing_matches="skip",
            )
            out.append(TrialResult(trial, len(selection.query), len(selection.gallery), metrics))
    plain_result = ProtocolResult(protocol.name, run, protocol.reported_cmc, tuple(plain))
    if rerank is None:
        return plain_result
    settings_rr = {**run, "rerank": dict(rerank)}
    return ProtocolResult(protocol.name, settings_rr, protocol.reported_cmc, tuple(reranked), baselines=(plain_result,))
