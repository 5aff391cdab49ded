"""Evaluate a checkpoint (ours or the official DEEN one) on a dataset and protocol, and print the results table.

Checkpoints:

* ``last.pt`` / ``best.pt`` written by :class:`~vireid_layers.engine.Trainer` (the ``"model"`` entry is
  used), or a bare state dict of :class:`~vireid_layers.models.DEEN` / :class:`~vireid_layers.models.AGW`.
  When the checkpoint sits in a run directory, its ``config.json`` gives the model, its construction
  arguments (backbone, variant, forms), the image size, the dataset, the protocol and the feature; every
  command-line option overrides it.
* an official DEEN checkpoint (``--official``), loaded through :func:`vireid_layers.compat.load_official_deen`
  into a ResNet-50 DEEN with the official MFA; its number of classes is the dataset's number of training
  identities. Without the flag, a file with the official ``base_resnet.`` keys is refused with that hint.

The number of classes of our checkpoints is read from the classifier's weight. The protocol is the dataset's
usual one (:func:`vireid_layers.evaluation.protocol_for_dataset`): SYSU-MM01 all/indoor search over
``--trials`` seeded single-shot galleries, LLCM over ``--trials`` galleries, RegDB split ``--trial``;
``--direction`` switches queries and gallery (and their stems). ``--rerank`` re-ranks with k-reciprocal
encoding. The table shows mean ± std over the galleries; ``--json PATH`` writes every trial's numbers.

Examples::

    python examples/evaluate.py runs/deen-synthetic-seed0/last.pt
    python examples/evaluate.py runs/agw-sysu-seed0/best.pt --root /data/SYSU-MM01 --mode indoor --flip
    python examples/evaluate.py sysu_deen_p4_n6_lr_0.1_seed_0_best.t --official --dataset sysu --root /data/SYSU-MM01
    python examples/evaluate.py regdb_trial3.pt --model agw --dataset regdb --root /data/RegDB --trial 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vireid_layers.compat import load_official_deen
from vireid_layers.data import build_test_transform
from vireid_layers.engine import ProtocolEvaluator, load_checkpoint, strip_prefixes
from vireid_layers.evaluation import k_reciprocal_rerank, negative_cosine_similarity, protocol_for_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/common.py, also when loaded by path
import common

#: Test features of each model and the default one (the official selection feature).
FEATURES = {"deen": ("official", "plain"), "agw": ("fc", "pool")}
#: The official test image size (height, width) of each model, used when no config.json gives one.
OFFICIAL_SIZES = {"deen": (384, 144), "agw": (288, 144)}


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option left out falls back to the run's ``config.json``, then to a default."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="last.pt / best.pt of a run, a state dict, or an official DEEN checkpoint")
    parser.add_argument("--model", choices=common.MODELS, help="the network (default: from config.json)")
    parser.add_argument("--official", action="store_true", help="an official DEEN checkpoint (implies --model deen)")
    parser.add_argument("--config", help="the run's config.json (default: next to the checkpoint, if present)")
    parser.add_argument("--dataset", help=f"one of {list(common.DATASETS)} (default: from config.json)")
    parser.add_argument("--root", help="the dataset folder (default: from config.json; the cache for synthetic)")
    parser.add_argument("--mode", choices=("all", "indoor"), help="SYSU-MM01 search mode (default: all)")
    parser.add_argument("--direction", choices=("auto", "i2v", "v2i"), help="query -> gallery modality")
    parser.add_argument("--trial", type=int, help="RegDB split, 1..10 (default: from config.json, else 1)")
    parser.add_argument("--trials", type=int, default=10, help="galleries averaged (SYSU-MM01, LLCM, synthetic)")
    parser.add_argument("--feature", help="deen: official | plain; agw: fc | pool (default: the official one)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="add the flipped image")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)")
    parser.add_argument("--backbone", help="timm backbone (default: from config.json, else resnet50)")
    parser.add_argument("--variant", choices=("auto", "sysu", "regdb"), help="DEEN variant (default: auto)")
    parser.add_argument("--height", type=int, help="test image height (default: config.json, else official)")
    parser.add_argument("--width", type=int, help="test image width (default: config.json, else official)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=0, help="loader worker processes")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA if available)")
    parser.add_argument("--json", dest="json_path", help="write the results (every trial) to this JSON file")
    return parser


def _read_config(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.config) if args.config else Path(args.checkpoint).parent / "config.json"
    if args.config and not path.is_file():
        common.fail(f"--config {args.config!r} does not exist")
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        common.fail(f"{path} is not valid JSON ({error})")
    if not isinstance(config, dict):
        common.fail(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def _check_args(args: argparse.Namespace) -> None:
    for name, value, minimum in (
        ("trials", args.trials, 1),
        ("batch-size", args.batch_size, 1),
        ("workers", args.workers, 0),
    ):
        if value < minimum:
            common.fail(f"--{name} must be >= {minimum}, got {value}")
    if args.json_path is not None and not Path(args.json_path).resolve().parent.is_dir():
        common.fail(f"--json {args.json_path!r}: the folder does not exist")


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The evaluation settings: the command line over the run's ``config.json`` over the defaults, validated."""
    _check_args(args)
    if not Path(args.checkpoint).is_file():
        common.fail(f"checkpoint {args.checkpoint!r} does not exist")
    config = _read_config(args)
    model = "deen" if args.official else args.model or config.get("model")
    if args.official and args.model == "agw":
        common.fail("--official loads an official DEEN checkpoint; it cannot be combined with --model agw")
    if model is None and "mfa_form" in config:  # a DEEN run written before config.json recorded the model
        model = "deen"
    if model not in common.MODELS:
        common.fail(f"--model is required (one of {list(common.MODELS)}): no config.json names the network")
    settings = {**config, "model": model}
    cli = {
        "dataset": args.dataset,
        "mode": args.mode,
        "direction": args.direction,
        "trial": args.trial,
        "feature": args.feature,
        "flip": args.flip,
        "backbone": args.backbone,
        "variant": args.variant,
        "height": args.height,
        "width": args.width,
    }
    if args.dataset is not None and args.dataset != config.get("dataset"):
        settings["root"] = None  # the run's root belongs to its own dataset
    settings.update({k: v for k, v in cli.items() if v is not None})
    if args.root is not None:
        settings["root"] = args.root
    return _validate(settings)


def _validate(settings: dict[str, Any]) -> dict[str, Any]:
    model = settings["model"]
    if "dataset" not in settings:
        common.fail(f"--dataset is required (one of {list(common.DATASETS)}): no config.json names it")
    common.check_dataset(settings["dataset"], settings.get("root"))
    for name, default in zip(("height", "width"), OFFICIAL_SIZES[model], strict=True):
        settings.setdefault(name, default)
        if not isinstance(settings[name], int) or settings[name] < 1:
            common.fail(f"--{name} must be >= 1, got {settings[name]!r}")
    settings.setdefault("backbone", "resnet50")
    settings.setdefault("feature", FEATURES[model][0])
    if settings["feature"] not in FEATURES[model]:
        common.fail(
            f"--feature must be one of {list(FEATURES[model])} for --model {model}, got {settings['feature']!r}"
        )
    settings.setdefault("mode", "all")
    if settings["mode"] != "all" and settings["dataset"] not in ("sysu", "synthetic"):
        common.fail(f"--mode {settings['mode']} exists only for SYSU-MM01 (and synthetic), not {settings['dataset']}")
    settings.setdefault("direction", "auto")
    settings.setdefault("trial", 1)
    settings.setdefault("flip", False)
    if settings["dataset"] == "regdb" and not 1 <= settings["trial"] <= 10:
        common.fail(f"--trial must be in 1..10 for RegDB, got {settings['trial']}")
    return settings


def _state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The model's state dict from a Trainer checkpoint (``"model"``) or a bare / wrapped state dict."""
    for entry in ("model", "state_dict", "net"):
        if isinstance(checkpoint.get(entry), Mapping):
            checkpoint = checkpoint[entry]
            break
    return strip_prefixes(checkpoint)


def load_model(settings: dict[str, Any], checkpoint: str, *, official: bool, num_train_identities: int) -> nn.Module:
    """Build the model of ``settings`` and load ``checkpoint`` into it (strictly).

    Raises:
        ValueError: the file cannot be read safely, holds no DEEN / AGW state dict, or does not fit the model.
    """
    if official:
        model = common.build_model("deen", num_train_identities, settings, pretrained=False)
        try:
            load_official_deen(model, checkpoint)
        except RuntimeError as error:  # load_state_dict: missing keys or shapes
            raise ValueError(f"{checkpoint!r} does not fit the official DEEN ({error})") from error
        return model
    try:
        state = _state_dict(load_checkpoint(checkpoint))
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"cannot read {checkpoint!r} with torch.load(weights_only=True): {error}. For an official DEEN "
            "checkpoint (which stores NumPy metrics) pass --official"
        ) from error
    if any(k.startswith("base_resnet.") for k in state):
        raise ValueError(f"{checkpoint!r} is an official DEEN checkpoint: pass --official")
    weight = state.get("classifier.weight")
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(f"{checkpoint!r} has no 2-D classifier.weight: not a DEEN / AGW state dict")
    model = common.build_model(settings["model"], int(weight.shape[0]), settings, pretrained=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"{checkpoint!r} does not fit a {settings['model'].upper()} with backbone "
            f"{settings.get('backbone', 'resnet50')!r} (pass --model / --backbone / --variant, or keep the run's "
            f"config.json next to it): {error}"
        ) from error
    return model


def evaluate(settings: dict[str, Any], args: argparse.Namespace) -> Any:
    """Read the dataset, load the model, run the protocol; returns the ``ProtocolResult``."""
    dataset = common.read_dataset(
        settings["dataset"],
        settings.get("root"),
        height=settings["height"],
        width=settings["width"],
        trial=settings["trial"],
    )
    model = load_model(
        settings, args.checkpoint, official=args.official, num_train_identities=dataset.num_train_identities
    )
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    protocol = protocol_for_dataset(
        settings["dataset"], direction=settings["direction"], mode=settings["mode"], num_trials=args.trials
    )
    evaluator = ProtocolEvaluator(
        protocol,
        dataset,
        build_test_transform(settings["height"], settings["width"]),
        embed=common.embedder(settings["feature"]),
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=device,
        flip="sum" if settings["flip"] else False,
        distance=k_reciprocal_rerank if args.rerank else negative_cosine_similarity,
    )
    return evaluator(model.to(device).eval())


def main(argv: list[str] | None = None) -> int:
    """Parse, validate, evaluate, print (and write) the results; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = resolve_settings(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        result = evaluate(settings, args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    described = (
        f"{settings['model'].upper()} ({settings.get('backbone', 'resnet50')}, feature {settings['feature']}"
        f"{', flip' if settings['flip'] else ''}{', re-ranked' if args.rerank else ''}) from {args.checkpoint}"
    )
    print(described)
    print(result.format_table())
    print(f"evaluated in {time.perf_counter() - start:.1f}s")
    if args.json_path is not None:
        payload = {
            "checkpoint": str(args.checkpoint),
            "official": bool(args.official),
            "settings": {
                k: settings.get(k)
                for k in (
                    "model",
                    "dataset",
                    "root",
                    "mode",
                    "direction",
                    "trial",
                    "feature",
                    "flip",
                    "backbone",
                    "height",
                    "width",
                )
            },
            "rerank": bool(args.rerank),
            "results": result.as_dict(),
        }
        Path(args.json_path).write_text(json.dumps(payload, indent=2, default=str))
        print(f"results written to {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
