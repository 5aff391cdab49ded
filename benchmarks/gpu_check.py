"""The GPU check: every CUDA test, benchmark and a short real-size training, in one run, into one folder.

Run on a CUDA machine with PyTorch, timm and einops installed and the repository on ``PYTHONPATH`` (the wrapper
``benchmarks/gpu_check.sh`` sets it)::

    bash benchmarks/gpu_check.sh OUT            # the full check, about 8 minutes on an H100
    bash benchmarks/gpu_check.sh OUT --quick    # tiny sizes on the CPU, the same code path (tests/benchmarks/)

Steps, in this order (each a subprocess whose output goes to the log as it runs, each with a time limit taken
from ``--budget-s``; a step that fails or runs out of time is recorded and the next one runs):

0. ``environment``: the versions, the device, and which of the Python packages the steps use are importable.
   Nothing is installed (the device machine has no network).
1. ``tests-cuda``: ``pytest -m cuda --device cuda tests`` (every test marked ``cuda``, and every test that takes
   the ``device`` fixture, on the GPU); ``tests-suites``: the suites of the layers, losses, models, engine,
   evaluation, backbone and ``tests/test_devices.py`` with ``--device cuda``. Skipped, with the reason in the
   log, when pytest or hypothesis is not importable.
2. ``train-bench``: ``train_bench.py`` at the official size, DEEN on a two-stream ResNet-50 at 384x144, the SYSU
   batch of 48 images (and the 96 DEE rows), SGD, eager fp32 / bf16 autocast / + channels_last /
   + ``torch.compile``: images/s, peak memory, the matrix FLOP rate of the step and of the backbone alone, and
   their share of the peak bf16 rate.
3. ``layers-bench``, ``methods-bench``, ``eval-bench``: ``run.py``, ``methods_bench.py`` and ``eval_bench.py``
   on CUDA with a short ``--min-run-time``.
4. ``render`` + ``train-run``: the built-in synthetic dataset rendered at 384x144, then :data:`TRAIN_ENTRY` (the
   project's training entry point) for a few hundred steps with bf16 + channels_last + compile
   (:data:`FAST_FLAGS`; ``--no-fast`` drops them), its SYSU-style evaluation, and the images/s of the run.

Output, at most 8 files (the device tool returns no more, 16 MiB each):

* ``gpu-check.log``: everything every step printed;
* ``gpu-check--<gpu>--<device>.json`` and ``.md``: the summary (environment, steps, tests, goals, the results
  tables of every suite and of the training run);
* ``results--<gpu>--<device>.tar.gz``: the suites' ``<suite>--<gpu>--<device>.{json,md}`` files, as
  ``benchmarks/results/`` holds them (``tar -xzf ... -C benchmarks/results``), the pytest JUnit reports and the
  training run's small files;
* ``trace--<gpu>--<device>.json.gz``: a ``torch.profiler`` Chrome trace, only when a goal is missed (bf16 +
  channels_last + compile at least 2x eager fp32 images/s; the backbone at least 40 % of the bf16 matrix rate;
  the 10 LLCM trials evaluated in under 1 s): of the training step when a training goal is missed, else of one
  LLCM evaluation.

The exit status is 0 when every step ran and passed, 1 otherwise (the files are written either way).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: The project's training entry point, relative to the repository root, with the method it trains: the one place
#: to change for another entry point or method.
TRAIN_ENTRY: list[str] = ["examples/train.py", "--method", "deen"]
#: The methods of the ``train-bench`` step: DEEN, whose goals the check verifies, within the step's time budget
#: (``train_bench.py`` measures every method without ``--method``).
TRAIN_BENCH_METHODS: list[str] = ["deen"]
#: bf16 autocast + channels_last + torch.compile: the flags of the fast training run (``--no-fast`` drops them).
FAST_FLAGS: list[str] = ["--amp", "bf16", "--channels-last", "--compile"]

#: Packages the steps import: recorded as importable or not, never installed.
PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "einops",
    "numpy",
    "PIL",
    "scipy",
    "safetensors",
    "pytest",
    "hypothesis",
    "xdist",
    "pytest_timeout",
    "matplotlib",
    "tqdm",
)
#: Import name -> distribution name, where they differ.
DISTRIBUTIONS = {"PIL": "pillow", "xdist": "pytest-xdist", "pytest_timeout": "pytest-timeout"}

#: The suites run with the device set (every layer, loss, the models, the engine, the evaluation).
SUITE_PATHS = (
    "tests/layers",
    "tests/losses",
    "tests/models",
    "tests/engine",
    "tests/evaluation",
    "tests/backbones",
    "tests/test_devices.py",
    "tests/test_distances.py",
    "tests/test_modality.py",
)
#: The --quick run's tests: a few, on the CPU, through the same two pytest calls.
QUICK_TEST_PATHS = ("tests/test_devices.py",)
QUICK_TEST_FILTER = "GeM or retrieval or every_public_name or fixture"

#: The full check's time limit (s) and each step's share of it: (cap, reserve). A step gets at most ``cap``
#: seconds and leaves at least the ``reserve`` of every later step; with another --budget-s both scale.
BUDGET_S = 480.0
STEP_TIMES: dict[str, tuple[float, float]] = {
    "environment": (20, 5),
    "tests-cuda": (50, 20),
    "tests-suites": (90, 20),
    "train-bench": (160, 60),
    "layers-bench": (35, 10),
    "methods-bench": (25, 10),
    "eval-bench": (40, 15),
    "render": (60, 20),  # 192 images at 384x144: about 0.1-0.25 s each on one core
    "train-run": (130, 60),
}
#: The synthetic dataset of the training run: 16 identities (10 for training), 2 images per camera, 192 images.
SYNTHETIC = {"num_identities": 16, "train_identities": 10, "images_per_camera": 2}
#: The training run: 6 epochs of 50 steps (300 steps) of the SYSU batch; quick: 2 epochs of 3 steps.
TRAIN_EPOCHS, TRAIN_EPOCH_LENGTH = 6, 50


@dataclass
class Step:
    """One step's record."""

    name: str
    command: list[str]
    status: str = "pending"  # ok / failed / timeout / skipped
    returncode: int | None = None
    seconds: float = 0.0
    limit_s: float = 0.0
    reason: str = ""
    tail: list[str] = field(default_factory=list)


class Check:
    """Runs the steps, keeps the log, the time budget and the staging folder."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.stage = Path(tempfile.mkdtemp(prefix="vireid-gpu-check-"))
        self.log_path = self.out / "gpu-check.log"
        self.log_file = self.log_path.open("w", encoding="utf-8")
        self.start = time.monotonic()
        self.budget = args.budget_s
        self.scale = self.budget / BUDGET_S
        self.steps: list[Step] = []
        self.python = sys.executable
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "PYTHONUNBUFFERED": "1",
        }
        if args.quick and not args.quick_compile:
            self.env["TORCH_COMPILE_DISABLE"] = "1"

    # -------------------------------------------------------------------------------------------- logging

    def log(self, message: str) -> None:
        print(message, flush=True)
        self.log_file.write(message + "\n")
        self.log_file.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def limit(self, name: str) -> float:
        """``cap`` of the step, and no more than the budget left minus the reserves of the steps after it."""
        names = list(STEP_TIMES)
        cap = STEP_TIMES[name][0] * self.scale
        later = sum(STEP_TIMES[n][1] for n in names[names.index(name) + 1 :]) * self.scale
        return max(0.0, min(cap, self.budget - self.elapsed() - later))

    # -------------------------------------------------------------------------------------------- running

    def run(self, name: str, command: list[str], *, env: dict[str, str] | None = None) -> Step:
        """Run ``command`` in the repository root with the step's time limit; its output goes to the log."""
        step = Step(name, command, limit_s=self.limit(name))
        self.steps.append(step)
        self.log(f"\n==> [{self.elapsed():6.1f} s] {name}: {' '.join(command)} (limit {step.limit_s:.0f} s)")
        if step.limit_s < 5:
            step.status, step.reason = "skipped", "no time left in the budget"
            self.log(f"SKIPPED {name}: {step.reason}")
            return step
        start = time.monotonic()
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: a timeout ends the step's children too
        )
        lines: list[str] = []

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                lines.append(line)
                self.log(f"  {line}")

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            step.returncode = proc.wait(timeout=step.limit_s)
            step.status = "ok" if step.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            step.status, step.reason = "timeout", f"stopped after its {step.limit_s:.0f} s limit"
        reader.join(timeout=10)
        step.seconds = time.monotonic() - start
        step.tail = lines[-5:]
        if step.status == "failed":
            step.reason = f"exit status {step.returncode}"
        self.log(f"<== {name}: {step.status.upper()} in {step.seconds:.1f} s {step.reason}".rstrip())
        return step

    def skip(self, name: str, reason: str) -> Step:
        step = Step(name, [], status="skipped", reason=reason)
        self.steps.append(step)
        self.log(f"\n==> {name}: SKIPPED: {reason}")
        return step


# ------------------------------------------------------------------------------------------------ the steps


def environment(check: Check) -> dict[str, Any]:
    """Versions, the device and the importable packages (nothing is installed)."""
    import torch

    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        if importlib.util.find_spec(name) is None:
            packages[name] = None
            continue
        try:
            packages[name] = importlib.metadata.version(DISTRIBUTIONS.get(name, name))
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "importable"
    device = check.args.device
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
        "packages": packages,
        "missing": sorted(n for n, v in packages.items() if v is None),
        "quick": check.args.quick,
        "budget_s": check.budget,
    }
    step = Step("environment", [], status="ok", limit_s=check.limit("environment"))
    check.steps.append(step)
    check.log("==> environment")
    for key, value in info.items():
        if key != "packages":
            check.log(f"  {key}: {value}")
    for name, version in packages.items():
        check.log(f"  import {name}: {version or 'NOT IMPORTABLE'}")
    return info


def run_tests(check: Check, info: dict[str, Any]) -> dict[str, Any]:
    """``pytest -m cuda`` on every test, then the suites, both with ``--device``; JUnit reports in the stage."""
    missing = [p for p in ("pytest", "hypothesis") if info["packages"][p] is None]
    if missing:
        reason = f"{' and '.join(missing)} not importable on this machine (the tests need both); nothing installed"
        return {"tests-cuda": check.skip("tests-cuda", reason), "tests-suites": check.skip("tests-suites", reason)}
    device = check.args.device
    base = [check.python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--device", device]
    workers = min(12, max(1, (os.cpu_count() or 2) - 2))
    parallel = ["-n", str(workers)] if info["packages"]["xdist"] is not None and not check.args.quick else []
    env = {"OMP_NUM_THREADS": "1"} if parallel else {}
    cuda_cmd = [*base, "-m", "cuda", f"--junitxml={check.stage / 'pytest-cuda.xml'}"]
    suites_cmd = [*base, "-m", "not cuda", f"--junitxml={check.stage / 'pytest-suites.xml'}", *parallel]
    if check.args.quick:
        cuda_cmd += [*QUICK_TEST_PATHS, "-k", QUICK_TEST_FILTER]
        suites_cmd += [*QUICK_TEST_PATHS, "-k", QUICK_TEST_FILTER]
    else:
        cuda_cmd += ["tests", *parallel]
        suites_cmd += list(SUITE_PATHS)
    out = {"tests-cuda": check.run("tests-cuda", cuda_cmd, env=env)}
    out["tests-suites"] = check.run("tests-suites", suites_cmd, env=env)
    for step in out.values():  # an all-skipped or all-deselected run is no failure: pytest exits 5
        if step.returncode == 5:
            step.status, step.reason = "ok", "no test selected (exit status 5)"
    return out


def pytest_summary(step: Step) -> str:
    """The closing line of a pytest run (``N passed, M skipped in T s``)."""
    for line in reversed(step.tail):
        if re.search(r"\b(passed|failed|skipped|deselected|error|no tests ran)\b", line):
            return line.strip().strip("=").strip()
    return step.reason or step.status


def run_benchmarks(check: Check) -> None:
    """The training-step benchmark, then the layer, method and evaluation benchmarks, into the stage."""
    py, stage, device = check.python, str(check.stage), check.args.device
    common = ["--out", stage]
    if check.args.quick:
        train = [py, "benchmarks/train_bench.py", "--quick", "--device", device, "--threads", "1", "--no-cpu-memory"]
        train += ["--method", *TRAIN_BENCH_METHODS]
        train += ["--warmup", "1", "--min-runs", "2", "--configs", *check.args.quick_configs]
        layers = [py, "benchmarks/run.py", "--quick", "--device", device, "--filter", "DEE"]
        methods = [py, "benchmarks/methods_bench.py", "--quick", "--device", device, "--filter", "GeM"]
        evaluation = [py, "benchmarks/eval_bench.py", "--quick", "--device", device, "--loop-repeats", "1"]
    else:
        train = [py, "benchmarks/train_bench.py", "--device", device, "--warmup", "3", "--min-run-time", "0.5"]
        train += ["--method", *TRAIN_BENCH_METHODS]
        layers = [py, "benchmarks/run.py", "--device", device, "--min-run-time", "0.05", "--min-runs", "2"]
        layers += ["--max-call-seconds", "10"]
        methods = [py, "benchmarks/methods_bench.py", "--device", device, "--min-run-time", "0.05"]
        evaluation = [py, "benchmarks/eval_bench.py", "--device", device, "--min-run-time", "0.2"]
        evaluation += ["--loop-repeats", "1", "--llcm-loop-trials", "1", "--threads", "4"]
    train += ["--inductor-cache", str(check.stage / "inductor"), "--trace", str(check.stage / "trace-train.json.gz")]
    evaluation += ["--trace", str(check.stage / "trace-eval.json.gz")]
    check.run("train-bench", [*train, *common])
    check.run("layers-bench", [*layers, *common])
    check.run("methods-bench", [*methods, *common])
    check.run("eval-bench", [*evaluation, *common])


def train_command(check: Check, root: Path, run_dir: Path) -> list[str]:
    """The training run: :data:`TRAIN_ENTRY` on the rendered synthetic dataset, with :data:`FAST_FLAGS`."""
    if check.args.quick:
        size = ["--height", "64", "--width", "32", "--backbone", "resnet18", "--batch-identities", "3"]
        size += ["--num-instances", "2", "--epochs", "2", "--epoch-length", "3", "--eval-trials", "2"]
        size += ["--workers", "0", "--threads", "1", "--milestones", "1"]
    else:
        size = ["--height", "384", "--width", "144", "--backbone", "resnet50", "--batch-identities", "6"]
        size += ["--num-instances", "4", "--epochs", str(TRAIN_EPOCHS), "--epoch-length", str(TRAIN_EPOCH_LENGTH)]
        size += ["--eval-trials", "10", "--workers", str(min(8, os.cpu_count() or 1)), "--milestones", "5"]
    fast = [] if check.args.no_fast else FAST_FLAGS
    return [
        check.python,
        *TRAIN_ENTRY,
        "--dataset",
        "synthetic",
        "--root",
        str(root),
        "--no-pretrained",
        "--device",
        check.args.device,
        "--warmup-epochs",
        "1",
        "--eval-every",
        "0",
        "--log-every",
        "25",
        "--run-dir",
        str(run_dir),
        *size,
        *fast,
    ]


def render_command(check: Check, root: Path) -> list[str]:
    height, width = (64, 32) if check.args.quick else (384, 144)
    code = (
        "import sys, time; from vireid_layers.data.datasets.synthetic import make_synthetic_dataset; "
        "t = time.perf_counter(); "
        f"make_synthetic_dataset(sys.argv[1], height={height}, width={width}, seed=0, "
        + ", ".join(f"{k}={v}" for k, v in SYNTHETIC.items())
        + "); print(f'rendered in {time.perf_counter() - t:.1f} s')"
    )
    return [check.python, "-c", code, str(root)]


def training_images_per_s(lines: list[str], batch: int) -> dict[str, Any]:
    """Images/s of the run from the trainer's ``epoch N: ... steps=S time=Ts`` lines: all epochs, and without the
    first (which holds the compilation)."""
    epochs = [
        (int(m[1]), float(m[2])) for m in re.finditer(r"epoch \d+:.*?steps=(\d+) time=([\d.]+)s", "\n".join(lines))
    ]
    out: dict[str, Any] = {"epochs": [{"steps": s, "time_s": t} for s, t in epochs], "batch": batch}
    if epochs:
        steps, seconds = sum(s for s, _ in epochs), sum(t for _, t in epochs)
        out["images_per_s_all"] = steps * batch / seconds if seconds else None
    if len(epochs) > 1:
        steps, seconds = sum(s for s, _ in epochs[1:]), sum(t for _, t in epochs[1:])
        out["images_per_s_after_first_epoch"] = steps * batch / seconds if seconds else None
    return out


def run_training(check: Check) -> dict[str, Any]:
    """Render the synthetic dataset, train, evaluate; the results table and the images/s."""
    root, run_dir = check.stage / "synthetic", check.stage / "train-run"
    render = check.run("render", render_command(check, root))
    if render.status != "ok":
        check.skip("train-run", "the synthetic dataset was not rendered")
        return {}
    env = {"TORCHINDUCTOR_CACHE_DIR": str(check.stage / "inductor")}
    step = check.run("train-run", train_command(check, root, run_dir), env=env)
    log = (run_dir / "train.log").read_text().splitlines() if (run_dir / "train.log").is_file() else []
    if not log:
        log = [line for line in check.log_path.read_text().splitlines() if line.startswith("  ")]
    batch = 2 * (3 * 2 if check.args.quick else 6 * 4)
    result: dict[str, Any] = {"command": " ".join(step.command), "status": step.status, "seconds": step.seconds}
    result.update(training_images_per_s(log, batch))
    if (run_dir / "results.json").is_file():
        result["results"] = json.loads((run_dir / "results.json").read_text())
    if (run_dir / "results.md").is_file():
        result["results_md"] = (run_dir / "results.md").read_text()
        check.log("\nresults of the training run:\n" + result["results_md"])
    for key in ("images_per_s_all", "images_per_s_after_first_epoch"):
        if result.get(key):
            check.log(f"training {key.replace('_', ' ')}: {result[key]:.1f}")
    return result


# ------------------------------------------------------------------------------------------------ the files


def _load(stage: Path, suite: str) -> tuple[Path | None, dict[str, Any] | None]:
    for path in sorted(stage.glob(f"{suite}--*.json")):
        return path, json.loads(path.read_text())
    return None, None


def goals(check: Check) -> list[dict[str, Any]]:
    """The three goals from the train and evaluation results, each with the trace that covers it."""
    out = []
    _, train = _load(check.stage, "train-quick" if check.args.quick else "train")
    for name, goal in ((train or {}).get("goals") or {}).items():
        out.append({"goal": name, **goal, "trace": "trace-train.json.gz"})
    _, evaluation = _load(check.stage, "evaluation-quick" if check.args.quick else "evaluation")
    for case in (evaluation or {}).get("cases", []):
        if case.get("time_goal_s") is not None:
            out.append(
                {
                    "goal": "llcm_evaluation_s",
                    "what": f"{case['id']} ({case['shape']}) evaluated, results agreeing with the loop",
                    "value": case["library"]["median_s"],
                    "threshold": case["time_goal_s"],
                    "met": case["verdict"] == "PASS",
                    "trace": "trace-eval.json.gz",
                }
            )
    return out


def machine_tag(info: dict[str, Any]) -> str:
    """``<gpu>--cuda`` (``h100--cuda``) or ``cpu<count>-<arch>--cpu``, as the suites name their files."""
    import importlib.util

    import torch

    # By path, under its own name: `common` may already be another module (examples/common.py) in this process.
    spec = importlib.util.spec_from_file_location("vireid_benchmarks_common", HERE / "common.py")
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    device = torch.device(info["device"])
    return f"{common.machine_slug(device)}--{device.type}"


def summary_markdown(summary: dict[str, Any], stage: Path) -> str:
    info = summary["environment"]
    lines = [
        f"# GPU check — {summary['tag']}",
        "",
        "Generated by `benchmarks/gpu_check.py` (`bash benchmarks/gpu_check.sh OUT`); the log is `gpu-check.log`, the "
        "suites' results files are in `results--*.tar.gz`.",
        "",
        f"- device: {info['device']} ({info['device_name']}); torch {info['torch']}, CUDA {info['cuda']}, "
        f"python {info['python']}, {info['cpu_count']} CPUs",
        f"- not importable: {', '.join(info['missing']) or 'none'}; quick: {info['quick']}; "
        f"total {summary['total_s']:.0f} s of a {info['budget_s']:.0f} s budget",
        f"- training entry point: `{' '.join(TRAIN_ENTRY)}`",
        "",
        "| step | status | seconds | limit | note |",
        "|---|---|---:|---:|---|",
    ]
    for s in summary["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['limit_s']:.0f} | {s['note']} |")
    if summary["goals"]:
        lines += ["", "| goal | measured | threshold | verdict |", "|---|---:|---:|---|"]
        for g in summary["goals"]:
            lines.append(
                f"| {g['what']} | {g['value']:.3g} | {g['threshold']:.3g} | {'met' if g['met'] else '**missed**'} |"
            )
    if summary.get("trace"):
        lines += ["", f"A goal was missed: profile `{summary['trace']}` (open in Perfetto or chrome://tracing)."]
    training = summary.get("training") or {}
    if training:
        lines += ["", "## Training run", "", f"`{training.get('command', '')}`: {training.get('status')}", ""]
        for key in ("images_per_s_all", "images_per_s_after_first_epoch"):
            if training.get(key):
                lines.append(f"- {key.replace('_', ' ')}: {training[key]:.1f}")
        if training.get("results_md"):
            lines += ["", training["results_md"]]
    for md in sorted(stage.glob("*--*.md")):
        lines += ["", "---", "", f"<!-- {md.name} -->", "", md.read_text()]
    return "\n".join(lines) + "\n"


def write_archive(check: Check, tag: str) -> Path:
    """``results--<tag>.tar.gz``: the suites' results files, the pytest reports, the training run's small files."""
    archive = check.out / f"results--{tag}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(check.stage.glob("*--*.json")) + sorted(check.stage.glob("*--*.md")):
            tar.add(path, arcname=path.name)
        for path in sorted(check.stage.glob("pytest-*.xml")):
            tar.add(path, arcname=path.name)
        for name in ("results.json", "results.md", "config.json", "env.json", "metrics.jsonl", "train.log"):
            if (check.stage / "train-run" / name).is_file():
                tar.add(check.stage / "train-run" / name, arcname=f"train-run/{name}")
    return archive


def write_outputs(check: Check, info: dict[str, Any], training: dict[str, Any]) -> int:
    """The summary, the results archive and (a goal missed) one trace; at most 8 files of 16 MiB in OUT."""
    tag = machine_tag(info)
    results_goals = goals(check)
    trace = None
    for g in results_goals:
        if not g["met"] and (check.stage / g["trace"]).is_file():
            trace = check.out / f"trace--{tag}.json.gz"
            shutil.copyfile(check.stage / g["trace"], trace)
            break
    archive = write_archive(check, tag)
    notes = {}
    for s in check.steps:
        notes[s.name] = pytest_summary(s) if s.name.startswith("tests-") else (s.reason or "")
    summary = {
        "tag": tag,
        "total_s": check.elapsed(),
        "environment": info,
        "train_entry": TRAIN_ENTRY,
        "fast_flags": [] if check.args.no_fast else FAST_FLAGS,
        "steps": [
            {
                "name": s.name,
                "status": s.status,
                "returncode": s.returncode,
                "seconds": s.seconds,
                "limit_s": s.limit_s,
                "command": " ".join(s.command),
                "note": notes[s.name],
            }
            for s in check.steps
        ],
        "goals": results_goals,
        "trace": trace.name if trace else None,
        "training": training,
        "archive": archive.name,
    }
    (check.out / f"gpu-check--{tag}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (check.out / f"gpu-check--{tag}.md").write_text(summary_markdown(summary, check.stage))
    check.log(f"\n==> done in {check.elapsed():.0f} s")
    for s in summary["steps"]:
        check.log(f"  {s['name']:14s} {s['status']:8s} {s['seconds']:6.1f} s  {s['note']}")
    for g in results_goals:
        check.log(
            f"  goal {g['goal']}: {g['value']:.3g} (threshold {g['threshold']:.3g}) {'met' if g['met'] else 'MISSED'}"
        )
    check.log_file.close()
    files = [p for p in check.out.rglob("*") if p.is_file()]
    big = [p.name for p in files if p.stat().st_size > 16 * 1024**2]
    print(f"{len(files)} files in {check.out}: {', '.join(sorted(p.name for p in files))}")
    if len(files) > 8 or big:
        print(f"error: more than 8 files or files over 16 MiB in {check.out}: {big}", file=sys.stderr)
        return 1
    return 0 if all(s.status in ("ok", "skipped") for s in check.steps) else 1


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder (created; at most 8 files are written)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the CPU (or --device), the same steps")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda, cpu with --quick")
    parser.add_argument("--budget-s", type=float, default=None, help=f"time budget (default {BUDGET_S:.0f} s)")
    parser.add_argument("--no-fast", action="store_true", help=f"train without {' '.join(FAST_FLAGS)}")
    parser.add_argument(
        "--quick-configs",
        nargs="+",
        default=["eager-fp32", "amp-bf16-cl-compile"],
        help="train_bench configurations of the --quick run (the full run measures all four)",
    )
    parser.add_argument(
        "--quick-compile",
        action="store_true",
        help="with --quick, let torch.compile compile (minutes on a CPU); by default the quick run sets "
        "TORCH_COMPILE_DISABLE=1, so the compile flags are passed and the wrapping runs, but nothing is compiled",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=("tests", "bench", "train"), help="steps to skip")
    args = parser.parse_args(argv)
    args.device = args.device or ("cpu" if args.quick else "cuda")
    if args.budget_s is None:
        # --quick: tiny sizes, but on a shared CPU whose speed varies; the limits only catch a hung step there.
        args.budget_s = BUDGET_S if not args.quick else 6 * BUDGET_S
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available (use --quick for the CPU check)", file=sys.stderr)
        return 2
    check = Check(args)
    check.log(f"gpu_check {'--quick ' if args.quick else ''}into {args.out} (staging {check.stage})")
    try:
        info = environment(check)
        if "tests" in args.skip:
            check.skip("tests", "--skip tests")
        else:
            run_tests(check, info)
        if "bench" in args.skip:
            check.skip("benchmarks", "--skip bench")
        else:
            run_benchmarks(check)
        training = {} if "train" in args.skip else run_training(check)
        return write_outputs(check, info, training)
    finally:
        shutil.rmtree(check.stage, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
