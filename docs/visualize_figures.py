"""Render the pictures of ``docs/visualize.rst``: every figure of :mod:`vireid_layers.visualize` for the quick
synthetic DEEN, once at random initialisation and once after training.

Usage (from the repository root)::

    python docs/visualize_figures.py --run-dir /tmp/viz-run

When the run directory has no ``last.pt`` yet, ``examples/train_deen.py --run-dir RUN`` trains it first (the
quick synthetic run: a few minutes on two CPU cores). The "before" network is built with the run's seed, as the
trainer builds it, so it is the network the run started from. The PNGs go to ``docs/_static/visualize/``
(``before_*.png`` and ``after_*.png``), each re-encoded as an optimised palette PNG when that keeps it under
150 KB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

import common  # noqa: E402  (examples/common.py)

from vireid_layers.data import build_test_transform  # noqa: E402
from vireid_layers.engine import load_checkpoint  # noqa: E402
from vireid_layers.evaluation import ProtocolEvaluator, protocol_for_dataset  # noqa: E402
from vireid_layers.visualize import save_evaluation_figures  # noqa: E402

MAX_BYTES = 150_000


def shrink(path: Path) -> None:
    """Re-encode a PNG with a 256-colour palette when that makes it smaller (figures have few colours)."""
    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    tmp = path.with_suffix(".tmp.png")
    palette.save(tmp, optimize=True)
    if tmp.stat().st_size < path.stat().st_size:
        tmp.replace(path)
    else:
        tmp.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="/tmp/viz-run", help="a run of examples/train_deen.py (trained if empty)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "_static" / "visualize"), help="where the PNGs go")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run_dir)
    if not (run / "last.pt").is_file():
        command = [sys.executable, str(ROOT / "examples" / "train_deen.py"), "--run-dir", str(run)]
        subprocess.run([*command, "--threads", str(args.threads)], check=True, cwd=ROOT)
    config = json.loads((run / "config.json").read_text())
    dataset = common.read_dataset("synthetic", None, height=config["height"], width=config["width"])
    evaluator = ProtocolEvaluator(
        protocol_for_dataset("synthetic", num_trials=1),
        dataset,
        build_test_transform(config["height"], config["width"]),
        embed=common.embedder(config["feature"]),
        batch_size=128,
    )
    torch.manual_seed(config["seed"])  # the trainer's seed: the network the run started from
    before = common.build_model("deen", dataset.num_train_identities, config)
    after = common.build_model("deen", dataset.num_train_identities, config)
    after.load_state_dict(load_checkpoint(run / "last.pt")["model"])
    out = Path(args.out)
    for model, label, prefix in ((before, "random init", "before_"), (after, "trained", "after_")):
        written = save_evaluation_figures(
            evaluator, model, out, subdir="", label=label, prefix=prefix, k=7, queries=4, activation_identities=6
        )
        energy = save_evaluation_figures(  # the map without a target: channel energy of the last stage
            evaluator,
            model,
            out,
            figures=["activation_maps"],
            subdir="",
            label=label,
            prefix=f"{prefix}energy_",
            activation_method="activation",
            activation_identities=6,
        )
        written.update({"energy_activation_maps": energy["activation_maps"]})
        for path in written.values():
            shrink(path)
            size = path.stat().st_size
            print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {size / 1000:.0f} KB")
            if size > MAX_BYTES:
                print(f"warning: {path.name} is above {MAX_BYTES // 1000} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
