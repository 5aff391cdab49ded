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

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from vireid_layers.engine import DEENSchedule, all_gather_cat
from vireid_layers.models import DEENCriterion, DEENOutput

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/common.py, also when loaded by path
import common

OFFICIAL_PIPELINES = {"sysu": "deen_sysu", "regdb": "deen_regdb", "llcm": "deen_llcm"}


@dataclass
class DEENConfig(common.RecipeConfig):
    """Every value of a DEEN training run: the shared recipe values (their defaults are DEEN's official SYSU-MM01
    recipe) and DEEN's own.

    ``synthetic_defaults()`` gives the quick CPU run of the no-argument invocation.
    """

    variant: str = "auto"  # "sysu" (SYSU, LLCM) or "regdb"; "auto" picks by dataset
    mfa_form: str = "official"
    lambda_cpm: float = 0.8
    lambda_ort: float = 0.01
    cpm_margin: float = 0.2
    feature: str = "official"  # "official" (sum of six cosine similarities) or "plain" (BN feature)

    @staticmethod
    def synthetic_defaults() -> dict[str, Any]:
        """Overrides of the quick synthetic CPU run: small net, small images, 350 steps (about 2.5 minutes on 2 cores).

        :data:`common.QUICK_RUN`, and the triplet / CPM / orthogonal weights scaled by 0.1: with the official
        SGD schedule and loss weights, the metric losses on the raw pooled features shrink every feature of a
        randomly initialised network to the same point (triplet = margin, CPM = 4 x 0.2, orthogonal = 0: the run
        then sits at chance). The official recipe starts from ImageNet weights, where this does not happen. Every
        value can be set back from the command line.
        """
        return {**common.QUICK_RUN, "lambda_triplet": 0.1, "lambda_cpm": 0.08, "lambda_ort": 0.001}


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
    return common.parse_config(DEENConfig, argv, DEENConfig.synthetic_defaults(), __doc__.splitlines()[0])


def resolve_variant(cfg: DEENConfig) -> str:
    """The DEEN variant: RegDB's for RegDB, the SYSU one otherwise."""
    return common.deen_variant({"variant": cfg.variant, "dataset": cfg.dataset})


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
            common.fail(
                f"--height {cfg.height} --width {cfg.width} gives a {h}x{w} map at reduction {r}, an odd number of "
                "positions; the official MFA needs an even number at every block (e.g. 384x144, 288x144, 256x128, "
                "or use --mfa-form paper)"
            )


def validate_config(cfg: DEENConfig) -> DEENConfig:
    """Reject a bad configuration with a clear message before anything is built or trained."""
    common.check_common(
        cfg,
        choices={
            "feature": ("official", "plain"),
            "mfa_form": ("official", "paper"),
            "variant": ("auto", "sysu", "regdb"),
        },
        positive=("margin", "cpm_margin"),
        non_negative=("lambda_triplet", "lambda_cpm", "lambda_ort"),
    )
    _check_mfa_size(cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Parse, validate, train, evaluate; returns the exit status."""
    cfg = common.parse_and_validate(argv, parse_config, validate_config)
    if cfg is None:
        return 2
    env = common.setup(cfg)
    model = common.build_model("deen", env.dataset.num_train_identities, vars(cfg))
    criterion = DEENCriterion(
        lambda_cpm=cfg.lambda_cpm,
        lambda_ort=cfg.lambda_ort,
        margin=cfg.margin,
        cpm_margin=cfg.cpm_margin,
        lambda_triplet=cfg.lambda_triplet,
    )
    return common.train(
        cfg,
        env,
        model_name="deen",
        model=model,
        criterion=criterion,
        schedule=DEENSchedule(cfg.warmup_epochs, tuple(cfg.milestones), cfg.gamma),
        gather=gather_deen,
        official_pipeline=OFFICIAL_PIPELINES.get(cfg.dataset),
    )


if __name__ == "__main__":
    sys.exit(main())
