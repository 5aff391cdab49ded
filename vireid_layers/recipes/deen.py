r"""The DEEN recipe :cite:`zhang2023deen`: DEEN trained and evaluated the way the official code does it.

Everything that makes "DEEN trained the official way" is here, with the official values (``train.py`` of the
official repository, see the reference notes) as the defaults of :class:`DEENConfig`:

========================  ===================================================================================
model                     :class:`~vireid_layers.models.DEEN`: ResNet-50 (torchvision ImageNet weights), MFA
                          after stages 1-3, DEE (two branches) before stage 4; RegDB: one stage earlier
criterion                 :class:`~vireid_layers.models.DEENCriterion`: CE + 1.0 triplet (margin 0.3, all rows)
                          + 0.8 CPM (margin 0.2, both branches summed) + 0.01 orthogonal
parameter groups          :func:`deen_param_groups`: BN neck and classifier at the rate, the rest at 0.1 x
optimiser                 SGD, momentum 0.9, Nesterov, weight decay 5e-4, head rate 0.1
schedule                  :class:`DEENSchedule`: linear warm-up 0.1 -> 1 over epochs 0-9, x0.1 at 20 and at 80;
                          151 epochs
batches                   6 identities x 4 visible + 4 infrared images; ``official`` epoch length
transforms                384 x 144; ``deen_sysu`` (pad 10, grey 0.5, crop, flip, erasing 0.2-0.8) on SYSU-MM01,
                          ``deen_regdb`` / ``deen_llcm`` (erasing 0.02-0.4) on RegDB / LLCM
evaluation                the official feature: six L2-normalised features (pool and BN of the original and both
                          DEE rows), ranked by the sum of their cosine similarities; with ``flip`` the features of
                          the image and its flip are added, not re-normalised, and compared by the dot product
                          (``test.py``)
per dataset               RegDB: the ``regdb`` variant, visible queries; SYSU-MM01 and LLCM: infrared queries
========================  ===================================================================================

The quick synthetic run (:meth:`DEENRecipe.quick_config`, the README's main job) is
:data:`~vireid_layers.recipes.QUICK_RUN` with the triplet, CPM and orthogonal weights scaled by 0.1: with the
official SGD schedule and loss weights, the metric losses on the raw pooled features shrink every feature of a
randomly initialised network to the same point (triplet = margin, CPM = 4 x 0.2, orthogonal = 0: the run then
sits at chance). The official recipe starts from ImageNet weights, where this does not happen.

The ablation of the paper (Table 4 of :cite:`zhang2023deen`) is a set of options: ``--num-branches 0`` removes
DEE (the base network: two-stream ResNet, BN neck and classifier, trained with CE + triplet), ``--no-mfa`` removes
the MFA blocks, ``--lambda-cpm 0`` / ``--lambda-ort 0`` the CPM and orthogonal losses;
``benchmarks/methods_table.py`` trains every variant on the synthetic data (:doc:`/methods`).

Examples:
    >>> from vireid_layers.recipes import build_recipe
    >>> base = build_recipe("deen", num_branches=0, mfa=False, lambda_cpm=0.0, lambda_ort=0.0).build_model(4)
    >>> base.num_branches, base.has_mfa
    (0, False)
    >>> recipe = build_recipe("deen", dataset="synthetic")
    >>> recipe.config.backbone, recipe.config.lambda_cpm, recipe.build_schedule()
    ('resnet18', 0.08, DEENSchedule(warmup_epochs=1, milestones=(11,), gamma=0.1))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..engine import WarmupStepSchedule, warmup_step_factor
from ..evaluation import negative_cosine_similarity, negative_dot_product
from ..models import DEEN, DEENCriterion
from .base import Recipe, register_recipe
from .config import RecipeConfig, fail, option
from .parts import head_param_groups

__all__ = ["DEENConfig", "DEENRecipe", "DEENSchedule", "deen_lr_factor", "deen_param_groups"]

#: The DEEN name of :func:`~vireid_layers.recipes.head_param_groups` (the same function): the BN neck and the
#: classifier at the full rate, everything else (MFA and DEE included) at a tenth.
deen_param_groups = head_param_groups


def deen_lr_factor(
    epoch: int,
    *,
    warmup_epochs: int = 10,
    milestones: Sequence[int] = (20, 80),
    gamma: float = 0.1,
) -> float:
    r"""The factor of the official DEEN schedule :cite:`zhang2023deen`: a warm-up, then x0.1 at 20 and 80.

    :func:`~vireid_layers.engine.warmup_step_factor` with DEEN's milestones: a linear warm-up over epochs 0-9
    (0.1 ... 1.0), 1 until epoch 19, 0.1 until 79, 0.01 after (the official branch for epoch 120 is unreachable
    and not reproduced).

    Examples:
        >>> [deen_lr_factor(e) for e in (0, 9, 10, 19, 20, 79, 80, 150)]
        [0.1, 1.0, 1.0, 1.0, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002]
    """
    return warmup_step_factor(epoch, warmup_epochs=warmup_epochs, milestones=milestones, gamma=gamma)


@dataclass(frozen=True)
class DEENSchedule(WarmupStepSchedule):
    """The official DEEN schedule :cite:`zhang2023deen`: warm-up over 10 epochs, x0.1 at 20 and 80 (151 epochs).

    Examples:
        >>> DEENSchedule(warmup_epochs=2, milestones=(4,))(3)
        1.0
        >>> [DEENSchedule()(e) for e in (0, 20, 80)]
        [0.1, 0.1, 0.010000000000000002]
    """

    milestones: tuple[int, ...] = (20, 80)


@dataclass
class DEENConfig(RecipeConfig):
    """Every value of a DEEN run: the shared values, with DEEN's official SYSU-MM01 defaults, and DEEN's own.

    Examples:
        >>> DEENConfig().lambda_cpm, DEENConfig().epochs
        (0.8, 151)
    """

    variant: str = option(
        "auto", "DEEN variant; auto: regdb on RegDB, sysu otherwise", choices=("auto", "sysu", "regdb")
    )
    mfa_form: str = option("official", "MFA form (official: the released code's)", choices=("official", "paper"))
    num_branches: int = option(
        2, "DEE branches K (official 2); 0: no DEE, the base network of the paper's ablation (CE + triplet)"
    )
    mfa: bool = option(True, "MFA blocks after the stages before DEE (official); --no-mfa: the ablation without MFA")
    lambda_cpm: float = option(0.8, "weight of the CPM loss")
    lambda_ort: float = option(0.01, "weight of the orthogonal loss")
    cpm_margin: float = option(0.2, "CPM margin")
    feature: str = option(
        "official",
        "test feature: official (sum of six cosine similarities) or plain (BN feature)",
        choices=("official", "plain"),
    )

    def validate(self) -> DEENConfig:
        """The shared checks and DEEN's: non-negative loss weights, a positive CPM margin."""
        super().validate()
        if self.num_branches < 0:
            fail(f"--num-branches must be >= 0 (0: no DEE), got {self.num_branches}")
        for name in ("lambda_cpm", "lambda_ort"):
            if getattr(self, name) < 0:
                fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not self.cpm_margin > 0:
            fail(f"--cpm-margin must be > 0, got {self.cpm_margin}")
        return self


class DEENRecipe(Recipe):
    """DEEN :cite:`zhang2023deen` trained the official way (see the module's table).

    Examples:
        >>> recipe = DEENRecipe(DEENRecipe.quick_config())
        >>> model = recipe.build_model(4)
        >>> type(model).__name__, model.variant, recipe.pipeline_name()
        ('DEEN', 'sysu', 'light')
        >>> DEENRecipe.official_config("regdb", root=".").variant  # resolved when the model is built
        'auto'
    """

    name = "deen"
    config_class = DEENConfig
    quick_run: Mapping[str, Any] = {"lambda_triplet": 0.1, "lambda_cpm": 0.08, "lambda_ort": 0.001}
    pipelines: Mapping[str, str] = {
        "sysu": "deen_sysu",
        "regdb": "deen_regdb",
        "llcm": "deen_llcm",
        "synthetic": "light",
    }
    config: DEENConfig

    def variant(self) -> str:
        """``--variant``, or (``auto``) ``regdb`` on RegDB and ``sysu`` otherwise."""
        c = self.config
        if c.variant != "auto":
            return c.variant
        return "regdb" if c.dataset == "regdb" else "sysu"

    def build_model(self, num_classes: int, *, pretrained: bool | None = None) -> nn.Module:
        """:class:`~vireid_layers.models.DEEN` with the configured backbone, variant, MFA and DEE branches."""
        c = self.config
        return DEEN(
            num_classes,
            backbone=c.backbone,
            pretrained=c.pretrained if pretrained is None else pretrained,
            variant=self.variant(),  # type: ignore[arg-type]
            mfa_form=c.mfa_form,  # type: ignore[arg-type]
            num_branches=c.num_branches,
            mfa=c.mfa,
        )

    def build_criterion(self) -> nn.Module:
        """:class:`~vireid_layers.models.DEENCriterion` with the configured weights and margins."""
        c = self.config
        return DEENCriterion(
            lambda_cpm=c.lambda_cpm,
            lambda_ort=c.lambda_ort,
            margin=c.margin,
            cpm_margin=c.cpm_margin,
            lambda_triplet=c.lambda_triplet,
        )

    def build_schedule(self) -> DEENSchedule:
        """:class:`DEENSchedule` with the configured warm-up, milestones and decay."""
        c = self.config
        return DEENSchedule(c.warmup_epochs, tuple(c.milestones), c.gamma)

    def ranking(self) -> tuple[bool, Callable[[Tensor, Tensor], Tensor]]:
        """``(normalize, distance)``: with flip averaging, the official feature ranks as ``test.py``.

        The six unit features of an image and of its flip are added, not normalised again, and compared by their
        dot product.
        """
        if self.config.flip and self.config.feature == "official":
            return False, negative_dot_product
        return True, negative_cosine_similarity


register_recipe("deen", DEENRecipe)
