"""Run the ``layers`` benchmark suite and write ``<suite>--<machine>--<device>.json`` / ``.md``.

Usage::

    python benchmarks/run.py [--device cpu|cuda|auto] [--dtype fp32 bf16] [--quick] [--filter SUBSTR]
                             [--min-run-time S] [--min-runs N] [--max-call-seconds S] [--out DIR]

See ``benchmarks/README.md`` for the methodology and the results format.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):  # `common`/`cases` and the in-tree `vireid_layers`
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import cases as suite_cases  # noqa: E402
import torch  # noqa: E402
from common import MIB, machine_slug, peak_memory, run_metadata, time_case, validate_results  # noqa: E402

SUITE = "layers"
DEFAULT_OUT = HERE / "results"
# Speedup of the library over the official per-anchor / per-identity loops (fp32, fwd+bwd) that the results
# must show; the other losses are reported without a threshold.
SPEEDUP_THRESHOLDS = {"CPMLoss": 5.0, "HardTripletLoss": 5.0}
MFA_MEMORY_THRESHOLD = 10.0
# Blocks timed against the official code's own formulation (fp32, fwd+bwd): the library must not be slower.
OFFICIAL_BLOCKS = (
    ("MAM", "MAM/fwd+bwd/fp32", "baseline/MAM-official/fwd+bwd/fp32", "MAM-official"),
    (
        "MFA3 official",
        "MFA/MFA3-official/fwd+bwd/fp32",
        "baseline/MFA3-official-order/fwd+bwd/fp32",
        "MFA3-official-order",
    ),
)
OFFICIAL_THRESHOLD = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="default: cuda if present")
    parser.add_argument("--dtype", nargs="+", choices=suite_cases.DTYPES, default=list(suite_cases.DTYPES))
    parser.add_argument("--quick", action="store_true", help="tiny shapes, seconds; output to a temporary dir")
    parser.add_argument("--filter", default=None, help="only cases whose id or name contains SUBSTR")
    parser.add_argument("--min-run-time", type=float, default=None, help="blocked_autorange min_run_time (s)")
    parser.add_argument(
        "--min-runs",
        type=int,
        default=None,
        help="raise min_run_time of slow cases to about this many measured calls (default 3, quick 1)",
    )
    parser.add_argument(
        "--max-call-seconds",
        type=float,
        default=60.0,
        help="skip the timing of a case whose single call takes longer (recorded as too slow)",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--render", type=Path, default=None, help="only rewrite the .md of an existing results JSON")
    parser.add_argument(
        "--update",
        action="store_true",
        help="re-measure the selected cases into the existing results file (replacing their rows) instead of "
        "writing a new one; the re-run is recorded under `reruns`",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's; 1 with --quick)"
    )
    return parser.parse_args(argv)


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    return torch.device(choice)


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Running one case
# --------------------------------------------------------------------------------------------------------------


def _row(case: suite_cases.Case) -> dict[str, Any]:
    return {
        "id": case.id,
        "name": case.name,
        "group": case.group,
        "component": case.component,
        "shape": case.shape,
        "batch": case.batch,
        "dtype": case.dtype,
        "pass": case.pass_,
        "status": "ok",
        "reason": None,
        "median_ms": None,
        "iqr_ms": None,
        "mean_ms": None,
        "min_ms": None,
        "runs": None,
        "number_per_run": None,
        "times_ms": [],
        "min_run_time_s": None,
        "peak_mib": None,
        "peak_bytes": None,
        "first_call_s": None,
        "num_threads": torch.get_num_threads(),
        "note": case.note,
    }


def run_case(
    case: suite_cases.Case,
    *,
    device: torch.device,
    min_run_time: float,
    min_runs: int,
    max_call_s: float,
    forward_first_call: float | None,
) -> dict[str, Any]:
    row = _row(case)
    if forward_first_call is not None and 3 * forward_first_call > max_call_s:
        row["status"] = "skipped"
        row["reason"] = (
            f"too slow on this device: the forward alone took {forward_first_call:.1f} s, so forward+backward "
            f"(about 3x the forward) would exceed the {max_call_s:.0f} s per-call limit"
        )
        return row
    fn = None
    try:
        fn = case.build(device)
        # The memory call is also the warm-up (first call: lazy initialisation, allocator growth).
        peak, first = peak_memory(fn, device=device)
        row.update(peak_bytes=peak, peak_mib=peak / MIB, first_call_s=first)
        if case.memory_only:
            row["status"] = "memory_only"
            row["reason"] = "reference for the peak-memory comparison; not timed"
            return row
        if first > max_call_s:
            row["status"] = "skipped"
            row["reason"] = f"too slow on this device: one call took {first:.1f} s (> {max_call_s:.0f} s limit)"
            return row
        # Slow cases: raise min_run_time so that about `min_runs` blocks are measured (the first call, used
        # for the estimate, includes the warm-up and is a slight over-estimate). A call of 0.1 s or more also
        # fixes the block size to one call, which is what blocked_autorange's own estimate would find.
        effective = max(min_run_time, (min_runs - 0.5) * first) if min_runs > 1 else min_run_time
        timing = time_case(fn, device=device, min_run_time=effective, known_call_s=first, label=case.id)
        row.update(
            median_ms=timing["median_s"] * 1e3,
            iqr_ms=None if timing["iqr_s"] is None else timing["iqr_s"] * 1e3,
            mean_ms=timing["mean_s"] * 1e3,
            min_ms=min(timing["times_s"]) * 1e3,
            runs=timing["runs"],
            number_per_run=timing["number_per_run"],
            times_ms=[t * 1e3 for t in timing["times_s"]],
            min_run_time_s=effective,
        )
    except Exception as exc:  # one failing case (e.g. out of memory) must not lose the others
        row["status"] = "error"
        row["reason"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        traceback.print_exc()
    finally:
        del fn
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def describe(row: dict[str, Any]) -> str:
    peak = "n/a" if row["peak_mib"] is None else f"{row['peak_mib']:.1f} MiB"
    if row["status"] == "ok":
        iqr = "n/a" if row["iqr_ms"] is None else f"{row['iqr_ms']:.3g}"
        return f"median {row['median_ms']:.4g} ms (IQR {iqr} ms, {row['runs']} runs), peak {peak}"
    if row["status"] == "memory_only":
        return f"peak {peak} (one call {row['first_call_s']:.2f} s; not timed)"
    return f"{row['status'].upper()}: {row['reason']}" + (f"; peak {peak}" if row["peak_mib"] is not None else "")


# --------------------------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------------------------


def comparison_context(shapes: suite_cases.Shapes) -> dict[str, str]:
    """Shape descriptions for the comparison note (so that it is right for ``--quick`` too)."""
    n, d, k, rows = shapes.images, shapes.embedding_dim, shapes.num_branches, shapes.rows
    stage = shapes.mfa[0]
    dims = suite_cases.dims
    folded_q, folded_k = stage.high[2] * stage.high[3] // 2, stage.low[2] * stage.low[3] // 2
    return {
        "cpm": f"original {n}×{d} + generated {k}×{n}×{d}",
        "rows": f"{rows}×{d}",
        "mfa1": f"x_high {dims(stage.high)}, x_low {dims(stage.low)}",
        "energy": f"{stage.high[0]}×{folded_q}×{folded_k}",
        "map": dims(stage.high),
        "map_mib": f"{stage.high[0] * stage.high[1] * stage.high[2] * stage.high[3] * 4 / MIB:.0f}",
    }


def _official_blocks(by_id: dict[str, dict[str, Any]], checks: dict[str, Any]) -> list[dict[str, Any]]:
    """Library vs the official formulation of a block (fp32, fwd+bwd): official median / library median."""
    official = []
    for block, library_id, official_id, check in OFFICIAL_BLOCKS:
        library, reference = by_id.get(library_id), by_id.get(official_id)
        if library is None or reference is None:
            continue
        speedup = speedup_min = None
        if reference["median_ms"] is not None and library["median_ms"]:
            speedup = reference["median_ms"] / library["median_ms"]
        if reference.get("min_ms") is not None and library.get("min_ms"):
            speedup_min = reference["min_ms"] / library["min_ms"]
        official.append(
            {
                "block": block,
                "library_case": library_id,
                "official_case": official_id,
                "library_median_ms": library["median_ms"],
                "official_median_ms": reference["median_ms"],
                "speedup": speedup,
                "speedup_min": speedup_min,
                "threshold": OFFICIAL_THRESHOLD,
                "verdict": "n/a" if speedup is None else _verdict(speedup, OFFICIAL_THRESHOLD),
                "agree": checks.get(check, {}).get("agree"),
            }
        )
    return official


def comparisons(
    rows: list[dict[str, Any]], checks: dict[str, Any], quick: bool, context: dict[str, str]
) -> dict[str, Any]:
    by_id = {r["id"]: r for r in rows}
    loops = []
    for component in ("CPMLoss", "HardTripletLoss", "WRTLoss", "OrthogonalLoss"):
        loop = by_id.get(f"baseline/{component}-loop/fwd+bwd/fp32")
        library = by_id.get(f"{component}/fwd+bwd/fp32")
        if loop is None or library is None:
            continue
        threshold = SPEEDUP_THRESHOLDS.get(component)
        speedup = speedup_min = None
        if loop["median_ms"] is not None and library["median_ms"]:
            speedup = loop["median_ms"] / library["median_ms"]
        if loop.get("min_ms") is not None and library.get("min_ms"):
            speedup_min = loop["min_ms"] / library["min_ms"]
        verdict = "n/a" if speedup is None else ("info" if threshold is None else _verdict(speedup, threshold))
        loops.append(
            {
                "loss": component,
                "loop_case": loop["id"],
                "library_case": library["id"],
                "loop_median_ms": loop["median_ms"],
                "library_median_ms": library["median_ms"],
                "speedup": speedup,
                "speedup_min": speedup_min,
                "threshold": threshold,
                "verdict": verdict,
                "agree": checks.get(component, {}).get("agree"),
            }
        )

    memory = []
    pairs = [
        (
            "attention step",
            "baseline/MFA1-attention-associative/{p}/fp32",
            "baseline/MFA1-attention-materialised/{p}/fp32",
        ),
        ("whole block", "MFA/MFA1-official/{p}/fp32", "baseline/MFA1-official-materialised/{p}/fp32"),
    ]
    for scope, library_id, materialised_id in pairs:
        for pass_ in suite_cases.PASSES:
            library, materialised = by_id.get(library_id.format(p=pass_)), by_id.get(materialised_id.format(p=pass_))
            if library is None or materialised is None:
                continue
            ratio = None
            if library["peak_bytes"] and materialised["peak_bytes"] is not None:
                ratio = materialised["peak_bytes"] / library["peak_bytes"]
            memory.append(
                {
                    "scope": scope,
                    "pass": pass_,
                    "library_case": library["id"],
                    "materialised_case": materialised["id"],
                    "library_peak_mib": library["peak_mib"],
                    "materialised_peak_mib": materialised["peak_mib"],
                    "ratio": ratio,
                    "threshold": MFA_MEMORY_THRESHOLD,
                    "verdict": "n/a" if ratio is None else _verdict(ratio, MFA_MEMORY_THRESHOLD),
                }
            )
    official = _official_blocks(by_id, checks)
    return {
        "quick_shapes": quick,
        "context": context,
        "loops": loops,
        "mfa1_memory": memory,
        "official_blocks": official,
        "checks": checks,
    }


def uncovered_public_names() -> list[str]:
    """Public names of ``vireid_layers`` that neither this suite nor ``methods_bench.py`` benchmarks."""
    import methods_bench
    from common import uncovered_public_names as uncovered

    return uncovered(suite_cases.COVERED | methods_bench.COVERED)


def _verdict(value: float, threshold: float) -> str:
    return "PASS" if value >= threshold else "FAIL"


# --------------------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.1f}"
    return f"{value:.{digits}g}"


def _md_header(results: dict[str, Any]) -> list[str]:
    meta, settings = results["metadata"], results["settings"]
    commit, machine, device = meta["commit"], meta["machine"], meta["device"]
    dirty = {True: " (working tree with uncommitted changes)", False: "", None: " (dirty state unknown)"}
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v is not None)
    memory = (
        "the tensor storage the call allocates and holds at once (dispatch-mode tracker, CPU)."
        if device["type"] == "cpu"
        else "`torch.cuda.max_memory_allocated` during the call minus the memory allocated before it."
    )
    options = [
        f"min_run_time {settings['min_run_time_s']} s",
        f"min_runs {settings['min_runs']}",
        f"per-call limit {settings['max_call_seconds']} s",
        f"dtypes {', '.join(settings['dtypes'])}",
        *(["**quick shapes**"] if settings["quick"] else []),
        *([f"filter `{settings['filter']}`"] if settings["filter"] else []),
    ]
    return [
        f"# `{results['suite']}` benchmarks — {machine['slug']} — {device['type']}",
        "",
        "Generated by `benchmarks/run.py` (do not edit by hand); methodology in `benchmarks/README.md`. "
        "Times are per call; IQR is the interquartile range over the measured blocks (— with fewer than 2); "
        f"peak memory is {memory}",
        "",
        "| | |",
        "|---|---|",
        f"| commit | `{commit['sha']}`{dirty[commit['dirty']]}"
        + (f"; library sources sha256 `{commit['source_sha256'][:12]}`" if commit.get("source_sha256") else "")
        + " |",
        f"| date (UTC) | {meta['timestamp_utc']} |",
        f"| machine | `{machine['slug']}`: {machine['processor']}, {machine['cpu_count']} CPUs, "
        f"{machine['platform']}, host `{machine['hostname']}` |",
        f"| device | {device['type']}: {device['name']}, {device['num_threads']} torch threads |",
        f"| versions | {versions} |",
        f"| settings | {', '.join(options)} |",
        f"| load average (1 min) | {meta.get('loadavg_start', '—')} at start, {meta.get('loadavg_end', '—')} at end |",
        f"| total runtime | {results['total_runtime_s']:.0f} s{'' if results['complete'] else ' (incomplete run)'} |",
        *(
            f"| re-measured | {len(r['case_ids'])} cases matching `{r['filter']}` at {r['timestamp_utc']} "
            f"(`--update`; replaces earlier rows of these cases), commit `{r['commit']['sha'][:12]}`"
            + (f", library sources `{r['commit']['source_sha256'][:12]}`" if r["commit"].get("source_sha256") else "")
            + f": {r['num_threads']} torch thread(s), "
            f"min_run_time {r['settings']['min_run_time_s']} s, min_runs {r['settings']['min_runs']}, "
            f"load average {r['loadavg_start']} → {r['loadavg_end']}"
            + (
                f"; **on {r['processor']}, torch {r['versions']['torch']}**"
                if r.get("processor") and r["processor"] != machine["processor"]
                else ""
            )
            + " |"
            for r in results.get("reruns", [])
        ),
    ]


def _md_cell(row: dict[str, Any]) -> tuple[str, str, str]:
    """Median, IQR and runs cells of a row."""
    if row["status"] == "ok":
        return _fmt(row["median_ms"]), _fmt(row["iqr_ms"], 2), str(row["runs"])
    if row["status"] == "memory_only":
        return f"({_fmt(row['first_call_s'] * 1e3)} one call)", "—", "—"
    return f"{row['status']}: {row['reason']}", "—", "—"


def _md_table(results: dict[str, Any]) -> list[str]:
    threads = results["metadata"]["device"]["num_threads"]
    lines = [
        "## Results",
        "",
        "| case | shape | dtype | pass | median ms | IQR ms | runs | peak MiB |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    titles = {"layer": "layers", "loss": "losses", "backbone": "backbone", "baseline": "baselines (references)"}
    for group, title in titles.items():
        rows = [r for r in results["cases"] if r["group"] == group]
        if rows:
            lines.append(f"| **{title}** | | | | | | | |")
        for r in rows:
            notes = [r["note"]] if r["note"] else []
            if r.get("num_threads", threads) != threads:
                notes.append(f"{r['num_threads']} thread{'s' if r['num_threads'] != 1 else ''}")
            shape = r["shape"] + (f" ({'; '.join(notes)})" if notes else "")
            median, iqr, runs = _md_cell(r)
            lines.append(
                f"| {r['name']} | {shape} | {r['dtype']} | {r['pass']} | {median} | {iqr} | {runs} | "
                f"{_fmt(r['peak_mib'])} |"
            )
    return lines


def _md_loops(comp: dict[str, Any]) -> list[str]:
    ctx = comp["context"]
    lines = ["## Library vs per-anchor loop at the SYSU batch", ""]
    if comp["quick_shapes"]:
        lines += ["*Quick shapes: these ratios say nothing about the real batch.*", ""]
    lines += [
        "fp32, forward+backward, medians (the verdict); *fastest blocks* is the ratio of the fastest measured blocks, "
        "less sensitive to other processes on a shared machine. The loops are the official formulations written as "
        "Python loops over "
        "anchors / identities (`benchmarks/cases.py`); the same value and gradients as the library are "
        "checked before timing. CPM: the official chunk-based centres and per-identity loop, called once per "
        f"DEE branch and summed, vs `CPMLoss` on {ctx['cpm']}. Triplet and WRT: {ctx['rows']} (the three DEE "
        "blocks).",
        "",
        "| loss | loop ms | library ms | speedup | threshold | verdict | fastest blocks | same value and grads |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for c in comp["loops"]:
        threshold = "—" if c["threshold"] is None else f"≥ {c['threshold']:g}×"
        speedup = "—" if c["speedup"] is None else f"{c['speedup']:.1f}×"
        fastest = "—" if c.get("speedup_min") is None else f"{c['speedup_min']:.1f}×"
        agree = {True: "yes", False: "**no**", None: "not checked"}[c["agree"]]
        lines.append(
            f"| {c['loss']} | {_fmt(c['loop_median_ms'])} | {_fmt(c['library_median_ms'])} | {speedup} | "
            f"{threshold} | {c['verdict']} | {fastest} | {agree} |"
        )
    return lines


def _md_memory(comp: dict[str, Any]) -> list[str]:
    ctx = comp["context"]
    lines = ["## MFA1 official: peak memory vs materialised attention", ""]
    if comp["quick_shapes"]:
        lines += ["*Quick shapes: these ratios say nothing about the real batch.*", ""]
    lines += [
        f"fp32, {ctx['mfa1']}. *Materialised* evaluates the official spatial attention as written, building the "
        f"{ctx['energy']} energy matrix and then multiplying by the values; the library evaluates the same "
        "product as Q(KᵀV)/n and never builds it. *Attention step*: the folded Q/K/V product alone (the only "
        "computation in which the two differ), with θ, φ, g given. *Whole block*: the full MFA1 (channel part, "
        "1×1 convolutions, BatchNorms, residuals), whose own activations "
        f"({ctx['map_mib']} MiB per {ctx['map']} fp32 map) are the same in both.",
        "",
        "| scope | pass | library MiB | materialised MiB | ratio | threshold | verdict |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for m in comp["mfa1_memory"]:
        ratio = "—" if m["ratio"] is None else f"{m['ratio']:.1f}×"
        lines.append(
            f"| {m['scope']} | {m['pass']} | {_fmt(m['library_peak_mib'])} | {_fmt(m['materialised_peak_mib'])} | "
            f"{ratio} | ≥ {m['threshold']:g}× | {m['verdict']} |"
        )
    check = comp["checks"].get("MFA")
    if check and "error" in check:
        lines += ["", f"The materialised block could not be compared with the library: {check['error']}."]
    elif check:
        lines += [
            "",
            f"The materialised block gives the library's output (max abs difference {check['max_abs_diff']:.2e} "
            f"on {check['batch_checked']} samples; agree: {'yes' if check['agree'] else '**no**'}).",
        ]
    return lines


def _md_official(comp: dict[str, Any]) -> list[str]:
    lines = ["## Blocks vs the official formulation", ""]
    if comp["quick_shapes"]:
        lines += ["*Quick shapes: these ratios say nothing about the real batch.*", ""]
    lines += [
        "fp32, forward+backward, medians, same weights and inputs (`benchmarks/cases.py`: `mam_official`, "
        "`mfa_official`). MAM: the official computation (GAP, the two bias-free 1×1 convolutions, "
        "`InstanceNorm2d`, `x·m + IN(x)·(1−m)`) on the stage-3 map. MFA3: the official block with every "
        "attention product in the official order ((QKᵀ)V in CNL, the folded (QK)V in PNL); the library picks "
        "the cheaper association from the shapes. *speedup* = official / library (≥ 1: the library is not "
        "slower); *fastest blocks* is the ratio of the fastest measured blocks.",
        "",
        "| block | official ms | library ms | speedup | threshold | verdict | fastest blocks | same output |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for c in comp["official_blocks"]:
        speedup = "—" if c["speedup"] is None else f"{c['speedup']:.2f}×"
        fastest = "—" if c.get("speedup_min") is None else f"{c['speedup_min']:.2f}×"
        agree = {True: "yes", False: "**no**", None: "not checked"}[c["agree"]]
        lines.append(
            f"| {c['block']} | {_fmt(c['official_median_ms'])} | {_fmt(c['library_median_ms'])} | {speedup} | "
            f"≥ {c['threshold']:g}× | {c['verdict']} | {fastest} | {agree} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The markdown report of a results dict (header, table, comparison note)."""
    lines = [*_md_header(results), "", *_md_table(results)]
    comp = results["comparisons"]
    if comp:
        lines += ["", *_md_loops(comp), "", *_md_memory(comp)]
        if comp.get("official_blocks"):
            lines += ["", *_md_official(comp)]
    if results.get("uncovered"):
        names = ", ".join(f"`{n}`" for n in results["uncovered"])
        lines += ["", "## Not covered", "", f"Public names of `vireid_layers` without a case in any suite: {names}."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def write(results: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path


def _output(args: argparse.Namespace, device: torch.device) -> tuple[str, Path, str]:
    """Suite name, output directory and file stem (``--quick`` never writes into ``benchmarks/results``)."""
    suite = SUITE + ("-quick" if args.quick else "") + ("-filtered" if args.filter and not args.update else "")
    if args.out is not None:
        out_dir = args.out
    elif args.quick:
        out_dir = Path(tempfile.mkdtemp(prefix="vireid-bench-quick-"))
    else:
        out_dir = DEFAULT_OUT
    return suite, out_dir, f"{suite}--{machine_slug(device)}--{device.type}"


def _select(cases: list[suite_cases.Case], needle: str | None) -> list[suite_cases.Case]:
    if not needle:
        return cases
    needle = needle.lower()
    return [c for c in cases if needle in c.id.lower() or needle in c.name.lower()]


def _existing(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise SystemExit(f"--update: {path} does not exist; run the suite without --update first")
    return json.loads(path.read_text())


def _merged(
    base: dict[str, Any], run: dict[str, Any], checks: dict[str, Any], context: dict[str, str]
) -> dict[str, Any]:
    """``base`` with the rows of ``run`` replacing (or appended to) its rows, and the re-run recorded."""
    merged = copy.deepcopy(base)
    index = {row["id"]: i for i, row in enumerate(merged["cases"])}
    for row in run["cases"]:
        if row["id"] in index:
            merged["cases"][index[row["id"]]] = row
        else:
            merged["cases"].append(row)
    merged["uncovered"] = run["uncovered"]  # the coverage of the current code, not of the first run's
    all_checks = {**base.get("comparisons", {}).get("checks", {}), **checks}
    merged["comparisons"] = comparisons(merged["cases"], all_checks, run["settings"]["quick"], context)
    meta = run["metadata"]
    merged.setdefault("reruns", []).append(
        {
            "timestamp_utc": meta["timestamp_utc"],
            "commit": meta["commit"],
            "command": meta["command"],
            "filter": run["settings"]["filter"],
            "case_ids": [row["id"] for row in run["cases"]],
            "settings": run["settings"],
            "num_threads": meta["device"]["num_threads"],
            "loadavg_start": meta.get("loadavg_start"),
            "loadavg_end": meta.get("loadavg_end"),
            "runtime_s": run["total_runtime_s"],
            "complete": run["complete"],
            "processor": meta["machine"]["processor"],
            "versions": meta["versions"],
        }
    )
    return merged


def _summary(results: dict[str, Any]) -> None:
    for c in results["comparisons"].get("loops", []):
        speedup = "n/a" if c["speedup"] is None else f"{c['speedup']:.1f}x"
        fastest = "n/a" if c.get("speedup_min") is None else f"{c['speedup_min']:.1f}x"
        log(f"  loop vs library, {c['loss']}: {speedup} ({c['verdict']}); fastest blocks {fastest}")
    for m in results["comparisons"].get("mfa1_memory", []):
        ratio = "n/a" if m["ratio"] is None else f"{m['ratio']:.1f}x"
        log(f"  MFA1 memory, {m['scope']} {m['pass']}: {ratio} ({m['verdict']})")
    for c in results["comparisons"].get("official_blocks", []):
        speedup = "n/a" if c["speedup"] is None else f"{c['speedup']:.2f}x"
        log(f"  official vs library, {c['block']}: {speedup} ({c['verdict']})")


def render(path: Path) -> int:
    """Rewrite the markdown report next to an existing results JSON."""
    results = json.loads(path.read_text())
    errors = validate_results(results)
    path.with_suffix(".md").write_text(markdown(results))
    log(f"wrote {path.with_suffix('.md')}")
    if errors:
        log("results do not match benchmarks/results_schema.json:\n  " + "\n  ".join(errors))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        return render(args.render)
    device = resolve_device(args.device)
    threads = args.threads if args.threads is not None else (1 if args.quick else None)
    if threads is not None:  # --quick: one thread, so tiny ops do not stall on a busy machine
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    min_run_time = args.min_run_time if args.min_run_time is not None else (0.01 if args.quick else 1.0)
    min_runs = args.min_runs if args.min_runs is not None else (1 if args.quick else 3)
    shapes = (suite_cases.quick_shapes if args.quick else suite_cases.sysu_shapes)(device)
    cases = _select(suite_cases.all_cases(shapes, args.dtype), args.filter)
    suite, out_dir, stem = _output(args, device)
    base = _existing(out_dir / f"{stem}.json") if args.update else None

    start = time.perf_counter()
    results: dict[str, Any] = {
        "suite": suite,
        "schema_version": 1,
        "complete": False,
        "total_runtime_s": 0.0,
        "metadata": run_metadata(device, args.dtype, loadavg_start=_loadavg()),
        "settings": {
            "quick": args.quick,
            "filter": args.filter,
            "dtypes": list(args.dtype),
            "min_run_time_s": min_run_time,
            "min_runs": min_runs,
            "max_call_seconds": args.max_call_seconds,
            "backbone_batch": shapes.backbone_batch,
        },
        "cases": [],
        "comparisons": {},
        "uncovered": uncovered_public_names(),
    }
    log(
        f"{suite}: {len(cases)} cases on {device} ({results['metadata']['device']['name']}), "
        f"{torch.get_num_threads()} threads, output {out_dir / stem}.{{json,md}}"
    )
    if results["uncovered"]:
        log(f"note: public names without a case in any suite: {', '.join(results['uncovered'])}")

    log("checking that the loop baselines compute what the library computes ...")
    checks = suite_cases.check_baselines(shapes, device) if any(c.group == "baseline" for c in cases) else {}
    for name, check in checks.items():
        log(f"  {name}: agree={check['agree']}" + (f" ({check['error']})" if "error" in check else ""))

    context = comparison_context(shapes)
    first_calls: dict[str, float] = {}
    for i, case in enumerate(cases, 1):
        log(f"[{i}/{len(cases)}] {case.id}  ({case.shape})")
        row = run_case(
            case,
            device=device,
            min_run_time=min_run_time,
            min_runs=min_runs,
            max_call_s=args.max_call_seconds,
            forward_first_call=first_calls.get(case.forward_of or ""),
        )
        if row["first_call_s"] is not None:
            first_calls[case.id] = row["first_call_s"]
        results["cases"].append(row)
        results["total_runtime_s"] = time.perf_counter() - start
        log(f"    {describe(row)}   [{results['total_runtime_s']:.0f} s elapsed]")
        results["comparisons"] = comparisons(results["cases"], checks, args.quick, context)
        # Keep partial results of a long run.
        write(results if base is None else _merged(base, results, checks, context), out_dir, stem)

    results["complete"] = True
    results["total_runtime_s"] = time.perf_counter() - start
    results["metadata"]["loadavg_end"] = _loadavg()
    if base is not None:
        results = _merged(base, results, checks, context)
    errors = validate_results(results)
    json_path, md_path = write(results, out_dir, stem)
    log(f"wrote {json_path} and {md_path} in {results['total_runtime_s']:.0f} s")
    _summary(results)
    if errors:
        log("results do not match benchmarks/results_schema.json:\n  " + "\n  ".join(errors))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
