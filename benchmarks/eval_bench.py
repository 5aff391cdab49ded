"""Time ``retrieval_metrics`` against a per-query Python-loop reference at SYSU-MM01 and RegDB sizes.

Usage::

    python benchmarks/eval_bench.py [--out benchmarks/results] [--quick] [--min-run-time S] [--loop-repeats N]
                                    [--threads N] [--render RESULTS.json] [--device cpu|cuda|auto]
                                    [--cases sysu regdb llcm] [--llcm-loop-trials N] [--trace PATH.json.gz]

Cases (float32 distances, precomputed; both sides time only the evaluation of a distance matrix; the library runs
on ``--device``, CPU by default, the loop always on the CPU):

* ``sysu``: 3,803 infrared queries (96 identities, cameras 3 and 6) x a 301-image gallery, 10 trials (ten
  galleries), the camera-3/camera-2 removal rule, deduplicated and standard CMC, mAP, mINP: what the
  official ``eval_sysu`` computes, ten times.
* ``regdb``: 2,060 x 2,060, no removal, standard CMC, mAP, mINP: what ``eval_regdb`` computes.
* ``llcm``: 7,166 infrared queries x 3,159 visible images (351 identities x 9 cameras), 10 trials, the same
  identity-and-camera removal, deduplicated and standard CMC, mAP, mINP: what ``eval_llcm`` computes, ten times.
  Its goal is absolute, all 10 trials in under 1 s (PASS/FAIL on that and on the agreement); the loop runs on
  the first ``--llcm-loop-trials`` trials only (default 1) and its time is extrapolated to the 10.

The reference is written here from the definitions, in the style of the official numpy evaluation: one
``argsort`` of the whole matrix (stable, so that ties are broken by gallery index as in the library), then a
Python loop over queries with per-query numpy work, a ``np.unique`` for the deduplicated CMC and a Python list
comprehension over the ranked gallery for AP. The distances are rounded to multiples of 2^-8, so many ties
occur, and the results of both sides are compared (CMC to 1e-6, mAP and mINP to 1e-9).

Threads: the library runs with ``--threads`` torch threads (default 1, the single core the numpy loop uses;
on a busy 2-core machine more threads oversubscribe the cores and slow it down).

Timing: the library with ``torch.utils.benchmark.Timer.blocked_autorange(min_run_time)`` (median and IQR of
the measured blocks); the loop, which takes seconds per call, with ``--loop-repeats`` single-shot
``Timer.timeit(number=1)`` measurements (median reported, each time listed). The verdict is PASS when the
median speedup is at least 20x and the results agree. Nothing is asserted; the script prints the verdicts and
writes ``<out>/evaluation--<machine>--<device>.json`` and ``.md``. ``--trace`` profiles one LLCM evaluation with
``torch.profiler`` and writes a gzipped Chrome trace.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):  # `common` and the in-tree `vireid_layers`
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.benchmark import Timer  # noqa: E402

from vireid_layers.evaluation import (  # noqa: E402
    exclude_same_identity_and_camera,
    exclude_sysu_indoor_camera,
    retrieval_metrics,
)

try:  # the shared helpers of benchmarks/ (metadata, timing); minimal local versions otherwise
    from common import machine_slug, run_metadata, time_case
except ImportError:  # pragma: no cover - only when common.py is absent
    import platform

    def machine_slug(device: torch.device) -> str:
        return f"cpu{os.cpu_count() or 0}-{platform.machine().lower() or 'unknown'}"

    def run_metadata(device: torch.device, dtypes: list[str], **extra: Any) -> dict[str, Any]:
        import subprocess

        try:
            sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
        except OSError:
            sha = "unknown"
        return {
            "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": {"sha": sha or "unknown", "dirty": None},
            "machine": {"slug": machine_slug(device), "platform": platform.platform(), "cpu_count": os.cpu_count()},
            "device": {"type": device.type, "name": platform.processor(), "num_threads": torch.get_num_threads()},
            "dtypes": list(dtypes),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
            "command": " ".join(sys.argv),
            **extra,
        }

    def time_case(fn: Callable[[], Any], *, device: torch.device, min_run_time: float, **_: Any) -> dict[str, Any]:
        m = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
            min_run_time=min_run_time
        )
        times = list(m.times)
        return {
            "median_s": m.median,
            "iqr_s": m.iqr if len(times) >= 2 else None,
            "mean_s": m.mean,
            "runs": len(times),
            "number_per_run": m.number_per_run,
            "times_s": times,
            "min_run_time_s": min_run_time,
        }


SUITE = "evaluation"
THRESHOLD = 20.0
LLCM_GOAL_S = 1.0  # the 10 LLCM trials (7,166 x 3,159) evaluated in under a second
MAX_RANK = 20
DEFAULT_OUT = HERE / "results"
CPU = torch.device("cpu")


# --------------------------------------------------------------------------------------------------------------
# The per-query reference (official style, written from the definitions)
# --------------------------------------------------------------------------------------------------------------


def loop_metrics(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    *,
    sysu_rule: bool,
    dedup: bool,
    max_rank: int = MAX_RANK,
    same_id_cam_rule: bool = False,
) -> dict[str, Any]:
    """Standard CMC (and the deduplicated one), mAP and mINP, one query at a time.

    ``sysu_rule``: a camera-3 query ignores camera-2 gallery images (SYSU-MM01 indoor/all); ``same_id_cam_rule``:
    a query ignores the gallery images of its own identity and camera number (LLCM).
    """
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1, kind="stable")  # ties by gallery index, like the library
    ranked_pids = g_pids[indices]
    matches = (ranked_pids == q_pids[:, np.newaxis]).astype(np.int32)
    cmc_sum = np.zeros(max_rank)
    dedup_sum = np.zeros(max_rank)
    ap_sum, inp_sum, num_valid = 0.0, 0.0, 0
    for q in range(num_q):
        keep = np.ones(num_g, dtype=bool)
        if sysu_rule:
            keep = np.invert((q_camids[q] == 3) & (g_camids[indices[q]] == 2))
        if same_id_cam_rule:
            keep &= np.invert((ranked_pids[q] == q_pids[q]) & (g_camids[indices[q]] == q_camids[q]))
        raw = matches[q][keep]
        if not np.any(raw):
            continue  # no true match left: the query is not valid
        num_valid += 1
        cmc = raw.cumsum()
        cmc[cmc > 1] = 1
        cmc_sum += cmc[:max_rank]
        if dedup:
            kept_pids = ranked_pids[q][keep]
            _, first = np.unique(kept_pids, return_index=True)
            distinct = kept_pids[np.sort(first)]
            curve = (distinct == q_pids[q]).astype(np.int32).cumsum()[:max_rank]
            if curve.shape[0] < max_rank:  # fewer distinct identities than ranks: the curve stays flat
                curve = np.concatenate([curve, np.full(max_rank - curve.shape[0], curve[-1])])
            dedup_sum += curve
        positions = np.where(raw == 1)[0]
        inp_sum += raw.sum() / (positions.max() + 1.0)
        running = raw.cumsum()
        precision = np.asarray([x / (i + 1.0) for i, x in enumerate(running)]) * raw
        ap_sum += precision.sum() / raw.sum()
    denominator = max(num_valid, 1)
    return {
        "cmc": cmc_sum / denominator,
        "cmc_dedup": dedup_sum / denominator if dedup else None,
        "mAP": ap_sum / denominator,
        "mINP": inp_sum / denominator,
        "num_valid": num_valid,
    }


# --------------------------------------------------------------------------------------------------------------
# Synthetic data at the published sizes
# --------------------------------------------------------------------------------------------------------------


def _distances(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Negated cosine similarity rounded to multiples of 2^-8 (exact in float32): many exact ties."""
    q = torch.nn.functional.normalize(query, dim=1)
    g = torch.nn.functional.normalize(gallery, dim=1)
    return (-(q @ g.T) * 256).round() / 256


def sysu_case(num_q: int, num_ids: int, gallery_size: int, trials: int, seed: int = 0) -> dict[str, Any]:
    """Infrared queries of cameras 3/6 and, per trial, a gallery of one image per sampled (identity, RGB camera)."""
    g = torch.Generator().manual_seed(seed)
    dim = 64
    prototypes = torch.randn(num_ids, dim, generator=g)
    q_ids = torch.randint(0, num_ids, (num_q,), generator=g).sort().values
    q_cams = torch.where(torch.rand(num_q, generator=g) < 0.55, 3, 6)
    query = prototypes[q_ids] + 1.2 * torch.randn(num_q, dim, generator=g)
    pairs = torch.tensor([(i, c) for i in range(num_ids) for c in (1, 2, 4, 5)])
    galleries = []
    for _ in range(trials):
        chosen = pairs[torch.randperm(len(pairs), generator=g)[:gallery_size]]
        chosen = chosen[torch.argsort(chosen[:, 0] * 10 + chosen[:, 1])]  # (identity, camera) order
        g_ids, g_cams = chosen[:, 0], chosen[:, 1]
        gallery = prototypes[g_ids] + 1.2 * torch.randn(len(g_ids), dim, generator=g)
        galleries.append((_distances(query, gallery), g_ids, g_cams))
    return {"q_ids": q_ids, "q_cams": q_cams, "galleries": galleries}


def llcm_case(num_q: int, num_ids: int, trials: int, seed: int = 2) -> dict[str, Any]:
    """Infrared queries of the 8 LLCM NIR cameras; per trial, one visible image of every (identity, camera 1..9)."""
    g = torch.Generator().manual_seed(seed)
    dim = 64
    prototypes = torch.randn(num_ids, dim, generator=g)
    q_ids = torch.randint(0, num_ids, (num_q,), generator=g).sort().values
    nir_cams = torch.tensor([1, 2, 4, 5, 6, 7, 8, 9])
    q_cams = nir_cams[torch.randint(0, len(nir_cams), (num_q,), generator=g)]
    query = prototypes[q_ids] + 1.2 * torch.randn(num_q, dim, generator=g)
    g_ids = torch.arange(num_ids).repeat_interleave(9)
    g_cams = torch.arange(1, 10).repeat(num_ids)
    galleries = []
    for _ in range(trials):
        gallery = prototypes[g_ids] + 1.2 * torch.randn(len(g_ids), dim, generator=g)
        galleries.append((_distances(query, gallery), g_ids, g_cams))
    return {"q_ids": q_ids, "q_cams": q_cams, "galleries": galleries}


def regdb_case(num_ids: int, per_id: int, seed: int = 1) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    dim = 64
    prototypes = torch.randn(num_ids, dim, generator=g)
    ids = torch.arange(num_ids).repeat_interleave(per_id)
    visible = prototypes[ids] + 1.0 * torch.randn(len(ids), dim, generator=g)
    thermal = prototypes[ids] + 1.0 * torch.randn(len(ids), dim, generator=g)
    return {"distances": _distances(visible, thermal), "q_ids": ids, "g_ids": ids.clone()}


# --------------------------------------------------------------------------------------------------------------
# Running and comparing
# --------------------------------------------------------------------------------------------------------------


def write_trace(fn: Callable[[], Any], device: torch.device, path: Path) -> None:
    """Profile one ``fn()`` call with ``torch.profiler`` (CPU and CUDA activity); write a gzipped Chrome trace."""
    import gzip
    import shutil

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(path.name.removesuffix(".gz") + ".tmp")
    prof.export_chrome_trace(str(raw))
    with raw.open("rb") as src, gzip.open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=12), flush=True)
    print(f"  wrote the profile {path} ({path.stat().st_size} bytes)", flush=True)


def time_loop(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    times = [Timer(stmt="fn()", globals={"fn": fn}, num_threads=1).timeit(number=1).median for _ in range(repeats)]
    return {"median_s": float(np.median(times)), "times_s": times, "method": f"{repeats} x Timer.timeit(number=1)"}


def compare(library: list[Any], loop: list[dict[str, Any]], dedup: bool) -> dict[str, Any]:
    diffs = {"cmc": 0.0, "cmc_dedup": 0.0, "mAP": 0.0, "mINP": 0.0}
    valid_equal = True
    for lib, ref in zip(library[: len(loop)], loop, strict=True):
        diffs["cmc"] = max(diffs["cmc"], float(np.abs(lib.cmc.double().cpu().numpy() - ref["cmc"]).max()))
        if dedup:
            diffs["cmc_dedup"] = max(
                diffs["cmc_dedup"], float(np.abs(lib.cmc_dedup.double().cpu().numpy() - ref["cmc_dedup"]).max())
            )
        diffs["mAP"] = max(diffs["mAP"], abs(lib.mAP - ref["mAP"]))
        diffs["mINP"] = max(diffs["mINP"], abs(lib.mINP - ref["mINP"]))
        valid_equal &= lib.num_valid == ref["num_valid"]
    agree = valid_equal and diffs["cmc"] <= 1e-6 and diffs["cmc_dedup"] <= 1e-6 and diffs["mAP"] <= 1e-9
    agree = agree and diffs["mINP"] <= 1e-9
    return {"agree": bool(agree), "num_valid_equal": bool(valid_equal), "max_abs_diff": diffs}


def summary(metrics: list[Any], dedup: bool) -> dict[str, float]:
    out = {
        "rank1": float(np.mean([float(m.cmc[0]) for m in metrics])),
        "rank10": float(np.mean([float(m.cmc[min(9, m.cmc.numel() - 1)]) for m in metrics])),
        "mAP": float(np.mean([m.mAP for m in metrics])),
        "mINP": float(np.mean([m.mINP for m in metrics])),
    }
    if dedup:
        out["rank10_dedup"] = float(np.mean([float(m.cmc_dedup[min(9, m.cmc_dedup.numel() - 1)]) for m in metrics]))
    return out


def run_sysu(args: argparse.Namespace) -> dict[str, Any]:
    size = (200, 20, 40, 2) if args.quick else (3803, 96, 301, 10)
    num_q, num_ids, gallery_size, trials = size
    data = sysu_case(num_q, num_ids, gallery_size, trials)
    q_ids, q_cams = data["q_ids"], data["q_cams"]
    dev = args.device
    on_device = [(d.to(dev), i.to(dev), c.to(dev)) for d, i, c in data["galleries"]]
    dq_ids, dq_cams = q_ids.to(dev), q_cams.to(dev)

    def library() -> list[Any]:
        return [
            retrieval_metrics(d, dq_ids, g_ids, dq_cams, g_cams, exclude=exclude_sysu_indoor_camera, max_rank=MAX_RANK)
            for d, g_ids, g_cams in on_device
        ]

    np_galleries = [(d.numpy(), i.numpy(), c.numpy()) for d, i, c in data["galleries"]]
    nq_ids, nq_cams = q_ids.numpy(), q_cams.numpy()

    def loop() -> list[dict[str, Any]]:
        return [loop_metrics(d, nq_ids, i, nq_cams, c, sysu_rule=True, dedup=True) for d, i, c in np_galleries]

    return _run_case(
        args,
        case_id="sysu-all-single/10-trials" if not args.quick else "sysu-quick",
        shape=f"{num_q} x {gallery_size}, {trials} trials",
        description="SYSU-MM01 size: camera-3/camera-2 removal, deduplicated + standard CMC, mAP, mINP",
        library=library,
        loop=loop,
        dedup=True,
    )


def run_regdb(args: argparse.Namespace) -> dict[str, Any]:
    num_ids, per_id = (30, 10) if args.quick else (206, 10)
    data = regdb_case(num_ids, per_id)
    d, q_ids, g_ids = data["distances"], data["q_ids"], data["g_ids"]
    cams_q, cams_g = torch.ones_like(q_ids), torch.full_like(g_ids, 2)
    dd, dq_ids, dg_ids = d.to(args.device), q_ids.to(args.device), g_ids.to(args.device)

    def library() -> list[Any]:
        return [retrieval_metrics(dd, dq_ids, dg_ids, max_rank=MAX_RANK)]

    nd, nq, ng = d.numpy(), q_ids.numpy(), g_ids.numpy()
    ncq, ncg = cams_q.numpy(), cams_g.numpy()

    def loop() -> list[dict[str, Any]]:
        return [loop_metrics(nd, nq, ng, ncq, ncg, sysu_rule=False, dedup=False)]

    n = num_ids * per_id
    return _run_case(
        args,
        case_id="regdb/1-trial" if not args.quick else "regdb-quick",
        shape=f"{n} x {n}",
        description="RegDB size: no removal, standard CMC, mAP, mINP",
        library=library,
        loop=loop,
        dedup=False,
    )


def run_llcm(args: argparse.Namespace) -> dict[str, Any]:
    """LLCM size: 7,166 infrared queries x 3,159 visible gallery images (351 identities x 9 cameras), 10 trials.

    The goal is absolute: the 10 trials evaluated in under :data:`LLCM_GOAL_S`. The loop reference runs on the
    first ``--llcm-loop-trials`` trials only (it takes tens of seconds per trial); the results are compared on
    those, and the loop time is extrapolated to all trials (recorded as such).
    """
    num_q, num_ids, trials = (300, 30, 2) if args.quick else (7166, 351, 10)
    data = llcm_case(num_q, num_ids, trials)
    q_ids, q_cams = data["q_ids"], data["q_cams"]
    dev = args.device
    on_device = [(d.to(dev), i.to(dev), c.to(dev)) for d, i, c in data["galleries"]]
    dq_ids, dq_cams = q_ids.to(dev), q_cams.to(dev)

    def library() -> list[Any]:
        return [
            retrieval_metrics(
                d, dq_ids, g_ids, dq_cams, g_cams, exclude=exclude_same_identity_and_camera, max_rank=MAX_RANK
            )
            for d, g_ids, g_cams in on_device
        ]

    loop_trials = max(1, min(args.llcm_loop_trials, trials))
    np_galleries = [(d.numpy(), i.numpy(), c.numpy()) for d, i, c in data["galleries"][:loop_trials]]
    nq_ids, nq_cams = q_ids.numpy(), q_cams.numpy()

    def loop() -> list[dict[str, Any]]:
        return [
            loop_metrics(d, nq_ids, i, nq_cams, c, sysu_rule=False, same_id_cam_rule=True, dedup=True)
            for d, i, c in np_galleries
        ]

    gallery = num_ids * 9
    return _run_case(
        args,
        case_id="llcm-i2v/10-trials" if not args.quick else "llcm-quick",
        shape=f"{num_q} x {gallery}, {trials} trials",
        description="LLCM size: same identity and camera removed, deduplicated + standard CMC, mAP, mINP",
        library=library,
        loop=loop,
        dedup=True,
        loop_scale=trials / loop_trials,
        time_goal_s=LLCM_GOAL_S,
    )


def _run_case(
    args: argparse.Namespace,
    *,
    case_id: str,
    shape: str,
    description: str,
    library: Callable[[], list[Any]],
    loop: Callable[[], list[dict[str, Any]]],
    dedup: bool,
    loop_scale: float = 1.0,
    time_goal_s: float | None = None,
) -> dict[str, Any]:
    print(f"[{case_id}] {shape}: {description}", flush=True)
    lib_results, loop_results = library(), loop()  # warm-up and the results compared
    check = compare(lib_results, loop_results, dedup)
    lib_time = time_case(library, device=args.device, min_run_time=args.min_run_time, label=SUITE, description=case_id)
    loop_time = time_loop(loop, args.loop_repeats)
    if loop_scale != 1.0:
        loop_time = {**loop_time, "median_s": loop_time["median_s"] * loop_scale, "extrapolated_by": loop_scale}
    speedup = loop_time["median_s"] / lib_time["median_s"]
    if time_goal_s is None:
        verdict = "PASS" if speedup >= THRESHOLD and check["agree"] else "FAIL"
        goal = f"threshold {THRESHOLD:.0f}x"
    else:
        verdict = "PASS" if lib_time["median_s"] < time_goal_s and check["agree"] else "FAIL"
        goal = f"goal < {time_goal_s:g} s"
    print(
        f"  library {1e3 * lib_time['median_s']:.1f} ms (median of {lib_time['runs']} blocks, {args.device}), loop "
        f"{loop_time['median_s']:.2f} s (median of {len(loop_time['times_s'])}"
        f"{', extrapolated' if loop_scale != 1.0 else ''}), speedup {speedup:.1f}x "
        f"({goal}), results agree: {check['agree']} -> {verdict}",
        flush=True,
    )
    if args.trace is not None and time_goal_s is not None:
        write_trace(library, args.device, args.trace)
    return {
        "time_goal_s": time_goal_s,
        "id": case_id,
        "shape": shape,
        "description": description,
        "library": lib_time,
        "loop": loop_time,
        "speedup": speedup,
        "threshold": THRESHOLD,
        "verdict": verdict,
        **check,
        "metrics": summary(lib_results, dedup),
    }


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def markdown(results: dict[str, Any]) -> str:
    meta = results["metadata"]
    commit = meta["commit"]
    lines = [
        "# Evaluation benchmark: `retrieval_metrics` vs a per-query Python loop",
        "",
        "Generated by `benchmarks/eval_bench.py` (do not edit by hand). The library is timed with "
        "`Timer.blocked_autorange` (median, IQR); the loop with single-shot `Timer.timeit(number=1)` runs "
        "(median, min–max). Both evaluate the same precomputed float32 distance matrices (rounded to multiples of "
        "2^-8, so ties occur); results must agree (CMC to 1e-6, mAP/mINP to 1e-9). The library runs with "
        f"{results['settings'].get('threads', meta['device']['num_threads'])} torch thread(s) (`--threads`); the loop "
        "is single-threaded numpy. The verdict is PASS when the speedup is at least the threshold and the results "
        "agree.",
        "",
        "| | |",
        "|---|---|",
        f"| machine | {meta['machine']['slug']} ({meta['machine'].get('processor', meta['device']['name'])}) |",
        f"| device | {meta['device']['type']}: {meta['device']['name']} |",
        f"| torch threads | {meta['device']['num_threads']} |",
        f"| torch / numpy | {meta['versions']['torch']} / {meta['versions'].get('numpy')} |",
        f"| commit | {commit['sha'][:12]}{' (dirty)' if commit.get('dirty') else ''} |",
        f"| load average (1 min) | {meta.get('loadavg_start', '—')} at start, {meta.get('loadavg_end', '—')} at end |",
        f"| date (UTC) | {meta['timestamp_utc']} |",
        "",
        "| case | shape | library median (IQR) | loop median (min–max) | speedup | threshold | results agree "
        "| verdict |",
        "|---|---|--:|--:|--:|--:|:-:|:-:|",
    ]
    for case in results["cases"]:
        lib, loop = case["library"], case["loop"]
        iqr = f" ({1e3 * lib['iqr_s']:.1f})" if lib["iqr_s"] is not None else ""
        spread = f" ({min(loop['times_s']):.2f}–{max(loop['times_s']):.2f})" if loop.get("times_s") else ""
        goal = f"{case['threshold']:.0f}x" if case.get("time_goal_s") is None else f"< {case['time_goal_s']:g} s"
        extrapolated = f", ×{loop['extrapolated_by']:g} extrapolated" if loop.get("extrapolated_by") else ""
        lines.append(
            f"| {case['id']} | {case['shape']} | {1e3 * lib['median_s']:.1f} ms{iqr} | {loop['median_s']:.2f} s"
            f"{spread}{extrapolated} | "
            f"{case['speedup']:.1f}x | {goal} | {'yes' if case['agree'] else 'NO'} | "
            f"{case['verdict']} |"
        )
    lines += ["", "Largest differences between the library and the loop:", ""]
    for case in results["cases"]:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in case["max_abs_diff"].items())
        lines.append(f"- {case['id']}: {diffs}; valid-query counts equal: {case['num_valid_equal']}")
    lines += ["", "Metrics of the synthetic data (library, mean over trials):", ""]
    for case in results["cases"]:
        values = ", ".join(f"{k} {100 * v:.2f}%" for k, v in case["metrics"].items())
        lines.append(f"- {case['id']}: {values}")
    return "\n".join(lines) + "\n"


CASES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "sysu": run_sysu,
    "regdb": run_regdb,
    "llcm": run_llcm,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (seconds); output to a temporary dir")
    parser.add_argument("--min-run-time", type=float, default=3.0, help="blocked_autorange min_run_time (s)")
    parser.add_argument("--loop-repeats", type=int, default=3, help="single-shot timings of the loop")
    parser.add_argument("--render", type=Path, default=None, help="only rewrite the .md of an existing results JSON")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="where the library runs")
    parser.add_argument("--cases", nargs="+", choices=tuple(CASES), default=list(CASES), help="cases to run")
    parser.add_argument(
        "--llcm-loop-trials", type=int, default=1, help="LLCM trials the (slow) loop reference evaluates (default 1)"
    )
    parser.add_argument("--trace", type=Path, default=None, help="profile one LLCM evaluation; gzipped Chrome trace")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads of the library (default 1: the single core the numpy loop uses)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        args.render.with_suffix(".md").write_text(markdown(json.loads(args.render.read_text())))
        print(f"wrote {args.render.with_suffix('.md')}")
        return 0
    if args.quick:
        args.min_run_time = min(args.min_run_time, 0.2)
        args.loop_repeats = min(args.loop_repeats, 1)
    torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    args.device = torch.device(args.device)
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="eval-bench-")) if args.quick else DEFAULT_OUT)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "suite": SUITE if not args.quick else f"{SUITE}-quick",
        "schema_version": 1,
        "complete": False,
        "metadata": run_metadata(args.device, ["fp32"], loadavg_start=_loadavg()),
        "settings": {
            "quick": args.quick,
            "min_run_time_s": args.min_run_time,
            "loop_repeats": args.loop_repeats,
            "threads": args.threads,
            "threshold": THRESHOLD,
            "max_rank": MAX_RANK,
            "device": args.device.type,
            "cases": list(args.cases),
            "llcm_loop_trials": args.llcm_loop_trials,
            "llcm_goal_s": LLCM_GOAL_S,
        },
        "cases": [],
    }
    for name in args.cases:
        results["cases"].append(CASES[name](args))
    results["metadata"]["loadavg_end"] = _loadavg()
    results["complete"] = True
    results["total_runtime_s"] = time.perf_counter() - start
    stem = f"{results['suite']}--{machine_slug(args.device)}--{args.device.type}"
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    md_path.write_text(markdown(results))
    print(f"wrote {json_path} and {md_path}")
    for case in results["cases"]:
        measured = f"speedup {case['speedup']:.1f}x (>= {THRESHOLD:.0f}x)"
        if case.get("time_goal_s") is not None:
            measured = f"library {case['library']['median_s']:.3f} s (< {case['time_goal_s']:g} s)"
        print(f"{case['verdict']}: {case['id']} {measured}, agree={case['agree']}")
    if not all(math.isfinite(c["speedup"]) for c in results["cases"]):
        print("warning: a non-finite speedup", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
