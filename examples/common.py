"""Script plumbing shared by the example trainers and ``evaluate.py``: the command line, the dataset, the run.

Everything a training script needs that is not the method itself: a configuration dataclass turned into
command-line flags, the early validation of the values every recipe shares, reading the dataset (writing the
synthetic one first), the training transform, the CPU thread count, the models by name, and the run (loader,
optimizer, evaluators and :class:`~vireid_layers.engine.Trainer`). The library pieces it calls are what a
trainer of one's own would use: :func:`~vireid_layers.engine.build_train_loader`,
:func:`~vireid_layers.engine.head_param_groups`, :class:`~vireid_layers.engine.ProtocolEvaluator`,
:func:`~vireid_layers.evaluation.protocol_for_dataset`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torchvision.transforms import v2

from vireid_layers.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIReIDDataset,
    build_dataset,
    build_test_transform,
    build_train_transform,
)
from vireid_layers.data.datasets.sysu import read_id_file
from vireid_layers.engine import ProtocolEvaluator, Trainer, build_train_loader, head_param_groups, init_distributed
from vireid_layers.evaluation import negative_cosine_similarity, negative_dot_product, protocol_for_dataset
from vireid_layers.models import AGW, DEEN

DATASETS = ("synthetic", "sysu", "regdb", "llcm")
MODELS = ("deen", "agw")
SYNTHETIC_CACHE = Path.home() / ".cache" / "vireid_layers"  # the synthetic dataset goes to synthetic-{H}x{W}/

# Values every recipe accepts, checked by `check_common` (each script adds its own).
COMMON_CHOICES: dict[str, tuple[str, ...]] = {
    "amp": ("auto", "bf16", "fp16", "none"),
    "direction": ("auto", "i2v", "v2i"),
    "select_on": ("last", "val", "test"),
    "mode": ("all", "indoor"),
    "optimizer": ("sgd", "adam"),
}


# ------------------------------------------------------------------------------------------------ the recipe


@dataclass
class RecipeConfig:
    """The values every recipe shares: data, batches, optimiser, schedule, evaluation and the engine.

    The defaults are DEEN's official SYSU-MM01 recipe; each script subclasses it with its own fields and defaults.
    """

    dataset: str = "sysu"
    root: str | None = None
    backbone: str = "resnet50.tv_in1k"  # ResNet-50 with the torchvision ImageNet weights the official code loads
    pretrained: bool = True  # ImageNet weights through timm (downloaded once)
    height: int = 384
    width: int = 144
    batch_identities: int = 6  # P
    num_instances: int = 4  # K images per identity and modality
    epoch_length: str = "official"  # "official", "all_images" or a number of batches
    optimizer: str = "sgd"  # "sgd" (official: momentum, Nesterov) or "adam"
    lr: float = 0.1  # head (BN neck + classifier); the rest of the network at backbone_lr_scale * lr
    backbone_lr_scale: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    epochs: int = 151
    warmup_epochs: int = 10
    milestones: tuple[int, ...] = (20, 80)
    gamma: float = 0.1
    lambda_triplet: float = 1.0
    margin: float = 0.3  # triplet margin
    pipeline: str = "auto"  # training transform; "auto" = the official one, "light"/"light_gray" for tiny images
    direction: str = "auto"  # "i2v"/"v2i"; auto: SYSU/LLCM i2v, RegDB v2i
    mode: str = "all"  # SYSU-MM01 all / indoor search
    trial: int = 1  # RegDB split (1..10)
    eval_trials: int = 10  # galleries averaged in the final evaluation
    feature: str = "official"  # the test-time feature (the choices depend on the model)
    flip: bool = False  # horizontal-flip test-time augmentation
    eval_every: int = 10
    # "last"; "val": best Rank-1 on held-out training identities (val_identities); "test": the official code,
    # best Rank-1 on the test set, logged as selected_on=test
    select_on: str = "last"
    val_identities: int = 0  # --select-on val: N ids held out (seeded); 0: exp/val_id.txt (SYSU-MM01, synthetic)
    amp: str = "auto"
    compile: bool = False
    channels_last: bool = False
    sync_bn: bool = False
    grad_clip: float | None = None
    deterministic: bool = False
    seed: int = 0
    device: str | None = None
    workers: int = 4
    threads: int = 0  # CPU intra-op threads; 0 = torch's default (one per core); 1 on a busy machine
    eval_batch_size: int = 128
    run_dir: str | None = None
    resume: str | None = None
    log_every: int = 10
    checkpoint_every_steps: int | None = None  # also write last.pt every N steps inside an epoch (exact resume)


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


# ------------------------------------------------------------------------------------------------ the command line


def _flag_type(field: dataclasses.Field, value: Any) -> type:
    if isinstance(value, bool):
        return bool
    if value is None:  # optional values: the annotation (a string under `from __future__ import annotations`)
        annotation = str(field.type)
        return float if annotation.startswith("float") else int if annotation.startswith("int") else str
    return {int: int, float: float}.get(type(value), str)


def parse_config(cls: type, argv: list[str] | None, synthetic: Mapping[str, Any], description: str) -> Any:
    """Build a configuration dataclass: defaults, then ``synthetic`` (without ``--dataset``), then the command line.

    Every field ``name`` becomes ``--name`` (underscores as dashes): booleans as ``--x/--no-x``, tuples as lists.
    """
    parser = argparse.ArgumentParser(description=description)
    defaults = cls()
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        kind = _flag_type(f, value)
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(value, tuple):
            parser.add_argument(flag, dest=f.name, type=int, nargs="*", default=None)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=None, metavar=f.name.upper())
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    values = dataclasses.asdict(defaults)
    if args.get("dataset", "synthetic") == "synthetic":
        values.update(synthetic)
    values.update(args)
    for f in dataclasses.fields(cls):
        if isinstance(getattr(defaults, f.name), tuple):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def fail(message: str) -> None:
    """Reject a configuration: ``ValueError("invalid configuration: ...")``."""
    raise ValueError(f"invalid configuration: {message}")


def check_choices(cfg: Any, choices: Mapping[str, tuple[str, ...]]) -> None:
    """Every ``cfg.<name>`` must be one of ``choices[name]``."""
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            fail(f"--{name.replace('_', '-')} must be one of {list(allowed)}, got {getattr(cfg, name)!r}")


def check_dataset(dataset: str, root: str | None) -> None:
    """A known dataset, and an existing ``--root`` for the real ones."""
    if dataset not in DATASETS:
        fail(f"--dataset must be one of {list(DATASETS)}, got {dataset!r}")
    if dataset != "synthetic":
        if root is None:
            fail(f"--root is required for --dataset {dataset} (the dataset folder in its published layout)")
        if not Path(root).is_dir():
            fail(f"--root {root!r} does not exist or is not a directory")


def check_common(
    cfg: Any,
    *,
    choices: Mapping[str, tuple[str, ...]],
    positive: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
) -> None:
    """Checks shared by the recipes, then the script's own ``choices``, ``positive`` and ``non_negative`` values."""
    check_dataset(cfg.dataset, cfg.root)
    check_choices(cfg, {**COMMON_CHOICES, **choices})
    if cfg.epoch_length not in ("official", "all_images") and not cfg.epoch_length.isdigit():
        fail(f"--epoch-length must be 'official', 'all_images' or a number of batches, got {cfg.epoch_length!r}")
    _check_numbers(cfg, positive, non_negative)
    if cfg.dataset == "regdb" and not 1 <= cfg.trial <= 10:
        fail(f"--trial must be in 1..10 for RegDB, got {cfg.trial}")
    if cfg.resume is not None and not Path(cfg.resume).is_file():
        fail(f"--resume {cfg.resume!r} does not exist")
    if cfg.val_identities < 0:
        fail(f"--val-identities must be >= 0, got {cfg.val_identities}")
    if cfg.select_on == "val" and cfg.val_identities == 0 and cfg.dataset not in ("sysu", "synthetic"):
        fail(
            f"--select-on val needs --val-identities N for --dataset {cfg.dataset} (only SYSU-MM01's layout "
            "defines validation identities, exp/val_id.txt)"
        )


def _check_numbers(cfg: Any, positive: tuple[str, ...], non_negative: tuple[str, ...]) -> None:
    if cfg.workers < 0:
        fail(f"--workers must be >= 0, got {cfg.workers}")
    if cfg.checkpoint_every_steps is not None and cfg.checkpoint_every_steps < 1:
        fail(f"--checkpoint-every-steps must be >= 1, got {cfg.checkpoint_every_steps}")
    for name in ("height", "width", "batch_identities", "num_instances", "epochs", "eval_trials"):
        if getattr(cfg, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in ("lr", "backbone_lr_scale", *positive):
        if not getattr(cfg, name) > 0:
            fail(f"--{name.replace('_', '-')} must be > 0, got {getattr(cfg, name)}")
    for name in ("weight_decay", "momentum", *non_negative):
        if getattr(cfg, name) < 0:
            fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")


def parse_and_validate(argv: list[str] | None, parse: Callable[[Any], Any], validate: Callable[[Any], Any]) -> Any:
    """``validate(parse(argv))``, or ``None`` after printing the error (the script then exits with status 2)."""
    try:
        return validate(parse(argv))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return None


# ------------------------------------------------------------------------------------------------ data and models


def read_dataset(name: str, root: str | None, *, height: int, width: int, trial: int = 1) -> VIReIDDataset:
    """Read a dataset by name; the synthetic one is written first if absent (into the cache without a root).

    A ``root`` that already holds a synthetic dataset (its manifest) is read as it is, whatever parameters it was
    generated with; otherwise the default synthetic dataset at ``height`` x ``width`` is written there. The cache
    folder (no ``root``) belongs to the examples: a dataset of an older generator version there is replaced.
    """
    if name == "synthetic":
        from vireid_layers.data.datasets.synthetic import SYNTHETIC_MANIFEST, make_synthetic_dataset

        folder = Path(root) if root else SYNTHETIC_CACHE / f"synthetic-{height}x{width}"
        if root and (folder / SYNTHETIC_MANIFEST).is_file():
            return build_dataset("synthetic", folder)
        start = time.perf_counter()
        make_synthetic_dataset(folder, height=height, width=width, seed=0, overwrite=not root)
        print(f"synthetic dataset ready in {folder} ({time.perf_counter() - start:.1f}s)")
        return build_dataset("synthetic", folder)
    kwargs = {"trial": trial} if name == "regdb" else {}
    return build_dataset(name, root, **kwargs)


def train_transform(pipeline: str, official: str | None, height: int, width: int) -> Any:
    """The training transform: ``pipeline`` by name; ``"auto"`` = ``official`` (or light).

    Besides the library's pipelines (:data:`~vireid_layers.data.TRAIN_PIPELINES`), two for tiny synthetic images,
    where the official 10-pixel padding and crops would be huge: ``"light"`` (resize, flip) and ``"light_gray"``
    (resize, grey with probability 0.5 as DEEN's ``RandomGrayscale``, flip).
    """
    name = (official or "light") if pipeline == "auto" else pipeline
    if name in ("light", "light_gray"):
        gray = [v2.RandomGrayscale(0.5)] if name == "light_gray" else []
        return v2.Compose(
            [
                v2.ToImage(),
                v2.RGB(),
                v2.Resize((height, width), antialias=True),
                *gray,
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                v2.ToPureTensor(),
            ]
        )
    return build_train_transform(name, height=height, width=width)


def deen_variant(settings: Mapping[str, Any]) -> str:
    """The DEEN variant of a configuration: ``"auto"`` picks RegDB's for RegDB, the SYSU one otherwise."""
    variant = settings.get("variant", "auto")
    if variant != "auto":
        return variant
    return "regdb" if settings.get("dataset") == "regdb" else "sysu"


def build_model(
    model: str, num_classes: int, settings: Mapping[str, Any], *, pretrained: bool | None = None
) -> nn.Module:
    """DEEN or AGW from a configuration (a script's config or a run's ``config.json``); missing keys take defaults."""
    backbone = settings.get("backbone", "resnet50")
    pretrained = settings.get("pretrained", False) if pretrained is None else pretrained
    if model == "deen":
        return DEEN(
            num_classes,
            backbone=backbone,
            pretrained=pretrained,
            variant=deen_variant(settings),  # type: ignore[arg-type]
            mfa_form=settings.get("mfa_form", "official"),
        )
    if model == "agw":
        return AGW(
            num_classes,
            backbone=backbone,
            pretrained=pretrained,
            method=settings.get("method", "agw"),
            non_local_form=settings.get("non_local_form", "official"),
            learnable_p=settings.get("learnable_p", False),
        )
    raise ValueError(f"`model` must be one of {list(MODELS)}, got {model!r}")


def embedder(feature: str) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(model, images, modalities) -> model.embed(images, modalities, mode=feature)``."""

    def embed(model: nn.Module, images: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
        return model.embed(images, modalities, mode=feature)

    return embed


def cpu_threads(requested: int) -> int:
    """Intra-op threads for CPU training: ``requested``, or (0) torch's default (one per core).

    On a machine busy with other work, fewer threads than cores are faster for these small tensors (oversubscribed
    cores make every op wait): pass ``--threads 1`` there.
    """
    return requested if requested > 0 else torch.get_num_threads()


# ------------------------------------------------------------------------------------------------ the run


class Setup(NamedTuple):
    """The process and the data of a run: ``val`` holds the held-out identities of ``--select-on val``."""

    rank: int
    world_size: int
    device: torch.device
    dataset: VIReIDDataset
    val: VIReIDDataset | None = None


def validation_identities(cfg: Any, dataset: VIReIDDataset) -> list[int]:
    """The training identities held out for model selection.

    ``--val-identities N`` draws N of them with the run's seed; ``0`` takes SYSU-MM01's ``exp/val_id.txt`` (the
    synthetic dataset writes one too), which the official code trains on.
    """
    if cfg.val_identities == 0:
        return list(read_id_file(dataset.root / "exp" / "val_id.txt"))
    if cfg.val_identities >= len(dataset.train_identities):
        fail(
            f"--val-identities must be below the number of training identities "
            f"({len(dataset.train_identities)}), got {cfg.val_identities}"
        )
    order = torch.randperm(len(dataset.train_identities), generator=torch.Generator().manual_seed(cfg.seed))
    return sorted(dataset.train_identities[i] for i in order[: cfg.val_identities].tolist())


def setup(cfg: Any) -> Setup:
    """Distributed init, device, CPU threads, seed, then the dataset (rank 0 first: it may write the synthetic one)."""
    rank, world_size, device = init_distributed()
    if cfg.device is not None and world_size == 1:
        device = torch.device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg.threads))
    torch.manual_seed(cfg.seed)

    def read() -> VIReIDDataset:
        return read_dataset(cfg.dataset, cfg.root, height=cfg.height, width=cfg.width, trial=cfg.trial)

    dataset = read() if rank == 0 else None
    if world_size > 1:
        torch.distributed.barrier()
        dataset = dataset or read()
    assert dataset is not None
    if cfg.select_on != "val":
        return Setup(rank, world_size, device, dataset)
    train, val = dataset.hold_out(validation_identities(cfg, dataset))
    return Setup(rank, world_size, device, train, val)


def make_evaluator(cfg: Any, dataset: VIReIDDataset, device: torch.device, num_trials: int) -> ProtocolEvaluator:
    """``model -> ProtocolResult`` on the dataset's test split with the configured protocol, feature and flip.

    DEEN's official feature with flip averaging ranks as its ``test.py``: the six unit features of an image and of
    its flip are added, not normalised again, and compared by their dot product.
    """
    official_flip = bool(cfg.flip) and cfg.feature == "official"
    return ProtocolEvaluator(
        protocol_for_dataset(cfg.dataset, direction=cfg.direction, mode=cfg.mode, num_trials=num_trials),
        dataset,
        build_test_transform(cfg.height, cfg.width),
        embed=embedder(cfg.feature),
        batch_size=cfg.eval_batch_size,
        num_workers=cfg.workers,
        device=device,
        flip="sum" if cfg.flip else False,
        normalize=not official_flip,
        distance=negative_dot_product if official_flip else negative_cosine_similarity,
    )


def train(
    cfg: Any,
    env: Setup,
    *,
    model_name: str,
    model: nn.Module,
    criterion: nn.Module,
    schedule: Callable[[int], float],
    gather: Callable[[Any, Any], tuple[Any, Any]] | None = None,
    official_pipeline: str | None = None,
) -> int:
    """Train ``model`` with the recipe of ``cfg``, evaluate it, print the results; returns the exit status."""
    start = time.perf_counter()
    dataset, device = env.dataset, env.device
    epoch_length: Any = int(cfg.epoch_length) if cfg.epoch_length.isdigit() else cfg.epoch_length
    loader = build_train_loader(
        dataset.train,
        train_transform(cfg.pipeline, official_pipeline, cfg.height, cfg.width),
        num_identities=cfg.batch_identities,
        num_instances=cfg.num_instances,
        epoch_length=epoch_length,
        seed=cfg.seed,
        num_workers=cfg.workers,
        num_replicas=env.world_size,
        rank=env.rank,
        pin_memory=device.type == "cuda",
    )
    groups = head_param_groups(model, cfg.lr, weight_decay=cfg.weight_decay, backbone_scale=cfg.backbone_lr_scale)
    if cfg.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=cfg.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    run_dir = cfg.run_dir or f"runs/{model_name}-{cfg.dataset}-seed{cfg.seed}"
    num_classes = dataset.num_train_identities
    trainer = Trainer(
        model,
        criterion,
        optimizer,
        schedule,
        loader,
        device=device,
        amp=None if cfg.amp == "none" else cfg.amp,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        grad_clip=cfg.grad_clip,
        run_dir=run_dir,
        epochs=cfg.epochs,
        gather=gather,
        evaluate=make_evaluator(cfg, env.val or dataset, device, num_trials=1)
        if cfg.eval_every > 0 and env.rank == 0
        else None,
        eval_every=cfg.eval_every,
        select_on=cfg.select_on,
        test=make_evaluator(cfg, dataset, device, num_trials=cfg.eval_trials) if env.rank == 0 else None,
        config={
            **dataclasses.asdict(cfg),
            "model": model_name,
            "num_classes": num_classes,
            "world_size": env.world_size,
        },
        sync_bn=cfg.sync_bn,
        deterministic=cfg.deterministic,
        log_every=cfg.log_every,
        checkpoint_every_steps=cfg.checkpoint_every_steps,
    )
    trainer.run.log(
        f"{type(model).__name__} on {cfg.dataset}: {len(dataset.train)} training images, {num_classes} identities, "
        f"{cfg.backbone} at {cfg.height}x{cfg.width}, batch {cfg.batch_identities}x{cfg.num_instances}x2, "
        f"{len(loader)} batches per epoch, {torch.get_num_threads()} CPU threads, run directory {run_dir}"
    )
    result = trainer.fit(resume=cfg.resume)
    if env.rank == 0:
        print(f"total wall time {time.perf_counter() - start:.1f}s")
        if result.final is not None:
            reported = result.final.reported()
            print(
                "Rank-1 {:.2f}  mAP {:.2f}  mINP {:.2f} (%, mean over {} trials)".format(
                    100 * reported["rank1"][0], 100 * reported["mAP"][0], 100 * reported["mINP"][0], cfg.eval_trials
                )
            )
    if env.world_size > 1:
        torch.distributed.destroy_process_group()
    return 0
