"""Time the computations behind the figures of ``vireid_layers.visualize`` at the sizes an evaluation gives them.

Usage::

    python benchmarks/visualize_bench.py [--out benchmarks/results] [--quick] [--min-run-time S] [--threads N]

Cases (CPU, float32 unless said):

* ``rank_gallery``: the SYSU-MM01 trial of a ranked-list figure, 3,803 infrared queries x a 301-image gallery,
  top 10, the camera-3/camera-2 removal rule (every query ranked, although a figure draws a few rows);
* ``pair_distances``: the four groups of pair distances of 2,000 images of 2,048-d features (about 2 million
  pairs, the ``max_points`` of ``save_evaluation_figures``); and at 200 images against a per-pair Python loop
  written from the definition (the results are compared);
* ``project_embeddings/pca``: 4,104 x 2,048 (a SYSU-MM01 trial's queries and gallery);
* ``project_embeddings/tsne``: 500 x 2,048 through scikit-learn (skipped without it);
* ``activation_maps``: DEEN on ResNet-18 (random weights), 12 images at 384x144, channel energy and Grad-CAM.

Timing: ``torch.utils.benchmark.Timer.blocked_autorange(min_run_time)`` through ``common.time_case`` (median and
IQR of the measured blocks). Nothing is asserted; the script prints one line per case and writes
``<out>/visualize--<machine>--cpu.json`` and ``.md`` with the run's metadata.
"""

from __future__ import annotations

import argparse
import importlib.util
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

import torch  # noqa: E402
from common import machine_slug, run_metadata, time_case, validate_metadata  # noqa: E402

from vireid_layers.evaluation import exclude_sysu_indoor_camera  # noqa: E402
from vireid_layers.models import DEEN  # noqa: E402
from vireid_layers.visualize import activation_maps, pair_distances, project_embeddings, rank_gallery  # noqa: E402

DEVICE = torch.device("cpu")


def loop_pair_distances(x: torch.Tensor, ids: list[int], mods: list[int]) -> dict[str, list[float]]:
    """The reference: every pair i < j, its cosine distance from the definition, appended to its group."""
    rows = x.double().tolist()
    norms = [math.sqrt(sum(v * v for v in r)) for r in rows]
    out: dict[str, list[float]] = {"same_intra": [], "same_inter": [], "cross_intra": [], "cross_inter": []}
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            d = 1 - sum(a * b for a, b in zip(rows[i], rows[j], strict=True)) / (norms[i] * norms[j])
            side = "same" if mods[i] == mods[j] else "cross"
            out[f"{side}_{'intra' if ids[i] == ids[j] else 'inter'}"].append(d)
    return out


def _case(name: str, shape: str, fn: Callable[[], Any], min_run_time: float, note: str = "") -> dict[str, Any]:
    start = time.perf_counter()
    fn()  # warm-up, and the duration that decides the block size of slow cases
    first = time.perf_counter() - start
    timing = time_case(fn, device=DEVICE, min_run_time=min_run_time, known_call_s=first, label=name)
    row = {
        "name": name,
        "shape": shape,
        "median_ms": 1e3 * timing["median_s"],
        "iqr_ms": None if timing["iqr_s"] is None else 1e3 * timing["iqr_s"],
        "runs": timing["runs"],
        "number_per_run": timing["number_per_run"],
        "first_call_s": first,
        "num_threads": torch.get_num_threads(),
        "note": note,
    }
    iqr = "" if row["iqr_ms"] is None else f" ± {row['iqr_ms']:.2f}"
    print(f"{name:34s} {shape:38s} {row['median_ms']:12.2f}{iqr} ms  {note}", flush=True)
    return row


def run(quick: bool, min_run_time: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    gen = torch.Generator().manual_seed(0)
    scale = 10 if quick else 1
    cases, comparisons = [], []

    q, g = 3803 // scale, 301 // scale
    distances = torch.rand(q, g, generator=gen)
    q_ids, g_ids = torch.randint(0, 96, (q,), generator=gen), torch.randint(0, 96, (g,), generator=gen)
    q_cams = torch.tensor([3, 6])[torch.randint(0, 2, (q,), generator=gen)]  # SYSU-MM01 infrared cameras
    g_cams = torch.tensor([1, 2, 4, 5])[torch.randint(0, 4, (g,), generator=gen)]
    cases.append(
        _case(
            "rank_gallery",
            f"{q}x{g}, k=10",
            lambda: rank_gallery(distances, q_ids, g_ids, q_cams, g_cams, k=10, exclude=exclude_sysu_indoor_camera),
            min_run_time,
        )
    )

    n, dim = 2000 // scale, 2048 // (8 if quick else 1)
    x = torch.randn(n, dim, generator=gen)
    ids, mods = torch.randint(0, 96, (n,), generator=gen), torch.randint(0, 2, (n,), generator=gen)
    cases.append(_case("pair_distances", f"{n}x{dim}", lambda: pair_distances(x, ids, mods), min_run_time))
    small = 200 // (4 if quick else 1)
    xs, ids_s, mods_s = x[:small], ids[:small], mods[:small]
    library = _case("pair_distances", f"{small}x{dim}", lambda: pair_distances(xs, ids_s, mods_s), min_run_time)
    loop = _case(
        "pair_distances/loop",
        f"{small}x{dim}",
        lambda: loop_pair_distances(xs, ids_s.tolist(), mods_s.tolist()),
        min_run_time,
        "per-pair Python loop (reference)",
    )
    got, expected = pair_distances(xs, ids_s, mods_s), loop_pair_distances(xs, ids_s.tolist(), mods_s.tolist())
    agree = all(
        torch.allclose(a.double(), torch.tensor(expected[k], dtype=torch.float64), atol=1e-5)
        for a, k in zip(got, ("same_intra", "same_inter", "cross_intra", "cross_inter"), strict=True)
    )
    cases += [library, loop]
    speedup = loop["median_ms"] / library["median_ms"]
    comparisons.append({"case": f"pair_distances {small}x{dim}", "speedup": speedup, "agree": agree})
    print(f"pair_distances vs the loop: {speedup:.0f}x faster, results agree: {agree}")

    n_pca = 4104 // scale
    features = torch.randn(n_pca, dim, generator=gen)
    cases.append(
        _case(
            "project_embeddings/pca",
            f"{n_pca}x{dim}",
            lambda: project_embeddings(features, method="pca"),
            min_run_time,
        )
    )
    if importlib.util.find_spec("sklearn") is not None:
        n_tsne = 500 // scale
        cases.append(
            _case(
                "project_embeddings/tsne",
                f"{n_tsne}x{dim}",
                lambda: project_embeddings(features[:n_tsne], method="tsne"),
                min_run_time,
                "scikit-learn TSNE",
            )
        )

    torch.manual_seed(0)
    model = DEEN(10, backbone="resnet18")
    height, width, batch = (96, 48, 4) if quick else (384, 144, 12)
    images, modalities = torch.randn(batch, 3, height, width, generator=gen), torch.arange(batch) % 2
    targets = torch.randn(batch, model.embed_dim, generator=gen)
    for method in ("activation", "gradcam"):
        cases.append(
            _case(
                f"activation_maps/{method}",
                f"DEEN resnet18 {batch}x3x{height}x{width}",
                lambda method=method: activation_maps(model, images, modalities, method=method, targets=targets),
                min_run_time,
            )
        )
    return cases, comparisons


def render(results: dict[str, Any]) -> str:
    meta = results["metadata"]
    lines = [
        f"# visualize: {meta['machine']['slug']} / {meta['device']['type']}",
        "",
        f"commit {meta['commit']['sha'][:12]}, torch {meta['versions']['torch']}, "
        f"{meta['device']['num_threads']} threads, {meta['timestamp_utc']}; 1-minute load average "
        f"{meta['loadavg_start']:.1f} at the start and {meta['loadavg_end']:.1f} at the end (a shared machine: "
        "compare rows of one run, not across runs)",
        "",
        "| case | shape | median (ms) | IQR (ms) | note |",
        "|:--|:--|--:|--:|:--|",
    ]
    for c in results["cases"]:
        iqr = "" if c["iqr_ms"] is None else f"{c['iqr_ms']:.2f}"
        lines.append(f"| {c['name']} | {c['shape']} | {c['median_ms']:.2f} | {iqr} | {c['note']} |")
    for c in results["comparisons"]:
        lines += ["", f"{c['case']}: {c['speedup']:.0f}x faster than the per-pair loop; results agree: {c['agree']}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default benchmarks/results; --quick: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="sizes divided by 10: a smoke run")
    parser.add_argument("--min-run-time", type=float, default=None, help="blocked_autorange min_run_time (s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    min_run_time = args.min_run_time if args.min_run_time is not None else (0.05 if args.quick else 1.0)
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp()) if args.quick else HERE / "results")
    start = time.perf_counter()
    load_start = os.getloadavg()[0]
    cases, comparisons = run(args.quick, min_run_time)
    metadata = run_metadata(
        DEVICE,
        ["fp32"],
        suite="visualize-quick" if args.quick else "visualize",
        loadavg_start=load_start,
        loadavg_end=os.getloadavg()[0],
    )
    problems = validate_metadata(metadata)
    if problems:
        raise SystemExit(f"invalid metadata: {problems}")
    results = {
        "suite": "visualize-quick" if args.quick else "visualize",
        "complete": True,
        "total_runtime_s": time.perf_counter() - start,
        "metadata": metadata,
        "settings": {"quick": args.quick, "min_run_time_s": min_run_time, "threads": args.threads},
        "cases": cases,
        "comparisons": comparisons,
    }
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{results['suite']}--{machine_slug(DEVICE)}--cpu"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    stem.with_suffix(".md").write_text(render(results))
    print(f"results written to {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
