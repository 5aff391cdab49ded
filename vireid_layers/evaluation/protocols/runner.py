"""Run a protocol end to end from an ``extract(records, modality)`` callable."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..._validation import check_shape
from ...data.records import ImageRecord, VIReIDDataset
from ...modality import Modality
from .base import EvaluationProtocol
from .distances import Distance, negative_cosine_similarity
from .results import ProtocolResult
from .settings import check_caller_settings, rerank_parameters
from .trials import score_trials

__all__ = ["Extractor", "evaluate_protocol"]

Extractor = Callable[[list[ImageRecord], Modality], Tensor]
"""``extract(records, modality) -> (len(records), D)`` features of the records through the stem of ``modality``."""


def evaluate_protocol(
    protocol: EvaluationProtocol,
    dataset: VIReIDDataset,
    extract: Extractor,
    *,
    trials: Iterable[int] | None = None,
    distance: Distance = negative_cosine_similarity,
    rerank: bool | Mapping[str, float] | None = None,
    settings: Mapping[str, Any] | None = None,
    max_rank: int = 20,
    chunk_size: int = 1024,
) -> ProtocolResult:
    """Evaluate a protocol on a dataset: extract features through the right stems, rank, average over trials.

    The union of the images used by the requested trials is extracted once per side (galleries are subsets
    of the candidates, so no image is extracted twice): ``extract(query_records, protocol.query_modality)``
    and ``extract(gallery_records, protocol.gallery_modality)``, records in (identity, camera, path) order.
    Each trial then ranks its gallery by ``distance`` (:func:`negative_cosine_similarity` by default) and is
    scored by :func:`~vireid_layers.evaluation.retrieval_metrics` with the protocol's removal rule. The
    trials come from :meth:`EvaluationProtocol.plan` and are scored by the same function as
    :meth:`EvaluationProtocol.evaluate`.

    With ``rerank``, each trial is ranked twice from the same features: by ``distance`` (the plain row) and by
    :func:`~vireid_layers.evaluation.k_reciprocal_rerank`; the result is the re-ranked one, with the plain
    one as its :attr:`~ProtocolResult.baselines`, and its table prints both rows.

    Args:
        protocol: a :class:`SYSUProtocol`, :class:`RegDBProtocol`, :class:`LLCMProtocol` or other
            :class:`EvaluationProtocol`.
        dataset: the dataset whose ``test`` records are evaluated.
        extract: ``(records, modality) -> (len(records), D)`` features, e.g. a loader over
            ``ImageDataset(records, transform)`` fed to :func:`~vireid_layers.evaluation.extract_features`.
        trials: trials to run; default ``range(protocol.num_trials)``.
        distance: ``(query, gallery) -> (Q, G)`` distances of the plain ranking.
        rerank: ``None``/``False`` (off), ``True`` (k-reciprocal re-ranking with the official ``k1=20, k2=6,
            lambda_value=0.3``) or a mapping overriding some of them.
        settings: what only the caller knows, stated in the result's :attr:`~ProtocolResult.settings` and
            table: ``feature`` (e.g. ``"plain"``, ``"official"`` for DEEN's six-part feature), ``flip``
            (``False``, ``"sum"``, ``"mean"``), ``selection`` (how the checkpoint was chosen: ``"val"``
            (validation identities), ``"test"``, ``"last"``), and any key of the caller's own (e.g.
            ``"checkpoint"``, RegDB's ``"split"``); JSON-serialisable values.
        max_rank: CMC length.
        chunk_size: queries ranked at once by ``retrieval_metrics``.

    Returns:
        :class:`ProtocolResult`: per-trial metrics, mean ± std, settings (and the plain baseline with ``rerank``).

    Raises:
        TypeError: ``protocol`` is not a protocol, ``extract`` is not callable, or bad ``settings``/``rerank``.
        ValueError: ``extract`` returns the wrong number of rows, or bad ``trials``/``settings``/``rerank``.

    Examples:
        >>> import torch
        >>> from pathlib import Path
        >>> from vireid_layers import Modality
        >>> from vireid_layers.data import ImageRecord, VIReIDDataset
        >>> from vireid_layers.evaluation import RegDBProtocol, evaluate_protocol
        >>> recs = [ImageRecord(Path(f"/r/{m.name}/{i}.jpg"), i, 1 + m, m) for i in range(3) for m in Modality]
        >>> ds = VIReIDDataset("toy", Path("/r"), (), tuple(recs))
        >>> onehot = lambda rs, modality: torch.eye(3)[[r.identity for r in rs]]
        >>> result = evaluate_protocol(RegDBProtocol("v2i"), ds, onehot, settings={"feature": "plain", "flip": False})
        >>> result.mean["rank1"], result.num_trials, result.settings["feature"], result.settings["rerank"]
        (1.0, 1, 'plain', None)
        >>> reranked = evaluate_protocol(RegDBProtocol("v2i"), ds, onehot, rerank={"k1": 2, "k2": 1})
        >>> reranked.settings["rerank"]["k1"], reranked.baselines[0].settings["rerank"]
        (2, None)
    """
    if not isinstance(protocol, EvaluationProtocol):
        raise TypeError(f"`protocol` must be an EvaluationProtocol, got {type(protocol).__name__}")
    if not callable(extract):
        raise TypeError(f"`extract` must be callable (records, modality) -> Tensor, got {type(extract).__name__}")
    rerank_params = rerank_parameters(rerank)
    caller = check_caller_settings(settings)
    plan = protocol.plan(dataset, trials)

    def extract_union(
        records: Sequence[ImageRecord], index: list[int], modality: Modality, side: str
    ) -> tuple[Tensor, dict[int, int]]:
        features = extract([records[i] for i in index], modality)
        features = check_shape(features, f"extract(...) for the {side}", "(N, D)", 2)
        if features.shape[0] != len(index):
            raise ValueError(
                f"`extract` must return one row per record: got shape {tuple(features.shape)} for {len(index)} "
                f"{side} records"
            )
        return features, {i: p for p, i in enumerate(index)}

    q_features, q_pos = extract_union(plan.queries, plan.used_queries(), protocol.query_modality, "query")
    g_features, g_pos = extract_union(plan.gallery, plan.used_gallery(), protocol.gallery_modality, "gallery")

    def query_rows(trial: int, index: Sequence[int]) -> Tensor:
        return q_features[torch.tensor([q_pos[i] for i in index], dtype=torch.long, device=q_features.device)]

    def gallery_rows(trial: int, index: Sequence[int]) -> Tensor:
        return g_features[torch.tensor([g_pos[i] for i in index], dtype=torch.long, device=g_features.device)]

    return score_trials(
        protocol,
        plan,
        query_rows,
        gallery_rows,
        distance=distance,
        rerank=rerank_params,
        settings=caller,
        max_rank=max_rank,
        chunk_size=chunk_size,
    )
