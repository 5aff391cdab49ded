"""End-to-end training step of every method: images per second and peak memory of one full optimisation step.

One step is :meth:`vireid_layers.engine.Trainer.train_step` on one batch: the method's training forward, its
criterion's loss terms, the backward pass and the optimiser step, with the official optimiser of the method:

* ``deen``: :class:`~vireid_layers.models.DEEN` (two-stream backbone, MFA after stages 1–3, DEE, BN neck,
  classifier) and :class:`~vireid_layers.models.DEENCriterion` (cross-entropy, batch-hard triplet, CPM,
  orthogonal); SGD (Nesterov momentum 0.9, weight decay 5e-4, the head/backbone groups of
  :func:`~vireid_layers.recipes.deen_param_groups`);
* ``agw``: :class:`~vireid_layers.models.AGW` (non-local blocks, GeM, BN neck) and ``AGWCriterion`` (CE, WRT);
  SGD with :func:`~vireid_layers.recipes.head_param_groups`;
* ``ddag``: :class:`~vireid_layers.models.DDAG` called with the labels (IWPA, the CGSA graph branch) and
  ``DDAGCriterion`` (CE, triplet, part, graph); SGD with the head groups;
* ``mpanet``: :class:`~vireid_layers.models.MPANet` (MAM, PAM, the mean-classifier EMA step) and
  ``MPANetCriterion`` on MPANet's official batch layout; Adam (lr 3.5e-4, weight decay 5e-4);
* ``mso``: :class:`~vireid_layers.models.MSO` (AGW's trunk, the PEF loss through a frozen VGG-16 with random
  weights: the same work as the ImageNet ones) and ``MSOCriterion`` (CE, WRT, PEF, CMCC); SGD with the head groups.

The trainer also does what it does on every step of a real run: the finite-loss check and the logged loss values
(both read the loss on the host). Configurations, each adding one thing to the previous:

* ``eager-fp32``: float32, NCHW;
* ``amp-bf16``: the forward pass under ``torch.autocast(dtype=torch.bfloat16)`` (the losses stay in float32);
* ``amp-bf16-cl``: + channels_last model and images;
* ``amp-bf16-cl-compile``: + ``torch.compile(model)`` (inductor, default mode); compilation happens during the
  warm-up steps, from an empty inductor cache (``TORCHINDUCTOR_CACHE_DIR`` is a fresh directory), and is reported
  separately (``warmup_s``: the wall time of every warm-up step).

``--method`` picks the methods (default: all five); every row records its method.

Setting: the SYSU-MM01 recipe's batch, 6 identities × 4 images × 2 modalities = 48 images, 395 classes. On CUDA
the full DEEN setting: ResNet-50 at 384×144. On the CPU a reduced size, by default ResNet-18 at 128×64 with the
same 48-image batch, so that the four configurations finish in a few minutes; ``--backbone``, ``--height`` and
``--width`` change it (every row records what it ran).

Each configuration runs in its own subprocess (a fresh allocator, compile cache and process peak), which
builds the model from the same seed, runs ``--warmup`` steps, measures the peak memory of one step, then times
steps with ``torch.utils.benchmark`` (``common.time_case``: median and IQR of the measured blocks; CUDA
synchronised inside the timed statement). Images per second is ``batch / median``.

Peak memory:

* CUDA: ``torch.cuda.max_memory_allocated`` during one step (after ``reset_peak_memory_stats``): everything
  allocated at the peak, parameters, gradients and optimizer state included (``peak_mib``), and the part above
  what was allocated before the step (``step_peak_mib``).
* CPU: the rise of the process's resident set size during one step above its size before the step
  (``step_peak_mib``: activations, gradients, temporaries; ``VmHWM`` of ``/proc/self/status``, reset through
  ``/proc/self/clear_refs`` before the step), and the peak itself (``peak_mib``: it also holds the interpreter,
  the libraries, the model and the optimizer state). glibc keeps freed memory for reuse, which hides the rise of
  every step after the first, so the memory is measured in a second process per configuration started with
  ``MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0`` (tensor storages then come from ``mmap`` and go back
  on free); the times come from the first process, with the default allocator settings. This is not the
  tensor-storage tracker of the other suites: that tracker is a ``TorchDispatchMode``, and the buffers of
  compiled code are allocated outside the dispatcher. Without ``/proc`` the CPU memory is ``null``.

Usage::

    python benchmarks/train_bench.py                       # CUDA if available, else CPU at the reduced size
    python benchmarks/train_bench.py --device cpu --threads 1
    python benchmarks/train_bench.py --configs eager-fp32 amp-bf16 --quick
    python benchmarks/train_bench.py --method deen agw --device cpu --threads 1

Writes ``results/train--<machine>--<device>.{json,md}`` (``train-quick`` with ``--quick``, to a temporary
directory unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):  # `common` and the in-tree `vireid_layers`
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402
from common import (  # noqa: E402
    MIB,
    machine_slug,
    peak_bf16_tflops,
    run_metadata,
    synchronize,
    time_case,
    validate_metadata,
)

SUITE = "train"
DEFAULT_OUT = HERE / "results"
#: name -> (amp, channels_last, compile)
CONFIGS: dict[str, tuple[str | None, bool, bool]] = {
    "eager-fp32": (None, False, False),
    "amp-bf16": ("bf16", False, False),
    "amp-bf16-cl": ("bf16", True, False),
    "amp-bf16-cl-compile": ("bf16", True, True),
}
DESCRIPTIONS = {
    "eager-fp32": "eager, float32",
    "amp-bf16": "eager, bf16 autocast",
    "amp-bf16-cl": "eager, bf16 autocast, channels_last",
    "amp-bf16-cl-compile": "torch.compile, bf16 autocast, channels_last",
}
METHODS = ("deen", "agw", "ddag", "mpanet", "mso")
#: method -> its optimiser, as the rows and the table record it
OPTIMIZERS = {
    "deen": "SGD(lr 0.1 head / 0.01 backbone, momentum 0.9, nesterov, weight_decay 5e-4)",
    "agw": "SGD(lr 0.1 head / 0.01 backbone, momentum 0.9, nesterov, weight_decay 5e-4)",
    "ddag": "SGD(lr 0.1 head / 0.01 backbone, momentum 0.9, nesterov, weight_decay 5e-4)",
    "mpanet": "Adam(lr 3.5e-4, weight_decay 5e-4)",
    "mso": "SGD(lr 0.1 head / 0.01 backbone, momentum 0.9, nesterov, weight_decay 5e-4)",
}
#: SYSU-MM01 (DEEN official): 395 training identities, 6 identities x 4 images per modality.
NUM_CLASSES, IDENTITIES, INSTANCES = 395, 6, 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS))
    parser.add_argument(
        "--method", nargs="+", choices=METHODS, default=list(METHODS), help="the methods to measure (default: all)"
    )
    parser.add_argument("--backbone", default=None, help="timm name (default: resnet50 on CUDA, resnet18 on CPU)")
    parser.add_argument("--height", type=int, default=None, help="default 384 on CUDA, 128 on CPU")
    parser.add_argument("--width", type=int, default=None, help="default 144 on CUDA, 64 on CPU")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before measuring (compile happens here)")
    parser.add_argument("--min-run-time", type=float, default=None, help="blocked_autorange min_run_time (s)")
    parser.add_argument("--min-runs", type=int, default=5, help="raise min_run_time to about this many steps")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every configuration")
    parser.add_argument("--quick", action="store_true", help="tiny model and images (smoke run, seconds)")
    parser.add_argument("--out", type=Path, default=None, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--render", type=Path, default=None, help="only rewrite the .md of an existing results JSON")
    parser.add_argument(
        "--inductor-cache",
        type=Path,
        default=None,
        help="TORCHINDUCTOR_CACHE_DIR shared by every configuration (default: a fresh, empty one per configuration, "
        "so the compile time is a cold compilation); a later run with the same directory compiles faster",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="profile two steps of the last configuration with torch.profiler; write a gzipped Chrome trace here",
    )
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count and the backbone measurement")
    parser.add_argument(
        "--no-cpu-memory", action="store_true", help="on the CPU, skip the second (memory) process per configuration"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one configuration, JSON on stdout
    parser.add_argument("--measure", choices=("time", "memory"), default="time", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace) -> tuple[torch.device, dict[str, Any]]:
    """The device and the model/batch setting (SYSU on CUDA, the reduced CPU size otherwise)."""
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    else:
        device = torch.device(args.device)
    full = device.type == "cuda" and not args.quick
    if args.quick:
        defaults = ("resnet18", 64, 32, 2, 2)
    elif full:
        defaults = ("resnet50", 384, 144, IDENTITIES, INSTANCES)
    else:
        defaults = ("resnet18", 128, 64, IDENTITIES, INSTANCES)
    backbone, height, width, identities, instances = defaults
    setting = {
        "backbone": args.backbone or backbone,
        "height": args.height or height,
        "width": args.width or width,
        "identities": identities,
        "instances": instances,
        "batch": 2 * identities * instances,
        "num_classes": NUM_CLASSES,
        "optimizer": {m: OPTIMIZERS[m] for m in args.method},
    }
    setting["full_sysu"] = (setting["backbone"], setting["height"], setting["width"], setting["batch"]) == (
        "resnet50",
        384,
        144,
        48,
    )
    return device, setting


# --------------------------------------------------------------------------------------------------------------
# One configuration (run in a subprocess)
# --------------------------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak resident set size (``VmHWM``) to the current one (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def step_peak_memory(step: Any, device: torch.device) -> dict[str, float | None]:
    """Peak memory of one ``step()``: absolute and above the level before the step, in MiB."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mib": peak / MIB, "step_peak_mib": (peak - before) / MIB, "before_mib": before / MIB}
    before = _status_kib("VmRSS")
    if before is None or not _reset_peak_rss():
        step()
        return {"peak_mib": None, "step_peak_mib": None, "before_mib": None}
    step()
    peak = _status_kib("VmHWM")
    if peak is None:
        return {"peak_mib": None, "step_peak_mib": None, "before_mib": before / 1024}
    return {"peak_mib": peak / 1024, "step_peak_mib": (peak - before) / 1024, "before_mib": before / 1024}


# --------------------------------------------------------------------------------------------------------------
# FLOPs, the backbone alone, the profile
# --------------------------------------------------------------------------------------------------------------


def count_flops(fn: Any) -> int:
    """Matrix FLOPs (matrix products and convolutions, forward and backward) of one ``fn()`` call.

    ``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-add of every ``mm``/``bmm``/
    ``addmm``/convolution/attention op, the backward ones included; elementwise work is not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def backbone_workload(model: Any, images: torch.Tensor, modalities: torch.Tensor, amp: str | None) -> Any:
    """The backbone's share of a step: ``forward() -> loss`` for ``step()`` (forward, backward).

    What the method runs through its two-stream ResNet: the modality stems and every stage on the N images; for
    DEEN the stages after DEE run on the (1 + K) N rows DEE produces (48 images and 96 generated rows in the SYSU
    setting). The method's own blocks (MFA, DEE, non-local, MAM, IWPA, ...), the head and the losses are left
    out; the loss is the mean of the last feature map. The parameters are the model's own (so channels_last and
    the dtype follow the configuration); the gradients are dropped after every step.
    """
    backbone = model.backbone
    if hasattr(model, "mfa") and hasattr(model, "num_branches"):  # DEEN: DEE after the MFA stages
        num_before, rows = len(model.mfa), 1 + model.num_branches
    else:
        num_before, rows = backbone.num_stages, 1

    def forward() -> torch.Tensor:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            x = backbone.forward_stem(images, modalities)
            for i in range(num_before):
                x = backbone.forward_stage(i, x)
            x = torch.cat([x] * rows) if rows > 1 else x  # DEE's (1 + K) N rows, in the stage output's format
            for i in range(num_before, backbone.num_stages):
                x = backbone.forward_stage(i, x)
        return x.float().mean()

    return forward


def _backbone_step(forward: Any, model: Any) -> Any:
    def step() -> None:
        forward().backward()
        for p in model.backbone.parameters():
            p.grad = None

    return step


def write_trace(step: Any, device: torch.device, path: Path, steps: int = 2) -> dict[str, Any]:
    """Profile ``steps`` calls of ``step()`` (CPU and CUDA activity) and write a gzipped Chrome trace."""
    import gzip
    import shutil

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
            synchronize(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(path.name.removesuffix(".gz") + ".tmp")
    prof.export_chrome_trace(str(raw))
    with raw.open("rb") as src, gzip.open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=15)
    return {"trace": str(path), "trace_bytes": path.stat().st_size, "steps": steps, "top_ops": table}


#: glibc settings of the CPU memory process: storages of 64 KiB or more are mmapped and unmapped on free.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


#: The smallest image a method takes (MSO's PEF runs the VGG-16 blocks on the stem map, >= 16x16): a smaller
#: ``--height`` / ``--width`` (the ``--quick`` 64x32) is raised to it for that method; the row records the size.
MIN_SIZE = {"mso": (64, 64)}


def sized_for(method: str, setting: dict[str, Any]) -> dict[str, Any]:
    """``setting`` with the image raised to the method's :data:`MIN_SIZE`."""
    low_h, low_w = MIN_SIZE.get(method, (0, 0))
    return {**setting, "height": max(setting["height"], low_h), "width": max(setting["width"], low_w)}


def build_method(method: str, setting: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """``(model, criterion, optimizer, forward)`` of ``method`` at ``setting`` (random weights, seed 0)."""
    from vireid_layers.models import (
        AGW,
        DDAG,
        DEEN,
        MSO,
        AGWCriterion,
        DDAGCriterion,
        DEENCriterion,
        MPANet,
        MPANetCriterion,
        MSOCriterion,
    )
    from vireid_layers.recipes import deen_param_groups, head_param_groups

    torch.manual_seed(0)
    num_classes, backbone = setting["num_classes"], setting["backbone"]

    def image_forward(m: Any, b: Any) -> Any:
        return m(b.image, b.modality)

    def sgd(groups: list[dict]) -> torch.optim.Optimizer:
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)

    if method == "deen":
        model = DEEN(num_classes, backbone=backbone, pretrained=False)
        return model, DEENCriterion(), sgd(deen_param_groups(model, 0.1)), image_forward
    if method == "agw":
        model = AGW(num_classes, backbone=backbone, pretrained=False)
        return model, AGWCriterion(), sgd(head_param_groups(model, 0.1)), image_forward
    if method == "ddag":
        model = DDAG(num_classes, backbone=backbone, pretrained=False)

        def ddag_forward(m: Any, b: Any) -> Any:
            return m(b.image, b.modality, labels=b.identity)  # with the labels: the graph branch runs

        return model, DDAGCriterion(), sgd(head_param_groups(model, 0.1)), ddag_forward
    if method == "mpanet":
        model = MPANet(num_classes, backbone=backbone, pretrained=False)
        optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4, weight_decay=5e-4)
        return model, MPANetCriterion(), optimizer, image_forward
    if method == "mso":
        model = MSO(num_classes, backbone=backbone, pretrained=False, vgg_weights=None)
        return model, MSOCriterion(), sgd(head_param_groups(model, 0.1)), image_forward
    raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")


def batch_layout(method: str, identities: int, instances: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels, modalities)`` of the official sampler's batch: all visible rows then all infrared ones, each
    identity's K images together; MPANet's own layout for MPANet (one block of 2K rows per identity, infrared
    and visible alternating, infrared first)."""
    if method == "mpanet":
        labels = torch.arange(identities).repeat_interleave(2 * instances)
        return labels, torch.tensor([1, 0]).repeat(identities * instances)
    labels = torch.arange(identities).repeat_interleave(instances).repeat(2)
    return labels, torch.arange(2).repeat_interleave(identities * instances)


def run_config(key: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build the model and warm up; then time the steps (``--measure time``, on CUDA also the memory) or measure
    one step's peak memory (``--measure memory``, the CPU memory process); return the row.

    ``key`` is ``method:config``."""
    from vireid_layers.data import ImageSample
    from vireid_layers.engine import Trainer, TrainerConfig

    method, name = key.split(":")
    device, setting = resolve(args)
    setting = sized_for(method, setting)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    amp, channels_last, compile_ = CONFIGS[name]
    model, criterion, optimizer, forward = build_method(method, setting)
    config = TrainerConfig(device=device, amp=amp, channels_last=channels_last, compile=compile_, progress=False)
    trainer = Trainer(model, criterion, optimizer, [], config, forward=forward)
    generator = torch.Generator().manual_seed(0)
    p, k, b = setting["identities"], setting["instances"], setting["batch"]
    labels, modalities = batch_layout(method, p, k)
    images = torch.randn(b, 3, setting["height"], setting["width"], generator=generator)
    images = images.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    batch = ImageSample(images, labels.to(device), torch.zeros_like(labels).to(device), modalities.to(device))

    def step() -> dict[str, float]:
        return trainer.train_step(batch)

    warmup_times = []
    for _ in range(args.warmup):
        start = time.perf_counter()
        terms = step()
        synchronize(device)
        warmup_times.append(time.perf_counter() - start)
    if args.measure == "memory":
        return {
            "method": method,
            "config": name,
            **step_peak_memory(step, device),
            "malloc_env": {k: os.environ.get(k) for k in MALLOC_ENV},
        }
    memory = step_peak_memory(step, device) if device.type == "cuda" else {}
    start = time.perf_counter()
    step()
    synchronize(device)
    one = time.perf_counter() - start
    min_run_time = args.min_run_time if args.min_run_time is not None else (0.05 if args.quick else 1.0)
    effective = max(min_run_time, (args.min_runs - 0.5) * one)
    timing = time_case(step, device=device, min_run_time=effective, known_call_s=one, label=name)
    extra: dict[str, Any] = {}
    if not args.no_flops:
        extra.update(measure_backbone(trainer, images, modalities.to(device), amp, compile_, device, args))
        eager, trainer.model = trainer.model, trainer.module  # the FLOPs of the same step, counted eagerly
        extra["step_flops"] = count_flops(step)
        trainer.model = eager
    if args.trace is not None:
        extra["profile"] = write_trace(step, device, args.trace)
    return {
        "method": method,
        "config": name,
        "description": DESCRIPTIONS[name],
        "optimizer": OPTIMIZERS[method],
        "amp": amp,
        "channels_last": channels_last,
        "compile": compile_,
        **{k: setting[k] for k in ("backbone", "height", "width", "batch")},
        "status": "ok",
        "reason": None,
        "median_ms": timing["median_s"] * 1e3,
        "iqr_ms": None if timing["iqr_s"] is None else timing["iqr_s"] * 1e3,
        "mean_ms": timing["mean_s"] * 1e3,
        "min_ms": min(timing["times_s"]) * 1e3,
        "runs": timing["runs"],
        "number_per_run": timing["number_per_run"],
        "times_ms": [t * 1e3 for t in timing["times_s"]],
        "min_run_time_s": effective,
        "images_per_s": b / timing["median_s"],
        **memory,
        "warmup_s": warmup_times,
        "num_threads": torch.get_num_threads(),
        "loss_terms": {k: float(v) for k, v in terms.items()},
        **extra,
    }


def measure_backbone(
    trainer: Any,
    images: torch.Tensor,
    modalities: torch.Tensor,
    amp: str | None,
    compile_: bool,
    device: torch.device,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """FLOPs and time of the backbone alone (:func:`backbone_workload`), compiled like the configuration."""
    model = trainer.module
    forward = backbone_workload(model, images, modalities, amp)
    flops = count_flops(_backbone_step(forward, model))
    step = _backbone_step(torch.compile(forward) if compile_ else forward, model)
    warm = []
    for _ in range(max(args.warmup, 1)):
        start = time.perf_counter()
        step()
        synchronize(device)
        warm.append(time.perf_counter() - start)
    min_run_time = args.min_run_time if args.min_run_time is not None else (0.05 if args.quick else 1.0)
    timing = time_case(step, device=device, min_run_time=min_run_time, known_call_s=warm[-1], label="backbone")
    return {
        "backbone_flops": flops,
        "backbone_median_ms": timing["median_s"] * 1e3,
        "backbone_iqr_ms": None if timing["iqr_s"] is None else timing["iqr_s"] * 1e3,
        "backbone_runs": timing["runs"],
        "backbone_warmup_s": warm,
    }


# --------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _spawn(key: str, argv: list[str], measure: str, cache_dir: str) -> dict[str, Any]:
    """Run one ``method:config`` in a fresh interpreter; an error becomes a row with the reason."""
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", key, "--measure", measure]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir, **(MALLOC_ENV if measure == "memory" else {})}
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    print(proc.stderr[-4000:], file=sys.stderr)
    method, name = key.split(":")
    reason = f"{measure}: {tail}"[:500]
    return {"method": method, "config": name, "description": DESCRIPTIONS[name], "status": "error", "reason": reason}


def measure_config(key: str, argv: list[str], device: torch.device, cache: Path | None = None) -> dict[str, Any]:
    """The timing process, then on the CPU the memory process; their rows merged.

    Both share an inductor cache directory: a fresh one by default, so the timing process compiles from scratch
    (its warm-up time is a cold compilation) and the memory process reuses what it compiled; ``cache``
    (``--inductor-cache``) instead, shared by every configuration and kept.
    """
    with tempfile.TemporaryDirectory(prefix="vireid-bench-inductor-") as fresh:
        cache_dir = str(cache) if cache is not None else fresh
        row = _spawn(key, argv, "time", cache_dir)
        if row["status"] == "ok" and device.type == "cpu" and "--no-cpu-memory" in argv:
            row.update(peak_mib=None, step_peak_mib=None)
        if row["status"] != "ok" or device.type == "cuda" or "--no-cpu-memory" in argv:
            return row
        memory = _spawn(key, argv, "memory", cache_dir)
    if memory.get("status") == "error":
        return {**row, "status": "error", "reason": memory["reason"]}
    return {**row, **{k: v for k, v in memory.items() if k not in ("method", "config")}}


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


#: The goals of the GPU check (``benchmarks/gpu_check.py``) for the full SYSU setting on CUDA.
GOAL_SPEEDUP = 2.0  # amp-bf16-cl-compile images/s over eager-fp32
GOAL_BACKBONE_SHARE = 0.40  # the backbone's FLOP rate over the device's peak bf16 matrix rate


def utilisation(results: dict[str, Any], peak: dict[str, Any]) -> None:
    """Add the FLOP rates and their share of ``peak`` to every row, and the goals' verdicts (DEEN's rows) to
    ``results``."""
    tflops = peak["tflops"]
    for r in results["cases"]:
        if r.get("status") != "ok" or "step_flops" not in r:
            continue
        r["step_tflops"] = r["step_flops"] / (r["median_ms"] / 1e3) / 1e12
        r["step_share_of_peak"] = r["step_tflops"] / tflops
        r["backbone_tflops"] = r["backbone_flops"] / (r["backbone_median_ms"] / 1e3) / 1e12
        r["backbone_share_of_peak"] = r["backbone_tflops"] / tflops
    # The goals are DEEN's (rows without a method are DEEN's: files written before the other methods).
    rows = {r["config"]: r for r in results["cases"] if r.get("status") == "ok" and r.get("method", "deen") == "deen"}
    base, best = rows.get("eager-fp32"), rows.get("amp-bf16-cl-compile")
    goals: dict[str, Any] = {}
    if base is not None and best is not None:
        speedup = best["images_per_s"] / base["images_per_s"]
        goals["speedup"] = {
            "what": "DEEN amp-bf16-cl-compile images/s over eager-fp32",
            "value": speedup,
            "threshold": GOAL_SPEEDUP,
            "met": speedup >= GOAL_SPEEDUP,
        }
    measured = {c: r for c, r in rows.items() if "backbone_share_of_peak" in r}
    if measured:
        config = (
            "amp-bf16-cl-compile"
            if "amp-bf16-cl-compile" in measured
            else max(measured, key=lambda c: measured[c]["backbone_share_of_peak"])
        )
        share = measured[config]["backbone_share_of_peak"]
        goals["backbone_share"] = {
            "what": f"DEEN backbone FLOP rate ({config}) over the peak bf16 matrix rate ({peak['source']})",
            "value": share,
            "threshold": GOAL_BACKBONE_SHARE,
            "met": share >= GOAL_BACKBONE_SHARE,
        }
    results["peak_bf16"] = peak
    results["goals"] = goals


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if value >= 100 else f"{value:.{digits}g}"


def markdown(results: dict[str, Any]) -> str:
    meta, s = results["metadata"], results["settings"]
    commit, machine, device = meta["commit"], meta["machine"], meta["device"]
    dirty = {True: " (working tree with uncommitted changes)", False: "", None: ""}[commit.get("dirty")]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v is not None)
    memory = (
        "`torch.cuda.max_memory_allocated` during one step (parameters, gradients and optimizer state included); "
        "*step* is the part above the memory allocated before the step."
        if device["type"] == "cuda"
        else "the process's peak resident set size during one step (`VmHWM`, reset before the step: interpreter, "
        "libraries, model and optimizer state included); *step* is its rise above the resident size before the "
        "step (activations, gradients, temporaries). Memory is measured in a second process per configuration "
        "whose glibc returns freed storages to the system (`MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0`); "
        "the times come from a process with the default settings."
    )
    size = (
        "the full DEEN SYSU setting"
        if s["full_sysu"]
        else "**a reduced size** (the SYSU batch of 48 images, a smaller backbone and image)"
    )
    lines = [
        f"# `{results['suite']}` benchmark — {machine['slug']} — {device['type']}",
        "",
        "Generated by `benchmarks/train_bench.py` (do not edit by hand); methodology in `benchmarks/README.md`. "
        "One step = `Trainer.train_step`: the method's training forward, its criterion (DEEN: CE, triplet, CPM, "
        "orthogonal; AGW: CE, WRT; DDAG: CE, triplet, part, graph; MPANet: CE, center cluster, separation, "
        "modality-specific, mutual mean; MSO: CE, WRT, PEF, CMCC), backward, optimiser step. Times are per step "
        "(median and IQR over the measured blocks); *vs eager fp32* compares with the same method's eager-fp32 "
        f"row. Peak memory is {memory}",
        "",
        "| | |",
        "|---|---|",
        f"| commit | `{commit['sha']}`{dirty}"
        + (f"; library sources sha256 `{commit['source_sha256'][:12]}`" if commit.get("source_sha256") else "")
        + " |",
        f"| date (UTC) | {meta['timestamp_utc']} |",
        f"| machine | `{machine['slug']}`: {machine['processor']}, {machine['cpu_count']} CPUs, "
        f"{machine['platform']} |",
        f"| device | {device['type']}: {device['name']}, {device['num_threads']} torch thread(s) |",
        f"| versions | {versions} |",
        f"| setting | {size}: {s['backbone']} at {s['height']}×{s['width']}, batch {s['batch']} "
        f"({s['identities']} identities × {s['instances']} images × 2 modalities), {s['num_classes']} classes |",
        f"| optimisers | {_optimizers(s['optimizer'])} |",
        f"| timing | {s['warmup']} warm-up steps, min_run_time {s['min_run_time_s']} s, about {s['min_runs']} "
        "measured steps per configuration, each configuration in its own process |",
        f"| load average (1 min) | {meta.get('loadavg_start', '—')} at start, {meta.get('loadavg_end', '—')} at end |",
        f"| total runtime | {results['total_runtime_s']:.0f} s{'' if results['complete'] else ' (incomplete run)'} |",
        "",
        "| method | configuration | median ms/step | IQR ms | runs | images/s | vs eager fp32 | peak MiB | "
        "step peak MiB | warm-up s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    bases = {
        r.get("method", "deen"): r for r in results["cases"] if r["config"] == "eager-fp32" and r["status"] == "ok"
    }
    for r in results["cases"]:
        method = r.get("method", "deen")
        if r["status"] != "ok":
            lines.append(f"| {method} | {r['description']} | {r['status']}: {r['reason']} | | | | | | | |")
            continue
        base = bases.get(method)
        speed = "—" if base is None else f"{base['median_ms'] / r['median_ms']:.2f}×"
        warm = ", ".join(f"{t:.1f}" for t in r["warmup_s"])
        lines.append(
            f"| {method} | {r['description']} | {_fmt(r['median_ms'])} | {_fmt(r['iqr_ms'], 2)} | {r['runs']} | "
            f"{_fmt(r['images_per_s'])} | {speed} | {_fmt(r['peak_mib'])} | {_fmt(r['step_peak_mib'])} | {warm} |"
        )
    lines += utilisation_markdown(results)
    return "\n".join(lines) + "\n"


def _optimizers(optimizer: str | dict[str, str]) -> str:
    """The optimiser of every method (files written before the other methods hold DEEN's as a string)."""
    if isinstance(optimizer, str):
        return f"deen: {optimizer}"
    return "; ".join(f"{m}: {o}" for m, o in optimizer.items())


def utilisation_markdown(results: dict[str, Any]) -> list[str]:
    """The FLOP-rate table and the goals (files written before the FLOP count have none: nothing is added)."""
    peak = results.get("peak_bf16")
    rows = [r for r in results["cases"] if "backbone_share_of_peak" in r]
    if peak is None or not rows:
        return []
    lines = [
        "",
        f"Matrix FLOPs (`torch.utils.flop_counter`: matrix products and convolutions, forward and backward) over "
        f"time, against the peak bf16 matrix rate **{peak['tflops']:.1f} TFLOP/s** ({peak['source']}; "
        f"{peak['device_name']}). *Backbone*: the two-stream ResNet alone as the method runs it (the stems and "
        "every stage on the batch; for DEEN the stages after DEE on the (1 + K)·N DEE rows), forward and backward, "
        "timed on its own in the same configuration.",
        "",
        "| method | configuration | step GFLOP | step TFLOP/s | share of peak | backbone GFLOP | backbone ms | "
        "backbone TFLOP/s | backbone share of peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('method', 'deen')} | {r['description']} | {r['step_flops'] / 1e9:,.0f} | "
            f"{r['step_tflops']:.2f} | "
            f"{100 * r['step_share_of_peak']:.1f} % | {r['backbone_flops'] / 1e9:,.0f} | "
            f"{_fmt(r['backbone_median_ms'])} | {r['backbone_tflops']:.2f} | "
            f"{100 * r['backbone_share_of_peak']:.1f} % |"
        )
    goals = results.get("goals", {})
    if goals:
        lines += ["", "| goal | measured | threshold | verdict |", "|---|---:|---:|---|"]
        for goal in goals.values():
            verdict = "met" if goal["met"] else "**missed**"
            lines.append(f"| {goal['what']} | {goal['value']:.3g} | {goal['threshold']:.3g} | {verdict} |")
    return lines


def report_utilisation(results: dict[str, Any], device: torch.device, quick: bool) -> None:
    """Take the peak bf16 rate (table or measured), add the FLOP rates and goals to ``results``, print them."""
    size = 512 if quick else 8192 if device.type == "cuda" else 2048
    utilisation(results, peak_bf16_tflops(device, matmul_size=size))
    peak = results["peak_bf16"]
    print(f"  peak bf16 matrix rate: {peak['tflops']:.1f} TFLOP/s ({peak['source']}, {peak['device_name']})")
    for r in results["cases"]:
        if "backbone_share_of_peak" in r:
            print(
                f"  {r.get('method', 'deen'):7s} {r['config']:22s} step {r['step_tflops']:.2f} TFLOP/s "
                f"({100 * r['step_share_of_peak']:.1f} %), "
                f"backbone {r['backbone_tflops']:.2f} TFLOP/s ({100 * r['backbone_share_of_peak']:.1f} % of peak)"
            )
    for name, goal in results["goals"].items():
        verdict = "met" if goal["met"] else "MISSED"
        print(f"  goal {name}: {goal['value']:.3g} (>= {goal['threshold']:.3g}) {verdict}: {goal['what']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        results = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(markdown(results))
        return 0
    if args.worker is not None:
        print(json.dumps(run_config(args.worker, args)))
        return 0

    device, setting = resolve(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    suite = SUITE + ("-quick" if args.quick else "")
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="vireid-bench-train-")) if args.quick else DEFAULT_OUT)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{suite}--{machine_slug(device)}--{device.type}"
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--worker"]
    start = time.perf_counter()
    dtypes = sorted({"bf16" if CONFIGS[c][0] else "fp32" for c in args.configs}, key=("fp32", "bf16").index)
    results: dict[str, Any] = {
        "suite": suite,
        "schema_version": 1,
        "complete": False,
        "total_runtime_s": 0.0,
        "metadata": run_metadata(device, dtypes, loadavg_start=_loadavg()),
        "settings": {
            **setting,
            "quick": args.quick,
            "methods": list(args.method),
            "configs": list(args.configs),
            "warmup": args.warmup,
            "min_run_time_s": args.min_run_time if args.min_run_time is not None else (0.05 if args.quick else 1.0),
            "min_runs": args.min_runs,
            "inductor_cache": "shared: " + str(args.inductor_cache) if args.inductor_cache else "fresh per config",
        },
        "cases": [],
    }
    print(
        f"{suite}: {setting['backbone']} {setting['height']}x{setting['width']}, batch {setting['batch']} on {device}"
    )
    forwarded = _without_option(forwarded, "--trace")
    keys = [f"{method}:{name}" for method in args.method for name in args.configs]
    for key in keys:
        trace = ["--trace", str(args.trace)] if args.trace is not None and key == keys[-1] else []
        row = measure_config(key, forwarded + trace, device, args.inductor_cache)
        results["cases"].append(row)
        results["total_runtime_s"] = time.perf_counter() - start
        if row["status"] == "ok":
            print(
                f"  {key:29s} {row['median_ms']:9.1f} ms/step  {row['images_per_s']:8.1f} img/s  "
                f"peak {_fmt(row['peak_mib'])} MiB  warm-up {', '.join(f'{t:.1f}' for t in row['warmup_s'])} s",
                flush=True,
            )
        else:
            print(f"  {key:29s} ERROR: {row['reason']}", flush=True)
    if not args.no_flops:
        report_utilisation(results, device, args.quick)
    results["complete"] = True
    results["metadata"]["loadavg_end"] = _loadavg()
    errors = validate_metadata(results["metadata"])
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    md_path.write_text(markdown(results))
    print(f"wrote {json_path} and {md_path} in {results['total_runtime_s']:.0f} s")
    if errors:
        print("metadata does not match benchmarks/results_schema.json:\n  " + "\n  ".join(errors))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
