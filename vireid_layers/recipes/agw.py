r"""The AGW recipe :cite:`ye2021agw`: the cross-modality AGW baseline trained the way its official code does it.

The official values (the cross-modality baseline's ``train.py``, see the reference notes) are the defaults of
:class:`AGWConfig`:

========================  ===================================================================================
model                     :class:`~vireid_layers.models.AGW`: ResNet-50 (torchvision ImageNet weights) with
                          non-local blocks (one-channel bottleneck) after the last 2 blocks of layer2 and the
                          last 3 of layer3, GeM (p = 3), BN neck; ``--variant base``: average pooling, no
                          non-local block
criterion                 :class:`~vireid_layers.models.AGWCriterion`: CE + WRT on the pre-BN GeM features, in
                          the official ``TripletLoss_WRT`` computation (``wrt_form="official"``); ``base``:
                          CE + batch-hard triplet, margin 0.3
parameter groups          :func:`~vireid_layers.recipes.head_param_groups`: BN neck and classifier at the rate,
                          the rest (the non-local blocks included) at 0.1 x
optimiser                 SGD, momentum 0.9, Nesterov, weight decay 5e-4, head rate 0.1
schedule                  :class:`AGWSchedule`: linear warm-up over 10 epochs, x0.1 at 20, x0.01 at 50; 81 epochs
batches                   8 identities x 4 visible + 4 infrared images; ``official`` epoch length
transforms                288 x 144; ``agw``: pad 10, random crop, horizontal flip (no random erasing)
evaluation                every 2 epochs, the L2-normalised BN ("fc") feature, cosine similarity
========================  ===================================================================================

The quick synthetic run is :data:`~vireid_layers.recipes.QUICK_RUN` with the numerically stable WRT
(``--wrt-form stable``): a randomly initialised network's features lie far apart, where the official WRT's
negative weights vanish (see :doc:`/agw`); the official recipe keeps the official form.

Examples:
    >>> from vireid_layers.recipes import build_recipe
    >>> recipe = build_recipe("agw", dataset="synthetic")
    >>> recipe.config.feature, recipe.build_schedule()
    ('fc', AGWSchedule(warmup_epochs=1, milestones=(11,), gamma=0.1))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..engine import WarmupStepSchedule
from ..models import AGW, AGWCriterion
from .base import Recipe, register_recipe
from .config import RecipeConfig, fail, option

__all__ = ["AGWConfig", "AGWRecipe", "AGWSchedule"]


@dataclass(frozen=True)
class AGWSchedule(WarmupStepSchedule):
    """The official AGW (and DDAG) schedule :cite:`ye2021agw`: warm-up over 10 epochs, x0.1 at 20 and 50 (81 epochs).

    Examples:
        >>> [AGWSchedule()(e) for e in (0, 9, 20, 49, 50, 80)]
        [0.1, 1.0, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002]
    """

    milestones: tuple[int, ...] = (20, 50)


@dataclass
class AGWConfig(RecipeConfig):
    """Every value of an AGW run: the shared values with AGW's official defaults (SYSU-MM01), and AGW's own.

    Examples:
        >>> AGWConfig().height, AGWConfig().milestones, AGWConfig().variant
        (288, (20, 50), 'agw')
    """

    height: int = option(288, "image height")
    batch_identities: int = option(8, "identities per batch (P)")
    epochs: int = option(81, "epochs")
    milestones: tuple[int, ...] = option((20, 50), "epochs at which the learning rate is multiplied by --gamma")
    lambda_triplet: float = option(1.0, "weight of WRT (or of the triplet loss of --variant base)")
    margin: float = option(0.3, "triplet margin of --variant base (WRT has none)")
    wrt_form: str = option(
        "official",
        "WRT computation: official (TripletLoss_WRT exactly, what trained the published AGW) or stable (both "
        "softmax sides shifted; differs once the negatives are far apart)",
        choices=("official", "stable"),
    )
    feature: str = option(
        "fc", "test feature: fc (BN feature, the official one) or pool (pre-BN)", choices=("fc", "pool")
    )
    eval_every: int = option(2, "evaluate every this many epochs (0: only the final evaluation)")
    variant: str = option(
        "agw", "agw (non-local blocks, GeM, WRT) or base (average pooling, batch-hard triplet)", choices=("agw", "base")
    )
    non_local_form: str = option(
        "official", "non-local bottleneck: official (1 channel) or corrected (C/2)", choices=("official", "corrected")
    )
    learnable_p: bool = option(False, "learn the GeM exponent (the single-modality survey's variant)")

    def validate(self) -> AGWConfig:
        """The shared checks and AGW's: ``--learnable-p`` needs the ``agw`` variant."""
        super().validate()
        if self.variant == "base" and self.learnable_p:
            fail("--learnable-p needs --variant agw: the base variant pools by averaging")
        return self

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AGWConfig:
        """As :meth:`RecipeConfig.from_dict`; a run recorded before ``variant`` existed names it ``method``."""
        values = dict(values)
        if "variant" not in values and values.get("method") in ("agw", "base"):
            values["variant"] = values["method"]
        return super().from_dict(values)


class AGWRecipe(Recipe):
    """The AGW baseline :cite:`ye2021agw` trained the official way (see the module's table).

    Examples:
        >>> recipe = AGWRecipe(AGWRecipe.quick_config(), variant="base")
        >>> model = recipe.build_model(4)
        >>> model.method, sorted(recipe.build_criterion().weights)
        ('base', ['ce', 'triplet'])
    """

    name = "agw"
    config_class = AGWConfig
    quick_run: Mapping[str, Any] = {"wrt_form": "stable"}  # see the module docstring
    pipelines: Mapping[str, str] = {"sysu": "agw", "regdb": "agw", "llcm": "agw", "synthetic": "light"}
    config: AGWConfig

    def build_model(self, num_classes: int, *, pretrained: bool | None = None) -> nn.Module:
        """:class:`~vireid_layers.models.AGW` with the configured backbone, variant and non-local form."""
        c = self.config
        return AGW(
            num_classes,
            backbone=c.backbone,
            pretrained=c.pretrained if pretrained is None else pretrained,
            method=c.variant,  # type: ignore[arg-type]
            non_local_form=c.non_local_form,  # type: ignore[arg-type]
            learnable_p=c.learnable_p,
        )

    def build_criterion(self) -> nn.Module:
        """:class:`~vireid_layers.models.AGWCriterion` of the variant, with the configured weight and margin."""
        c = self.config
        return AGWCriterion(
            method=c.variant,  # type: ignore[arg-type]
            lambda_triplet=c.lambda_triplet,
            margin=c.margin,
            wrt_form=c.wrt_form,  # type: ignore[arg-type]
        )

    def build_schedule(self) -> AGWSchedule:
        """:class:`AGWSchedule` with the configured warm-up, milestones and decay."""
        c = self.config
        return AGWSchedule(c.warmup_epochs, tuple(c.milestones), c.gamma)


register_recipe("agw", AGWRecipe)
