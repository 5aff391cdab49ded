"""The methods table: every registered method and DEEN's ablation trained on the built-in synthetic data.

Each row is one recipe (``deen``, ``agw``, ``ddag``, ``mpanet``, ``mso``: every registered one by default,
``--methods`` picks) or one variant of DEEN's ablation (``--ablation``), trained from the recipe's quick synthetic
configuration (:meth:`~vireid_layers.recipes.Recipe.quick_config`: ResNet-18 from random weights, 64×32 images,
Adam) with **one common step budget**: ``--epochs`` epochs of ``--steps-per-epoch`` batches of 8 identities × 2
images × 2 modalities for every row (the learning-rate milestones of each quick run are scaled by
``epochs / quick epochs``). Each (row, seed) is one training run in its own process (``--threads`` intra-op
threads, ``--jobs`` processes at a time) that ends with the recipe's final evaluation: the SYSU-MM01-style
protocol on the synthetic test split, infrared → visible, 10 seeded galleries (``eval_trials``), the recipe's
official test feature. A run records Rank-1, mAP and mINP (the mean over the galleries) and the mean wall time of
a training step (the trainer's epoch times divided by their steps: data loading, forward, losses, backward and
optimiser step).

The table gives mean ± std over the seeds (sample standard deviation, ``n - 1``) per row, and sets it beside the
published SYSU-MM01 all-search numbers (for the methods) and DEEN's ablation table (Table 4 of the DEEN paper,
SYSU-MM01 column). The synthetic data is not SYSU-MM01: the table shows that every method trains and evaluates
end to end on the same budget, not which method is better on real data.

Ablation variants (``deen`` recipe options; the full model is the ``deen`` row itself, not run again):

* ``base``: no DEE, no MFA: the two-stream ResNet, BN neck and classifier with CE + triplet;
* ``dee``: + DEE (two branches), without CPM and orthogonal loss;
* ``dee-cpm``: + DEE + CPM;
* ``dee-cpm-ort``: + DEE + CPM + orthogonal loss, i.e. DEEN without MFA;
* ``dee-ort`` and ``mfa`` (base + MFA): the paper's other rows, run only when named.

Usage::

    python benchmarks/methods_table.py --threads 1 --jobs 2                  # every method and the ablation
    python benchmarks/methods_table.py --methods deen agw --epochs 7
    python benchmarks/methods_table.py --methods ddag mpanet mso --no-ablation --epochs 7 --update
    python benchmarks/methods_table.py --render results/methods-table--cpu2-x86_64--cpu.json \\
        --rst docs/methods_table.inc                                          # the tables of the docs
    python benchmarks/methods_table.py --quick --out /tmp/x                    # a smoke run, seconds

Writes ``results/methods-table--<machine>--cpu.{json,md}`` (``methods-table-quick`` with ``--quick``).
``--update`` adds (or replaces) the rows it runs in the existing JSON and keeps every other row, after checking
that the step budget is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):  # `common` and the in-tree `vireid_layers`
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402
from common import git_commit, machine_slug, run_metadata, validate_metadata  # noqa: E402

SUITE = "methods-table"
DEFAULT_OUT = HERE / "results"
#: The papers' order on SYSU-MM01 (all-search, single-shot Rank-1), best first.
PAPER_ORDER = ("deen", "mpanet", "mso", "ddag", "agw")
#: Published SYSU-MM01 all-search numbers (Rank-1, mAP, mINP; None where the source gives none) and their source.
PUBLISHED: dict[str, tuple[float, float, float | None, str]] = {
    "deen": (74.7, 71.8, None, "DEEN paper, Table 2"),
    "mpanet": (70.58, 68.24, None, "MPANet paper, Table 1"),
    "mso": (58.70, 56.42, 42.04, "MSO paper, Tables 1 and 3"),
    "ddag": (54.75, 53.02, 39.62, "DDAG paper, Table 4; mINP from the official README"),
    "agw": (47.50, 47.65, 35.30, "AGW, the official code's README (the DDAG repository's baseline)"),
}
#: DEEN ablation variants: (description, recipe overrides, (DEE, CPM, orthogonal, MFA), paper SYSU-MM01 R1, mAP).
#: The paper's numbers are Table 4 of the DEEN paper (SYSU-MM01 column), see docs/methods.rst for the reading.
VARIANTS: dict[str, tuple[str, dict[str, Any], tuple[bool, bool, bool, bool], tuple[float, float]]] = {
    "base": (
        "base network (two-stream ResNet, BN neck, classifier; CE + triplet)",
        {"num_branches": 0, "mfa": False, "lambda_cpm": 0.0, "lambda_ort": 0.0},
        (False, False, False, False),
        (60.7, 57.7),
    ),
    "dee": (
        "+ DEE",
        {"mfa": False, "lambda_cpm": 0.0, "lambda_ort": 0.0},
        (True, False, False, False),
        (64.7, 62.0),
    ),
    "dee-cpm": ("+ DEE + CPM", {"mfa": False, "lambda_ort": 0.0}, (True, True, False, False), (69.2, 66.2)),
    "dee-ort": ("+ DEE + orthogonal", {"mfa": False, "lambda_cpm": 0.0}, (True, False, True, False), (65.3, 63.2)),
    "dee-cpm-ort": (
        "+ DEE + CPM + orthogonal (DEEN without MFA)",
        {"mfa": False},
        (True, True, True, False),
        (69.8, 66.7),
    ),
    "mfa": (
        "base + MFA",
        {"num_branches": 0, "lambda_cpm": 0.0, "lambda_ort": 0.0},
        (False, False, False, True),
        (64.7, 62.0),
    ),
}
DEFAULT_VARIANTS = ("base", "dee", "dee-cpm", "dee-cpm-ort")
#: The full model of the ablation: the ``deen`` method row.
FULL_DEEN = ("DEEN (+ DEE + CPM + orthogonal + MFA)", (True, True, True, True), (74.7, 71.8))
#: The budget every row shares: the quick run's batch.
BATCH = {"batch_identities": 8, "num_instances": 2}
QUICK = {"epochs": 1, "steps_per_epoch": 2, "eval_trials": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=None, help="recipes to run (default: every registered one)")
    parser.add_argument(
        "--ablation",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        choices=tuple(VARIANTS),
        help=f"DEEN ablation variants (default: {' '.join(DEFAULT_VARIANTS)}); run only with the deen recipe",
    )
    parser.add_argument("--no-ablation", action="store_true", help="run no ablation variant")
    parser.add_argument("--epochs", type=int, default=None, help="common epochs of every row (default: quick run's)")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="batches per epoch (default: quick run's)")
    parser.add_argument("--eval-trials", type=int, default=10, help="galleries of the final evaluation")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of each run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each its own process)")
    parser.add_argument("--quick", action="store_true", help="1 epoch of 2 steps, 2 galleries: a smoke run")
    parser.add_argument("--update", action="store_true", help="add these rows to the existing JSON, keep the others")
    parser.add_argument("--out", type=Path, default=None, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--runs-dir", type=Path, default=None, help="run directories (default: a temporary one)")
    parser.add_argument("--render", type=Path, default=None, help="only rewrite the .md of an existing results JSON")
    parser.add_argument(
        "--rst", type=Path, default=None, help="also write the tables as reStructuredText (docs/methods_table.inc)"
    )
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)  # worker: one run, a JSON spec
    args = parser.parse_args(argv)
    for name in ("epochs", "steps_per_epoch", "eval_trials", "threads", "jobs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.no_ablation:
        args.ablation = []
    return args


# --------------------------------------------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------------------------------------------


def quick_budget(method: str) -> tuple[int, int, tuple[int, ...]]:
    """``(epochs, steps per epoch, milestones)`` of a recipe's quick run."""
    from vireid_layers.recipes import recipe_class

    config = recipe_class(method).quick_config()
    return config.epochs, int(config.epoch_length), tuple(config.milestones)


def budget(args: argparse.Namespace) -> dict[str, int]:
    """The common budget: ``--epochs``/``--steps-per-epoch`` or the quick run's (DEEN's), ``--quick``'s tiny one."""
    epochs, steps, _ = quick_budget("deen")
    if args.quick:
        epochs, steps = QUICK["epochs"], QUICK["steps_per_epoch"]
    epochs = args.epochs or epochs
    steps = args.steps_per_epoch or steps
    trials = QUICK["eval_trials"] if args.quick and args.eval_trials == 10 else args.eval_trials
    return {"epochs": epochs, "steps_per_epoch": steps, "steps": epochs * steps, "eval_trials": trials}


def scaled_milestones(milestones: tuple[int, ...], quick_epochs: int, epochs: int) -> tuple[int, ...]:
    """The quick run's milestones at the same fraction of a budget of ``epochs`` (unchanged at the quick length).

    Examples:
        >>> scaled_milestones((11,), 14, 14), scaled_milestones((11,), 14, 7), scaled_milestones((11,), 14, 1)
        ((11,), (6,), (1,))
    """
    return tuple(sorted({max(1, round(m * epochs / quick_epochs)) for m in milestones}))


def overrides_for(method: str, variant: str | None, seed: int, plan: dict[str, int], threads: int) -> dict[str, Any]:
    """The recipe options of one run: the quick configuration, the common budget, the variant, the seed."""
    quick_epochs, _, milestones = quick_budget(method)
    return {
        **BATCH,
        "epochs": plan["epochs"],
        "epoch_length": str(plan["steps_per_epoch"]),
        "milestones": scaled_milestones(milestones, quick_epochs, plan["epochs"]),
        "eval_trials": plan["eval_trials"],
        "eval_every": 0,
        "device": "cpu",
        "workers": 0,
        "threads": threads,
        "seed": seed,
        **(VARIANTS[variant][1] if variant else {}),
    }


def row_name(method: str, variant: str | None) -> str:
    return f"{method}/{variant}" if variant else method


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one run (in this process); returns its row."""
    from vireid_layers.recipes import build_recipe, train

    overrides = {**spec["overrides"], "milestones": tuple(spec["overrides"]["milestones"])}
    recipe = build_recipe(spec["method"], run_dir=spec["run_dir"], **overrides)
    start = time.perf_counter()
    result = train(recipe)
    wall = time.perf_counter() - start
    reported = result.final.result.reported()
    epochs = result.history  # one row per epoch: its steps and wall time, among the mean loss terms
    steps = sum(int(e["steps"]) for e in epochs)
    return {
        "rank1": 100 * reported["rank1"][0],
        "mAP": 100 * reported["mAP"][0],
        "mINP": 100 * reported["mINP"][0],
        "step_s": sum(float(e["time_s"]) for e in epochs) / steps,
        "steps": steps,
        "wall_s": wall,
        "feature": recipe.config.feature,
    }


def launch(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec`` in a fresh interpreter (``--threads`` threads); returns its row, with the error if it failed."""
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = str(spec["overrides"]["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    row = {k: spec[k] for k in ("row", "method", "variant", "seed")}
    load = os.getloadavg()[0]
    with (run_dir / "table.log").open("w") as log:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--run-one", json.dumps(spec)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    out = run_dir / "table-row.json"
    if proc.returncode != 0 or not out.is_file():
        tail = (run_dir / "table.log").read_text().splitlines()[-5:]
        return {**row, "status": "error", "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return {
        **row,
        "status": "ok",
        **json.loads(out.read_text()),
        "loadavg_start": load,
        "loadavg_end": os.getloadavg()[0],
    }


def plan_runs(args: argparse.Namespace, plan: dict[str, int], runs_dir: Path) -> list[dict[str, Any]]:
    """One spec per (row, seed): the registered methods asked for, then the ablation variants (with deen)."""
    from vireid_layers.recipes import list_recipes

    registered = list_recipes()
    methods = args.methods if args.methods is not None else registered
    missing = [m for m in methods if m not in registered]
    if missing:
        print(f"not registered, no row: {missing} (registered recipes: {registered})")
    rows: list[tuple[str, str | None]] = [(m, None) for m in methods if m in registered]
    if "deen" in methods and "deen" in registered:
        rows += [("deen", v) for v in args.ablation]
    specs = []
    for seed in args.seeds:  # seed-major: an interrupted table has every row for the first seeds
        for method, variant in rows:
            name = row_name(method, variant)
            specs.append(
                {
                    "row": name,
                    "method": method,
                    "variant": variant,
                    "seed": seed,
                    "overrides": overrides_for(method, variant, seed, plan, args.threads),
                    "run_dir": str(runs_dir / f"{name.replace('/', '-')}-seed{seed}"),
                }
            )
    return specs


def reproduce_command(args: argparse.Namespace, plan: dict[str, int], methods: list[str] | None = None) -> str:
    """The command line that runs (``methods`` given: adds) these rows with the same budget."""
    parts = ["python", "benchmarks/methods_table.py"]
    if methods is not None:
        parts += ["--methods", *methods, "--no-ablation"]
    else:
        if args.methods is not None:
            parts += ["--methods", *args.methods]
        parts += ["--no-ablation"] if not args.ablation else ["--ablation", *args.ablation]
    if args.quick:
        parts.append("--quick")
    parts += ["--epochs", str(plan["epochs"]), "--steps-per-epoch", str(plan["steps_per_epoch"])]
    parts += ["--seeds", *map(str, args.seeds), "--threads", str(args.threads), "--jobs", str(args.jobs)]
    if plan["eval_trials"] != 10:
        parts += ["--eval-trials", str(plan["eval_trials"])]
    if methods is not None or args.update:
        parts.append("--update")
    return shlex.join(parts)


# --------------------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]], row: str) -> dict[str, Any] | None:
    """Mean and sample std over the seeds of one row's successful runs (std ``None`` with one seed)."""
    ok = [r for r in runs if r["row"] == row and r.get("status") == "ok"]
    if not ok:
        return None
    out: dict[str, Any] = {"n": len(ok), "seeds": sorted(r["seed"] for r in ok)}
    for key in ("rank1", "mAP", "mINP", "step_s"):
        values = [float(r[key]) for r in ok]
        out[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)
    out["step_min"] = min(float(r["step_s"]) for r in ok)  # the least disturbed run: the estimate under load
    return out


def _pm(stat: tuple[float, float | None], digits: int = 2) -> str:
    mean, std = stat
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _published(method: str) -> str:
    if method not in PUBLISHED:
        return "–"
    r1, mean_ap, minp, _ = PUBLISHED[method]  # as published: one or two decimals
    return f"{r1:g} / {mean_ap:g} / " + ("–" if minp is None else f"{minp:g}")


def ordering_note(runs: list[dict[str, Any]]) -> list[str]:
    """The synthetic order of the methods by mean Rank-1 and mAP against the papers', pair by pair."""
    stats = {m: summarise(runs, m) for m in PAPER_ORDER}
    present = [m for m in PAPER_ORDER if stats[m] is not None]
    if len(present) < 2:
        return []
    lines = []
    for key, label in (("rank1", "Rank-1"), ("mAP", "mAP")):
        order = sorted(present, key=lambda m: -stats[m][key][0])  # type: ignore[index]
        agree, differ = [], []
        for i, a in enumerate(present):
            for b in present[i + 1 :]:  # the paper ranks a above b
                ma, mb = stats[a][key][0], stats[b][key][0]  # type: ignore[index]
                (agree if ma > mb else differ).append(f"{a} {'>' if ma > mb else '≤'} {b}")
        lines.append(
            f"- By {label}, synthetic: {' > '.join(order)}; the papers (SYSU-MM01): {' > '.join(present)}. "
            f"Pairs in the papers' order: {len(agree)} of {len(agree) + len(differ)}"
            + (f"; reversed: {', '.join(differ)}." if differ else ".")
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta, settings, runs = results["metadata"], results["settings"], results["runs"]
    machine, versions = meta["machine"], meta["versions"]
    commit = meta["commit"]
    lines = [
        "# Methods on the built-in synthetic data: mean ± std over seeds",
        "",
        f"- Machine: `{machine['slug']}`, {machine['processor']}, {machine['cpu_count']} CPUs, {machine['platform']}",
        f"- Threads per run: {settings['threads']}; runs at a time: {settings['jobs']}; load average (1 min) "
        f"{meta.get('loadavg_start', float('nan')):.2f} at the start, {meta.get('loadavg_end', float('nan')):.2f} "
        "at the end (shared machine: the times per step measure the load too)",
        "- Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None)
        + f"; commit `{commit['sha'][:12]}`{' (dirty)' if commit.get('dirty') else ''}; {meta['timestamp_utc']}",
        f"- Command: `{meta['command']}`",
        f"- Reproduce: `{results['reproduce']}`",
    ]
    for rerun in results.get("reruns", []):
        lines.append(
            f"- Rows added {rerun['timestamp_utc']} ({', '.join(rerun['rows'])}): `{rerun['command']}`, commit "
            f"`{rerun['commit']['sha'][:12]}`, {rerun['processor']}, load {rerun['loadavg_start']:.2f}–"
            f"{rerun['loadavg_end']:.2f}"
        )
    lines += [
        "",
        f"Every run: the recipe's quick synthetic configuration (ResNet-18 from random weights, 64×32 images, Adam, "
        f"no loader workers) with one common budget of {settings['epochs']} epochs × {settings['steps_per_epoch']} "
        f"steps = **{settings['steps']} steps** of 8 identities × 2 images × 2 modalities (32 images); the quick "
        "run's learning-rate milestones scaled to the budget. Evaluation: the SYSU-MM01-style protocol on the "
        f"synthetic test split, infrared → visible, {settings['eval_trials']} seeded galleries, the recipe's "
        "official test feature; Rank-1, mAP and mINP in %, mean ± sample std over the seeds. s / step: the mean "
        "wall time of a training step (data, forward, losses, backward, optimiser); fastest: the run of the row "
        "least slowed by the other processes on the machine.",
        "",
        "## Methods",
        "",
        "| method | test feature | seeds | Rank-1 | mAP | mINP | s / step | fastest "
        "| SYSU-MM01 all-search, paper: R1 / mAP / mINP |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    methods = list(dict.fromkeys(r["method"] for r in runs if r["variant"] is None))
    methods.sort(key=lambda m: PAPER_ORDER.index(m) if m in PAPER_ORDER else len(PAPER_ORDER))
    for method in methods:
        s = summarise(runs, method)
        feature = next((r.get("feature", "") for r in runs if r["row"] == method and r.get("status") == "ok"), "")
        if s is None:
            lines.append(f"| {method} | | 0 | failed | | | | | {_published(method)} |")
            continue
        lines.append(
            f"| {method} | {feature} | {s['n']} | {_pm(s['rank1'])} | {_pm(s['mAP'])} | {_pm(s['mINP'])} | "
            f"{_pm(s['step_s'], 3)} | {s['step_min']:.3f} | {_published(method)} |"
        )
    lines += ["", *ordering_note(runs)]
    sources = [f"{m}: {PUBLISHED[m][3]}" for m in methods if m in PUBLISHED]
    if sources:
        lines += ["", "Published numbers: " + "; ".join(sources) + "."]
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in runs)]
    if variants:
        lines += [
            "",
            "## DEEN ablation",
            "",
            "| variant | DEE | CPM | orthogonal | MFA | seeds | Rank-1 | mAP | mINP | s / step | fastest | "
            "paper, SYSU-MM01: R1 / mAP |",
            "|---|:-:|:-:|:-:|:-:|--:|--:|--:|--:|--:|--:|---|",
        ]
        entries = [(VARIANTS[v][0], row_name("deen", v), VARIANTS[v][2], VARIANTS[v][3]) for v in variants]
        entries.append((FULL_DEEN[0], "deen", FULL_DEEN[1], FULL_DEEN[2]))
        for label, row, flags, paper in entries:
            marks = " | ".join("✓" if f else "" for f in flags)
            s = summarise(runs, row)
            if s is None:
                lines.append(
                    f"| {label} | {marks} | 0 | {'not run' if row == 'deen' else 'failed'} | | | | | "
                    f"{paper[0]:.1f} / {paper[1]:.1f} |"
                )
                continue
            lines.append(
                f"| {label} | {marks} | {s['n']} | {_pm(s['rank1'])} | {_pm(s['mAP'])} | {_pm(s['mINP'])} | "
                f"{_pm(s['step_s'], 3)} | {s['step_min']:.3f} | {paper[0]:.1f} / {paper[1]:.1f} |"
            )
        lines += ["", "Paper: Table 4 of the DEEN paper, SYSU-MM01 (ResNet-50 from ImageNet, 384×144, 151 epochs)."]
    lines += [
        "",
        "## Runs",
        "",
        "| row | seed | Rank-1 | mAP | mINP | s / step | steps | wall s | load at start |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in sorted(runs, key=lambda r: (r["row"], r["seed"])):
        if r.get("status") != "ok":
            lines.append(f"| {r['row']} | {r['seed']} | error: {r.get('error', '')[:200]} | | | | | | |")
            continue
        lines.append(
            f"| {r['row']} | {r['seed']} | {r['rank1']:.2f} | {r['mAP']:.2f} | {r['mINP']:.2f} | {r['step_s']:.3f} | "
            f"{r['steps']} | {r['wall_s']:.0f} | {r['loadavg_start']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _cells(stat: dict[str, Any] | None) -> list[str]:
    if stat is None:
        return ["–"] * 6
    cells = [str(stat["n"]), _pm(stat["rank1"]), _pm(stat["mAP"]), _pm(stat["mINP"]), _pm(stat["step_s"], 3)]
    return [*cells, f"{stat['step_min']:.3f}"]


def _list_table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    lines = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines += [f"   * - {row[0]}", *(f"     - {cell}" for cell in row[1:])]
    return [*lines, ""]


def rst(results: dict[str, Any]) -> str:
    """The two tables of the documentation (``docs/methods_table.inc``) as reStructuredText list tables."""
    runs, settings = results["runs"], results["settings"]
    stats = ["seeds", "Rank-1 (%)", "mAP (%)", "mINP (%)", "s / step", "fastest run, s / step"]
    methods = sorted(
        {r["method"] for r in runs if r["variant"] is None},
        key=lambda m: PAPER_ORDER.index(m) if m in PAPER_ORDER else len(PAPER_ORDER),
    )
    rows = [[m, *_cells(summarise(runs, m)), _published(m)] for m in methods]
    title = f"Synthetic data, {settings['steps']} steps per run, mean ± std over seeds"
    lines = [
        f".. Generated by benchmarks/methods_table.py from {results['suite']}--{results['metadata']['machine']['slug']}"
        "--cpu.json; do not edit.",
        "",
        *_list_table(title, ["method", *stats, "SYSU-MM01, paper: R1 / mAP / mINP"], rows),
    ]
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in runs)]
    if variants:
        entries = [(VARIANTS[v][0], row_name("deen", v), VARIANTS[v][3]) for v in variants]
        entries.append((FULL_DEEN[0], "deen", FULL_DEEN[2]))
        rows = [[label, *_cells(summarise(runs, row)), f"{p[0]:.1f} / {p[1]:.1f}"] for label, row, p in entries]
        lines += _list_table(
            f"DEEN ablation, the same budget ({settings['steps']} steps)",
            ["variant", *stats, "SYSU-MM01, paper (Table 4): R1 / mAP"],
            rows,
        )
    return "\n".join(lines)


def render(path: Path, rst_path: Path | None = None) -> Path:
    """Rewrite the markdown of a results JSON; returns the markdown's path."""
    results = json.loads(path.read_text())
    md = path.with_suffix(".md")
    md.write_text(markdown(results))
    if rst_path is not None:
        rst_path.write_text(rst(results))
    return md


# --------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------


def same_budget(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``--update`` may add rows: the existing table's step budget and evaluation are this run's."""
    keys = ("epochs", "steps_per_epoch", "eval_trials", "quick")
    before, now = {k: old.get(k) for k in keys}, {k: new[k] for k in keys}
    if before != now:
        print(f"--update: the existing table has budget {before}, this run {now}: not one table", file=sys.stderr)
    return before == now


def prepare_dataset() -> None:
    """Write the synthetic dataset once, before parallel runs would all try to."""
    from vireid_layers.recipes import QUICK_RUN, read_dataset

    read_dataset("synthetic", None, height=QUICK_RUN["height"], width=QUICK_RUN["width"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_one is not None:
        spec = json.loads(args.run_one)
        row = run_one(spec)
        (Path(spec["run_dir"]) / "table-row.json").write_text(json.dumps(row))
        return 0
    if args.render is not None:
        print(f"wrote {render(args.render, args.rst)}")
        return 0
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    suite = f"{SUITE}-quick" if args.quick else SUITE
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="methods-table-")) if args.quick else DEFAULT_OUT)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{suite}--{machine_slug(device)}--cpu.json"
    plan = budget(args)
    settings = {**plan, "batch": "8 identities x 2 images x 2 modalities", "seeds": args.seeds}
    settings.update(threads=args.threads, jobs=args.jobs, quick=args.quick)
    previous = json.loads(path.read_text()) if args.update and path.is_file() else None
    if previous is not None and not same_budget(previous["settings"], settings):
        return 2
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="methods-table-runs-"))
    specs = plan_runs(args, plan, runs_dir)
    if not specs:
        print("nothing to run", file=sys.stderr)
        return 2
    prepare_dataset()
    load_start, start = os.getloadavg()[0], time.perf_counter()
    print(f"{len(specs)} runs of {plan['steps']} steps, {args.jobs} at a time, run directories in {runs_dir}")

    new_runs: list[dict[str, Any]] = []
    rows = sorted({spec["row"] for spec in specs})
    lock = threading.Lock()

    def save() -> dict[str, Any]:
        """Write the JSON and the markdown with the runs so far (after every run: an interruption keeps them)."""
        metadata = run_metadata(device, ["fp32"], loadavg_start=load_start, loadavg_end=os.getloadavg()[0])
        errors = validate_metadata(metadata)
        if errors:
            raise SystemExit("\n".join(errors))
        done = len(new_runs) == len(specs)
        if previous is not None:
            keys = {(r["row"], r["seed"]) for r in new_runs}
            kept = [r for r in previous["runs"] if (r["row"], r["seed"]) not in keys]
            rerun = {
                "timestamp_utc": metadata["timestamp_utc"],
                "commit": metadata["commit"],
                "command": metadata["command"],
                "rows": rows,
                "processor": metadata["machine"]["processor"],
                "versions": metadata["versions"],
                "threads": args.threads,
                "jobs": args.jobs,
                "loadavg_start": load_start,
                "loadavg_end": metadata["loadavg_end"],
                "runtime_s": time.perf_counter() - start,
                "complete": done,
            }
            results = {**previous, "runs": kept + new_runs, "reruns": [*previous.get("reruns", []), rerun]}
        else:
            results = {
                "suite": suite,
                "metadata": metadata,
                "settings": settings,
                "total_runtime_s": time.perf_counter() - start,
                "reproduce": reproduce_command(args, plan),
                "runs": list(new_runs),
            }
        results["complete"] = done and all(r.get("status") == "ok" for r in results["runs"])
        path.write_text(json.dumps(results, indent=2) + "\n")
        render(path, args.rst)
        return results

    def one(spec: dict[str, Any]) -> dict[str, Any]:
        row = launch(spec)
        shown = (
            f"Rank-1 {row['rank1']:.2f} mAP {row['mAP']:.2f} mINP {row['mINP']:.2f} {row['step_s']:.3f} s/step "
            f"{row['wall_s']:.0f} s"
            if row["status"] == "ok"
            else row["error"]
        )
        print(f"{spec['row']} seed {spec['seed']}: {shown}", flush=True)
        row = {**row, "commit": git_commit()["sha"]}
        with lock:
            new_runs.append(row)
            save()
        return row

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, specs))
    results = save()
    md = path.with_suffix(".md")
    print(f"wrote {path} and {md}")
    print(md.read_text().split("## Runs")[0])
    remaining = [m for m in PAPER_ORDER if not any(r["row"] == m for r in results["runs"])]
    if remaining:
        print("add the other methods with:\n  " + reproduce_command(args, plan, remaining))
    return 0 if all(r["status"] == "ok" for r in new_runs) else 1


if __name__ == "__main__":
    sys.exit(main())
