"""Benchmark the DDAG, MPANet, MSO and AGW blocks at the methods' real shapes (forward and forward+backward).

Shapes: DDAG 64 images at 288x144 (layer4 map 64x2048x18x9, 395 classes; the graph of 8 identities x 8 images
with 4 attention heads of 512); MPANet 128 images at 384x128 (maps 128x1024x24x8 / 128x2048x24x8, 14,336-d
features); MSO 64 images at 288x144 (stem 64x64x72x36); AGW 64 images at 288x144 (layer2 64x512x36x18, layer3
64x1024x18x9). Same methodology and helpers as ``run.py`` (``common.py``); results go to
``results/methods--<machine>--<device>.{json,md}``.

Host-side helpers (the DDAG graph-loss weight and its per-epoch tracker, MPANet's mean-classifier momentum,
the fixed Sobel kernels) are timed as one ``call`` row each: they are scalar arithmetic or a constant, with no
backward pass and no dtype.

Usage: ``python benchmarks/methods_bench.py [--device cpu|cuda] [--quick] [--threads N] [--out DIR]
[--filter SUBSTR [--update]] [--render JSON]``. ``--update`` re-measures the cases selected by ``--filter``
into the existing results file (their rows replaced or added, the re-run recorded under ``metadata.reruns``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine_slug, peak_memory, run_metadata, time_case, validate_metadata

import vireid_layers as vl
from vireid_layers.data import ImageSample
from vireid_layers.models import DDAGCriterion, DDAGOutput, MPANetCriterion, MPANetOutput


@dataclass(frozen=True)
class Case:
    """One benchmarked block: ``make(device, grad)`` builds it and returns the callable to measure.

    ``host`` cases are host-side helpers: one ``call`` row, no dtype or backward variants.
    """

    method: str
    name: str
    shape: str
    make: Callable[[torch.device, bool], Callable[[], Any]]
    host: bool = False


#: Public names of ``vireid_layers`` that this suite benchmarks (a module and the functional it calls count
#: together); ``run.py`` reports the public names that no suite covers.
COVERED = frozenset(
    {
        "IWPA",
        "CGSA",
        "graph_attention",
        "GraphAttentionLoss",
        "graph_attention_loss",
        "dynamic_aggregation_weight",
        "DynamicDualAggregation",
        "MAM",
        "PAM",
        "SeparationLoss",
        "separation_loss",
        "CenterClusterLoss",
        "center_cluster_loss",
        "ModalityClassifiers",
        "MutualMeanLoss",
        "mutual_mean_loss",
        "mean_classifier_momentum",
        "SobelEdges",
        "sobel_edges",
        "sobel_kernels",
        "PEFLoss",
        "CMCCLoss",
        "cmcc_loss",
        "GeM",
        "gem",
        "NonLocal",
    }
)


def _grad(t: torch.Tensor, grad: bool) -> torch.Tensor:
    return t.requires_grad_(grad)


def _ids(n: int, per_id: int) -> torch.Tensor:
    return torch.arange(n // per_id).repeat_interleave(per_id)


def _mods(n: int, per_id: int) -> torch.Tensor:
    return torch.arange(2).repeat_interleave(per_id // 2).repeat(n // per_id)


def cases(quick: bool, cpu: bool) -> list[Case]:  # noqa: C901 - one small factory per block, kept together
    s = 4 if quick else 1  # shrink factor for --quick
    ddag_b, mpa_b, mso_b = 64 // s, 128 // s, 64 // s
    pef_b = max(mso_b // 4, 2) if cpu else mso_b

    def iwpa(dev: torch.device, g: bool) -> Callable[[], Any]:
        m = vl.IWPA(2048 // s).to(dev)
        x, f = _grad(torch.randn(ddag_b, 2048 // s, 18, 9, device=dev), g), torch.randn(ddag_b, 2048 // s, device=dev)
        return lambda: m(x, f)

    def cgsa(dev: torch.device, g: bool) -> Callable[[], Any]:
        m = vl.CGSA(2048 // s, 395).to(dev)
        x, y = _grad(torch.randn(ddag_b, 2048 // s, device=dev), g), _ids(ddag_b, 8).to(dev)
        return lambda: vl.graph_attention_loss(m(x, y), y)

    def ddag_criterion(dev: torch.device, g: bool) -> Callable[[], Any]:
        criterion = DDAGCriterion(graph_weight=0.5).to(dev)  # the weight of a later epoch: the graph term counts
        y = _ids(ddag_b, 8).to(dev)
        pooled = _grad(torch.rand(ddag_b, 2048 // s, device=dev), g)
        logits, part_logits = (_grad(torch.randn(ddag_b, 395, device=dev), g) for _ in range(2))
        graph = _grad(torch.randn(ddag_b, 395, device=dev).log_softmax(1), g)
        out, batch = DDAGOutput(pooled, pooled, logits, pooled, part_logits, graph), ImageSample(None, y, y, y)
        return lambda: criterion.total(criterion(out, batch))

    def mpanet_criterion(dev: torch.device, g: bool) -> Callable[[], Any]:
        criterion = MPANetCriterion().to(dev)
        y, m = _ids(mpa_b, 8).to(dev), _mods(mpa_b, 8).to(dev)
        features = _grad(torch.randn(mpa_b, 14336 // s, device=dev), g)
        masks = _grad(torch.rand(mpa_b, 6, 24, 8, device=dev), g)
        logits, own = (_grad(torch.randn(mpa_b, 395, device=dev), g) for _ in range(2))
        out = MPANetOutput(features, features, logits, masks, own, torch.randn(mpa_b, 395, device=dev))
        batch = ImageSample(None, y, y, m)
        return lambda: criterion.total(criterion(out, batch))

    def mam(dev: torch.device, g: bool) -> Callable[[], Any]:
        m = vl.MAM(2048 // s).to(dev)
        x = _grad(torch.randn(mpa_b, 2048 // s, 24, 8, device=dev), g)
        return lambda: m(x)

    def pam(dev: torch.device, g: bool) -> Callable[[], Any]:
        m = vl.PAM(2048 // s).to(dev)
        x = _grad(torch.randn(mpa_b, 2048 // s, 24, 8, device=dev), g)
        return lambda: (lambda o: o.features.sum() + vl.separation_loss(o.masks))(m(x))

    def center(dev: torch.device, g: bool) -> Callable[[], Any]:
        x, y = _grad(torch.randn(mpa_b, 7 * 2048 // s, device=dev), g), _ids(mpa_b, 8).to(dev)
        return lambda: vl.center_cluster_loss(x, y)

    def modality(dev: torch.device, g: bool) -> Callable[[], Any]:
        m = vl.ModalityClassifiers(7 * 2048 // s, 395).to(dev)
        x, y, md = _grad(torch.randn(mpa_b, 7 * 2048 // s, device=dev), g), _ids(mpa_b, 8), _mods(mpa_b, 8)
        y, md = y.to(dev), md.to(dev)

        def run() -> torch.Tensor:
            o = m(x, y, md)
            return o.visible_loss + o.infrared_loss + vl.mutual_mean_loss(o.logits, o.mean_logits, md)

        return run

    def sobel(dev: torch.device, g: bool) -> Callable[[], Any]:
        m = vl.SobelEdges().to(dev)
        x = _grad(torch.randn(mso_b, 3, 288 // s, 144 // s, device=dev), g)
        return lambda: m(x)

    def pef(dev: torch.device, g: bool) -> Callable[[], Any]:
        m = vl.PEFLoss().to(dev)
        f = _grad(torch.randn(pef_b, 64, 72 // s * 2 if quick else 72, 36 // s * 2 if quick else 36, device=dev), g)
        img = torch.randn(pef_b, 3, f.shape[2] * 4, f.shape[3] * 4, device=dev)
        return lambda: m(f, img)

    def cmcc(dev: torch.device, g: bool) -> Callable[[], Any]:
        x, y, md = _grad(torch.randn(mso_b, 2048, device=dev), g), _ids(mso_b, 8).to(dev), _mods(mso_b, 8).to(dev)
        return lambda: vl.cmcc_loss(x, y, md)

    def gem(dev: torch.device, g: bool) -> Callable[[], Any]:
        m = vl.GeM().to(dev)
        x = _grad(torch.rand(ddag_b, 2048 // s, 18, 9, device=dev), g)
        return lambda: m(x)

    def non_local(form: str, c: int, h: int, w: int) -> Callable[[torch.device, bool], Callable[[], Any]]:
        def make(dev: torch.device, g: bool) -> Callable[[], Any]:
            m = vl.NonLocal(c // s, form=form).to(dev)
            x = _grad(torch.randn(ddag_b, c // s, h, w, device=dev), g)
            return lambda: m(x)

        return make

    def graph_attention(dev: torch.device, g: bool) -> Callable[[], Any]:
        heads, d = 4, 512 // s
        y = _ids(ddag_b, 8).to(dev)
        h = _grad(torch.randn(heads, ddag_b, d, device=dev), g)
        a_src, a_dst = _grad(torch.randn(heads, d, device=dev), g), _grad(torch.randn(heads, d, device=dev), g)
        mask = y.unsqueeze(1) == y.unsqueeze(0)
        return lambda: vl.graph_attention(h, mask, a_src, a_dst, dropout=0.2, training=True)

    def dynamic_weight(dev: torch.device, g: bool) -> Callable[[], Any]:
        return lambda: vl.dynamic_aggregation_weight(3.0)

    def dynamic_tracker(dev: torch.device, g: bool) -> Callable[[], Any]:
        tracker, loss = vl.DynamicDualAggregation(), torch.tensor(3.0, device=dev)

        def run() -> float:
            tracker.update(loss)
            return tracker.weight

        return run

    def momentum(dev: torch.device, g: bool) -> Callable[[], Any]:
        return lambda: vl.mean_classifier_momentum(120)

    def sobel_functional(dev: torch.device, g: bool) -> Callable[[], Any]:
        x = _grad(torch.randn(mso_b, 3, 288 // s, 144 // s, device=dev), g)
        return lambda: vl.sobel_edges(x, combine="magnitude")

    def kernels(dev: torch.device, g: bool) -> Callable[[], Any]:
        return lambda: vl.sobel_kernels(device=dev)

    pef_shape = f"features {pef_b}×64×72×36, images {pef_b}×3×288×144" + (
        f" (batch {pef_b} on CPU, {mso_b} on CUDA)" if cpu and not quick else ""
    )
    return [
        Case("DDAG", "IWPA(2048, parts=3)", f"{ddag_b}×2048×18×9 + {ddag_b}×2048", iwpa),
        Case("DDAG", "CGSA(2048, 395) + GraphAttentionLoss", f"{ddag_b}×2048, 8 ids × 8", cgsa),
        Case(
            "DDAG",
            "graph_attention (4 heads, dropout 0.2)",
            f"h 4×{ddag_b}×{512 // s}, mask {ddag_b}×{ddag_b} (8 ids × 8)",
            graph_attention,
        ),
        Case(
            "DDAG",
            "DDAGCriterion (CE + triplet + part + graph)",
            f"{ddag_b}×2048 pooled, 3 × {ddag_b}×395 logits, 8 ids × 8",
            ddag_criterion,
        ),
        Case("DDAG", "dynamic_aggregation_weight", "previous-epoch mean (float)", dynamic_weight, host=True),
        Case("DDAG", "DynamicDualAggregation.update + weight", "one batch loss (0-d tensor)", dynamic_tracker, True),
        Case("MPANet", "MAM(2048)", f"{mpa_b}×2048×24×8", mam),
        Case("MPANet", "PAM(2048) + SeparationLoss", f"{mpa_b}×2048×24×8 → {mpa_b}×14336", pam),
        Case("MPANet", "CenterClusterLoss", f"{mpa_b}×14336, 16 ids × 8", center),
        Case("MPANet", "ModalityClassifiers + MutualMeanLoss", f"{mpa_b}×14336, 395 classes", modality),
        Case("MPANet", "mean_classifier_momentum", "epoch (int)", momentum, host=True),
        Case(
            "MPANet",
            "MPANetCriterion (CE + CC + sep + L_v + L_i + MM)",
            f"{mpa_b}×14336 features, {mpa_b}×6×24×8 maps, 3 × {mpa_b}×395 logits, 16 ids × 8",
            mpanet_criterion,
        ),
        Case("MSO", "SobelEdges", f"{mso_b}×3×288×144", sobel),
        Case("MSO", "sobel_edges(combine='magnitude')", f"{mso_b}×3×288×144", sobel_functional),
        Case("MSO", "sobel_kernels", "4×1×3×3", kernels, host=True),
        Case("MSO", "PEFLoss (conv1_2 entry)", pef_shape, pef),
        Case("MSO", "CMCCLoss", f"{mso_b}×2048, 8 ids × (4+4)", cmcc),
        Case("AGW", "GeM(p=3)", f"{ddag_b}×2048×18×9", gem),
        Case("AGW", "NonLocal official, layer2", f"{ddag_b}×512×36×18", non_local("official", 512, 36, 18)),
        Case("AGW", "NonLocal corrected, layer2", f"{ddag_b}×512×36×18", non_local("corrected", 512, 36, 18)),
        Case("AGW", "NonLocal official, layer3", f"{ddag_b}×1024×18×9", non_local("official", 1024, 18, 9)),
        Case("AGW", "NonLocal corrected, layer3", f"{ddag_b}×1024×18×9", non_local("corrected", 1024, 18, 9)),
    ]


def measure(case: Case, device: torch.device, min_run_time: float) -> list[dict[str, Any]]:
    """The rows of one case: every dtype and pass, or one ``call`` row for a host-side helper."""
    variants = [("host", "call")] if case.host else [(d, m) for d in ("fp32", "bf16") for m in ("fwd", "fwd+bwd")]
    rows = []
    for dtype, mode in variants:
        grad = mode == "fwd+bwd"
        body = case.make(device, grad)

        def call(body: Callable[[], Any] = body, grad: bool = grad, dtype: str = dtype) -> Any:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                out_ = body()
            if grad:
                (out_ if out_.ndim == 0 else out_.float().sum()).backward()
            return out_

        with torch.no_grad() if not grad else torch.enable_grad():
            call()  # warm-up
            timing = time_case(call, device=device, min_run_time=min_run_time, label=case.name)
            peak_bytes, _ = peak_memory(call, device=device)
        row = {"method": case.method, "case": case.name, "shape": case.shape, "dtype": dtype, "pass": mode}
        row |= {"median_ms": timing["median_s"] * 1e3, "runs": timing["runs"]}
        row |= {"iqr_ms": None if timing["iqr_s"] is None else timing["iqr_s"] * 1e3}
        row["peak_mib"] = peak_bytes / 2**20
        row["num_threads"] = torch.get_num_threads()
        rows.append(row)
        print(
            f"{case.method:7s} {case.name:40s} {dtype:4s} {mode:8s} {row['median_ms']:10.4g} ms  "
            f"{row['peak_mib']:9.1f} MiB",
            flush=True,
        )
    return rows


def _fmt_ms(value: float, digits: int = 4) -> str:
    """Milliseconds with ``digits`` significant digits; microsecond-scale values in µs."""
    return f"{value:.{digits}g}" if value >= 0.01 else f"{value * 1e3:.3g} µs"


def markdown(results: dict[str, Any]) -> str:
    meta = results["metadata"]
    slug, device = meta["machine"]["slug"], meta["device"]["type"]
    lines = [f"# `methods` benchmarks — {slug} — {device}", ""]
    lines += ["Generated by `benchmarks/methods_bench.py`; methodology in `benchmarks/README.md`.", ""]
    commit = meta["commit"]
    lines += [
        f"- commit: `{commit['sha']}`" + (" (working tree with uncommitted changes)" if commit.get("dirty") else "")
    ]
    lines += [f"- {k}: `{v}`" for k, v in meta.items() if not isinstance(v, (dict, list))]
    lines += [f"- device: {meta['device']['name']}, {meta['device']['num_threads']} torch thread(s)"]
    for r in meta.get("reruns", []):
        lines.append(
            f"- re-measured: {len(r['cases'])} case(s) matching `{r['filter']}` at {r['timestamp_utc']} (`--update`), "
            f"commit `{r['commit']['sha'][:12]}`, {r['num_threads']} torch thread(s), load average "
            f"{r['loadavg_start']} → {r['loadavg_end']}"
            + (
                f", **on {r['processor']}, torch {r['versions']['torch']}**"
                if r.get("processor") and r["processor"] != meta["machine"]["processor"]
                else ""
            )
            + f": `{r['command']}`"
        )
    lines += ["", "| method | case | shape | dtype | pass | median ms | IQR ms | runs | peak MiB |"]
    lines += ["|---|---|---|---|---|---:|---:|---:|---:|"]
    for r in results["results"]:
        iqr = "—" if r["iqr_ms"] is None else _fmt_ms(r["iqr_ms"], 3)
        lines.append(
            f"| {r['method']} | {r['case']} | {r['shape']} | {r['dtype']} | {r['pass']} | {_fmt_ms(r['median_ms'])} | "
            f"{iqr} | {r['runs']} | {r['peak_mib']:.4g} |"
        )
    return "\n".join(lines) + "\n"


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _merge(base: dict[str, Any], rows: list[dict[str, Any]], order: list[str]) -> dict[str, Any]:
    """``base`` with ``rows`` replacing its rows of the same (case, dtype, pass), in the order of the cases."""
    key = lambda r: (r["case"], r["dtype"], r["pass"])  # noqa: E731
    merged = {key(r): r for r in base["results"]}
    merged.update({key(r): r for r in rows})
    rank = {name: i for i, name in enumerate(order)}
    variants = ["fp32/fwd", "fp32/fwd+bwd", "bf16/fwd", "bf16/fwd+bwd", "host/call"]
    ordered = sorted(
        merged.values(),
        key=lambda r: (rank.get(r["case"], len(rank)), variants.index(f"{r['dtype']}/{r['pass']}")),
    )
    return {**base, "results": ordered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (smoke run)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: keep the default)")
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--filter", default=None, help="only cases whose method or name contains SUBSTR")
    parser.add_argument("--update", action="store_true", help="merge the measured rows into the existing file")
    parser.add_argument("--render", type=Path, default=None, help="only rewrite the .md of an existing results JSON")
    args = parser.parse_args()
    if args.render is not None:
        args.render.with_suffix(".md").write_text(markdown(json.loads(args.render.read_text())))
        return
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or (Path("/tmp/vireid-bench-quick") if args.quick else Path(__file__).parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    slug = f"methods--{machine_slug(device)}--{device.type}"
    all_cases = cases(args.quick, device.type == "cpu")
    needle = (args.filter or "").lower()
    selected = [c for c in all_cases if needle in f"{c.method} {c.name}".lower()]
    loadavg_start = _loadavg()
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for case in selected:
        rows += measure(case, device, args.min_run_time)
    meta = run_metadata(device, ["fp32", "bf16"], suite="methods", quick=args.quick)
    meta |= {"total_runtime_s": time.perf_counter() - start, "loadavg_start": loadavg_start}
    meta["loadavg_end"] = _loadavg()
    json_path = out / f"{slug}.json"
    if args.update:
        base = json.loads(json_path.read_text())
        results = _merge(base, rows, [c.name for c in all_cases])
        results["metadata"].setdefault("reruns", []).append(
            {
                "timestamp_utc": meta["timestamp_utc"],
                "commit": meta["commit"],
                "command": meta["command"],
                "filter": args.filter,
                "cases": sorted({r["case"] for r in rows}),
                "num_threads": torch.get_num_threads(),
                "min_run_time_s": args.min_run_time,
                "loadavg_start": meta["loadavg_start"],
                "loadavg_end": meta["loadavg_end"],
                "runtime_s": meta["total_runtime_s"],
                "processor": meta["machine"]["processor"],
                "versions": meta["versions"],
            }
        )
    else:
        results = {"metadata": meta, "results": rows}
    errors = validate_metadata({k: v for k, v in results["metadata"].items() if k != "reruns"})
    json_path.write_text(json.dumps(results, indent=2, default=str, ensure_ascii=False) + "\n")
    (out / f"{slug}.md").write_text(markdown(results))
    print(f"wrote {out / slug}.json and .md in {meta['total_runtime_s']:.0f} s")
    if errors:
        raise SystemExit("metadata does not match benchmarks/results_schema.json:\n  " + "\n  ".join(errors))


if __name__ == "__main__":
    main()
