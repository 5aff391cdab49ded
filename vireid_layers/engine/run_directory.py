"""The run directory: configuration, environment fingerprint, log file, per-term metrics and plots.

Layout of ``run_dir``::

    config.json      the configuration the run was started with
    env.json         versions (python, torch, torchvision, timm, numpy, pillow), device, threads, git sha
    train.log        human-readable log (also echoed to stdout)
    metrics.csv      one row per logged step: epoch, step, lr, every loss term
    metrics.jsonl    the same rows plus evaluation results, one JSON object per line
    results.json     final results (mean ± std over trials), results.md the same as a table
    plots/*.png      loss terms, learning rate, CMC curve (only with matplotlib)
    last.pt best.pt  checkpoints (see :mod:`vireid_layers.engine.checkpoint`)
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

__all__ = ["RunDirectory", "environment_info"]


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


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data; NaN and infinities become ``null`` (strict JSON has no such numbers)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return repr(value)


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
        self._tb = None
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
            path.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")

    def write_text(self, name: str, text: str) -> None:
        """Write a text file in the run directory."""
        path = self._file(name)
        if path is not None:
            path.write_text(text, encoding="utf-8")

    def log_metrics(self, row: Mapping[str, Any]) -> None:
        """Append one row to ``metrics.jsonl``; rows of kind ``"train"`` also go to ``metrics.csv``/TensorBoard."""
        if not self.enabled or self.path is None:
            return
        row = _jsonable(row)
        with (self.path / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")
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
                self._tb = SummaryWriter(str(self.path / "tensorboard"))
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

    def plot(self, loss_terms: Sequence[str], cmc: Sequence[float] | None = None) -> None:
        """PNG plots of the loss terms and the learning rate over steps, and of a CMC curve; needs matplotlib."""
        if not self.enabled or self.path is None:
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.log("plots skipped: matplotlib is not installed (pip install matplotlib)")
            return
        rows = self.read_metrics("train")
        out = self.path / "plots"
        out.mkdir(exist_ok=True)
        if rows:
            steps = [r["step"] for r in rows]
            fig, ax = plt.subplots(figsize=(7, 4))
            for term in [*loss_terms, "total"]:
                ax.plot(steps, [r.get(term, float("nan")) for r in rows], label=term)
            ax.set(xlabel="step", ylabel="loss", title="loss terms")
            ax.legend()
            fig.savefig(out / "loss.png", dpi=100, bbox_inches="tight")
            plt.close(fig)
            fig, ax = plt.subplots(figsize=(7, 3))
            ax.plot(steps, [r.get("lr", float("nan")) for r in rows])
            ax.set(xlabel="step", ylabel="learning rate (head)", title="learning rate")
            fig.savefig(out / "lr.png", dpi=100, bbox_inches="tight")
            plt.close(fig)
        if cmc:
            fig, ax = plt.subplots(figsize=(5, 4))
            ax.plot(range(1, len(cmc) + 1), [100 * v for v in cmc], marker="o")
            ax.set(xlabel="rank", ylabel="matching rate (%)", title="CMC", ylim=(0, 100))
            fig.savefig(out / "cmc.png", dpi=100, bbox_inches="tight")
            plt.close(fig)
        self.log(f"plots written to {out}")
