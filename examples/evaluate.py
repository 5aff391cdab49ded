"""Evaluate a checkpoint (ours or the official DEEN one) on a dataset and protocol, and print the results table.

Checkpoints:

* ``last.pt`` / ``best.pt`` written by a training run (the ``"model"`` entry is used), or a bare state dict of
  :class:`~vireid_layers.models.DEEN` / :class:`~vireid_layers.models.AGW`. When the checkpoint sits in a run
  directory, its ``config.json`` gives the recipe and its configuration (backbone, variant, forms, image size,
  dataset, protocol, feature); every command-line option overrides it.
* an official DEEN checkpoint (``--official``), loaded through :func:`vireid_layers.compat.load_official_deen`
  into a ResNet-50 DEEN with the official MFA; its number of classes is the dataset's number of training
  identities. Without the flag, a file with the official ``base_resnet.`` keys is refused with that hint.

The model and the evaluation are built by the run's recipe (:mod:`vireid_layers.recipes`). The number of classes
of our checkpoints is read from the classifier's weight. ``--json PATH`` writes every trial's numbers.

Examples::

    python examples/evaluate.py runs/deen-synthetic-seed0/last.pt
    python examples/evaluate.py runs/agw-sysu-seed0/best.pt --root /data/SYSU-MM01 --mode indoor --flip
    python examples/evaluate.py sysu_deen_p4_n6_lr_0.1_seed_0_best.t --official --dataset sysu --root /data/SYSU-MM01
    python examples/evaluate.py regdb_trial3.pt --model agw --dataset regdb --root /data/RegDB --trial 3 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
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
from vireid_layers.engine import load_checkpoint, strip_prefixes
from vireid_layers.evaluation import k_reciprocal_rerank, negative_cosine_similarity
from vireid_layers.recipes import DATASETS, ConfigurationError, Recipe, list_recipes, read_dataset, recipe_class

#: The settings --json records.
RECORDED = ("model", "dataset", "root", "mode", "direction", "trial", "feature", "flip", "backbone", "height", "width")


def build_parser() -> argparse.ArgumentParser:
    """The command line; an option left out falls back to the run's ``config.json``, then to the recipe's default."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="last.pt / best.pt of a run, a state dict, or an official DEEN checkpoint")
    parser.add_argument("--model", help=f"the recipe, one of {list_recipes()} (default: from config.json)")
    parser.add_argument(
        "--official", action="store_true", help="an official DEEN checkpoint (implies --model deen; default: off)"
    )
    parser.add_argument("--config", help="the run's config.json (default: next to the checkpoint, if present)")
    parser.add_argument("--dataset", help=f"one of {list(DATASETS)} (default: from config.json)")
    parser.add_argument("--root", help="the dataset folder (default: from config.json; the cache for synthetic)")
    parser.add_argument("--mode", help="SYSU-MM01 search mode, all or indoor (default: config.json, else all)")
    parser.add_argument("--direction", help="query -> gallery modality: auto, i2v or v2i (default: auto)")
    parser.add_argument("--trial", type=int, help="RegDB split, 1..10 (default: from config.json, else 1)")
    parser.add_argument("--trials", type=int, default=10, help="galleries averaged: SYSU-MM01, LLCM (default: 10)")
    parser.add_argument("--feature", help="deen: official | plain; agw: fc | pool (default: the recipe's)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, help="add the flipped image (default: no)")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking, k1 20, k2 6 (default: off)")
    parser.add_argument("--backbone", help="timm backbone (default: from config.json, else resnet50)")
    parser.add_argument("--variant", help="deen: auto | sysu | regdb; agw: agw | base (default: the recipe's)")
    parser.add_argument("--height", type=int, help="test image height (default: config.json, else the recipe's)")
    parser.add_argument("--width", type=int, help="test image width (default: config.json, else the recipe's)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default: 128)")
    parser.add_argument("--workers", type=int, default=0, help="loader worker processes (default: 0)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA if available)")
    parser.add_argument(
        "--json",
        dest="json_path",
        metavar="PATH",
        help="write every trial's results to this JSON file (default: no file)",
    )
    return parser


def fail(message: str) -> None:
    raise ConfigurationError(f"invalid configuration: {message}")


def read_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run's ``config.json`` (``--config``, else next to the checkpoint), or ``{}``."""
    path = Path(args.config) if args.config else Path(args.checkpoint).parent / "config.json"
    if args.config and not path.is_file():
        fail(f"--config {args.config!r} does not exist")
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        fail(f"{path} is not valid JSON ({error})")
    if not isinstance(config, dict):
        fail(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def resolve_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe to evaluate with: the command line over the run's ``config.json`` over the recipe's defaults."""
    counts = (("trials", args.trials, 1), ("batch-size", args.batch_size, 1), ("workers", args.workers, 0))
    for name, value, minimum in counts:
        if value < minimum:
            fail(f"--{name} must be >= {minimum}, got {value}")
    if args.json_path is not None and not Path(args.json_path).resolve().parent.is_dir():
        fail(f"--json {args.json_path!r}: the folder does not exist")
    if not Path(args.checkpoint).is_file():
        fail(f"checkpoint {args.checkpoint!r} does not exist")
    config = read_config(args)
    if args.official and args.model not in (None, "deen"):
        fail(f"--official loads an official DEEN checkpoint; it cannot be combined with --model {args.model}")
    model = "deen" if args.official else args.model or config.get("model")
    if model is None and "mfa_form" in config:  # a DEEN run written before config.json recorded the model
        model = "deen"
    if model not in list_recipes():
        fail(f"--model is required (one of {list_recipes()}): no config.json names the network")
    settings = dict(config)
    if args.dataset is not None and args.dataset != config.get("dataset"):
        settings["root"] = None  # the run's root belongs to its own dataset
    given = {k: getattr(args, k) for k in ("dataset", "root", "mode", "direction", "trial", "feature", "flip")}
    given.update(backbone=args.backbone, variant=args.variant, height=args.height, width=args.width)
    settings.update({k: v for k, v in given.items() if v is not None})
    if "dataset" not in settings:
        fail(f"--dataset is required (one of {list(DATASETS)}): no config.json names it")
    settings.setdefault("backbone", "resnet50")
    settings.update(select_on="last", eval_batch_size=args.batch_size, workers=args.workers, pretrained=False)
    cls = recipe_class(model)
    return cls(cls.config_class.from_dict(settings))


def state_dict_of(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The model's state dict from a training checkpoint (``"model"``) or a bare / wrapped state dict."""
    for entry in ("model", "state_dict", "net"):
        if isinstance(checkpoint.get(entry), Mapping):
            checkpoint = checkpoint[entry]
            break
    return strip_prefixes(checkpoint)


def load_model(recipe: Recipe, checkpoint: str, *, official: bool, num_train_identities: int) -> nn.Module:
    """Build the recipe's model and load ``checkpoint`` into it (strictly).

    Raises:
        ValueError: the file cannot be read safely, holds no DEEN / AGW state dict, or does not fit the model.
    """
    if official:
        model = recipe.build_model(num_train_identities, pretrained=False)
        try:
            load_official_deen(model, checkpoint)
        except RuntimeError as error:  # load_state_dict: missing keys or shapes
            raise ValueError(f"{checkpoint!r} does not fit the official DEEN ({error})") from error
        return model
    try:
        state = state_dict_of(load_checkpoint(checkpoint))
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
    model = recipe.build_model(int(weight.shape[0]), pretrained=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"{checkpoint!r} does not fit a {recipe.name.upper()} with backbone {recipe.config.backbone!r} (pass "
            f"--model / --backbone / --variant, or keep the run's config.json next to it): {error}"
        ) from error
    return model


def main(argv: list[str] | None = None) -> int:
    """Parse, resolve, evaluate, print (and write) the results; returns the exit status."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        recipe = resolve_recipe(args)
        c = recipe.config
        dataset = read_dataset(c.dataset, c.root, height=c.height, width=c.width, trial=c.trial)
        model = load_model(
            recipe, args.checkpoint, official=args.official, num_train_identities=dataset.num_train_identities
        )
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        evaluator = recipe.evaluator(dataset, device=device, num_trials=args.trials)
        # Each image's features are L2-normalised (after the flip sum) and compared by cosine similarity.
        distance = k_reciprocal_rerank if args.rerank else negative_cosine_similarity
        result = dataclasses.replace(evaluator, normalize=True, distance=distance)(model.to(device).eval())
    except ValueError as error:  # ConfigurationError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    flags = f"{', flip' if c.flip else ''}{', re-ranked' if args.rerank else ''}"
    print(f"{recipe.name.upper()} ({c.backbone}, feature {c.feature}{flags}) from {args.checkpoint}")
    print(result.format_table())
    print(f"evaluated in {time.perf_counter() - start:.1f}s")
    if args.json_path is not None:
        settings = {**dataclasses.asdict(c), "model": recipe.name}
        payload = {
            "checkpoint": str(args.checkpoint),
            "official": bool(args.official),
            "settings": {k: settings.get(k) for k in RECORDED},
            "rerank": bool(args.rerank),
            "results": result.as_dict(),
        }
        Path(args.json_path).write_text(json.dumps(payload, indent=2, default=str))
        print(f"results written to {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
