"""The run directory: configuration, environment fingerprint, log file, per-term metrics and plots.

Layout of ``run_dir``::

    config.json      the configuration the run was started with
    env.json         versions (python, torch, torchvision, timm, numpy, pillow), device, threads, git sha
    train.log        human-readable log (also echoed to stdout)
    metrics.csv      one row per logged step: epoch, step, lr, every loss term
    metrics.jsonl    the same rows plus the epoch means and the evaluation metrics, one JSON object per line
    results.json     the final evaluation (its ``as_dict()``), results.md its table
    plots/*.png      loss terms (one panel each, own scale), learning rate, and the evaluation's own figures
                     (only with matplotlib)
    last.pt best.pt  checkpoints (see :mod:`vireid_layers.engine.checkpoint`)

A run resumed from a checkpoint keeps appending to the same files: the rows written after that checkpoint was
taken (by the interrupted run) are cut first (:meth:`RunDirectory.truncate_rows`), so every step appears once.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .interfaces import metrics_of, payload_of, plot_curves_of, table_of

__all__ = ["RunDirectory", "environment_info", "jsonable"]

#: The files with one row per logged step; their row counts go into every checkpoint.
ROW_FILES = ("metrics.csv", "metrics.jsonl")


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception:
        return None


def environment_info(device: torch.device | None = None) -> dict[str, Any]:
    """Versions, device and thread settings: the fingerprint written to ``env.json``."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "numpy": _version("numpy"),
        "pillow": _version("PIL"),
        "vireid_layers": _version("vireid_layers"),
        "device": str(device) if device is not None else None,
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        info["git_sha"] = sha.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_sha"] = None
    return info


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data; NaN and infinities become ``null`` (strict JSON has no such numbers).

    Examples:
        >>> jsonable({"a": (1, float("nan")), "b": Path("x")})
        {'a': [1, None], 'b': 'x'}
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def _count_rows(path: Path) -> int:
    """Data rows of a CSV (lines after the header) or JSONL file; 0 when absent."""
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as f:
        lines = sum(1 for line in f if line.strip())
    return max(lines - 1, 0) if path.suffix == ".csv" else lines


def _keep_rows(path: Path, rows: int) -> int:
    """Cut a CSV (after its header) or JSONL file to its first ``rows`` data rows; returns the rows removed."""
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
    keep = rows + 1 if path.suffix == ".csv" else rows
    if len(lines) <= keep:
        return 0
    tmp = path.with_name(f".{path.name}.cut")
    tmp.write_text("".join(lines[:keep]), encoding="utf-8")
    os.replace(tmp, path)
    return len(lines) - keep


class RunDirectory:
    """Writes the files of one run; every method is a no-op when ``enabled`` is false (non-zero DDP ranks).

    Args:
        path: the run directory; created if missing. ``None`` logs to stdout only.
        enabled: write files (rank 0) or not.
        echo: also print log lines to stdout.
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, enabled: bool = True, echo: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.enabled = enabled
        self.echo = echo and enabled
        self._csv_fields: list[str] | None = None
        self._rows: dict[str, int] | None = None
        self._tb = None
        self._purge_step: int | None = None
        if self.path is not None and enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    def _file(self, name: str) -> Path | None:
        return self.path / name if self.path is not None and self.enabled else None

    def log(self, message: str) -> None:
        """Append a time-stamped line to ``train.log`` and print it."""
        if not self.enabled:
            return
        if self.echo:
            print(message, flush=True)
        path = self._file("train.log")
        if path is not None:
            stamp = _dt.datetime.now().isoformat(timespec="seconds")
            with path.open("a", encoding="utf-8") as f:
                for line in message.splitlines() or [""]:
                    f.write(f"{stamp} {line}\n")

    def write_json(self, name: str, data: Any) -> None:
        """Write ``data`` as indented JSON to ``name`` in the run directory."""
        path = self._file(name)
        if path is not None:
            path.write_text(json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")

    def write_text(self, name: str, text: str) -> None:
        """Write a text file in the run directory."""
        path = self._file(name)
        if path is not None:
            path.write_text(text, encoding="utf-8")

    def json_differences(self, name: str, data: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """``{key: (recorded, given)}`` for every top-level key whose value in the JSON file ``name`` differs.

        An absent file (or a disabled directory) has no differences.
        """
        path = self._file(name)
        if path is None or not path.is_file():
            return {}
        recorded = json.loads(path.read_text(encoding="utf-8"))
        current = json.loads(json.dumps(jsonable(data)))
        pairs = {k: (recorded.get(k), current.get(k)) for k in sorted({*recorded, *current})}
        return {k: v for k, v in pairs.items() if v[0] != v[1]}

    def row_counts(self) -> dict[str, int]:
        """Data rows written so far to each per-step file (:data:`ROW_FILES`); a checkpoint records them."""
        if not self.enabled or self.path is None:
            return {}
        if self._rows is None:
            self._rows = {name: _count_rows(self.path / name) for name in ROW_FILES}
        return dict(self._rows)

    def truncate_rows(self, counts: Mapping[str, int] | None, *, after_step: int) -> dict[str, int]:
        """Cut the per-step files back to a checkpoint: to its ``counts``, else to the rows of steps <= ``after_step``.

        The rows of steps the interrupted run logged after the checkpoint would otherwise appear twice. TensorBoard
        events after ``after_step`` are purged when its writer opens.

        Returns:
            ``{file: rows removed}`` for the files that were cut.
        """
        self._purge_step = after_step + 1
        if not self.enabled or self.path is None:
            return {}
        removed = {}
        for name in ROW_FILES:
            path = self.path / name
            if counts is not None and name in counts:
                cut = _keep_rows(path, int(counts[name]))
            else:  # a checkpoint without row counts: keep the rows of the steps it had done
                cut = self._keep_steps(path, after_step)
            if cut:
                removed[name] = cut
        self._rows = None
        self._csv_fields = None
        return removed

    @staticmethod
    def _keep_steps(path: Path, after_step: int) -> int:
        if not path.is_file():
            return 0
        if path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as f:
                table = list(csv.reader(f))
            if not table:
                return 0
            step = table[0].index("step") if "step" in table[0] else None
            kept = [table[0]] + [r for r in table[1:] if step is None or int(float(r[step])) <= after_step]
            with path.open("w", encoding="utf-8", newline="") as f:
                csv.writer(f).writerows(kept)
            return len(table) - len(kept)
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept_lines = [line for line in lines if int(json.loads(line).get("step", 0)) <= after_step]
        path.write_text("".join(line + "\n" for line in kept_lines), encoding="utf-8")
        return len(lines) - len(kept_lines)

    def log_metrics(self, row: Mapping[str, Any]) -> None:
        """Append one row to ``metrics.jsonl``; rows of kind ``"train"`` also go to ``metrics.csv``/TensorBoard."""
        if not self.enabled or self.path is None:
            return
        self.row_counts()  # count the rows of a resumed run's files before appending
        assert self._rows is not None
        row = jsonable(row)
        with (self.path / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")
        self._rows["metrics.jsonl"] += 1
        if row.get("kind") != "train":
            return
        csv_path = self.path / "metrics.csv"
        if self._csv_fields is None:
            self._csv_fields = list(row)
            if csv_path.is_file() and csv_path.stat().st_size:  # resumed run: keep the existing header
                with csv_path.open(encoding="utf-8") as f:
                    self._csv_fields = next(csv.reader(f))
            else:
                with csv_path.open("w", newline="", encoding="utf-8") as f:
                    csv.writer(f).writerow(self._csv_fields)
        with csv_path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self._csv_fields, extrasaction="ignore").writerow(row)
        self._rows["metrics.csv"] += 1
        writer = self._tensorboard()
        if writer is not None:
            for key, value in row.items():
                if isinstance(value, int | float) and key not in ("epoch", "step"):
                    writer.add_scalar(key, value, row.get("step", 0))

    def _tensorboard(self) -> Any:
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: CSV/JSONL only
                self._tb = False
            else:
                self._tb = SummaryWriter(str(self.path / "tensorboard"), purge_step=self._purge_step)
        return self._tb or None

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if any."""
        if self._tb:
            self._tb.close()

    def read_metrics(self, kind: str = "train") -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl`` of one kind."""
        path = self._file("metrics.jsonl")
        if path is None or not path.is_file():
            return []
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r for r in rows if r.get("kind") == kind]

    def plots_dir(self) -> Path | None:
        """``plots/`` of the run directory (created), or ``None`` when nothing is written."""
        path = self._file("plots")
        if path is not None:
            path.mkdir(exist_ok=True)
        return path

    def write_results(self, result: Any, summary: Mapping[str, Any]) -> str:
        """``results.json`` (``summary`` and the result's ``as_dict()``) and ``results.md``; returns the table.

        ``result`` is an evaluation result of the engine's interface (:mod:`~vireid_layers.engine.interfaces`).
        """
        metrics = metrics_of(result)
        table = table_of(result, metrics)
        self.write_json("results.json", {**summary, "results": payload_of(result, metrics)})
        head = ", ".join(f"{k}={v}" for k, v in summary.items() if k == "selected_on")
        self.write_text("results.md", f"{head}\n\n{table}\n")
        return table

    def write_plots(self, loss_terms: Sequence[str], weights: Mapping[str, float] | None, result: Any) -> list[Path]:
        """:meth:`plot` of the loss terms, then the evaluation ``result``'s own figures (``plot_curves``), if any."""
        written = self.plot(loss_terms, weights)
        plots = self.plots_dir() if result is not None else None
        if plots is not None:
            written += plot_curves_of(result, plots)
        return written

    def plot(self, loss_terms: Sequence[str], weights: Mapping[str, float] | None = None) -> list[Path]:
        """``plots/loss.png`` and ``plots/lr.png`` from the logged training rows; needs matplotlib.

        ``loss.png`` has one panel per loss term, each on its own scale: the terms as logged (unweighted, as the
        criterion returns them), titled with their weight in the minimised total when ``weights`` is given, and
        a last panel with the weighted terms :math:`w_i L_i` and their total on a logarithmic axis (what the
        optimiser sees, and which term dominates it). Without ``weights`` the last panel shows the total alone.

        Returns:
            The files written (none without matplotlib or without logged rows).
        """
        if not self.enabled or self.path is None:
            return []
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            self.log("plots skipped: matplotlib is not installed (pip install matplotlib)")
            return []
        rows = self.read_metrics("train")
        out = self.plots_dir()
        if not rows or out is None:
            return []
        steps = [r["step"] for r in rows]
        terms = list(loss_terms)
        columns = 2 if len(terms) + 1 > 2 else len(terms) + 1
        lines = -(-(len(terms) + 1) // columns)
        fig, axes = plt.subplots(lines, columns, figsize=(5.5 * columns, 3.2 * lines), squeeze=False)
        for ax, term in zip(axes.flat, terms, strict=False):
            ax.plot(steps, [_value(r, term) for r in rows], color="tab:blue")
            weight = None if weights is None else weights.get(term)
            detail = "unweighted" if weight is None else f"unweighted; weight {weight:g} in the total"
            ax.set_title(f"{term} ({detail})", fontsize=10)
            ax.set(xlabel="step", ylabel=term)
            ax.grid(alpha=0.3)
        ax = axes.flat[len(terms)]
        if weights is not None and all(t in weights for t in terms):
            for term in terms:
                weighted = [weights[term] * _value(r, term) for r in rows]
                ax.plot(steps, [v if v > 0 else float("nan") for v in weighted], label=f"{weights[term]:g} × {term}")
            ax.set_title("weighted terms and their total (log scale)", fontsize=10)
        else:
            ax.set_title("total (log scale)", fontsize=10)
        ax.plot(steps, [_value(r, "total") for r in rows], color="black", linewidth=2, label="total (minimised)")
        ax.set(xlabel="step", ylabel="loss", yscale="log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        for extra in list(axes.flat)[len(terms) + 1 :]:
            extra.set_visible(False)
        for panel in axes.flat:
            panel.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        fig.suptitle("training loss terms (each panel on its own scale)", fontsize=11)
        fig.tight_layout()
        written = [out / "loss.png", out / "lr.png"]
        fig.savefig(written[0], dpi=100, bbox_inches="tight")
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(steps, [_value(r, "lr") for r in rows])
        ax.set(xlabel="step", ylabel="learning rate (largest group)", title="learning rate")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        fig.savefig(written[1], dpi=100, bbox_inches="tight")
        plt.close(fig)
        return written


def _value(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else float("nan")
