"""The configuration every recipe shares: :class:`RecipeConfig`, its checks and the quick synthetic run.

Each field carries its command-line help text (:func:`option`); a recipe's configuration subclasses
:class:`RecipeConfig` with its own fields and official defaults.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DATASETS", "QUICK_RUN", "ConfigurationError", "RecipeConfig", "fail", "option"]

#: The datasets a recipe trains on (``--dataset``); ``"synthetic"`` is written to disk on first use.
DATASETS = ("synthetic", "sysu", "regdb", "llcm")


class ConfigurationError(ValueError):
    """A configuration value a recipe cannot run with; the message names the option, the allowed and the given."""


def option(default: Any, help: str, *, choices: tuple[Any, ...] | None = None) -> Any:
    """A configuration field with its command-line help text (and allowed values): ``field(default, metadata)``."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class RecipeConfig:
    """The values every recipe shares: data, batches, optimiser, schedule, evaluation and the engine.

    The defaults are the official SYSU-MM01 values of the recipe (DEEN's here; each recipe's subclass sets its
    own); :attr:`Recipe.quick_run` holds the quick synthetic run's overrides. Every field is a command-line
    option of ``vireid-train`` (its name with dashes), with the help text of its metadata.
    """

    dataset: str = option(
        "sysu", "dataset (synthetic is written to ~/.cache/vireid_layers on first use)", choices=DATASETS
    )
    root: str | None = option(None, "the dataset folder in its published layout (required for real datasets)")
    backbone: str = option("resnet50.tv_in1k", "timm backbone (resnet50.tv_in1k: the torchvision ImageNet weights)")
    pretrained: bool = option(True, "start from the backbone's ImageNet weights (downloaded once by timm)")
    height: int = option(384, "image height")
    width: int = option(144, "image width")
    batch_identities: int = option(6, "identities per batch (P)")
    num_instances: int = option(4, "images per identity and modality (K); a batch holds 2PK images")
    epoch_length: str = option("official", "batches per epoch: official, all_images or a number")
    optimizer: str = option("sgd", "sgd (momentum, Nesterov; official) or adam", choices=("sgd", "adam"))
    lr: float = option(0.1, "learning rate of the head (BN neck and classifier)")
    backbone_lr_scale: float = option(0.1, "the rest of the network learns at this times --lr")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "weight decay of every parameter group")
    nesterov: bool = option(True, "Nesterov momentum (SGD)")
    epochs: int = option(151, "epochs")
    warmup_epochs: int = option(10, "linear learning-rate warm-up over these epochs")
    milestones: tuple[int, ...] = option((20, 80), "epochs at which the learning rate is multiplied by --gamma")
    gamma: float = option(0.1, "learning-rate decay at each milestone")
    lambda_triplet: float = option(1.0, "weight of the triplet loss")
    margin: float = option(0.3, "triplet margin")
    pipeline: str = option("auto", "training transform: auto (the recipe's for the dataset), a registered name, light")
    direction: str = option("auto", "query -> gallery modality; auto: i2v for SYSU/LLCM, v2i for RegDB")
    mode: str = option("all", "SYSU-MM01 search mode", choices=("all", "indoor"))
    trial: int = option(1, "RegDB split, 1..10")
    eval_trials: int = option(10, "galleries averaged in the final evaluation")
    feature: str = option("official", "the test-time feature")
    flip: bool = option(False, "add the horizontally flipped image at test time")
    eval_every: int = option(10, "evaluate every this many epochs (0: only the final evaluation)")
    select_on: str = option(
        "last",
        "checkpoint selection: last; val (best Rank-1 on held-out training identities); "
        "test (the official code: best Rank-1 on the test set, logged as selected_on=test)",
        choices=("last", "val", "test"),
    )
    val_identities: int = option(0, "--select-on val: identities held out (seeded); 0: exp/val_id.txt")
    amp: str = option(
        "auto", "mixed precision: auto (bf16 on CUDA), bf16, fp16, none", choices=("auto", "bf16", "fp16", "none")
    )
    compile: bool = option(False, "torch.compile the model")
    channels_last: bool = option(False, "channels-last memory format")
    sync_bn: bool = option(False, "SyncBatchNorm under DDP (torchrun)")
    grad_clip: float | None = option(None, "clip the global gradient norm to this value")
    deterministic: bool = option(False, "deterministic algorithms (with a fixed --threads: a bit-reproducible run)")
    seed: int = option(0, "seed of the weights, the sampler and the augmentations")
    device: str | None = option(None, "cpu, cuda, cuda:1, ... (default: CUDA if available)")
    workers: int = option(4, "loader worker processes")
    threads: int = option(
        0,
        "CPU intra-op threads (torch.set_num_threads); 0: torch's default, one per core. Use 1 on a busy machine: "
        "threads of small ops wait on each other when the cores are shared. Results depend on the thread count",
    )
    eval_batch_size: int = option(128, "images per forward pass at test time")
    run_dir: str | None = option(None, "run directory (default: runs/<recipe>-<dataset>-seed<seed>)")
    log_every: int = option(10, "write a metrics row every this many steps")
    checkpoint_every_steps: int | None = option(
        None, "also write last.pt every this many steps (exact mid-epoch resume)"
    )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> typing.Self:
        """A configuration from a mapping (a run's ``config.json``): unknown keys ignored, lists made tuples."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key in known:
                default = known[key].default
                kwargs[key] = tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> typing.Self:
        """A copy with ``changes``; an unknown name raises :class:`ConfigurationError` listing the fields."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigurationError(f"invalid configuration: unknown option(s) {unknown}; options: {sorted(names)}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The values as plain data (the ``config.json`` of a run, with the recipe's name and the classes)."""
        return dataclasses.asdict(self)

    def validate(self) -> typing.Self:
        """Check every value; returns the configuration itself.

        Raises:
            ConfigurationError: the first bad value, named as its command-line option.
        """
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), f.metadata.get("choices")
            if choices is not None and value not in choices:
                fail(f"--{_flag(f.name)} must be one of {list(choices)}, got {value!r}")
            _check_type(f.name, value, hints[f.name])
        _check_data(self)
        _check_numbers(self)
        return self


def _check_data(c: RecipeConfig) -> None:
    if c.dataset != "synthetic":
        if c.root is None:
            fail(f"--root is required for --dataset {c.dataset} (the dataset folder in its published layout)")
        if not Path(c.root).is_dir():
            fail(f"--root {c.root!r} does not exist or is not a directory")
    if c.epoch_length not in ("official", "all_images") and not c.epoch_length.isdigit():
        fail(f"--epoch-length must be 'official', 'all_images' or a number of batches, got {c.epoch_length!r}")
    if c.direction not in ("auto", "i2v", "v2i"):
        fail(f"--direction must be one of ['auto', 'i2v', 'v2i'], got {c.direction!r}")
    if c.dataset == "regdb" and not 1 <= c.trial <= 10:
        fail(f"--trial must be in 1..10 for RegDB, got {c.trial}")
    if c.mode != "all" and c.dataset not in ("sysu", "synthetic"):
        fail(f"--mode {c.mode} exists only for SYSU-MM01 (and synthetic), not {c.dataset}")
    if c.select_on == "val" and c.val_identities == 0 and c.dataset not in ("sysu", "synthetic"):
        fail(
            f"--select-on val needs --val-identities N for --dataset {c.dataset} (only SYSU-MM01's layout "
            "defines validation identities, exp/val_id.txt)"
        )


def _check_numbers(c: RecipeConfig) -> None:
    positive_ints = ("height", "width", "batch_identities", "num_instances", "epochs", "eval_trials", "eval_batch_size")
    for name in positive_ints:
        _at_least(c, name, 1)
    for name in ("workers", "val_identities", "eval_every", "warmup_epochs", "threads", "weight_decay", "momentum"):
        _at_least(c, name, 0)
    for name in ("lr", "backbone_lr_scale", "margin", "gamma"):
        if not getattr(c, name) > 0:
            fail(f"--{_flag(name)} must be > 0, got {getattr(c, name)}")
    _at_least(c, "lambda_triplet", 0)
    _at_least(c, "log_every", 1)
    if c.checkpoint_every_steps is not None:
        _at_least(c, "checkpoint_every_steps", 1)
    if c.grad_clip is not None and not c.grad_clip > 0:
        fail(f"--grad-clip must be > 0, got {c.grad_clip}")


def fail(message: str) -> typing.NoReturn:
    """Reject a configuration: :class:`ConfigurationError` ``("invalid configuration: ...")``."""
    raise ConfigurationError(f"invalid configuration: {message}")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _at_least(config: RecipeConfig, name: str, minimum: int) -> None:
    if getattr(config, name) < minimum:
        fail(f"--{_flag(name)} must be >= {minimum}, got {getattr(config, name)}")


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Reject a value of the wrong type (a config built in Python, or a hand-edited ``config.json``)."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return
        if typing.get_origin(kind) is tuple and isinstance(value, tuple) and all(isinstance(v, int) for v in value):
            return
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return
        if kind in (int, str, bool) and isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return
    fail(f"--{_flag(name)} must be of type {hint}, got {type(value).__name__} {value!r}")


#: The quick synthetic CPU run every recipe starts from without ``--dataset``: a small network on small images
#: for 14 epochs of 25 batches, from random weights (no download), so Adam for every parameter instead of the
#: official SGD schedule; one warm-up epoch, a decay at epoch 11, no periodic evaluation, no loader workers.
QUICK_RUN: dict[str, Any] = {
    "dataset": "synthetic",
    "backbone": "resnet18",
    "pretrained": False,
    "height": 64,
    "width": 32,
    "batch_identities": 8,
    "num_instances": 2,
    "epoch_length": "25",
    "optimizer": "adam",
    "lr": 0.001,
    "backbone_lr_scale": 1.0,
    "epochs": 14,
    "warmup_epochs": 1,
    "milestones": (11,),
    "pipeline": "light",
    "eval_every": 0,
    "device": "cpu",
    "workers": 0,
    "log_every": 5,
}
