"""What every recipe shares: the configuration fields, the :class:`Recipe` interface and the recipe registry.

A recipe is everything that makes "method X trained the official way": its model factory, its criterion and
loss weights, its parameter groups and optimiser, its learning-rate schedule, its training transform and
sampler layout, its evaluation feature, the official values per dataset and the quick synthetic settings. One
module per method (:mod:`~vireid_layers.recipes.deen`, :mod:`~vireid_layers.recipes.agw`) subclasses
:class:`Recipe` and :class:`RecipeConfig` and registers itself by name (:func:`register_recipe`);
:func:`build_recipe` builds one by name and :func:`~vireid_layers.recipes.train` runs it.
"""

from __future__ import annotations

import abc
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from ..data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRAIN_PIPELINES,
    VIReIDDataset,
    build_test_transform,
    build_train_loader,
    build_train_transform,
)
from ..engine import TrainerConfig, WarmupStepSchedule, all_gather_cat
from ..evaluation import ProtocolEvaluator, negative_cosine_similarity, protocol_for_dataset

__all__ = [
    "DATASETS",
    "QUICK_RUN",
    "ConfigurationError",
    "Recipe",
    "RecipeConfig",
    "build_recipe",
    "gather_outputs_and_labels",
    "head_param_groups",
    "image_forward",
    "list_recipes",
    "option",
    "register_recipe",
]

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


# ------------------------------------------------------------------------------------------------ shared pieces


def head_param_groups(
    model: nn.Module,
    lr: float,
    *,
    weight_decay: float = 5e-4,
    backbone_scale: float = 0.1,
    head: Callable[[str], bool] | None = None,
) -> list[dict]:
    """The official parameter groups of DEEN, AGW and DDAG: the head at ``lr``, the rest at ``backbone_scale * lr``.

    The head is the BN neck and the classifier (names starting with ``neck.`` or ``classifier.``, as in
    :class:`~vireid_layers.models.DEEN` and :class:`~vireid_layers.models.AGW`); everything else, AGW's
    non-local blocks and DEEN's MFA and DEE included, is in the backbone group, as in the official code.
    Parameters with ``requires_grad=False`` (the frozen BN-neck bias) are left out. Each group carries
    ``base_lr``, the rate the trainer's per-epoch schedule multiplies.

    Args:
        model: the network.
        lr: base learning rate of the head (official 0.1).
        weight_decay: on every group (official 5e-4).
        backbone_scale: factor of the other parameters' rate (official 0.1).
        head: ``name -> bool`` telling which parameters belong to the head; default: names starting with
            ``neck.`` or ``classifier.``.

    Returns:
        Two groups for ``torch.optim.SGD``: ``[backbone, head]``.

    Raises:
        ValueError: no parameter belongs to the head.

    Examples:
        >>> net = nn.ModuleDict({"body": nn.Linear(2, 2), "classifier": nn.Linear(2, 3)})
        >>> [(len(g["params"]), g["lr"]) for g in head_param_groups(net, 0.1)]
        [(2, 0.010000000000000002), (2, 0.1)]
    """
    if head is None:

        def head(name: str) -> bool:
            return name.startswith(("neck.", "classifier."))

    backbone, top = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (top if head(name) else backbone).append(param)
    if not top:
        raise ValueError("no head parameters found (expected names starting with 'neck.' or 'classifier.')")
    return [
        {"params": backbone, "lr": lr * backbone_scale, "base_lr": lr * backbone_scale, "weight_decay": weight_decay},
        {"params": top, "lr": lr, "base_lr": lr, "weight_decay": weight_decay},
    ]


def image_forward(model: nn.Module, batch: Any) -> Any:
    """``model(batch.image, batch.modality)``: the training forward of the package's models on an ``ImageSample``."""
    return model(batch.image, batch.modality)


def gather_outputs_and_labels(output: Any, batch: Any) -> tuple[Any, Any]:
    """Merge a model output and its ``ImageSample`` batch across DDP ranks for the losses.

    The output gathers itself (``output.gather()``: :meth:`DEENOutput.gather <vireid_layers.models.DEENOutput.gather>`
    keeps DEEN's block layout); of the batch only the identities, cameras and modalities are gathered: the losses
    do not read the images, which are not sent (``image`` becomes an empty slice).
    """
    small = batch._replace(
        image=batch.image[:0],
        identity=all_gather_cat(batch.identity),
        camera=all_gather_cat(batch.camera),
        modality=all_gather_cat(batch.modality),
    )
    return output.gather(), small


def _light_pipeline(gray: bool) -> Callable[[int, int], v2.Compose]:
    """Resize, (grey with probability 0.5, as DEEN's ``RandomGrayscale``), flip: for tiny synthetic images."""

    def build(height: int, width: int) -> v2.Compose:
        return v2.Compose(
            [
                v2.ToImage(),
                v2.RGB(),
                v2.Resize((height, width), antialias=True),
                *([v2.RandomGrayscale(0.5)] if gray else []),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                v2.ToPureTensor(),
            ]
        )

    return build


def build_pipeline(name: str, height: int, width: int) -> Callable[[Any], Tensor]:
    """A training transform by name: a registered pipeline, or one of the local light ones for tiny images.

    ``light`` / ``light_gray`` are built here until they are registered in
    :data:`~vireid_layers.data.TRAIN_PIPELINES` (then the registered ones are used).
    """
    if name not in TRAIN_PIPELINES and name in ("light", "light_gray"):  # local fallback, see the docstring
        return _light_pipeline(name == "light_gray")(height, width)
    return build_train_transform(name, height=height, width=width)


# ------------------------------------------------------------------------------------------------ the recipe


class Recipe(abc.ABC):
    """How one method is trained and evaluated: every piece a training run needs, built from one configuration.

    A subclass sets :attr:`name`, :attr:`config_class`, :attr:`quick_run` and :attr:`pipelines`, and implements
    :meth:`build_model`, :meth:`build_criterion` and :meth:`build_schedule`; the rest (optimiser, loader,
    evaluator, trainer options) is shared and may be overridden.

    Args:
        config: the configuration; default the official SYSU-MM01 one (:meth:`official_config`).
        **overrides: fields to change (``Recipe(lr=0.01)``).

    Raises:
        ConfigurationError: an unknown field or a bad value.
    """

    #: The registry name (``--method``).
    name: ClassVar[str]
    #: The configuration class, a :class:`RecipeConfig` subclass with the method's fields and official defaults.
    config_class: ClassVar[type[RecipeConfig]]
    #: Overrides of :data:`QUICK_RUN` for this method's quick synthetic run.
    quick_run: ClassVar[Mapping[str, Any]] = {}
    #: The official training pipeline per dataset (``--pipeline auto``).
    pipelines: ClassVar[Mapping[str, str]] = {"synthetic": "light"}

    def __init__(self, config: RecipeConfig | None = None, **overrides: Any) -> None:
        config = self.official_config() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(f"`config` must be a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config.replace(**overrides).validate() if overrides else config.validate()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dataset={self.config.dataset!r}, backbone={self.config.backbone!r})"

    # -------------------------------------------------------------------------------------------- configurations

    @classmethod
    def official_config(cls, dataset: str = "sysu", root: str | None = None) -> RecipeConfig:
        """The official values for ``dataset`` (per-dataset choices resolve from ``"auto"`` when built)."""
        return cls.config_class(dataset=dataset, root=root)

    @classmethod
    def quick_config(cls, root: str | None = None) -> RecipeConfig:
        """The quick synthetic CPU run: :data:`QUICK_RUN` with :attr:`quick_run` over the official values."""
        return cls.config_class().replace(**{**QUICK_RUN, **cls.quick_run, "root": root})

    @classmethod
    def default_config(cls, dataset: str = "synthetic", root: str | None = None) -> RecipeConfig:
        """:meth:`quick_config` for the synthetic dataset, :meth:`official_config` for a real one."""
        return cls.quick_config(root) if dataset == "synthetic" else cls.official_config(dataset, root)

    # -------------------------------------------------------------------------------------------- the method

    @abc.abstractmethod
    def build_model(self, num_classes: int, *, pretrained: bool | None = None) -> nn.Module:
        """The network for ``num_classes`` training identities (``pretrained`` overrides the configuration)."""

    @abc.abstractmethod
    def build_criterion(self) -> nn.Module:
        """The criterion: ``criterion(output, batch) -> {term: loss}`` with ``total`` and ``weights``."""

    @abc.abstractmethod
    def build_schedule(self) -> WarmupStepSchedule:
        """The per-epoch learning-rate factor."""

    def check_model(self, model: nn.Module) -> None:
        """Run the model once on two blank images of the configured size, so it rejects a size it cannot take.

        The model's own checks speak (e.g. DEEN's official MFA needs an even number of positions at every block);
        the probe changes no weight, statistic or random state (eval mode, no gradient).

        Raises:
            ConfigurationError: the model refused the size; the message is its own.
        """
        c = self.config
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                self.embed(model, torch.zeros(2, 3, c.height, c.width), torch.tensor([0, 1]))
        except ValueError as error:
            fail(f"--height {c.height} --width {c.width}: {error}")
        finally:
            model.train(was_training)

    def param_groups(self, model: nn.Module) -> list[dict]:
        """:func:`head_param_groups` with the configured rate, weight decay and backbone scale."""
        c = self.config
        return head_param_groups(model, c.lr, weight_decay=c.weight_decay, backbone_scale=c.backbone_lr_scale)

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """SGD with momentum and Nesterov (official) or Adam over :meth:`param_groups`."""
        c = self.config
        groups = self.param_groups(model)
        if c.optimizer == "adam":
            return torch.optim.Adam(groups, lr=c.lr)
        return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov)

    def pipeline_name(self) -> str:
        """The training pipeline: ``--pipeline``, or (``auto``) :attr:`pipelines` of the dataset."""
        c = self.config
        return self.pipelines.get(c.dataset, "light") if c.pipeline == "auto" else c.pipeline

    def train_transform(self) -> Callable[[Any], Tensor]:
        """The training transform of :meth:`pipeline_name` at the configured size."""
        return build_pipeline(self.pipeline_name(), self.config.height, self.config.width)

    def train_loader(
        self,
        dataset: VIReIDDataset,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        pin_memory: bool = False,
    ) -> torch.utils.data.DataLoader:
        """The identity-balanced loader (:func:`~vireid_layers.data.build_train_loader`) of P x K x 2 images."""
        c = self.config
        epoch_length: Any = int(c.epoch_length) if c.epoch_length.isdigit() else c.epoch_length
        return build_train_loader(
            dataset.train,
            self.train_transform(),
            num_identities=c.batch_identities,
            num_instances=c.num_instances,
            epoch_length=epoch_length,
            seed=c.seed,
            num_workers=c.workers,
            num_replicas=world_size,
            rank=rank,
            pin_memory=pin_memory,
        )

    def embed(self, model: nn.Module, images: Tensor, modalities: Tensor) -> Tensor:
        """The test feature: ``model.embed(images, modalities, mode=config.feature)``."""
        return model.embed(images, modalities, mode=self.config.feature)

    def ranking(self) -> tuple[bool, Callable[[Tensor, Tensor], Tensor]]:
        """``(normalize, distance)`` of the evaluation: unit features compared by cosine similarity."""
        return True, negative_cosine_similarity

    def evaluator(
        self, dataset: VIReIDDataset, *, device: torch.device | None = None, num_trials: int = 1
    ) -> ProtocolEvaluator:
        """``model -> ProtocolResult`` on ``dataset``'s test split with the configured protocol, feature and flip."""
        c = self.config
        normalize, distance = self.ranking()
        return ProtocolEvaluator(
            protocol_for_dataset(c.dataset, direction=c.direction, mode=c.mode, num_trials=num_trials),
            dataset,
            build_test_transform(c.height, c.width),
            embed=self.embed,
            batch_size=c.eval_batch_size,
            num_workers=c.workers,
            device=device,
            flip="sum" if c.flip else False,
            normalize=normalize,
            distance=distance,
        )

    def forward(self, model: nn.Module, batch: Any) -> Any:
        """The training forward: :func:`image_forward`."""
        return image_forward(model, batch)

    def gather(self, output: Any, batch: Any) -> tuple[Any, Any]:
        """The DDP gather: :func:`gather_outputs_and_labels`."""
        return gather_outputs_and_labels(output, batch)

    def run_dir(self) -> str:
        """``--run-dir``, or ``runs/<recipe>-<dataset>-seed<seed>``."""
        c = self.config
        return c.run_dir or f"runs/{self.name}-{c.dataset}-seed{c.seed}"

    def trainer_config(self, *, device: torch.device | str | None = None) -> TrainerConfig:
        """The engine's options of this configuration (:class:`~vireid_layers.engine.TrainerConfig`)."""
        c = self.config
        return TrainerConfig(
            epochs=c.epochs,
            device=device if device is not None else c.device,
            amp=None if c.amp == "none" else c.amp,  # type: ignore[arg-type]
            channels_last=c.channels_last,
            compile=c.compile,
            grad_clip=c.grad_clip,
            sync_bn=c.sync_bn,
            deterministic=c.deterministic,
            run_dir=self.run_dir(),
            log_every=c.log_every,
            checkpoint_every_steps=c.checkpoint_every_steps,
            eval_every=c.eval_every,
            select_on=c.select_on,  # type: ignore[arg-type]
            select_metric="rank1",
        )

    def hparams(self, *, num_classes: int, world_size: int = 1) -> dict[str, Any]:
        """The run's ``config.json``: every configuration value, the recipe's name, the classes and world size."""
        return {**self.config.as_dict(), "model": self.name, "num_classes": num_classes, "world_size": world_size}


# ------------------------------------------------------------------------------------------------ the registry

_RECIPES: dict[str, type[Recipe]] = {}


def register_recipe(name: str, recipe: type[Recipe]) -> type[Recipe]:
    """Register a :class:`Recipe` subclass under ``name`` (``--method name``); returns the class.

    Raises:
        ValueError: ``name`` is taken.
        TypeError: ``recipe`` is not a :class:`Recipe` subclass.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a non-empty str, got {name!r}")
    if not (isinstance(recipe, type) and issubclass(recipe, Recipe)):
        raise TypeError(f"`recipe` must be a Recipe subclass, got {recipe!r}")
    if name in _RECIPES:
        raise ValueError(f"recipe {name!r} is already registered")
    _RECIPES[name] = recipe
    return recipe


def list_recipes() -> list[str]:
    """The registered recipe names, sorted."""
    return sorted(_RECIPES)


def recipe_class(name: str) -> type[Recipe]:
    """The registered class of ``name``.

    Raises:
        ValueError: unknown ``name``; the message lists the registered ones.
    """
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe {name!r}; registered recipes: {list_recipes()}")
    return _RECIPES[name]


def build_recipe(name: str, config: RecipeConfig | None = None, **overrides: Any) -> Recipe:
    """Build a registered recipe from ``config``, then ``overrides``.

    Without ``config`` the recipe starts from its quick synthetic run, or, with ``dataset=`` a real dataset, from
    its official values for that dataset.

    Raises:
        ValueError: unknown ``name`` (the message lists the registered ones), an unknown option or a bad value.
    """
    cls = recipe_class(name)
    if config is None:
        dataset = overrides.get("dataset", "synthetic")
        config = cls.default_config(dataset, overrides.get("root"))
    return cls(config, **overrides)
