"""The interface every evaluation protocol implements, and what follows from it (records, plans, evaluation)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ..._validation import check_shape
from ...data.records import ImageRecord, VIReIDDataset
from ...modality import Modality
from ..exclusion import ExclusionRule
from .direction import Direction
from .distances import Distance, negative_cosine_similarity
from .results import CMCDefinition, ProtocolResult
from .settings import check_caller_settings, rerank_parameters
from .trials import TrialPlan, TrialSelection, check_trials, score_trials

__all__ = ["EvaluationProtocol"]


class EvaluationProtocol(abc.ABC):
    """The interface shared by :class:`SYSUProtocol`, :class:`RegDBProtocol` and :class:`LLCMProtocol`.

    A protocol chooses from ``dataset.test``: its *candidates* (every record that may be a query, and every
    record that may be in a gallery, sorted by identity, camera and path so that nothing depends on the order
    of the reader) and, for each trial, the positions of that trial's queries and gallery among them. A
    subclass implements the abstract members and ``_select(queries, gallery, trial) -> TrialSelection``;
    everything else (:meth:`plan`, :meth:`query`, :meth:`gallery`, :meth:`evaluate`) follows.

    Examples:
        >>> from vireid_layers.evaluation import EvaluationProtocol, SYSUProtocol
        >>> isinstance(SYSUProtocol(), EvaluationProtocol)
        True
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
        """The gallery-removal rule passed to :func:`~vireid_layers.evaluation.retrieval_metrics`."""

    @abc.abstractmethod
    def query_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every record that is a query in some trial, sorted by (identity, camera, path)."""

    @abc.abstractmethod
    def gallery_candidates(self, dataset: VIReIDDataset) -> list[ImageRecord]:
        """Every record that may be in a gallery, sorted by (identity, camera, path)."""

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """The protocol's parameters, JSON-serialisable: ``protocol``, ``mode``, ``direction``, ``shots``, ...."""

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

    def plan(self, dataset: VIReIDDataset, trials: Iterable[int] | None = None) -> TrialPlan:
        """The candidates of each side and the selection of every trial: what :meth:`evaluate` scores.

        Args:
            dataset: the dataset whose ``test`` records are evaluated.
            trials: trials to plan; default ``range(num_trials)``.

        Returns:
            The :class:`~vireid_layers.evaluation.TrialPlan`.

        Raises:
            TypeError: ``dataset`` is not a :class:`~vireid_layers.data.VIReIDDataset`.
            ValueError: a bad trial, or a side without records.
        """
        numbers = [self._check_trial(t) for t in check_trials(trials, self.num_trials)]
        queries, gallery = self._candidate_lists(dataset)
        selections = tuple(self._select(queries, gallery, t) for t in numbers)
        return TrialPlan(dataset.name, tuple(queries), tuple(gallery), tuple(numbers), selections)

    def select(self, dataset: VIReIDDataset, trial: int = 0) -> TrialSelection:
        """Positions of trial ``trial``'s queries and gallery among the candidates."""
        return self.plan(dataset, [self._check_trial(trial)]).selections[0]

    def query(self, dataset: VIReIDDataset, trial: int = 0) -> list[ImageRecord]:
        """The query records of trial ``trial`` (the same for every trial except in the LLCM compat mode)."""
        return self.plan(dataset, [self._check_trial(trial)]).query_records(0)

    def gallery(self, dataset: VIReIDDataset, trial: int = 0) -> list[ImageRecord]:
        """The gallery records of trial ``trial``."""
        return self.plan(dataset, [self._check_trial(trial)]).gallery_records(0)

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
        rerank: bool | Mapping[str, float] | None = None,
        settings: Mapping[str, Any] | None = None,
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
            rerank: re-rank as :func:`~vireid_layers.evaluation.evaluate_protocol` does.
            settings: what the caller knows, as in :func:`~vireid_layers.evaluation.evaluate_protocol`.
            max_rank: CMC length passed to :func:`~vireid_layers.evaluation.retrieval_metrics`.
            chunk_size: queries ranked at once by ``retrieval_metrics``.

        Returns:
            :class:`ProtocolResult`.
        """
        rerank_params = rerank_parameters(rerank)
        caller = check_caller_settings(settings)
        plan = self.plan(dataset, trials)
        query_features = check_shape(query_features, "query_features", "(Q, D)", 2)
        if query_features.shape[0] != len(plan.queries):
            raise ValueError(
                f"`query_features` must have one row per query candidate ({len(plan.queries)}), got shape "
                f"{tuple(query_features.shape)}"
            )
        if isinstance(gallery_features, Tensor):
            gallery_features = check_shape(gallery_features, "gallery_features", "(G, D)", 2)
            if gallery_features.shape[0] != len(plan.gallery):
                raise ValueError(
                    f"`gallery_features` must have one row per gallery candidate ({len(plan.gallery)}), got shape "
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

        def query_rows(trial: int, index: Sequence[int]) -> Tensor:
            return query_features[torch.as_tensor(index, dtype=torch.long, device=query_features.device)]

        return score_trials(
            self,
            plan,
            query_rows,
            gallery_rows,
            distance=distance,
            rerank=rerank_params,
            settings=caller,
            max_rank=max_rank,
            chunk_size=chunk_size,
        )
