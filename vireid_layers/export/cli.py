"""``vireid-export``: a saved model's embedding of one modality to ONNX (checked with ONNX Runtime) or ``.pt2``.

Usage::

    vireid-export SOURCE --modality infrared [-o deen-infrared.onnx] [--format onnx|pt2] [--mode official]
                  [--flip] [--height H --width W] [--opset 18] [--no-check] [--revision REV]

``SOURCE`` is a directory written by :func:`~vireid_layers.hub.save_pretrained` (or a Hugging Face Hub id,
with the ``hub`` extra); its ``config.json`` rebuilds the model and gives the input size. One file per
modality: run it twice for a visible and an infrared graph. After an ONNX export the ONNX Runtime output is
compared with the eager model in float64 on batches of 1 and 3 images (:func:`check_onnx_parity`); the exit
status is 1 when the difference exceeds the tolerance, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .embedding import export_embedding
from .onnx import ONNX_OPSET, PARITY_ATOL, check_onnx_parity, export_onnx

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``vireid-export``."""
    parser = argparse.ArgumentParser(
        prog="vireid-export",
        description="Export a saved model's embedding of one modality to ONNX (checked with ONNX Runtime) or .pt2.",
    )
    parser.add_argument("source", help="a save_pretrained directory (or a Hugging Face Hub id)")
    parser.add_argument("--modality", required=True, choices=("visible", "infrared"), help="the inputs' modality")
    parser.add_argument("-o", "--output", help="the output file (default: <model>-<modality>.onnx / .pt2)")
    parser.add_argument("--format", choices=("onnx", "pt2"), default="onnx", help="ONNX or a torch.export archive")
    parser.add_argument("--mode", help="model.embed's mode (DEEN: plain | official; AGW: fc | pool)")
    parser.add_argument("--flip", action="store_true", help="add the embedding of the flipped images")
    parser.add_argument("--height", type=int, help="input height (default: config.json's preprocess)")
    parser.add_argument("--width", type=int, help="input width (default: config.json's preprocess)")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help=f"ONNX opset (default {ONNX_OPSET})")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check")
    parser.add_argument("--revision", help="Hub revision (only for a Hub id)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Export, check and report; returns the exit status."""
    from ..hub import from_pretrained, load_config

    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.source, revision=args.revision)
        model = from_pretrained(args.source, revision=args.revision)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    preprocess = config.get("preprocess", {})
    height = args.height or preprocess.get("height")
    width = args.width or preprocess.get("width")
    if not height or not width:
        print("error: --height and --width are needed: config.json has no 'preprocess' size", file=sys.stderr)
        return 2
    output = Path(args.output or f"{config['model'].lower()}-{args.modality}.{args.format}")
    options = {"height": height, "width": width, "mode": args.mode, "flip": args.flip}
    try:
        program = export_embedding(model, args.modality, **options)
        if args.format == "pt2":
            torch.export.save(program, str(output))
        else:
            export_onnx(model, output, args.modality, opset=args.opset, program=program, **options)
    except (TypeError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{config['model']} embedding of {args.modality} images ({height}x{width}, mode {args.mode or 'default'}"
        f"{', flip' if args.flip else ''}) written to {output}"
    )
    if args.format != "onnx" or args.no_check:
        return 0
    try:
        parity = check_onnx_parity(model, output, args.modality, **options)
    except ImportError as error:
        print(f"parity check skipped: {error}")
        return 0
    verdict = "PASS" if parity.passed else "FAIL"
    print(
        f"ONNX Runtime vs eager float64, batches {list(parity.batch_sizes)}: max |diff| {parity.max_abs_diff:.2e} "
        f"(tolerance {PARITY_ATOL:.0e}), min cosine {parity.min_cosine:.8f}: {verdict}"
    )
    return 0 if parity.passed else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
