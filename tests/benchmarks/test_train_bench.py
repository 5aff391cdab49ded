"""The training-step benchmark (``benchmarks/train_bench.py``): every method builds and takes a finite step through
the engine at a tiny size, the method filter parses, and the table keeps each method's own baseline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_gpu_check import isolated_import

ROOT = Path(__file__).resolve().parents[2]
(train_bench,) = isolated_import(ROOT / "benchmarks", "train_bench")


@pytest.mark.parametrize("method", train_bench.METHODS)
def test_every_method_takes_a_finite_training_step(method: str) -> None:
    from vireid_layers.data import ImageSample
    from vireid_layers.engine import Trainer, TrainerConfig

    args = train_bench.parse_args(["--quick", "--device", "cpu", "--method", method])
    _, setting = train_bench.resolve(args)
    setting = train_bench.sized_for(method, setting)
    model, criterion, optimizer, forward = train_bench.build_method(method, setting)
    trainer = Trainer(model, criterion, optimizer, [], TrainerConfig(device="cpu", progress=False), forward=forward)
    labels, modalities = train_bench.batch_layout(method, setting["identities"], setting["instances"])
    assert len(labels) == len(modalities) == setting["batch"]
    assert torch.bincount(modalities).tolist() == [setting["batch"] // 2] * 2  # both modalities, equally
    images = torch.randn(setting["batch"], 3, setting["height"], setting["width"])
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    values = trainer.train_step(ImageSample(images, labels, torch.zeros_like(labels), modalities))
    assert math.isfinite(values["total"]) and len(values) > 3
    after = [p for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # the optimiser stepped
    assert (setting["height"], setting["width"]) == ((64, 64) if method == "mso" else (64, 32))


def test_method_filter_and_defaults() -> None:
    assert train_bench.parse_args([]).method == list(train_bench.METHODS)
    assert train_bench.parse_args(["--method", "ddag", "mso"]).method == ["ddag", "mso"]
    with pytest.raises(SystemExit):
        train_bench.parse_args(["--method", "resnet"])


def test_markdown_compares_each_method_with_its_own_eager_row() -> None:
    def row(method: str, config: str, ms: float) -> dict:
        return {
            "method": method,
            "config": config,
            "description": train_bench.DESCRIPTIONS[config],
            "status": "ok",
            "median_ms": ms,
            "iqr_ms": 1.0,
            "runs": 5,
            "images_per_s": 48 / (ms / 1e3),
            "peak_mib": None,
            "step_peak_mib": None,
            "warmup_s": [1.0],
        }

    cases = [row("deen", "eager-fp32", 100.0), row("deen", "amp-bf16", 50.0), row("ddag", "eager-fp32", 400.0)]
    cases.append(row("ddag", "amp-bf16", 100.0))
    results = {"cases": cases}
    train_bench.utilisation(results, {"tflops": 1.0, "source": "table", "device_name": "x"})
    assert results["goals"] == {}  # no FLOPs, no compile row: no goal
    lines = [line for line in _table(results).splitlines() if line.startswith("| ddag") or line.startswith("| deen")]
    assert [line.split("|")[7].strip() for line in lines] == ["1.00×", "2.00×", "1.00×", "4.00×"]


def _table(results: dict) -> str:
    meta = {
        "commit": {"sha": "abc", "dirty": False},
        "machine": {"slug": "m", "processor": "p", "cpu_count": 1, "platform": "x"},
        "device": {"type": "cpu", "name": "p", "num_threads": 1},
        "versions": {"torch": "2"},
        "timestamp_utc": "now",
    }
    settings = {
        "full_sysu": False,
        "backbone": "resnet18",
        "height": 128,
        "width": 64,
        "batch": 48,
        "identities": 6,
        "instances": 4,
        "num_classes": 395,
        "optimizer": dict(train_bench.OPTIMIZERS),
        "warmup": 3,
        "min_run_time_s": 1.0,
        "min_runs": 5,
    }
    full = {"suite": "train", "metadata": meta, "settings": settings, "total_runtime_s": 1.0, "complete": True}
    return train_bench.markdown({**full, **results})
