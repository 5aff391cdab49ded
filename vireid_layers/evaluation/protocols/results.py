"""Results of a protocol: one trial's metrics, and mean ± std over trials with the settings that produced them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from ..metrics import RetrievalMetrics
from .settings import SETTING_KEYS, check_caller_settings

__all__ = ["CMCDefinition", "ProtocolResult", "TrialResult"]

CMCDefinition = Literal["standard", "dedup"]
"""``"standard"``: rank of the first true match; ``"dedup"``: rank among distinct gallery identities."""

#: Ranks reported by :class:`ProtocolResult` (the usual Rank-1/5/10/20).
RANKS: tuple[int, ...] = (1, 5, 10, 20)


@dataclass(frozen=True)
class TrialResult:
    """Metrics of one trial.

    Attributes:
        trial: trial number (the seed of a seeded gallery).
        num_query: number of queries.
        num_gallery: number of gallery images.
        metrics: the :class:`~vireid_layers.evaluation.RetrievalMetrics` of the trial.

    Examples:
        >>> import torch
        >>> from vireid_layers.evaluation import TrialResult, retrieval_metrics
        >>> m = retrieval_metrics(torch.tensor([[0.1, 0.9]]), torch.tensor([2]), torch.tensor([1, 2]))
        >>> TrialResult(0, 1, 2, m).values((1, 2))
        {'rank1': 0.0, 'rank2': 1.0, 'rank1_dedup': 0.0, 'rank2_dedup': 1.0, 'mAP': 0.5, 'mINP': 0.5}
    """

    trial: int
    num_query: int
    num_gallery: int
    metrics: RetrievalMetrics

    def values(self, ranks: Sequence[int] = RANKS) -> dict[str, float]:
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

    def as_dict(self, ranks: Sequence[int] = RANKS, *, per_query: bool = False) -> dict[str, Any]:
        """JSON-serialisable: counts, :meth:`values`, both CMC curves, and per-query AP with ``per_query``."""
        out: dict[str, Any] = {
            "trial": self.trial,
            "num_query": self.num_query,
            "num_gallery": self.num_gallery,
            "num_valid": self.metrics.num_valid,
            **self.values(ranks),
            "cmc": [float(v) for v in self.metrics.cmc.tolist()],
            "cmc_dedup": [float(v) for v in self.metrics.cmc_dedup.tolist()],
        }
        if per_query:  # NaN (invalid query) as null: strict JSON has no NaN
            out["average_precision"] = [None if math.isnan(v) else v for v in self.metrics.average_precision.tolist()]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialResult:
        """Rebuild a trial from :meth:`as_dict`; curves as float64, per-query AP empty unless it was stored."""
        ap = [math.nan if v is None else float(v) for v in data.get("average_precision", ())]
        metrics = RetrievalMetrics(
            cmc=torch.tensor(data["cmc"], dtype=torch.float64),
            cmc_dedup=torch.tensor(data["cmc_dedup"], dtype=torch.float64),
            mAP=float(data["mAP"]),
            mINP=float(data["mINP"]),
            num_valid=int(data["num_valid"]),
            average_precision=torch.tensor(ap, dtype=torch.float64),
        )
        return cls(int(data["trial"]), int(data["num_query"]), int(data["num_gallery"]), metrics)


@dataclass(frozen=True)
class ProtocolResult:
    r"""Per-trial metrics of a protocol, their mean ± standard deviation over trials, and how they were obtained.

    Keys of :attr:`mean` / :attr:`std`: ``rank1, rank5, rank10, rank20`` (standard CMC),
    ``rank1_dedup, ...`` (identity-deduplicated CMC), ``mAP`` and ``mINP``, all fractions in :math:`[0, 1]`.
    The standard deviation is the sample one, :math:`\sqrt{\sum_t (x_t - \bar x)^2 / (T - 1)}`, and 0 for a
    single trial.

    :attr:`settings` states every key of :data:`~vireid_layers.evaluation.protocols.settings.SETTING_KEYS`
    (dataset, protocol and mode, direction, trials and gallery seeds, shots, feature, flip, re-ranking,
    distance, checkpoint selection; ``None`` where nobody stated it), and :meth:`format_table` prints them
    under the table. :attr:`baselines` are the same evaluation without some test-time option (the plain
    ranking of a re-ranked result, the run without flip): tables print them as rows above this one.

    Attributes:
        protocol: the protocol's :attr:`~vireid_layers.evaluation.EvaluationProtocol.name`.
        settings: how the result was obtained (JSON-serialisable); missing standard keys are added as ``None``.
        reported_cmc: ``"dedup"`` or ``"standard"``: the CMC the protocol's reference code reports.
        trials: one :class:`TrialResult` per trial.
        ranks: the CMC ranks summarised.
        baselines: results of the same protocol and trials with fewer test-time options, plainest first.

    Examples:
        >>> import torch
        >>> from vireid_layers.evaluation import ProtocolResult, TrialResult, retrieval_metrics
        >>> m = retrieval_metrics(torch.tensor([[0.1, 0.9]]), torch.tensor([1]), torch.tensor([1, 2]))
        >>> r = ProtocolResult("toy", {"dataset": "toy"}, "standard", (TrialResult(0, 1, 2, m),))
        >>> r.mean["rank1"], r.settings["flip"] is None, r.with_settings(flip=False).settings["flip"]
        (1.0, True, False)
        >>> ProtocolResult.from_dict(r.as_dict()).as_dict() == r.as_dict()
        True
    """

    protocol: str
    settings: dict[str, Any]
    reported_cmc: CMCDefinition
    trials: tuple[TrialResult, ...]
    ranks: tuple[int, ...] = RANKS
    baselines: tuple[ProtocolResult, ...] = ()
    mean: dict[str, float] = field(init=False, repr=False)
    std: dict[str, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.trials:
            raise ValueError("`trials` must hold at least one TrialResult")
        if not isinstance(self.settings, Mapping):
            raise TypeError(f"`settings` must be a mapping, got {type(self.settings).__name__}")
        settings = {key: self.settings.get(key) for key in SETTING_KEYS}
        settings.update(self.settings)
        try:
            json.dumps(settings)
        except (TypeError, ValueError) as err:
            raise TypeError(f"`settings` must be JSON-serialisable, got {settings!r}: {err}") from err
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "trials", tuple(self.trials))
        object.__setattr__(self, "baselines", tuple(self.baselines))
        for baseline in self.baselines:
            self._check_same_evaluation(baseline, "baselines")
            if baseline.baselines:
                raise ValueError("`baselines` must not have baselines of their own (the list is flat)")
        table = [t.values(self.ranks) for t in self.trials]
        mean, std = {}, {}
        for key in table[0]:
            xs = [row[key] for row in table]
            mu = math.fsum(xs) / len(xs)
            mean[key] = mu
            std[key] = math.sqrt(math.fsum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def _check_same_evaluation(self, other: ProtocolResult, name: str) -> None:
        if not isinstance(other, ProtocolResult):
            raise TypeError(f"`{name}` must hold ProtocolResult, got {type(other).__name__}")
        if (other.protocol, other.reported_cmc, other.ranks) != (self.protocol, self.reported_cmc, self.ranks):
            raise ValueError(f"`{name}` must be of the same protocol: {self.protocol!r} and {other.protocol!r}")
        if [t.trial for t in other.trials] != [t.trial for t in self.trials]:
            raise ValueError(
                f"`{name}` must be of the same trials: {[t.trial for t in self.trials]} and "
                f"{[t.trial for t in other.trials]}"
            )

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
        """A markdown table in percent, mean ± std over trials, and the settings under it.

        One row per CMC definition (reported first). With :attr:`baselines`, one group of rows per result,
        plainest first, labelled by the settings that differ (see
        :func:`~vireid_layers.evaluation.format_comparison`). Under the table, one line per setting.

        Examples:
            >>> import torch
            >>> from vireid_layers.evaluation import ProtocolResult, TrialResult, retrieval_metrics
            >>> m = retrieval_metrics(torch.tensor([[0.1, 0.9]]), torch.tensor([1]), torch.tensor([1, 2]))
            >>> r = ProtocolResult("toy", {}, "standard", (TrialResult(0, 1, 2, m),))
            >>> lines = r.format_table().splitlines()
            >>> lines[0]
            '**toy**: 1 trial, mean ± std (%)'
            >>> lines[2]
            '| CMC | Rank-1 | Rank-5 | Rank-10 | Rank-20 | mAP | mINP |'
            >>> lines[4].split(" | ")[:2]
            ['| standard (reported)', '100.00 ± 0.00']
            >>> lines[7:9]
            ['Settings:', '- dataset: not stated']
        """
        from .tables import format_comparison, format_single

        if self.baselines:
            return format_comparison([self], digits=digits)  # rows: the baselines, then this result
        return format_single(self, digits=digits)

    def as_dict(self, *, per_query: bool = False) -> dict[str, Any]:
        """JSON-serialisable: settings, mean, std, the reported metrics, every trial and the baselines.

        Each trial holds its :meth:`TrialResult.values`, counts and both CMC curves; ``per_query=True`` adds
        every query's AP (``null`` for a query without a match). :meth:`from_dict` reads it back.
        """
        return {
            "protocol": self.protocol,
            "settings": dict(self.settings),
            "reported_cmc": self.reported_cmc,
            "num_trials": self.num_trials,
            "ranks": list(self.ranks),
            "mean": dict(self.mean),
            "std": dict(self.std),
            "reported": {k: {"mean": m, "std": s} for k, (m, s) in self.reported().items()},
            "trials": [t.as_dict(self.ranks, per_query=per_query) for t in self.trials],
            "baselines": [b.as_dict(per_query=per_query) for b in self.baselines],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProtocolResult:
        """Rebuild a result from :meth:`as_dict` (for example a run's ``results.json``).

        The CMC curves come back as float64 tensors; the per-query AP is empty unless it was stored with
        ``per_query=True``. ``from_dict(r.as_dict()).as_dict() == r.as_dict()``.

        Raises:
            ValueError: a key is missing, or the stored mean disagrees with the stored trials.
        """
        try:
            trials = tuple(TrialResult.from_dict(t) for t in data["trials"])
            baselines = tuple(cls.from_dict(b) for b in data.get("baselines", ()))
            result = cls(
                data["protocol"], dict(data["settings"]), data["reported_cmc"], trials, tuple(data["ranks"]), baselines
            )
            stored = data["mean"]
        except KeyError as err:
            raise ValueError(f"`data` is not a ProtocolResult.as_dict(): it lacks the key {err}") from err
        for key, value in result.mean.items():
            if key not in stored or not math.isclose(stored[key], value, rel_tol=1e-12, abs_tol=1e-15):
                raise ValueError(
                    f"`data` is inconsistent: mean[{key!r}] is {stored.get(key)!r}, its trials give {value}"
                )
        return result

    def with_settings(self, **settings: Any) -> ProtocolResult:
        """A copy stating what only the caller knows, e.g. ``with_settings(selection="val")``.

        The keys are those of the ``settings`` argument of :func:`~vireid_layers.evaluation.evaluate_protocol`
        (``feature``, ``flip``, ``selection`` and any key of the caller's own). They are set on this result, and
        on each baseline that does not state them yet.

        Raises:
            ValueError: a key that the protocol and its runner fill (``dataset``, ``direction``, ...).
        """
        extra = check_caller_settings(settings)
        baselines = tuple(
            replace(b, settings={**b.settings, **{k: v for k, v in extra.items() if b.settings.get(k) is None}})
            for b in self.baselines
        )
        return replace(self, settings={**self.settings, **extra}, baselines=baselines)

    def with_baseline(self, plain: ProtocolResult) -> ProtocolResult:
        """A copy with ``plain`` (and its own baselines) as the rows above this result's baselines.

        The way to show the plain row of a test-time option the protocol runner cannot undo itself: evaluate
        once without flip and once with it, then ``flipped.with_baseline(plain)``. Re-ranking needs nothing of
        the kind: ``evaluate_protocol(..., rerank=True)`` already holds its plain ranking.

        Raises:
            ValueError: ``plain`` is of another protocol or other trials.
        """
        self._check_same_evaluation(plain, "plain")
        stripped = replace(plain, baselines=())
        return replace(self, baselines=(*plain.baselines, stripped, *self.baselines))

    @classmethod
    def combine(cls, results: Sequence[ProtocolResult]) -> ProtocolResult:
        """Pool the trials of several results of the same protocol, e.g. the ten RegDB splits.

        Each RegDB split is its own dataset (and model), so each gives a one-trial result; ``combine`` makes
        the mean ± std over splits. Trials are renumbered ``0..T-1`` in the order given (the settings'
        ``trials`` too); a setting whose value differs between the results becomes the list of their values
        (for example each split's ``"split"``). Baselines are pooled alike when every result has them.

        Raises:
            ValueError: ``results`` is empty, mixes protocols, or only some results have baselines.
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
        settings: dict[str, Any] = {}
        for key in dict.fromkeys(k for r in results for k in r.settings):
            values = [r.settings.get(key) for r in results]
            same = all(json.dumps(v, sort_keys=True) == json.dumps(values[0], sort_keys=True) for v in values)
            settings[key] = values[0] if same else values
        settings["trials"] = list(range(len(renumbered)))
        depths = {len(r.baselines) for r in results}
        if len(depths) > 1:
            raise ValueError(f"`results` must all have the same number of baselines to be combined, got {depths}")
        baselines = tuple(cls.combine([r.baselines[i] for r in results]) for i in range(depths.pop()))
        return cls(first.protocol, settings, first.reported_cmc, renumbered, first.ranks, baselines)
