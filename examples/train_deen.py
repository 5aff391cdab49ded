"""Train DEEN end to end with the vireid-layers engine: the synthetic quick run or the official recipe.

With no arguments, the script writes the built-in synthetic dataset (once, into ``~/.cache/vireid_layers``),
trains a small DEEN (ResNet-18, 64x32 images) on the CPU for a few minutes and evaluates it with the SYSU-MM01
protocol (infrared queries, 10 seeded single-shot galleries), printing Rank-1/5/10/20, mAP and mINP.

With ``--dataset sysu|regdb|llcm --root PATH`` it runs the official DEEN recipe :cite:`zhang2023deen`
(ResNet-50, 384x144, 6 identities x 4 images x 2 modalities, SGD + Nesterov, head lr 0.1 and backbone 0.01,
warm-up 10 epochs then x0.1 at 20 and 80, 151 epochs, CE + triplet(0.3) + 0.8 CPM + 0.01 orthogonal). Every
value lives in :class:`DEENConfig` and can be overridden from the command line (``--help`` lists them).
Under ``torchrun --nproc-per-node N`` it trains with DDP (the losses see the whole global batch).

Examples::

    python examples/train_deen.py                                   # synthetic, CPU, < 5 minutes
    python examples/train_deen.py --dataset sysu --root /data/SYSU-MM01 --amp bf16 --channels-last
    python examples/train_deen.py --dataset regdb --root /data/RegDB --trial 3 --direction v2i
    torchrun --nproc-per-node 2 examples/train_deen.py --dataset llcm --root /data/LLCM --sync-bn
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from vireid_layers import Modality
from vireid_layers.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CrossModalityIdentitySampler,
    ImageDataset,
    VIReIDDataset,
    build_dataset,
    build_test_transform,
    build_train_transform,
)
from vireid_layers.engine import DEENSchedule, Trainer, all_gather_cat, deen_param_groups, init_distributed
from vireid_layers.evaluation import (
    EvaluationProtocol,
    LLCMProtocol,
    RegDBProtocol,
    SYSUProtocol,
    evaluate_protocol,
    extract_features,
)
from vireid_layers.models import DEEN, DEENCriterion, DEENOutput

DATASETS = ("synthetic", "sysu", "regdb", "llcm")
SYNTHETIC_CACHE = Path.home() / ".cache" / "vireid_layers"  # the synthetic dataset goes to synthetic-{H}x{W}/
OFFICIAL_PIPELINES = {"sysu": "deen_sysu", "regdb": "deen_regdb", "llcm": "deen_llcm"}


@dataclass
class DEENConfig:
    """Every value of a DEEN training run. The defaults are the official SYSU-MM01 recipe.

    ``synthetic_defaults()`` gives the quick CPU run of the no-argument invocation.
    """

    dataset: str = "sysu"
    root: str | None = None
    backbone: str = "resnet50"
    pretrained: bool = True  # ImageNet weights through timm (downloaded once)
    variant: str = "auto"  # "sysu" (SYSU, LLCM) or "regdb"; "auto" picks by dataset
    mfa_form: str = "official"
    height: int = 384
    width: int = 144
    batch_identities: int = 6  # P
    num_instances: int = 4  # K images per identity and modality
    epoch_length: str = "official"  # "official", "all_images" or a number of batches
    optimizer: str = "sgd"  # "sgd" (official: momentum, Nesterov) or "adam"
    lr: float = 0.1  # head (BN neck + classifier); the rest at backbone_lr_scale * lr
    backbone_lr_scale: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    epochs: int = 151
    warmup_epochs: int = 10
    milestones: tuple[int, ...] = (20, 80)
    gamma: float = 0.1
    lambda_triplet: float = 1.0
    lambda_cpm: float = 0.8
    lambda_ort: float = 0.01
    margin: float = 0.3  # triplet margin
    cpm_margin: float = 0.2
    pipeline: str = "auto"  # training transform; "auto" = deen_<dataset>, "light" = resize + flip
    direction: str = "auto"  # "i2v"/"v2i"; auto: SYSU/LLCM i2v, RegDB v2i
    mode: str = "all"  # SYSU-MM01 all / indoor search
    trial: int = 1  # RegDB split (1..10)
    eval_trials: int = 10  # galleries averaged in the final evaluation
    feature: str = "official"  # "official" (sum of six cosine similarities) or "plain" (BN feature)
    flip: bool = False  # horizontal-flip test-time augmentation (DEEN test.py)
    eval_every: int = 10
    select_on: str = "last"  # "last", or "test" (the official code: best Rank-1 on the test set, logged)
    amp: str = "auto"
    compile: bool = False
    channels_last: bool = False
    sync_bn: bool = False
    grad_clip: float | None = None
    deterministic: bool = False
    seed: int = 0
    device: str | None = None
    workers: int = 4
    threads: int = 0  # CPU intra-op threads; 0 = torch's default, or fewer when the machine is busy (CPU only)
    eval_batch_size: int = 128
    run_dir: str | None = None
    resume: str | None = None
    log_every: int = 10

    @staticmethod
    def synthetic_defaults() -> dict[str, Any]:
        """Overrides of the quick synthetic CPU run (small net, small images, few epochs, ~2-4 minutes).

        Two deliberate departures from the official recipe, both because the quick run trains from random
        weights (no download): with the official SGD schedule and loss weights, the metric losses on the raw
        pooled features shrink every feature of a randomly initialised network to the same point (triplet =
        margin, CPM = 4 x 0.2, orthogonal = 0: the run then sits at chance). The official recipe starts from
        ImageNet weights, where this does not happen. Here Adam is used and the triplet / CPM / orthogonal weights
        are scaled by 0.1; every value can be set back from the command line.
        """
        return {
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
            "epochs": 10,
            "warmup_epochs": 1,
            "milestones": (8,),
            "lambda_triplet": 0.1,
            "lambda_cpm": 0.08,
            "lambda_ort": 0.001,
            "pipeline": "light",
            "eval_every": 0,
            "device": "cpu",
            "workers": 0,
            "log_every": 5,
        }


# ------------------------------------------------------------------------------------------------ the losses


def gather_deen(out: DEENOutput, batch: Any) -> tuple[DEENOutput, Any]:
    """Gather a DEEN output across DDP ranks keeping its ``[original; branch 1; ...]`` row layout."""
    blocks = 1 + out.num_branches

    def rows(t: Tensor) -> Tensor:
        return all_gather_cat(t.unflatten(0, (blocks, -1)), dim=1).flatten(0, 1)

    pooled, features, logits = rows(out.pooled), rows(out.features), rows(out.logits)
    n = pooled.shape[0] // blocks
    gathered = DEENOutput(pooled, features, logits, pooled[:n], pooled[n:].unflatten(0, (out.num_branches, n)))
    small = batch._replace(
        image=batch.image[:0],  # images are not needed by the losses: not sent
        identity=all_gather_cat(batch.identity),
        camera=all_gather_cat(batch.camera),
        modality=all_gather_cat(batch.modality),
    )
    return gathered, small


# ------------------------------------------------------------------------------------------------ configuration


def parse_config(argv: list[str] | None = None) -> DEENConfig:
    """Build the configuration: defaults, then the synthetic overrides (no ``--dataset``), then the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = DEENConfig()
    for f in dataclasses.fields(DEENConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif f.name == "milestones":
            parser.add_argument(flag, dest=f.name, type=int, nargs="*", default=None)
        else:
            kind = {int: int, float: float}.get(type(value), str)
            parser.add_argument(flag, dest=f.name, type=kind, default=None, metavar=f.name.upper())
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    values = dataclasses.asdict(defaults)
    if args.get("dataset", "synthetic") == "synthetic":
        values.update(DEENConfig.synthetic_defaults())
    values.update(args)
    if "milestones" in values:
        values["milestones"] = tuple(values["milestones"])
    if isinstance(values.get("grad_clip"), str):
        values["grad_clip"] = float(values["grad_clip"])
    return DEENConfig(**values)


def _fail(message: str) -> None:
    raise ValueError(f"invalid configuration: {message}")


def _check_names(cfg: DEENConfig) -> None:
    if cfg.dataset not in DATASETS:
        _fail(f"--dataset must be one of {list(DATASETS)}, got {cfg.dataset!r}")
    choices = {
        "amp": ("auto", "bf16", "fp16", "none"),
        "direction": ("auto", "i2v", "v2i"),
        "feature": ("official", "plain"),
        "select_on": ("last", "test"),  # no validation split is defined for these datasets
        "mode": ("all", "indoor"),
        "optimizer": ("sgd", "adam"),
        "mfa_form": ("official", "paper"),
        "variant": ("auto", "sysu", "regdb"),
    }
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            _fail(f"--{name.replace('_', '-')} must be one of {list(allowed)}, got {getattr(cfg, name)!r}")
    if cfg.epoch_length not in ("official", "all_images") and not cfg.epoch_length.isdigit():
        _fail(f"--epoch-length must be 'official', 'all_images' or a number of batches, got {cfg.epoch_length!r}")


def _check_numbers(cfg: DEENConfig) -> None:
    if cfg.workers < 0:
        _fail(f"--workers must be >= 0, got {cfg.workers}")
    for name in ("height", "width", "batch_identities", "num_instances", "epochs", "eval_trials"):
        if getattr(cfg, name) < 1:
            _fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in ("lr", "backbone_lr_scale", "margin", "cpm_margin"):
        if not getattr(cfg, name) > 0:
            _fail(f"--{name.replace('_', '-')} must be > 0, got {getattr(cfg, name)}")
    for name in ("lambda_triplet", "lambda_cpm", "lambda_ort", "weight_decay", "momentum"):
        if getattr(cfg, name) < 0:
            _fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if cfg.dataset == "regdb" and not 1 <= cfg.trial <= 10:
        _fail(f"--trial must be in 1..10 for RegDB, got {cfg.trial}")


def _check_mfa_size(cfg: DEENConfig) -> None:
    """The official MFA folds every map into rows of length 2: each MFA input/output needs an even size.

    ResNets reduce by 4 (stem, stage 1), 8 (stage 2) and 16 (stage 3); RegDB's variant stops at stage 2.
    """
    if cfg.mfa_form != "official":
        return
    reductions = (4, 8, 16) if resolve_variant(cfg) == "sysu" else (4, 8)
    for r in reductions:
        h, w = math.ceil(cfg.height / r), math.ceil(cfg.width / r)
        if (h * w) % 2:
            _fail(
                f"--height {cfg.height} --width {cfg.width} gives a {h}x{w} map at reduction {r}, an odd number of "
                "positions; the official MFA needs an even number at every block (e.g. 384x144, 288x144, 256x128, "
                "or use --mfa-form paper)"
            )


def validate_config(cfg: DEENConfig) -> DEENConfig:
    """Reject a bad configuration with a clear message before anything is built or trained."""
    _check_names(cfg)
    if cfg.dataset != "synthetic":
        if cfg.root is None:
            _fail(f"--root is required for --dataset {cfg.dataset} (the dataset folder in its published layout)")
        if not Path(cfg.root).is_dir():
            _fail(f"--root {cfg.root!r} does not exist or is not a directory")
    _check_numbers(cfg)
    if cfg.resume is not None and not Path(cfg.resume).is_file():
        _fail(f"--resume {cfg.resume!r} does not exist")
    _check_mfa_size(cfg)
    return cfg


def resolve_variant(cfg: DEENConfig) -> str:
    """The DEEN variant: RegDB's for RegDB, the SYSU one otherwise."""
    if cfg.variant != "auto":
        return cfg.variant
    return "regdb" if cfg.dataset == "regdb" else "sysu"


def build_protocol(cfg: DEENConfig, num_trials: int) -> EvaluationProtocol:
    """The evaluation protocol of the dataset (SYSU-MM01's for the synthetic dataset)."""
    direction = cfg.direction
    if cfg.dataset == "regdb":
        return RegDBProtocol("v2i" if direction == "auto" else direction)
    direction = "i2v" if direction == "auto" else direction
    if cfg.dataset == "llcm":
        return LLCMProtocol(direction=direction, num_trials=num_trials)
    return SYSUProtocol(mode=cfg.mode, direction=direction, num_trials=num_trials)


def read_dataset(cfg: DEENConfig) -> VIReIDDataset:
    """Read the dataset; the synthetic one is generated first if absent."""
    if cfg.dataset == "synthetic":
        from vireid_layers.data.datasets.synthetic import make_synthetic_dataset

        root = Path(cfg.root) if cfg.root else SYNTHETIC_CACHE / f"synthetic-{cfg.height}x{cfg.width}"
        start = time.perf_counter()
        make_synthetic_dataset(root, height=cfg.height, width=cfg.width, seed=0)
        print(f"synthetic dataset ready in {root} ({time.perf_counter() - start:.1f}s)")
        return build_dataset("synthetic", root)
    kwargs = {"trial": cfg.trial} if cfg.dataset == "regdb" else {}
    return build_dataset(cfg.dataset, cfg.root, **kwargs)


def train_transform(cfg: DEENConfig) -> Any:
    """The training transform: the official DEEN pipeline of the dataset, or a light one for tiny images."""
    name = cfg.pipeline
    if name == "auto":
        name = OFFICIAL_PIPELINES.get(cfg.dataset, "light")
    if name == "light":
        return v2.Compose(
            [
                v2.ToImage(),
                v2.RGB(),
                v2.Resize((cfg.height, cfg.width), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                v2.ToPureTensor(),
            ]
        )
    return build_train_transform(name, height=cfg.height, width=cfg.width)


def make_evaluator(cfg: DEENConfig, dataset: VIReIDDataset, device: torch.device, num_trials: int) -> Any:
    """``model -> ProtocolResult`` on the dataset's test split."""
    protocol = build_protocol(cfg, num_trials)
    transform = build_test_transform(cfg.height, cfg.width)
    flip = "sum" if cfg.flip else False

    def forward(model: nn.Module, images: Tensor, modalities: Tensor) -> Tensor:
        return model.embed(images, modalities, mode=cfg.feature).flatten(1)

    def extract(records: list, modality: Modality) -> Tensor:
        loader = DataLoader(ImageDataset(records, transform), batch_size=cfg.eval_batch_size, num_workers=cfg.workers)
        features, _, _ = extract_features(model_ref[0], loader, modality, forward=forward, device=device, flip=flip)
        return features

    model_ref: list[nn.Module] = []

    def evaluate(model: nn.Module) -> Any:
        model_ref[:] = [model]
        return evaluate_protocol(protocol, dataset, extract)

    return evaluate


def cpu_threads(requested: int) -> int:
    """Intra-op threads for CPU training: ``requested``, or (0) torch's default reduced to the idle cores.

    Oversubscribed cores make small-tensor training many times slower, so on a busy machine fewer threads win.
    """
    if requested > 0:
        return requested
    default = torch.get_num_threads()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on every platform
        return default
    return max(1, min(default, round((os.cpu_count() or default) - busy)))


def main(argv: list[str] | None = None) -> int:
    """Parse, validate, train, evaluate; returns the exit status."""
    try:
        cfg = validate_config(parse_config(argv))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rank, world_size, device = init_distributed()
    if cfg.device is not None and world_size == 1:
        device = torch.device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg.threads))
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    dataset = read_dataset(cfg) if rank == 0 else None
    if world_size > 1:  # rank 0 generates/reads first; the others read after it
        torch.distributed.barrier()
        dataset = dataset or read_dataset(cfg)
    assert dataset is not None
    num_classes = dataset.num_train_identities
    model = DEEN(
        num_classes,
        backbone=cfg.backbone,
        pretrained=cfg.pretrained,
        variant=resolve_variant(cfg),
        mfa_form=cfg.mfa_form,
    )
    epoch_length: Any = int(cfg.epoch_length) if cfg.epoch_length.isdigit() else cfg.epoch_length
    sampler = CrossModalityIdentitySampler(
        dataset.train,
        cfg.batch_identities,
        cfg.num_instances,
        epoch_length=epoch_length,
        seed=cfg.seed,
        num_replicas=world_size,
        rank=rank,
    )
    loader = DataLoader(
        ImageDataset(dataset.train, train_transform(cfg)),
        batch_sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.workers > 0,
    )
    groups = deen_param_groups(model, cfg.lr, weight_decay=cfg.weight_decay, backbone_scale=cfg.backbone_lr_scale)
    if cfg.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=cfg.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    criterion = DEENCriterion(
        lambda_cpm=cfg.lambda_cpm,
        lambda_ort=cfg.lambda_ort,
        margin=cfg.margin,
        cpm_margin=cfg.cpm_margin,
        lambda_triplet=cfg.lambda_triplet,
    )
    run_dir = cfg.run_dir or f"runs/deen-{cfg.dataset}-seed{cfg.seed}"
    evaluate = make_evaluator(cfg, dataset, device, num_trials=1) if cfg.eval_every > 0 else None
    trainer = Trainer(
        model,
        criterion,
        optimizer,
        DEENSchedule(cfg.warmup_epochs, tuple(cfg.milestones), cfg.gamma),
        loader,
        device=device,
        amp=None if cfg.amp == "none" else cfg.amp,  # type: ignore[arg-type]
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        grad_clip=cfg.grad_clip,
        run_dir=run_dir,
        epochs=cfg.epochs,
        gather=gather_deen,
        evaluate=evaluate,
        eval_every=cfg.eval_every,
        select_on="test" if cfg.select_on == "test" else "last",
        test=make_evaluator(cfg, dataset, device, num_trials=cfg.eval_trials) if rank == 0 else None,
        config={**dataclasses.asdict(cfg), "num_classes": num_classes, "world_size": world_size},
        sync_bn=cfg.sync_bn,
        deterministic=cfg.deterministic,
        log_every=cfg.log_every,
    )
    trainer.run.log(
        f"DEEN on {cfg.dataset}: {len(dataset.train)} training images, {num_classes} identities, "
        f"{cfg.backbone} at {cfg.height}x{cfg.width}, batch {cfg.batch_identities}x{cfg.num_instances}x2, "
        f"{len(sampler)} batches per epoch, {torch.get_num_threads()} CPU threads, run directory {run_dir}"
    )
    result = trainer.fit(resume=cfg.resume)
    if rank == 0:
        print(f"total wall time {time.perf_counter() - start:.1f}s")
        if result.final is not None:
            reported = result.final.reported()
            print(
                "Rank-1 {:.2f}  mAP {:.2f}  mINP {:.2f} (%, mean over {} trials)".format(
                    100 * reported["rank1"][0], 100 * reported["mAP"][0], 100 * reported["mINP"][0], cfg.eval_trials
                )
            )
    if world_size > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
