"""The GPU check (``benchmarks/gpu_check.sh``): its helpers, and the whole ``--quick`` run on the CPU.

The end-to-end test runs the script as the device machine would, at tiny sizes on the CPU, so a change that breaks
a step (a renamed flag of the training entry point, a benchmark's output name, the file limit) fails here first.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def isolated_import(directory: Path, *names: str) -> list[ModuleType]:
    """Import ``names`` from ``directory`` without leaving its ``common`` module behind.

    ``benchmarks/`` and ``examples/`` each have a top-level ``common.py``; whichever is imported first would
    otherwise stay in ``sys.modules`` and break the other's importers (``tests/examples`` included).
    """
    saved = sys.modules.pop("common", None)
    sys.path.insert(0, str(directory))
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop("common", None)
        if saved is not None:
            sys.modules["common"] = saved


gpu_check, train_bench, bench_common = isolated_import(ROOT / "benchmarks", "gpu_check", "train_bench", "common")
peak_bf16_tflops_from_table = bench_common.peak_bf16_tflops_from_table


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA H100 NVL", 835.5),
        ("NVIDIA H200", 989.4),
        ("NVIDIA H200 NVL", 835.5),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A10G", 70.0),
        ("NVIDIA L40S", 362.1),
        ("NVIDIA L4", 121.0),
        ("Tesla V100-SXM2-16GB", None),  # no bf16 tensor cores: measured instead
    ],
)
def test_peak_table_by_device_name(name: str, tflops: float | None) -> None:
    assert peak_bf16_tflops_from_table(name) == tflops


def test_utilisation_and_goals() -> None:
    def row(config: str, ms: float, backbone_ms: float) -> dict:
        return {
            "config": config,
            "status": "ok",
            "median_ms": ms,
            "images_per_s": 48 / (ms / 1e3),
            "step_flops": 10e12,
            "backbone_flops": 8e12,
            "backbone_median_ms": backbone_ms,
        }

    results = {"cases": [row("eager-fp32", 200.0, 150.0), row("amp-bf16-cl-compile", 80.0, 40.0)]}
    train_bench.utilisation(results, {"tflops": 500.0, "source": "table", "device_name": "x"})
    best = results["cases"][1]
    assert best["step_tflops"] == pytest.approx(10e12 / 0.08 / 1e12)
    assert best["backbone_share_of_peak"] == pytest.approx(8e12 / 0.04 / 1e12 / 500.0)  # 0.4
    assert results["goals"]["speedup"]["value"] == pytest.approx(2.5)
    assert results["goals"]["speedup"]["met"] and results["goals"]["backbone_share"]["met"]
    results["cases"][1]["backbone_median_ms"] = 41.0
    train_bench.utilisation(results, {"tflops": 500.0, "source": "table", "device_name": "x"})
    assert not results["goals"]["backbone_share"]["met"]


def test_images_per_s_from_the_trainer_log() -> None:
    lines = [
        "epoch 0: ce=1.0 total=2.0 lr=1.00e-03 steps=50 time=60.0s",
        "evaluation ...",
        "epoch 1: ce=0.5 total=1.0 lr=1.00e-03 steps=50 time=5.0s",
        "epoch 2: ce=0.4 total=0.9 lr=1.00e-03 steps=50 time=5.0s",
    ]
    out = gpu_check.training_images_per_s(lines, 48)
    assert out["images_per_s_all"] == pytest.approx(150 * 48 / 70.0)
    assert out["images_per_s_after_first_epoch"] == pytest.approx(100 * 48 / 10.0)
    assert gpu_check.training_images_per_s([], 48) == {"epochs": [], "batch": 48}


def test_the_training_command_is_accepted_by_the_entry_point(tmp_path: Path) -> None:
    """The flags the check passes exist in the training entry point (a renamed flag fails here, not on the GPU)."""
    for quick in (False, True):
        args = gpu_check.parse_args([str(tmp_path / "out"), *(["--quick"] if quick else [])])
        check = gpu_check.Check(args)
        try:
            command = gpu_check.train_command(check, tmp_path / "data", tmp_path / "run")
        finally:
            check.log_file.close()
        script = ROOT / command[1]
        assert script.is_file() and command[1 : 1 + len(gpu_check.TRAIN_ENTRY)] == gpu_check.TRAIN_ENTRY
        assert all(flag in command for flag in gpu_check.FAST_FLAGS)
        assert command[1] == "examples/train.py"
        (entry,) = isolated_import(ROOT / "examples", "train")
        recipe, resume = entry.parse_args(command[2:])  # the entry point's own parser, --method included
        assert type(recipe).__name__ == "DEENRecipe" and resume is None
        cfg = recipe.config
        assert (cfg.amp, cfg.channels_last, cfg.compile) == ("bf16", True, True)
        assert (cfg.height, cfg.width) == ((64, 32) if quick else (384, 144))
        if not quick:
            assert (cfg.backbone, cfg.batch_identities, cfg.num_instances) == ("resnet50", 6, 4)
            assert 200 <= cfg.epochs * int(cfg.epoch_length) <= 600  # a few hundred steps


def test_step_limits_fit_the_budget(tmp_path: Path) -> None:
    args = gpu_check.parse_args([str(tmp_path), "--budget-s", "480"])
    check = gpu_check.Check(args)
    check.log_file.close()
    limits = [check.limit(name) for name in gpu_check.STEP_TIMES]
    assert all(limit > 0 for limit in limits)
    # Caps are maxima that the budget cuts; the reserves (what every step is guaranteed) must fit in the budget.
    assert sum(reserve for _, reserve in gpu_check.STEP_TIMES.values()) <= gpu_check.BUDGET_S
    check.start -= 470  # 10 s left: every step but the last reserve is cut to what is left
    assert check.limit("train-run") <= 10


def test_missing_pytest_skips_the_tests_with_a_reason(tmp_path: Path) -> None:
    check = gpu_check.Check(gpu_check.parse_args([str(tmp_path), "--quick"]))
    try:
        info = {"packages": {"pytest": None, "hypothesis": "6.0", "xdist": None}}
        steps = gpu_check.run_tests(check, info)
    finally:
        check.log_file.close()
    assert {s.status for s in steps.values()} == {"skipped"}
    assert "pytest not importable" in steps["tests-cuda"].reason
    assert "pytest not importable" in (tmp_path / "gpu-check.log").read_text()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 4 minutes on an idle 2-core machine, 6 on a busy one
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    """``bash benchmarks/gpu_check.sh OUT --quick``: every step runs and passes, at most 8 files come out."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    seconds = time.perf_counter() - start
    print(f"gpu_check.sh --quick took {seconds:.0f} s")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8
    tag = f"cpu{os.cpu_count()}-{os.uname().machine.lower()}--cpu"
    assert {"gpu-check.log", f"gpu-check--{tag}.json", f"gpu-check--{tag}.md", f"results--{tag}.tar.gz"} <= set(files)
    summary = json.loads((out / f"gpu-check--{tag}.json").read_text())
    names = [s["name"] for s in summary["steps"]]
    assert names == list(gpu_check.STEP_TIMES)
    assert {s["name"]: s["status"] for s in summary["steps"]} == dict.fromkeys(names, "ok")
    assert summary["environment"]["packages"]["torch"] is not None
    assert summary["training"]["results"]["results"]  # the SYSU-style evaluation of the trained model
    assert summary["training"]["images_per_s_all"] > 0
    assert {g["goal"] for g in summary["goals"]} == {"speedup", "backbone_share", "llcm_evaluation_s"}
    if not all(g["met"] for g in summary["goals"]):
        assert summary["trace"] == f"trace--{tag}.json.gz" and (out / summary["trace"]).stat().st_size > 0
    with tarfile.open(out / f"results--{tag}.tar.gz") as tar:
        members = set(tar.getnames())
        train = json.load(tar.extractfile(f"train-quick--{tag}.json"))
    for name in (f"train-quick--{tag}", f"evaluation-quick--{tag}", f"methods--{tag}", f"layers-quick-filtered--{tag}"):
        assert {f"{name}.json", f"{name}.md"} <= members
    assert {"pytest-cuda.xml", "pytest-suites.xml", "train-run/results.json"} <= members
    assert all(r["status"] == "ok" and r["step_flops"] > 0 for r in train["cases"])
    log = (out / "gpu-check.log").read_text()
    assert " ".join(gpu_check.TRAIN_ENTRY) in log and "results of the training run" in log
    assert "images per s all" in (out / f"gpu-check--{tag}.md").read_text()
