"""Benchmark the DDAG, MPANet, MSO and AGW blocks at the methods' real shapes (forward and forward+backward).

Shapes: DDAG 64 images at 288x144 (layer4 map 64x2048x18x9, 395 classes); MPANet 128 images at 384x128
(maps 128x1024x24x8 / 128x2048x24x8, 14,336-d features); MSO 64 images at 288x144 (stem 64x64x72x36);
AGW 64 images at 288x144 (layer2 64x512x36x18, layer3 64x1024x18x9). Same methodology and helpers as
``run.py`` (``common.py``); results go to ``results/methods--<machine>--<device>.{json,md}``.

Usage: ``python benchmarks/methods_bench.py [--device cpu|cuda] [--quick] [--threads N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine_slug, peak_memory, run_metadata, time_case

import vireid_layers as vl

Case = tuple[str, str, str, Callable[[torch.device, bool], Callable[[], Any]]]


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

    pef_shape = f"features {pef_b}×64×72×36, images {pef_b}×3×288×144" + (
        f" (batch {pef_b} on CPU, {mso_b} on CUDA)" if cpu and not quick else ""
    )
    return [
        ("DDAG", "IWPA(2048, parts=3)", f"{ddag_b}×2048×18×9 + {ddag_b}×2048", iwpa),
        ("DDAG", "CGSA(2048, 395) + GraphAttentionLoss", f"{ddag_b}×2048, 8 ids × 8", cgsa),
        ("MPANet", "MAM(2048)", f"{mpa_b}×2048×24×8", mam),
        ("MPANet", "PAM(2048) + SeparationLoss", f"{mpa_b}×2048×24×8 → {mpa_b}×14336", pam),
        ("MPANet", "CenterClusterLoss", f"{mpa_b}×14336, 16 ids × 8", center),
        ("MPANet", "ModalityClassifiers + MutualMeanLoss", f"{mpa_b}×14336, 395 classes", modality),
        ("MSO", "SobelEdges", f"{mso_b}×3×288×144", sobel),
        ("MSO", "PEFLoss (conv1_2 entry)", pef_shape, pef),
        ("MSO", "CMCCLoss", f"{mso_b}×2048, 8 ids × (4+4)", cmcc),
        ("AGW", "GeM(p=3)", f"{ddag_b}×2048×18×9", gem),
        ("AGW", "NonLocal official, layer2", f"{ddag_b}×512×36×18", non_local("official", 512, 36, 18)),
        ("AGW", "NonLocal corrected, layer2", f"{ddag_b}×512×36×18", non_local("corrected", 512, 36, 18)),
        ("AGW", "NonLocal official, layer3", f"{ddag_b}×1024×18×9", non_local("official", 1024, 18, 9)),
        ("AGW", "NonLocal corrected, layer3", f"{ddag_b}×1024×18×9", non_local("corrected", 1024, 18, 9)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (smoke run)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: keep the default)")
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or (Path("/tmp/vireid-bench-quick") if args.quick else Path(__file__).parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for method, name, shape, make in cases(args.quick, device.type == "cpu"):
        for dtype in ("fp32", "bf16"):
            for mode in ("fwd", "fwd+bwd"):
                grad = mode == "fwd+bwd"
                body = make(device, grad)

                def call(body: Callable[[], Any] = body, grad: bool = grad, dtype: str = dtype) -> Any:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                        out_ = body()
                    if grad:
                        (out_ if out_.ndim == 0 else out_.float().sum()).backward()
                    return out_

                with torch.no_grad() if not grad else torch.enable_grad():
                    call()  # warm-up
                    timing = time_case(call, device=device, min_run_time=args.min_run_time, label=name)
                    peak_bytes, _ = peak_memory(call, device=device)
                row = {"method": method, "case": name, "shape": shape, "dtype": dtype, "pass": mode}
                row |= {"median_ms": timing["median_s"] * 1e3, "runs": timing["runs"]}
                row |= {"iqr_ms": None if timing["iqr_s"] is None else timing["iqr_s"] * 1e3}
                row["peak_mib"] = peak_bytes / 2**20
                rows.append(row)
                print(
                    f"{method:7s} {name:40s} {dtype} {mode:8s} {row['median_ms']:10.2f} ms  {row['peak_mib']:9.1f} MiB"
                )
    meta = run_metadata(device, ["fp32", "bf16"], suite="methods", quick=args.quick)
    meta["total_runtime_s"] = time.perf_counter() - start
    slug = f"methods--{machine_slug(device)}--{device.type}"
    (out / f"{slug}.json").write_text(json.dumps({"metadata": meta, "results": rows}, indent=2, default=str))
    lines = [f"# `methods` benchmarks — {machine_slug(device)} — {device.type}", ""]
    lines += ["Generated by `benchmarks/methods_bench.py`; methodology in `benchmarks/README.md`.", ""]
    lines += [f"- {k}: `{v}`" for k, v in meta.items() if not isinstance(v, (dict, list))]
    lines += ["", "| method | case | shape | dtype | pass | median ms | IQR ms | runs | peak MiB |"]
    lines += ["|---|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        iqr = "—" if r["iqr_ms"] is None else f"{r['iqr_ms']:.3g}"
        lines.append(
            f"| {r['method']} | {r['case']} | {r['shape']} | {r['dtype']} | {r['pass']} | {r['median_ms']:.4g} | "
            f"{iqr} | {r['runs']} | {r['peak_mib']:.4g} |"
        )
    (out / f"{slug}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / slug}.json and .md in {meta['total_runtime_s']:.0f} s")


if __name__ == "__main__":
    main()
