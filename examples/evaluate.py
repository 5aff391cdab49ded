"""Evaluate a checkpoint (ours or an official one) on a dataset and protocol, and print the results table.

Checkpoints:

* ``last.pt`` / ``best.pt`` written by a training run (the ``"model"`` entry is used), or a bare state dict of
  one of the recipes' models (:class:`~vireid_layers.models.DEEN`, :class:`~vireid_layers.models.AGW`, ...).
  When the checkpoint sits in a run directory, its ``config.json`` gives the recipe and its configuration
  (backbone, variant, forms, image size, dataset, protocol, feature); every command-line option overrides it.
* an official checkpoint of DEEN, AGW, DDAG or MPANet (``--official``): the ``*_best.t`` files of the DEEN,
  AGW and DDAG training scripts (and AGW's periodic ``*_epoch_{n}.t``), MPANet's ``model_best.pth`` and periodic
  ``{prefix}_model_{n}.pth``. The network is ``--model``, else detected from the keys
  (:func:`vireid_layers.compat.detect_official_model`; a file with the keys of several networks is refused:
  name it with ``--model``). The file is read with ``weights_only=True`` (the NumPy metrics next to the
  weights allowed) and loaded strictly through :func:`~vireid_layers.compat.load_official_deen`,
  :func:`~vireid_layers.compat.load_official_agw`, :func:`~vireid_layers.compat.load_official_ddag` or
  :func:`~vireid_layers.compat.load_official_mpanet` into the recipe's ResNet-50 model, whose number of classes
  is read from the official classifier. Unless ``--variant`` says otherwise, a RegDB DEEN file (DEE on 512
  channels) gives the ``regdb`` variant and an AGW file without non-local blocks (``--method base``) the
  ``base`` variant. Without the flag, a file in an official key layout is refused with that hint.

The model and the evaluation are built by the run's recipe (:mod:`vireid_layers.recipes`). The number of classes
of our checkpoints is read from the classifier's weight. ``--json PATH`` writes every trial's numbers.

The table states every setting of the evaluation (dataset, protocol and mode, direction, trials and gallery seeds,
shots, feature, flip, re-ranking and its parameters, distance, checkpoint selection). With ``--flip`` or
``--rerank`` it prints the plain row beside the modified one. The checkpoint selection is ``--selection``, else
read from the run: ``best.pt`` was selected on the run's ``select_on``, ``last.pt`` is the last epoch. An official
checkpoint states its script's rule: every official best file was selected on the test set (DEEN: the best Rank-1
of the fused six-feature distance, checked every epoch; AGW: of the BN "fc" feature, every 2nd epoch; DDAG: of the
IWPA attention feature, every 2nd epoch; MPANet ``model_best.pth``: every 5th epoch after epoch 115), while AGW's
``*_epoch_{n}.t`` and MPANet's ``{prefix}_model_{n}.pth`` are periodic files of epoch ``n`` (no selection).

* ``--compare SPEC [SPEC ...]``: evaluate the checkpoint under several settings and print them side by side. A
  SPEC is ``plain`` or settings joined by ``+``: ``flip`` (``flip=sum`` / ``flip=mean``), ``rerank`` (with
  ``--rerank-k1/--rerank-k2/--rerank-lambda``) or ``rerank=K1/K2/LAMBDA``, ``feature=NAME``. Each starts from
  the command line's feature with flip and re-ranking off, e.g. ``--compare plain flip rerank flip+rerank``.
* ``--figures [NAME ...]``: write the evaluation figures (ranked lists, embedding map, distance histograms,
  activation maps; default all) as PNGs into ``<run directory>/figures`` (the checkpoint's folder, or
  ``--figures-dir``).
* ``--save-pretrained DIR``: write the model with its results as a shareable directory (``config.json``,
  ``model.safetensors``, ``README.md`` with the results tables, ``results.json``), which
  :func:`vireid_layers.hub.from_pretrained` reloads.

Examples::

    python examples/evaluate.py runs/deen-synthetic-seed0/last.pt
    python examples/evaluate.py runs/agw-sysu-seed0/best.pt --root /data/SYSU-MM01 --mode indoor --flip
    python examples/evaluate.py sysu_deen_p4_n6_lr_0.1_seed_0_best.t --official --dataset sysu --root /data/SYSU-MM01
    python examples/evaluate.py sysu_agw_p4_n8_lr_0.1_seed_0_best.t --official --dataset sysu --root /data/SYSU-MM01
    python examples/evaluate.py sysu_G_P_3_drop_0.2_4_8_lr_0.1_seed_0_best.t --official --dataset sysu --root /data/SYSU
    python examples/evaluate.py model_best.pth --official --model mpanet --dataset sysu --root /data/SYSU-MM01
    python examples/evaluate.py regdb_trial3.pt --model agw --dataset regdb --root /data/RegDB --trial 3 --json out.json
    python examples/evaluate.py runs/deen-synthetic-seed0/last.pt --compare plain flip rerank flip+rerank
    python examples/evaluate.py runs/deen-synthetic-seed0/last.pt --figures ranked_lists embedding_map
    python examples/evaluate.py runs/deen-synthetic-seed0/last.pt --flip --save-pretrained deen-synthetic
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vireid_layers.compat import (
    detect_official_model,
    load_official_agw,
    load_official_ddag,
    load_official_deen,
    load_official_mpanet,
    read_official_checkpoint,
)
from vireid_layers.data import ImagePreprocessor, VIReIDDataset
from vireid_layers.engine import load_checkpoint, strip_prefixes
from vireid_layers.evaluation import ProtocolEvaluator, ProtocolResult, format_comparison
from vireid_layers.evaluation.protocols.settings import RERANK_DEFAULTS, rerank_parameters, variant_labels
from vireid_layers.recipes import DATASETS, ConfigurationError, Recipe, list_recipes, read_dataset, recipe_class

#: The figures of --figures (vireid_layers.visualize.FIGURES; the visualize package needs matplotlib).
FIGURES = ("ranked_lists", "embedding_map", "distance_histograms", "activation_maps")
#: What --selection may state: validation identities, the test set, the last epoch.
SELECTIONS = ("val", "test", "last")

#: The networks whose official checkpoints --official loads (recipe name -> loader of vireid_layers.compat).
OFFICIAL_LOADERS = {
    "deen": load_official_deen,
    "agw": load_official_agw,
    "ddag": load_official_ddag,
    "mpanet": load_official_mpanet,
}
OFFICIAL_NAMES = {"deen": "DEEN", "agw": "AGW", "ddag": "DDAG", "mpanet": "MPANet"}
#: How each official training script chose the file it saved (official_checkpoints.md §3.1, §4.1, §5.1, §6.1).
OFFICIAL_SELECTION = {
    "deen": "test set: the official DEEN train.py keeps the best Rank-1 of the fused six-feature distance on the test "
    "set (gallery trial 0), checked every epoch",
    "agw": "test set: the official AGW train.py keeps the best Rank-1 of the BN (fc) feature on the test set, "
    "checked every 2nd epoch",
    "ddag": "test set: the official train_ddag.py keeps the best Rank-1 of the IWPA attention feature on the test "
    "set, checked every 2nd epoch",
    "mpanet": "test set: the official MPANet engine keeps the best Rank-1 on the test set (SYSU-MM01 all-search "
    "single-shot, RegDB the mean of both directions), checked every 5th epoch after epoch 115",
}
#: The periodic (unselected) files: AGW's {suffix}_epoch_{n}.t, MPANet's {prefix}_model_{n}.pth.
OFFICIAL_PERIODIC = {"agw": re.compile(r".*_epoch_(\d+)\.t"), "mpanet": re.compile(r".*_model_(\d+)\.pth")}

#: The settings --json records.
RECORDED = ("model", "dataset", "root", "mode", "direction", "trial", "feature", "flip", "backbone", "height", "width")


def build_parser() -> argparse.ArgumentParser:
    """The command line; an option left out falls back to the run's ``config.json``, then to the recipe's default."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint",
        help="last.pt / best.pt of a run, a state dict, or an official DEEN, AGW, DDAG or MPANet checkpoint",
    )
    parser.add_argument(
        "--model",
        help=f"the recipe, one of {list_recipes()} (default: from config.json; --official: detected from the keys)",
    )
    parser.add_argument(
        "--official",
        action="store_true",
        help=f"an official checkpoint of {', '.join(OFFICIAL_NAMES.values())}; the network is --model, else detected "
        "from its keys (default: off)",
    )
    parser.add_argument("--config", help="the run's config.json (default: next to the checkpoint, if present)")
    parser.add_argument("--dataset", help=f"one of {list(DATASETS)} (default: from config.json)")
    parser.add_argument("--root", help="the dataset folder (default: from config.json; the cache for synthetic)")
    parser.add_argument("--mode", help="SYSU-MM01 search mode, all or indoor (default: config.json, else all)")
    parser.add_argument("--direction", help="query -> gallery modality: auto, i2v or v2i (default: auto)")
    parser.add_argument("--trial", type=int, help="RegDB split, 1..10 (default: from config.json, else 1)")
    parser.add_argument("--trials", type=int, default=10, help="galleries averaged: SYSU-MM01, LLCM (default: 10)")
    parser.add_argument(
        "--feature",
        help="deen: official | plain; agw: fc | pool; ddag: att | fc; mpanet: bn; mso: fc | pool (default: recipe)",
    )
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, help="add the flipped image (default: no)")
    parser.add_argument(
        "--rerank",
        action="store_true",
        help="k-reciprocal re-ranking with --rerank-k1/-k2/-lambda; the plain row is printed beside (default: off)",
    )
    k1, k2, lam = RERANK_DEFAULTS["k1"], RERANK_DEFAULTS["k2"], RERANK_DEFAULTS["lambda_value"]
    parser.add_argument("--rerank-k1", type=int, default=k1, help=f"re-ranking k1 (default: {k1}, the official)")
    parser.add_argument("--rerank-k2", type=int, default=k2, help=f"re-ranking k2 (default: {k2}, the official)")
    parser.add_argument(
        "--rerank-lambda", type=float, default=lam, help=f"re-ranking lambda_value (default: {lam}, the official)"
    )
    parser.add_argument(
        "--selection",
        choices=SELECTIONS,
        help="how the checkpoint was selected, stated in the results: val (validation identities), test (the test "
        "set), last (default: best.pt -> the run's select_on, last.pt -> last, --official -> the official script's "
        "rule, else not stated)",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="SPEC",
        help="evaluate under several settings and print them side by side; SPEC: plain, or flip[=sum|mean], "
        "rerank[=K1/K2/LAMBDA], feature=NAME joined by '+', e.g. plain flip rerank flip+rerank (default: off)",
    )
    parser.add_argument(
        "--figures",
        nargs="*",
        choices=FIGURES,
        metavar="NAME",
        help=f"write evaluation figures (PNG) into <run directory>/figures, some of {list(FIGURES)} (no NAME: all; "
        "default: none)",
    )
    parser.add_argument(
        "--figures-dir",
        metavar="DIR",
        help="the run directory of --figures, which writes into DIR/figures (default: the checkpoint's folder)",
    )
    parser.add_argument(
        "--save-pretrained",
        metavar="DIR",
        help="write the model, its preprocessing and the results as a from_pretrained directory (default: none)",
    )
    parser.add_argument("--backbone", help="timm backbone (default: from config.json, else resnet50)")
    parser.add_argument(
        "--variant",
        help="deen: auto | sysu | regdb; agw: agw | base (default: the recipe's; with --official: from the checkpoint)",
    )
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


@dataclasses.dataclass(frozen=True)
class OfficialCheckpoint:
    """An official checkpoint read once: the network's name, the file's object and its state dict."""

    name: str
    checkpoint: Mapping[str, Any]
    state: dict[str, Any]

    def settings(self) -> dict[str, Any]:
        """What the weights say of the recipe's configuration: the DEEN and AGW variants."""
        if self.name == "agw":  # --method base has no non-local block
            return {"variant": "agw" if any(k.startswith("NL_") for k in self.state) else "base"}
        dee = self.state.get("DEE.FC11.weight")
        if self.name == "deen" and isinstance(dee, Tensor) and dee.ndim == 4:  # DEE after layer3 (SYSU) or layer2
            return {"variant": {1024: "sysu", 512: "regdb"}.get(int(dee.shape[1]), "auto")}
        return {}

    def num_classes(self, default: int) -> int:
        """The rows of the official classifier (the scripts hard-code 395, 206 or 713), else ``default``."""
        weight = self.state.get("classifier.weight")
        return int(weight.shape[0]) if isinstance(weight, Tensor) and weight.ndim == 2 else default


def read_official(path: str, model: str | None) -> OfficialCheckpoint:
    """Read an official checkpoint safely and name its network: ``model``, else detected from the keys."""
    try:
        checkpoint = read_official_checkpoint(path)
    except ValueError as error:  # not readable with weights_only=True
        fail(f"--official: {error}")
    try:
        detected: str | None = detect_official_model(checkpoint)
    except (TypeError, ValueError) as error:
        if model is None:
            fail(f"--official: {path!r}: {error}; name the network with --model ({', '.join(OFFICIAL_LOADERS)})")
        detected = None
    if model is not None and detected is not None and detected != model:
        fail(f"--model {model}, but {path!r} has the keys of an official {OFFICIAL_NAMES[detected]} checkpoint")
    return OfficialCheckpoint(str(model or detected), checkpoint, state_dict_of(checkpoint))


def model_of(args: argparse.Namespace, config: Mapping[str, Any]) -> tuple[str, OfficialCheckpoint | None]:
    """The recipe's name (``--model``, the official checkpoint's network, ``config.json``) and the official file."""
    if args.official and args.model not in (None, *OFFICIAL_LOADERS):
        fail(
            f"--official loads official {', '.join(OFFICIAL_NAMES.values())} checkpoints; it cannot be combined with "
            f"--model {args.model}"
        )
    official = read_official(args.checkpoint, args.model) if args.official else None
    model = official.name if official is not None else args.model or config.get("model")
    if model is None and "mfa_form" in config:  # a DEEN run written before config.json recorded the model
        model = "deen"
    if model not in list_recipes():
        if official is not None:
            fail(f"no recipe {model!r} to evaluate the official {OFFICIAL_NAMES[model]} checkpoint: {list_recipes()}")
        fail(f"--model is required (one of {list_recipes()}): no config.json names the network")
    return str(model), official


def resolve_recipe(args: argparse.Namespace) -> tuple[Recipe, OfficialCheckpoint | None]:
    """The recipe to evaluate with: the command line over the run's ``config.json`` over the recipe's defaults.

    With ``--official`` the checkpoint is read here (once): its network names the recipe and its weights give the
    DEEN / AGW variant, which ``--variant`` overrides.
    """
    counts = (("trials", args.trials, 1), ("batch-size", args.batch_size, 1), ("workers", args.workers, 0))
    for name, value, minimum in counts:
        if value < minimum:
            fail(f"--{name} must be >= {minimum}, got {value}")
    if args.json_path is not None and not Path(args.json_path).resolve().parent.is_dir():
        fail(f"--json {args.json_path!r}: the folder does not exist")
    if not Path(args.checkpoint).is_file():
        fail(f"checkpoint {args.checkpoint!r} does not exist")
    config = read_config(args)
    model, official = model_of(args, config)
    settings = dict(config)
    if official is not None:
        settings.update(official.settings())
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
    return cls(cls.config_class.from_dict(settings)), official


def state_dict_of(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The model's state dict from a training checkpoint (``"model"``) or a bare / wrapped state dict."""
    for entry in ("model", "state_dict", "net"):
        if isinstance(checkpoint.get(entry), Mapping):
            checkpoint = checkpoint[entry]
            break
    return strip_prefixes(checkpoint)


def load_model(
    recipe: Recipe, checkpoint: str, *, official: OfficialCheckpoint | None, num_train_identities: int
) -> nn.Module:
    """Build the recipe's model and load ``checkpoint`` into it (strictly).

    An official checkpoint goes through its :mod:`vireid_layers.compat` loader into a model with the official
    classifier's number of classes (else ``num_train_identities``).

    Raises:
        ValueError: the file cannot be read safely, holds no state dict of the recipe's model, or does not fit it.
    """
    if official is not None:
        model = recipe.build_model(official.num_classes(num_train_identities), pretrained=False)
        try:
            OFFICIAL_LOADERS[official.name](model, official.checkpoint)
        except (RuntimeError, TypeError) as error:  # load_state_dict: missing or foreign keys, shapes
            raise ValueError(
                f"{checkpoint!r} does not fit the official {OFFICIAL_NAMES[official.name]} (a ResNet-50 with the "
                f"official settings; check --backbone / --variant): {error}"
            ) from error
        return model
    try:
        state = state_dict_of(load_checkpoint(checkpoint))
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"cannot read {checkpoint!r} with torch.load(weights_only=True): {error}. For an official DEEN, AGW or "
            "DDAG checkpoint (which stores NumPy metrics) pass --official"
        ) from error
    try:
        detected: str | None = detect_official_model(state)
    except (TypeError, ValueError):  # not an official key layout (or an ambiguous one): load it as ours
        detected = None
    if detected is not None:
        raise ValueError(f"{checkpoint!r} is an official {OFFICIAL_NAMES[detected]} checkpoint: pass --official")
    weight = state.get("classifier.weight")
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(f"{checkpoint!r} has no 2-D classifier.weight: not a state dict of the recipes' models")
    model = recipe.build_model(int(weight.shape[0]), pretrained=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"{checkpoint!r} does not fit a {recipe.name.upper()} with backbone {recipe.config.backbone!r} (pass "
            f"--model / --backbone / --variant, or keep the run's config.json next to it): {error}"
        ) from error
    return model


def rerank_of(args: argparse.Namespace) -> dict[str, Any]:
    """The re-ranking parameters of the command line (checked), whether ``--rerank`` is on or not."""
    params = {"k1": args.rerank_k1, "k2": args.rerank_k2, "lambda_value": args.rerank_lambda}
    try:
        checked = rerank_parameters(params)
    except (TypeError, ValueError) as error:
        fail(f"--rerank-k1/--rerank-k2/--rerank-lambda: {error}")
    assert checked is not None
    return {k: v for k, v in checked.items() if k != "method"}


@dataclasses.dataclass(frozen=True)
class Spec:
    """One setting of ``--compare``: the feature (``None``: the command line's), flip and re-ranking."""

    text: str
    feature: str | None = None
    flip: str | bool = False
    rerank: dict[str, Any] | None = None


def parse_rerank(text: str, part: str, value: str) -> dict[str, Any]:
    """``K1/K2/LAMBDA`` of a ``rerank=`` part, checked."""
    numbers = value.split("/")
    try:
        if len(numbers) != 3:
            raise ValueError("three numbers K1/K2/LAMBDA")
        params = rerank_parameters({"k1": int(numbers[0]), "k2": int(numbers[1]), "lambda_value": float(numbers[2])})
    except (TypeError, ValueError) as error:
        fail(f"--compare {text!r}: rerank=K1/K2/LAMBDA, e.g. rerank=20/6/0.3, got {part!r} ({error})")
    assert params is not None
    return {k: v for k, v in params.items() if k != "method"}


def parse_spec(text: str, default_rerank: dict[str, Any]) -> Spec:
    """``plain`` or ``+``-joined ``flip[=sum|mean]``, ``rerank[=K1/K2/LAMBDA]``, ``feature=NAME``.

    Raises:
        ConfigurationError: an unknown or repeated part, or a bad value.
    """
    feature: str | None = None
    flip: str | bool = False
    rerank: dict[str, Any] | None = None
    seen: set[str] = set()
    for part in text.split("+"):
        name, _, value = part.strip().partition("=")
        if name in seen or name not in ("plain", "flip", "rerank", "feature") or (name == "plain" and value):
            fail(
                f"--compare {text!r}: {part!r} is not plain, flip[=sum|mean], rerank[=K1/K2/LAMBDA] or feature=NAME "
                "(each once, joined by '+')"
            )
        seen.add(name)
        if name == "flip":
            if value not in ("", "sum", "mean"):
                fail(f"--compare {text!r}: flip must be flip, flip=sum or flip=mean, got {part!r}")
            flip = value or "sum"
        elif name == "rerank":
            rerank = parse_rerank(text, part, value) if value else dict(default_rerank)
        elif name == "feature":
            if not value:
                fail(f"--compare {text!r}: feature=NAME needs a name")
            feature = value
    if "plain" in seen and len(seen) > 1:
        fail(f"--compare {text!r}: plain cannot be combined with other settings")
    return Spec(text, feature, flip, rerank)


def official_selection(official: OfficialCheckpoint, path: str) -> str | None:
    """How the official script chose this file: the best test Rank-1, or a periodic file (no selection)."""
    name = Path(path).name
    periodic = OFFICIAL_PERIODIC.get(official.name)
    match = periodic.fullmatch(name) if periodic is not None else None
    wrapped = "net" in official.checkpoint
    if match is not None or (official.name == "agw" and wrapped and "mINP" not in official.checkpoint):
        epoch = match[1] if match is not None else official.checkpoint.get("epoch", "n")
        return f"epoch {epoch}: a periodic file of the official {OFFICIAL_NAMES[official.name]} script (no selection)"
    if official.name == "mpanet" and name != "model_best.pth":
        return None  # a bare state dict under another name: nothing says how it was chosen
    epoch = official.checkpoint.get("epoch") if wrapped else None
    return OFFICIAL_SELECTION[official.name] + ("" if epoch is None else f"; saved at epoch {epoch}")


def selection_of(args: argparse.Namespace, official: OfficialCheckpoint | None = None) -> str | None:
    """How the checkpoint was selected: ``--selection``, else the official script's rule or what the run says.

    ``None`` (not stated) when nothing says it.
    """
    if args.selection is not None:
        return str(args.selection)
    if official is not None:
        return official_selection(official, args.checkpoint)
    config = read_config(args)
    name = Path(args.checkpoint).name
    if name == "best.pt" and config.get("select_on") in SELECTIONS:
        return str(config["select_on"])
    if name == "last.pt" and config:
        return "last"
    return None


def variant(recipe: Recipe, feature: str | None) -> Recipe:
    """The same recipe with another test feature (checked by its configuration)."""
    if feature is None or feature == recipe.config.feature:
        return recipe
    cls = type(recipe)
    return cls(cls.config_class.from_dict({**recipe.config.as_dict(), "feature": feature}))


def build_evaluator(
    recipe: Recipe,
    dataset: VIReIDDataset,
    device: torch.device,
    trials: int,
    *,
    rerank: dict[str, Any] | None,
    selection: str | None,
) -> ProtocolEvaluator:
    """The recipe's evaluator stating feature, selection and re-ranking, ranked as the recipe ranks.

    The normalisation and distance are the recipe's (:meth:`~vireid_layers.recipes.Recipe.ranking`), as in the
    run's own evaluation: cosine similarity of unit features, except DEEN's official feature with flip (the
    unnormalised flip sum by dot product) and MPANet on RegDB (unnormalised, squared Euclidean distance).
    """
    evaluator = recipe.evaluator(dataset, device=device, num_trials=trials)
    return dataclasses.replace(
        evaluator,
        rerank=rerank,
        feature=recipe.config.feature,
        selection=selection,
    )


def compare(
    recipe: Recipe,
    specs: list[Spec],
    model: nn.Module,
    dataset: VIReIDDataset,
    device: torch.device,
    trials: int,
    selection: str | None,
) -> list[ProtocolResult]:
    """One result per spec, in order; a re-ranked evaluation also gives the plain row of its features."""
    done: dict[str, ProtocolResult] = {}

    def key(feature: str | None, flip: str | bool, rerank: dict[str, Any] | None) -> str:
        return json.dumps([feature, flip, rerank], sort_keys=True)

    for spec in sorted(specs, key=lambda s: s.rerank is None):  # re-ranked first: their plain rows come free
        if key(spec.feature, spec.flip, spec.rerank) in done:
            continue
        chosen = variant(recipe, spec.feature)
        evaluator = build_evaluator(chosen, dataset, device, trials, rerank=spec.rerank, selection=selection)
        result = dataclasses.replace(evaluator, flip=spec.flip, plain_row=False)(model)
        done[key(spec.feature, spec.flip, spec.rerank)] = dataclasses.replace(result, baselines=())
        if spec.rerank is not None:
            done.setdefault(key(spec.feature, spec.flip, None), result.baselines[0])
    return [done[key(s.feature, s.flip, s.rerank)] for s in specs]


def compare_labels(results: list[ProtocolResult]) -> list[str]:
    """The rows' labels of ``--compare``: the settings that differ, with the re-ranking parameters where they do."""
    labels = variant_labels([r.settings for r in results])
    params = {json.dumps(r.settings["rerank"], sort_keys=True) for r in results if r.settings.get("rerank")}
    if len(params) < 2:
        return labels
    out = []
    for label, r in zip(labels, results, strict=True):
        p = r.settings.get("rerank")
        out.append(f"{label} (k1={p['k1']}, k2={p['k2']}, lambda={p['lambda_value']})" if p else label)
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse, resolve, evaluate, print (and write) the results; returns the exit status."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        recipe, official = resolve_recipe(args)
        default_rerank = rerank_of(args)
        rerank = default_rerank if args.rerank else None
        specs = [parse_spec(text, default_rerank) for text in args.compare or ()]
        for spec in specs:
            variant(recipe, spec.feature)  # a feature the recipe does not know fails now, not after an evaluation
        if args.save_pretrained is not None and Path(args.save_pretrained).is_file():
            fail(f"--save-pretrained {args.save_pretrained!r} is a file, not a directory")
        if args.figures_dir is not None and args.figures is None:
            fail("--figures-dir needs --figures")
        selection = selection_of(args, official)
        c = recipe.config
        dataset = read_dataset(c.dataset, c.root, height=c.height, width=c.width, trial=c.trial)
        model = load_model(
            recipe, args.checkpoint, official=official, num_train_identities=dataset.num_train_identities
        )
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = model.to(device).eval()
        evaluator = build_evaluator(recipe, dataset, device, args.trials, rerank=rerank, selection=selection)
        if specs:
            compared = compare(recipe, specs, model, dataset, device, args.trials, selection)
            result = compared[0]
        else:
            compared = []
            result = evaluator(model)
    except ValueError as error:  # ConfigurationError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    flags = f"{', flip' if c.flip else ''}{', re-ranked' if args.rerank else ''}"
    print(f"{recipe.name.upper()} ({c.backbone}, feature {c.feature}{flags}) from {args.checkpoint}")
    print(format_comparison(compared, compare_labels(compared)) if compared else result.format_table())
    print(f"evaluated in {time.perf_counter() - start:.1f}s")
    return write_outputs(args, recipe, model, dataset, evaluator, result, compared, specs, selection, rerank)


def write_outputs(
    args: argparse.Namespace,
    recipe: Recipe,
    model: nn.Module,
    dataset: VIReIDDataset,
    evaluator: ProtocolEvaluator,
    result: ProtocolResult,
    compared: list[ProtocolResult],
    specs: list[Spec],
    selection: str | None,
    rerank: dict[str, Any] | None,
) -> int:
    """--json, --save-pretrained and --figures; returns the exit status."""
    c = recipe.config
    if args.json_path is not None:
        settings = {**dataclasses.asdict(c), "model": recipe.name}
        payload = {
            "checkpoint": str(args.checkpoint),
            "official": bool(args.official),
            "settings": {k: settings.get(k) for k in RECORDED},
            "selection": selection,
            "rerank": rerank or False,
            "results": result.as_dict(),
        }
        if compared:
            payload["compare"] = [
                {"spec": s.text, "results": r.as_dict()} for s, r in zip(specs, compared, strict=True)
            ]
        Path(args.json_path).write_text(json.dumps(payload, indent=2, default=str))
        print(f"results written to {args.json_path}")
    if args.save_pretrained is not None:
        directory = model.save_pretrained(
            args.save_pretrained,
            results=compared or result,
            protocol=evaluator.protocol,
            dataset=dataset,
            recipe={**c.as_dict(), "model": recipe.name},
            preprocess=ImagePreprocessor(c.height, c.width),
        )
        print(f"model saved to {directory} (vireid_layers.hub.from_pretrained reloads it)")
    if args.figures is not None:
        try:
            from vireid_layers.visualize import save_evaluation_figures

            run_dir = Path(args.figures_dir) if args.figures_dir else Path(args.checkpoint).parent
            written = save_evaluation_figures(evaluator, model, run_dir, figures=args.figures or FIGURES)
        except (ImportError, ValueError) as error:
            print(f"error: --figures: {error}", file=sys.stderr)
            return 2
        for name, path in written.items():
            print(f"figure {name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
