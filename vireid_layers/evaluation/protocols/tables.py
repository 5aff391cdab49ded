"""Markdown tables of protocol results: one result, or several settings of one protocol side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .results import ProtocolResult
from .settings import _rerank, describe_settings, variant_labels

__all__ = ["format_comparison", "format_single"]

_CMC_LABELS = {"standard": "standard", "dedup": "identity-deduplicated"}


def _cell(result: ProtocolResult, key: str, digits: int) -> str:
    return f"{100 * result.mean[key]:.{digits}f} ± {100 * result.std[key]:.{digits}f}"


def _rows(result: ProtocolResult, digits: int, prefix: str = "") -> list[str]:
    """One markdown row per CMC definition, the reported one first."""
    order = ["dedup", "standard"] if result.reported_cmc == "dedup" else ["standard", "dedup"]
    rows = []
    for definition in order:
        suffix = "_dedup" if definition == "dedup" else ""
        label = _CMC_LABELS[definition] + (" (reported)" if definition == result.reported_cmc else "")
        cells = [_cell(result, f"rank{k}{suffix}", digits) for k in result.ranks]
        cells += [_cell(result, "mAP", digits), _cell(result, "mINP", digits)]
        rows.append(f"| {prefix}{label} | " + " | ".join(cells) + " |")
    return rows


def _title(protocol: str, counts: set[int]) -> str:
    if len(counts) == 1:
        n = counts.pop()
        return f"**{protocol}**: {n} {'trial' if n == 1 else 'trials'}, mean ± std (%)"
    return f"**{protocol}**: mean ± std over each row's trials (%)"


def _plain_note(results: Sequence[ProtocolResult]) -> list[str]:
    """A line saying so when flip or re-ranking is on and no row is without both."""

    def modified(r: ProtocolResult) -> bool:
        return bool(r.settings.get("flip")) or bool(r.settings.get("rerank"))

    if any(modified(r) for r in results) and all(modified(r) for r in results):
        return ["- plain row (no flip, no re-ranking): not evaluated"]
    return []


def _rerank_note(rows: Sequence[ProtocolResult], varying: Sequence[str]) -> list[str]:
    """The parameters of the re-ranked rows, when re-ranking varies between the rows (so the settings omit them)."""
    if "rerank" not in varying:
        return []
    params = dict.fromkeys(json.dumps(r.settings["rerank"]) for r in rows if r.settings.get("rerank"))
    return [f"- re-ranked rows: {'; '.join(_rerank(json.loads(p)) for p in params)}"] if params else []


def format_single(result: ProtocolResult, *, digits: int = 2) -> str:
    """The table of one result without baselines: title, one row per CMC definition, then the settings."""
    header = "| CMC | " + " | ".join(f"Rank-{k}" for k in result.ranks) + " | mAP | mINP |"
    align = "|:--|" + "--:|" * (len(result.ranks) + 2)
    lines = [_title(result.protocol, {result.num_trials}), "", header, align, *_rows(result, digits), ""]
    return "\n".join([*lines, *describe_settings(result.settings), *_plain_note([result])])


def format_comparison(
    results: Sequence[ProtocolResult], labels: Sequence[str] | None = None, *, digits: int = 2
) -> str:
    r"""Several settings of one protocol side by side: one group of rows per result, then the shared settings.

    Each result contributes its baselines (plainest first) and itself. A row is labelled by the settings in
    which it differs from the others (``"plain"``, ``"flip (sum)"``, ``"re-ranked"``, ``"feature official"``,
    ...) unless ``labels`` are given; the settings block under the table shows those of the last result, with
    the differing keys marked "varies, see the rows". ``examples/evaluate.py --compare`` prints this table.

    Args:
        results: results of the same protocol (the same :attr:`~ProtocolResult.protocol` name and ranks).
        labels: one label per row group (each result and each of its baselines, in order); default derived.
        digits: decimals of the percentages.

    Returns:
        The markdown text.

    Raises:
        ValueError: no result, results of different protocols, or the wrong number of labels.

    Examples:
        >>> import torch
        >>> from vireid_layers.evaluation import ProtocolResult, TrialResult, format_comparison, retrieval_metrics
        >>> def result(scores, **settings):
        ...     m = retrieval_metrics(torch.tensor([scores]), torch.tensor([1]), torch.tensor([1, 2]))
        ...     return ProtocolResult("toy", settings, "standard", (TrialResult(0, 1, 2, m),), ranks=(1,))
        >>> table = format_comparison([result([0.9, 0.1], flip=False), result([0.1, 0.9], flip="sum")])
        >>> print("\n".join(table.splitlines()[2:8]))
        | Setting | CMC | Rank-1 | mAP | mINP |
        |:--|:--|--:|--:|--:|
        | plain | standard (reported) | 0.00 ± 0.00 | 50.00 ± 0.00 | 50.00 ± 0.00 |
        | plain | identity-deduplicated | 0.00 ± 0.00 | 50.00 ± 0.00 | 50.00 ± 0.00 |
        | flip (sum) | standard (reported) | 100.00 ± 0.00 | 100.00 ± 0.00 | 100.00 ± 0.00 |
        | flip (sum) | identity-deduplicated | 100.00 ± 0.00 | 100.00 ± 0.00 | 100.00 ± 0.00 |
    """
    rows = [row for r in results for row in (*r.baselines, r)]
    if not rows:
        raise ValueError("`results` must hold at least one ProtocolResult")
    for r in rows:
        if not isinstance(r, ProtocolResult):
            raise TypeError(f"`results` must hold ProtocolResult, got {type(r).__name__}")
        if (r.protocol, r.ranks) != (rows[0].protocol, rows[0].ranks):
            raise ValueError(f"`results` mixes protocols: {rows[0].protocol!r} and {r.protocol!r}")
    labels = variant_labels([r.settings for r in rows]) if labels is None else list(labels)
    if len(labels) != len(rows):
        raise ValueError(f"`labels` must hold one label per result and baseline ({len(rows)}), got {len(labels)}")
    header = "| Setting | CMC | " + " | ".join(f"Rank-{k}" for k in rows[0].ranks) + " | mAP | mINP |"
    align = "|:--|:--|" + "--:|" * (len(rows[0].ranks) + 2)
    body = [line for r, label in zip(rows, labels, strict=True) for line in _rows(r, digits, f"{label} | ")]
    keys = dict.fromkeys(k for r in rows for k in r.settings)
    varying = [k for k in keys if len({json.dumps(r.settings.get(k), sort_keys=True) for r in rows}) > 1]
    lines = [_title(rows[0].protocol, {r.num_trials for r in rows}), "", header, align, *body, ""]
    settings = describe_settings(rows[-1].settings, varying=varying)
    return "\n".join([*lines, *settings, *_rerank_note(rows, varying), *_plain_note(rows)])
