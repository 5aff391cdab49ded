"""Shared machinery of the benchmark suites: run metadata, timing, peak memory, results schema.

Methodology contract (see ``benchmarks/README.md``):

* timing: :class:`torch.utils.benchmark.Timer` with ``stmt="fn()"`` and ``blocked_autorange(min_run_time)``;
  on CUDA the statement itself ends with ``torch.cuda.synchronize()``; we report the median and the
  interquartile range (IQR) of the per-call times of the measured blocks, and the number of blocks;
* peak memory: on CUDA ``max_memory_allocated`` minus the allocation before the call; on CPU the bytes of
  tensor storages that the call creates and that are alive at the same time (:class:`StoragePeakTracker`).
"""

from __future__ import annotations

import math
import os
import platform
import re
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.benchmark import Timer

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024.0**2


# --------------------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip()


def git_commit() -> dict[str, Any]:
    """Commit of the working tree (``git rev-parse HEAD``) and whether tracked or new files differ from it.

    Falls back to the ``GIT_COMMIT`` environment variable, then to ``"unknown"``, when git is unavailable
    (e.g. an sdist). ``dirty`` is ``None`` when it cannot be determined.
    """
    sha = _git("rev-parse", "HEAD")
    if not sha:
        return {"sha": os.environ.get("GIT_COMMIT", "unknown"), "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=normal")
    return {"sha": sha, "dirty": None if status is None else bool(status)}


def source_digest() -> str:
    """SHA-256 of the ``vireid_layers`` sources (paths and contents): identifies uncommitted library code too."""
    import hashlib

    digest = hashlib.sha256()
    package = REPO_ROOT / "vireid_layers"
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _package_version(name: str) -> str | None:
    try:
        module = __import__(name)
    except Exception:  # a broken optional package must not stop the benchmark
        return None
    return getattr(module, "__version__", None)


def cpu_name() -> str:
    """Human-readable CPU model (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """Name of the device the benchmarks run on: the GPU name on CUDA, the CPU model otherwise."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def machine_slug(device: torch.device) -> str:
    """Short machine tag for file names: ``h100``/``h200``/... from the GPU name, ``cpu<count>-<arch>`` on CPU."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        match = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", name.upper())
        if match:
            return match.group(1).lower()
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"
    return f"cpu{os.cpu_count() or 0}-{platform.machine().lower() or 'unknown'}"


def run_metadata(device: torch.device, dtypes: Iterable[str], **extra: Any) -> dict[str, Any]:
    """Everything needed to reproduce or compare a results file."""
    import vireid_layers

    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": {**git_commit(), "source_sha256": source_digest()},
        "machine": {
            "slug": machine_slug(device),
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "processor": cpu_name(),
            "arch": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "device": {
            "type": device.type,
            "name": device_name(device),
            "num_threads": torch.get_num_threads(),
        },
        "dtypes": list(dtypes),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timm": _package_version("timm"),
            "numpy": _package_version("numpy"),
            "vireid_layers": vireid_layers.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta["device"]["total_memory_mib"] = round(props.total_memory / MIB, 1)
        meta["device"]["capability"] = f"{props.major}.{props.minor}"
    meta.update(extra)
    return meta


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Timer(Timer):
    """``Timer`` whose block size can be given instead of estimated.

    ``blocked_autorange`` first grows the block size (calls per timed block) until the timer overhead is
    below 0.01 % of a block; for a call that is already known to take at least :data:`ONE_CALL_BLOCK_S`
    that estimate always ends at one call per block, so it is skipped (it would cost one more call of a
    slow case). ``_estimate_block_size`` is private in torch; if it is renamed, the override is simply not
    used and the estimate runs as usual.
    """

    block_size: int | None = None

    def _estimate_block_size(self, min_run_time: float) -> int:
        if self.block_size is not None:
            return self.block_size
        return super()._estimate_block_size(min_run_time)


# A call this long makes the timer overhead (microseconds) negligible: one call per block.
ONE_CALL_BLOCK_S = 0.1


def time_case(
    fn: Callable[[], Any],
    *,
    device: torch.device,
    min_run_time: float,
    known_call_s: float | None = None,
    label: str = "",
    description: str = "",
) -> dict[str, Any]:
    """Time ``fn()`` with ``Timer.blocked_autorange``: median and IQR per call, in seconds.

    On CUDA the timed statement synchronises the device after ``fn()``, so every block measures completed
    work. ``runs`` is the number of measured blocks (each of ``number_per_run`` calls); ``iqr_s`` is ``None``
    with fewer than two blocks, where no spread can be computed. ``known_call_s`` (the duration of a warm-up
    call) of at least :data:`ONE_CALL_BLOCK_S` fixes the block size to one call (see :class:`_Timer`).
    """
    if device.type == "cuda":

        def stmt_fn() -> None:
            fn()
            torch.cuda.synchronize(device)

    else:
        stmt_fn = fn  # type: ignore[assignment]
    timer = _Timer(
        stmt="fn()",
        globals={"fn": stmt_fn},
        num_threads=torch.get_num_threads(),
        label=label,
        description=description,
    )
    if known_call_s is not None and known_call_s >= ONE_CALL_BLOCK_S:
        timer.block_size = 1
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    times = list(measurement.times)
    return {
        "median_s": measurement.median,
        "iqr_s": measurement.iqr if len(times) >= 2 else None,
        "mean_s": measurement.mean,
        "runs": len(times),
        "number_per_run": measurement.number_per_run,
        "times_s": times,
        "min_run_time_s": min_run_time,
    }


# --------------------------------------------------------------------------------------------------------------
# Matrix-rate utilisation
# --------------------------------------------------------------------------------------------------------------

#: Peak dense bf16 tensor-core rate (fp32 accumulation, no sparsity), TFLOP/s, from the vendors' data sheets.
#: Matched against ``torch.cuda.get_device_name`` in order, the first pattern that occurs wins (so the more
#: specific names come first). A GPU that is not listed gets a measured large-matmul rate instead.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.4),
    ("H200 NVL", 835.5),
    ("H200", 989.4),  # H200 SXM
    ("H100 NVL", 835.5),
    ("H100 PCIE", 756.5),
    ("H100", 989.4),  # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    ("H800 PCIE", 756.5),
    ("H800", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),  # SXM and PCIe
    ("A800", 312.0),
    ("A30", 165.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("L40S", 362.1),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 4090", 165.2),
    ("RTX 6000 ADA", 364.2),
)


def peak_bf16_tflops_from_table(name: str) -> float | None:
    """The data-sheet peak dense bf16 rate of a GPU named ``name`` (:data:`PEAK_BF16_TFLOPS`), or ``None``."""
    upper = name.upper()
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if pattern in upper:
            return tflops
    return None


def measured_matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """The bf16 rate of an ``n x n x n`` matrix product on ``device`` (random data, after a warm-up), TFLOP/s."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=generator)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=generator)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2.0 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def peak_bf16_tflops(device: torch.device, *, matmul_size: int = 8192) -> dict[str, Any]:
    """The bf16 matrix rate that utilisation is measured against: the table by device name, else a measured one.

    Returns ``{"tflops", "source", "device_name"}`` with ``source`` ``"table"`` or
    ``"measured <n>^3 bf16 matmul"``. The CPU has no table entry, so it always gets the measured rate.
    """
    name = device_name(device)
    tflops = peak_bf16_tflops_from_table(name) if device.type == "cuda" else None
    if tflops is not None:
        return {"tflops": tflops, "source": "table", "device_name": name}
    measured = measured_matmul_tflops(device, matmul_size)
    return {"tflops": measured, "source": f"measured {matmul_size}^3 bf16 matmul", "device_name": name}


# --------------------------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------------------------


class StoragePeakTracker(TorchDispatchMode):
    """Peak bytes of the tensor storages created inside the mode that are alive at the same time.

    Every ATen op that runs under the mode (forward ops, and on CPU the backward ops too, which the autograd
    engine runs on the calling thread) is inspected: each output whose storage is not one of the op's input
    storages (views and in-place results share them) and is not already tracked is counted with its
    ``untyped_storage().nbytes()``, keyed by ``untyped_storage().data_ptr()``. A ``weakref.finalize`` on the
    storage subtracts it again when the storage is freed (storages keep their Python object alive as long as
    the C++ storage lives). The peak is the maximum of the live total.

    What it counts: tensor storage allocated by the measured call, including tensors saved for backward,
    autocast weight copies and gradients. What it does not count: tensors that existed before the call
    (inputs, parameters), scratch buffers a kernel allocates internally and frees before returning (e.g.
    oneDNN scratchpads, the blocks of a fused attention kernel), and the allocator's cache. It is the same
    measure for every CPU case, so the numbers are comparable with each other, not with the process RSS.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self._finalizers: list[weakref.finalize] = []
        self._active = True

    def _release(self, key: int) -> None:
        if not self._active:
            return
        nbytes = self.live.pop(key, 0)
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and t.device.type != "meta"
        }
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if key == 0 or nbytes == 0 or key in inputs or key in self.live:
                continue
            self.live[key] = nbytes
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            self._finalizers.append(weakref.finalize(storage, self._release, key))
        return out

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._active = False
        for fin in self._finalizers:
            fin.detach()
        self._finalizers.clear()


def peak_memory(fn: Callable[[], Any], *, device: torch.device) -> tuple[int, float]:
    """Run ``fn()`` once; return ``(peak bytes, wall seconds)``.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` minus the memory allocated
    before the call (caching-allocator blocks in use, not reserved ones). CPU: :class:`StoragePeakTracker`.
    The result of ``fn()`` is dropped before returning.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) - base
        del result
        return int(peak), elapsed
    tracker = StoragePeakTracker()
    start = time.perf_counter()
    with tracker:
        result = fn()
        del result
    elapsed = time.perf_counter() - start
    return int(tracker.peak), elapsed


# --------------------------------------------------------------------------------------------------------------
# Results schema (a small subset of JSON Schema, checked without third-party packages)
# --------------------------------------------------------------------------------------------------------------

SCHEMA_PATH = Path(__file__).resolve().parent / "results_schema.json"

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_ok(value: Any, kinds: list[str]) -> bool:
    for kind in kinds:
        if kind in ("number", "integer") and isinstance(value, bool):
            continue
        if isinstance(value, _TYPES[kind]):
            return True
    return False


def _check(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    kinds = schema.get("type")
    if kinds is not None and not _type_ok(value, [kinds] if isinstance(kinds, str) else kinds):
        errors.append(f"{path}: expected {kinds}, got {type(value).__name__}")
        return
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(f"{path}: non-finite number {value}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        errors.extend(f"{path}: missing key {key!r}" for key in schema.get("required", []) if key not in value)
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{path}.{key}", errors)
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, schema.get("items", {}), f"{path}[{i}]", errors)


def validate_results(results: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> list[str]:
    """Check ``results`` against ``results_schema.json`` (types, required keys, enums); return the errors."""
    import json

    schema = json.loads(schema_path.read_text())
    errors: list[str] = []
    _check(results, schema, "$", errors)
    return errors


def validate_metadata(metadata: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> list[str]:
    """Check the ``metadata`` block of a suite with its own case format against ``results_schema.json``."""
    import json

    schema = json.loads(schema_path.read_text())
    errors: list[str] = []
    _check(metadata, schema["properties"]["metadata"], "$.metadata", errors)
    return errors


#: Public names of ``vireid_layers`` that are types or constants, not computations: nothing to time.
NOT_COMPUTATIONS = frozenset({"Modality", "ModalityLearningOutput", "PAMOutput", "__version__"})


def uncovered_public_names(covered: Iterable[str]) -> list[str]:
    """Names of ``vireid_layers.__all__`` that are computations and not in ``covered``, sorted."""
    import vireid_layers

    covered = set(covered)
    return sorted(n for n in vireid_layers.__all__ if n not in covered and n not in NOT_COMPUTATIONS)
