"""Time one modality's retrieval embedding: eager ``model.embed``, the ``torch.export`` program and ONNX Runtime.

Usage::

    python benchmarks/deploy_bench.py [--quick] [--model deen|agw] [--batch N] [--threads N] [--min-run-time S]
                                      [--out benchmarks/results]

Cases (CPU, float32, eval mode, infrared stem, random BatchNorm statistics so every block computes):

* ``eager``: ``model.embed(images, 1, mode=...)`` under ``torch.inference_mode``;
* ``torch.export``: ``export_embedding(...).module()(images)``;
* ``onnxruntime``: the ``export_onnx`` file run by an ``onnxruntime.InferenceSession`` (CPU provider, the
  session built once; ``intra_op_num_threads`` = ``--threads``).

Shapes: ResNet-50 DEEN (official feature) at 384×144 or AGW at 288×144, batch 32 (``--quick``: ResNet-18 at
64×32, batch 8). Each row reports images per second from the median and the IQR; the ONNX row also records the
parity (largest difference from the eager model in float64). Nothing is asserted. Results go to
``<out>/deploy--<machine>--cpu.json`` and ``.md`` (``--quick``: a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):  # `common` and the in-tree `vireid_layers`
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402
from common import machine_slug, run_metadata, time_case  # noqa: E402
from torch import nn  # noqa: E402

from vireid_layers.export import check_onnx_parity, export_embedding, export_onnx  # noqa: E402
from vireid_layers.models import AGW, DEEN  # noqa: E402

CPU = torch.device("cpu")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("deen", "agw"), default="deen")
    parser.add_argument("--quick", action="store_true", help="ResNet-18, 64x32, batch 8; output to a temp dir")
    parser.add_argument("--batch", type=int, help="images per call (default 32, quick 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--min-run-time", type=float, help="blocked_autorange min_run_time (default 2, quick 0.2)")
    parser.add_argument("--out", help="output directory (default benchmarks/results; quick: a temporary one)")
    return parser.parse_args(argv)


def _randomized(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def build(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any]]:
    backbone = "resnet18" if args.quick else "resnet50"
    torch.manual_seed(0)
    if args.model == "deen":
        model, size, mode = DEEN(395, backbone=backbone), (384, 144), "official"
    else:
        model, size, mode = AGW(395, backbone=backbone), (288, 144), "fc"
    if args.quick:
        size = (64, 32)
    options = {"height": size[0], "width": size[1], "mode": mode}
    return _randomized(model), options


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    batch = args.batch or (8 if args.quick else 32)
    min_run_time = args.min_run_time or (0.2 if args.quick else 2.0)
    model, options = build(args)
    images = torch.randn(batch, 3, options["height"], options["width"], generator=torch.Generator().manual_seed(1))
    program = export_embedding(model, 1, **options)
    exported = program.module()
    rows: list[dict[str, Any]] = []

    def add(name: str, fn: Any, **extra: Any) -> None:
        timing = time_case(fn, device=CPU, min_run_time=min_run_time, label=name)
        rows.append({"case": name, "batch": batch, **timing, "images_per_s": batch / timing["median_s"], **extra})
        per_s = batch / timing["median_s"]
        print(f"{name:>13}: {1e3 * timing['median_s']:9.2f} ms / batch of {batch} ({per_s:.1f} img/s)")

    with torch.inference_mode():
        add("eager", lambda: model.embed(images, 1, mode=options["mode"]))
        add("torch.export", lambda: exported(images))
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed: no ONNX row (pip install 'vireid-layers[export]')")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(model, Path(tmp) / "model.onnx", 1, program=program, **options)
            parity = check_onnx_parity(model, path, 1, **options)
            session_options = ort.SessionOptions()
            session_options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
            feed = {"images": images.numpy()}
            add("onnxruntime", lambda: session.run(None, feed), parity_max_abs_diff=parity.max_abs_diff)
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp()) if args.quick else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"deploy{'-quick' if args.quick else ''}--{machine_slug(CPU)}--cpu"
    meta = run_metadata(CPU, ["fp32"], suite="deploy", model=args.model, options=options, threads=args.threads)
    stem.with_suffix(".json").write_text(json.dumps({"metadata": meta, "rows": rows}, indent=2, default=str))
    lines = [f"# deploy: {args.model} {options}, batch {batch}, {args.threads} thread(s)", ""]
    lines += ["| case | median ms | IQR ms | images/s |", "|:--|--:|--:|--:|"]
    for r in rows:
        iqr = "n/a" if r.get("iqr_s") is None else f"{1e3 * r['iqr_s']:.2f}"
        lines.append(f"| {r['case']} | {1e3 * r['median_s']:.2f} | {iqr} | {r['images_per_s']:.1f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"results written to {stem}.json / .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
