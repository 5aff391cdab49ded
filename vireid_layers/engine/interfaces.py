"""What the trainer expects of its collaborators: small structural interfaces, checked by duck typing.

The engine imports nothing of the rest of the package. A criterion, an evaluation result and a model output
talk to it through the methods below; any object with them works (:class:`typing.Protocol`, so nothing has to
inherit from these classes).

* :class:`Criterion`: ``criterion(output, batch) -> {name: scalar}`` and, optionally, ``total(terms)`` (the
  weighted sum that is minimised; default the plain sum) and ``weights`` (each term's weight in that sum,
  shown on the loss plot); ``set_epoch(epoch)`` (called at the start of every epoch) and
  ``state_dict()`` / ``load_state_dict(state)`` (saved in and restored from every checkpoint), for a criterion
  with state, e.g. a loss weight set from the previous epoch's losses and kept in buffers.
* The model: ``set_epoch(epoch)``, when the unwrapped model defines it, is called at the start of every epoch
  (e.g. an epoch-dependent momentum). Its state travels in the checkpoint as its ``state_dict()``.
* :class:`EvaluationResult`: what ``evaluate(model)`` / ``test(model)`` return. Either a mapping of named
  numbers, or an object with ``to_metrics()``; optionally ``summary()`` (one log line), ``format_table()``
  (``results.md`` and the final log), ``as_dict()`` (``results.json``) and ``plot_curves(directory)`` (its
  own figures in the run directory's ``plots/``).
* :class:`GatherableOutput`: a model output with ``gather()`` merges itself across DDP ranks (keeping its own
  row layout); other outputs are gathered tensor by tensor.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = [
    "Criterion",
    "EvaluationResult",
    "GatherableOutput",
    "format_metrics_table",
    "metrics_of",
]


@runtime_checkable
class Criterion(Protocol):
    """``criterion(output, batch) -> {name: scalar tensor}``: the unweighted loss terms of one batch.

    Optional: ``total(terms) -> Tensor`` (the weighted sum; default ``sum(terms.values())``) and
    ``weights: Mapping[str, float]`` (the weight of every term in that sum; the loss plot shows it).

    A criterion with state (an ``nn.Module`` with buffers, or any object with ``state_dict()`` and
    ``load_state_dict()``) has ``state_dict()`` saved in every checkpoint under ``"criterion"`` and restored,
    strictly, on resume, so a resumed run continues with the state the interrupted one had. ``set_epoch(epoch)``,
    when defined, is called with the 0-based epoch at the start of every epoch, after the learning rate and the
    sampler are set, and again for the epoch a resumed run continues (mid-epoch too): it must be idempotent for
    a given epoch. The model's ``set_epoch`` (on the unwrapped module) is called at the same moment.
    """

    def __call__(self, output: Any, batch: Any) -> Mapping[str, Tensor]:
        """The loss terms of one batch."""
        ...


@runtime_checkable
class EvaluationResult(Protocol):
    """An evaluation result the trainer can log: at least ``to_metrics()``.

    Optional methods, used when present: ``summary() -> str`` (the log line after an evaluation),
    ``format_table() -> str`` (the final table, ``results.md``), ``as_dict() -> dict`` (``results.json``;
    default the metrics) and ``plot_curves(directory) -> list[Path]`` (figures of its own in ``plots/``).
    """

    def to_metrics(self) -> Mapping[str, float]:
        """Named numbers: logged after every evaluation; the selection metric is one of them."""
        ...


@runtime_checkable
class GatherableOutput(Protocol):
    """A model output that concatenates itself over the DDP ranks (keeping, for example, a block layout of its rows)."""

    def gather(self) -> Any:
        """The output of every rank, merged; itself without a process group."""
        ...


def metrics_of(result: Any) -> dict[str, float]:
    """The named numbers of an evaluation result: ``result.to_metrics()``, or the numbers of a mapping.

    Raises:
        TypeError: ``result`` is neither.

    Examples:
        >>> metrics_of({"accuracy": 0.5, "note": "text"})
        {'accuracy': 0.5}
    """
    to_metrics = getattr(result, "to_metrics", None)
    if callable(to_metrics):
        return {str(k): float(v) for k, v in to_metrics().items()}
    if isinstance(result, Mapping):
        return {str(k): float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    raise TypeError(
        "an evaluation callable must return a mapping of numbers or an object with to_metrics(), "
        f"got {type(result).__name__}"
    )


def format_metrics_table(metrics: Mapping[str, float]) -> str:
    """A markdown table of named numbers, one row each (the final table of a result without ``format_table``).

    Examples:
        >>> print(format_metrics_table({"accuracy": 0.5}))
        | metric | value |
        |:--|--:|
        | accuracy | 0.5 |
    """
    rows = [f"| {k} | {v:.6g} |" if math.isfinite(v) else f"| {k} | {v} |" for k, v in metrics.items()]
    return "\n".join(["| metric | value |", "|:--|--:|", *rows])


def summary_of(result: Any, metrics: Mapping[str, float]) -> str:
    """``result.summary()`` when defined, else ``name=value`` of the first three metrics."""
    summary = getattr(result, "summary", None)
    if callable(summary):
        return str(summary())
    return ", ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:3])


def table_of(result: Any, metrics: Mapping[str, float]) -> str:
    """``result.format_table()`` when defined, else :func:`format_metrics_table`."""
    table = getattr(result, "format_table", None)
    return str(table()) if callable(table) else format_metrics_table(metrics)


def payload_of(result: Any, metrics: Mapping[str, float]) -> Any:
    """``result.as_dict()`` when defined, else the metrics."""
    as_dict = getattr(result, "as_dict", None)
    return as_dict() if callable(as_dict) else dict(metrics)


def plot_curves_of(result: Any, directory: str | os.PathLike[str]) -> list[Path]:
    """``result.plot_curves(directory)`` when defined (its figures), else nothing."""
    plot = getattr(result, "plot_curves", None)
    return [Path(p) for p in plot(directory)] if callable(plot) else []
