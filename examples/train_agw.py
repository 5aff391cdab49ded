"""Train the AGW baseline with the vireid-layers engine: the synthetic quick run or the official recipe.

With no arguments, the script writes the built-in synthetic dataset (once, into ``~/.cache/vireid_layers``),
trains a small AGW (ResNet-18, 64x32 images) on the CPU for a few minutes and evaluates it with the SYSU-MM01
protocol (infrared queries, 10 seeded single-shot galleries), printing Rank-1/5/10/20, mAP and mINP.

With ``--dataset sysu|regdb|llcm --root PATH`` it runs the official AGW recipe :cite:`ye2021agw` (the
cross-modality baseline code): ResNet-50 with non-local blocks (one-channel bottleneck) after the last 2 blocks
of layer2 and the last 3 of layer3, GeM (p = 3), BN neck; 288x144, 8 identities x 4 images x 2 modalities,
pad 10 + random crop + flip; SGD + Nesterov (momentum 0.9, weight decay 5e-4), head lr 0.1 and backbone (with
the non-local blocks) 0.01, warm-up 10 epochs then x0.1 at 20 and x0.01 at 50, 81 epochs; CE + WRT; evaluation
every 2 epochs on the BN ("fc") feature. ``--method base`` is the official baseline without non-local blocks,
with average pooling and the batch-hard triplet loss (margin 0.3). Every value lives in :class:`AGWConfig` and
can be overridden from the command line (``--help`` lists them). Under ``torchrun --nproc-per-node N`` it
trains with DDP (WRT sees the whole global batch).

Examples::

    python examples/train_agw.py                                    # synthetic, CPU, a few minutes
    python examples/train_agw.py --dataset sysu --root /data/SYSU-MM01 --amp bf16 --channels-last
    python examples/train_agw.py --dataset regdb --root /data/RegDB --trial 3
    python examples/train_agw.py --dataset sysu --root /data/SYSU-MM01 --non-local-form corrected
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vireid_layers.engine import AGWSchedule
from vireid_layers.models import AGWCriterion

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/common.py, also when loaded by path
import common

OFFICIAL_PIPELINE = "agw"  # pad 10, random crop, horizontal flip (no random erasing in the official AGW code)


@dataclass
class AGWConfig(common.RecipeConfig):
    """Every value of an AGW training run: the shared recipe values with AGW's official defaults (SYSU-MM01),
    and AGW's own.

    ``synthetic_defaults()`` gives the quick CPU run of the no-argument invocation.
    """

    height: int = 288
    batch_identities: int = 8  # P
    epochs: int = 81
    milestones: tuple[int, ...] = (20, 50)
    lambda_triplet: float = 1.0  # weight of WRT (or of the triplet loss of --method base)
    margin: float = 0.3  # triplet margin of --method base (WRT has none)
    feature: str = "fc"  # "fc" (BN feature, the official selection) or "pool" (pre-BN feature)
    eval_every: int = 2
    method: str = "agw"  # "agw" (non-local, GeM, WRT) or "base" (average pooling, batch-hard triplet)
    non_local_form: str = "official"  # "official" (1-channel bottleneck) or "corrected" (C/2 channels)
    learnable_p: bool = False  # learn the GeM exponent (the single-modality survey's variant)

    @staticmethod
    def synthetic_defaults() -> dict[str, Any]:
        """Overrides of the quick synthetic CPU run: small net, small images, 350 steps (about 2 minutes on 2 cores).

        :data:`common.QUICK_RUN` (as for DEEN's quick run, random weights and Adam instead of the official SGD
        schedule); every value can be set back from the command line.
        """
        return dict(common.QUICK_RUN)


def parse_config(argv: list[str] | None = None) -> AGWConfig:
    """Build the configuration: defaults, then the synthetic overrides (no ``--dataset``), then the command line."""
    return common.parse_config(AGWConfig, argv, AGWConfig.synthetic_defaults(), __doc__.splitlines()[0])


def validate_config(cfg: AGWConfig) -> AGWConfig:
    """Reject a bad configuration with a clear message before anything is built or trained."""
    common.check_common(
        cfg,
        choices={
            "method": ("agw", "base"),
            "non_local_form": ("official", "corrected"),
            "feature": ("fc", "pool"),
        },
        positive=("margin",),
        non_negative=("lambda_triplet",),
    )
    if cfg.method == "base" and cfg.learnable_p:
        common.fail("--learnable-p needs --method agw: the base method pools by averaging")
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Parse, validate, train, evaluate; returns the exit status."""
    cfg = common.parse_and_validate(argv, parse_config, validate_config)
    if cfg is None:
        return 2
    env = common.setup(cfg)
    model = common.build_model("agw", env.dataset.num_train_identities, vars(cfg))
    criterion = AGWCriterion(method=cfg.method, lambda_triplet=cfg.lambda_triplet, margin=cfg.margin)
    return common.train(
        cfg,
        env,
        model_name="agw",
        model=model,
        criterion=criterion,
        schedule=AGWSchedule(cfg.warmup_epochs, tuple(cfg.milestones), cfg.gamma),
        official_pipeline=OFFICIAL_PIPELINE,
    )


if __name__ == "__main__":
    sys.exit(main())
