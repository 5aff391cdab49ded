r"""The MSO recipe :cite:`gao2021mso`: MSO trained the way its paper describes (no official code exists).

The values of the paper's implementation details (Sec. 4.1) are the defaults of :class:`MSOConfig`; where the
paper is silent the recipe makes a choice, marked *(choice)* and explained below the table:

========================  ===================================================================================
model                     :class:`~vireid_layers.models.MSO`: the two-stream AGW network (ResNet-50 with
                          torchvision ImageNet weights, last stride 1, non-local blocks after layer2 blocks 2, 3
                          and layer3 blocks 3, 4, 5 in the AGW code's one-channel form *(choice)*, GeM
                          :math:`p = 3`, BN neck, classifier) and the PEF loss on its stems through a frozen
                          ImageNet VGG-16 (``--vgg-weights imagenet``): the stem output enters at ``conv1_2``,
                          blocks 1-4 compared after their max pooling, the signed sum of the four Sobel maps of
                          the normalised input image *(choices, see* :class:`~vireid_layers.PEFLoss` *)*
criterion                 :class:`~vireid_layers.models.MSOCriterion`: CE + WRT (on the L2-normalised pre-BN GeM
                          features) + PEF + CMCC (on the L2-normalised BN features, softplus), every weight 1
parameter groups          every parameter at the rate *(the paper states one rate)*
optimiser                 Adam, lr 5e-4, weight decay 5e-4 *(choice: not stated; the AGW code base's value)*
schedule                  :class:`MSOSchedule`: no warm-up *(none stated)*, x0.1 at epochs 20, 25 and 35; 100
                          epochs
batches                   8 identities x (4 visible + 4 infrared) images; ``official`` epoch length (the AGW code
                          base's identity sampler)
transforms                288 x 144; ``mso``: pad 10, random crop, horizontal flip (the paper: "random crop and
                          horizontal flip"; the pad is the AGW code base's, *choice*)
evaluation                every 2 epochs *(choice: AGW's)*; the BN-neck feature (``fc``), L2-normalised, cosine
                          similarity (the paper), no flip
========================  ===================================================================================

**The choices.** The paper builds MSO on the AGW baseline, so what it leaves open is taken from the AGW code
base (:mod:`~vireid_layers.recipes.agw`): the non-local form, the weight decay, the pad before the crop, the
sampler and the evaluation cadence. The PEF choices are :class:`~vireid_layers.models.MSO`'s defaults, argued in
:doc:`/mso`; ``--pef-entry``, ``--pef-block-output`` and ``--sobel-combine`` select the alternatives. The paper
states neither a warm-up nor a learning rate per parameter group, so there is none. WRT is computed in its
``stable`` form, which equals the official one on L2-normalised features (every distance is at most 2).

**The VGG-16.** ``--vgg-weights`` takes ``imagenet`` (torchvision's download and cache), ``timm`` (the same
weights through timm's hub cache), the path of a local torchvision VGG-16 state dict (``.pth`` or
``.safetensors``, for machines without network access) or ``none`` (random weights: the loss then measures
nothing meaningful; the quick run and tests only). The VGG weights are saved in the run's checkpoints, so a
model rebuilt with ``pretrained=False`` (``examples/evaluate.py``) downloads nothing.

**The quick synthetic run** is :data:`~vireid_layers.recipes.QUICK_RUN` with two PEF changes. ``--vgg-weights
none``: nothing is downloaded. ``--pef-block-output relu``: at 64 x 32 the stem output is only 16 x 8, too small
for four VGG max poolings (the default ``pool`` taps need 16 x 16), while the ``relu`` taps (``relu1_2``,
``relu2_2``, ``relu3_3``, ``relu4_3``, the layers of the perceptual loss the paper cites) need 8 x 8; they are
also one pooling shallower. The VGG costs little at that size (the last block runs on 2 x 1 positions), so
the full blocks 1-4 stay. Every loss weight is the paper's 1: the normalised WRT and CMCC are bounded and do not
collapse a random network.

Examples:
    >>> from vireid_layers.recipes import build_recipe
    >>> recipe = build_recipe("mso", dataset="synthetic")
    >>> recipe.config.vgg_weights, recipe.config.pef_block_output, recipe.build_schedule()
    ('none', 'relu', MSOSchedule(warmup_epochs=1, milestones=(11,), gamma=0.1))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import WarmupStepSchedule
from ..models import MSO, MSOCriterion
from .base import Recipe, register_recipe
from .config import RecipeConfig, fail, option

__all__ = ["MSOConfig", "MSORecipe", "MSOSchedule"]

_VGG_SOURCES = ("imagenet", "timm", "none")


@dataclass(frozen=True)
class MSOSchedule(WarmupStepSchedule):
    """The MSO schedule of the paper :cite:`gao2021mso`: no warm-up, x0.1 at epochs 20, 25 and 35 (100 epochs).

    Examples:
        >>> [MSOSchedule()(e) for e in (0, 19, 20, 25, 35)]
        [1.0, 1.0, 0.1, 0.010000000000000002, 0.0010000000000000002]
    """

    warmup_epochs: int = 0
    milestones: tuple[int, ...] = (20, 25, 35)


@dataclass
class MSOConfig(RecipeConfig):
    """Every value of an MSO run: the shared values with MSO's SYSU-MM01 defaults (the paper's), and MSO's own.

    Examples:
        >>> c = MSOConfig()
        >>> c.height, c.optimizer, c.lr, c.milestones, c.epochs, c.vgg_weights
        (288, 'adam', 0.0005, (20, 25, 35), 100, 'imagenet')
    """

    height: int = option(288, "image height")
    batch_identities: int = option(8, "identities per batch (P)")
    optimizer: str = option("adam", "adam (the paper) or sgd (momentum, Nesterov)", choices=("sgd", "adam"))
    lr: float = option(5e-4, "learning rate of every parameter")
    backbone_lr_scale: float = option(1.0, "the backbone learns at this times --lr (the paper: one rate)")
    weight_decay: float = option(5e-4, "weight decay of every parameter (not in the paper: the AGW code's)")
    epochs: int = option(100, "epochs")
    warmup_epochs: int = option(0, "linear learning-rate warm-up over these epochs (the paper: none)")
    milestones: tuple[int, ...] = option((20, 25, 35), "epochs at which the learning rate is multiplied by --gamma")
    lambda_triplet: float = option(1.0, "weight of WRT")
    margin: float = option(0.3, "unused: WRT has no margin")
    lambda_pef: float = option(1.0, "weight of the perceptual edge features loss")
    lambda_cmcc: float = option(1.0, "weight of the cross-modality contrastive-centre loss")
    normalize_wrt: bool = option(True, "L2-normalise the pre-BN features inside WRT (the paper; AGW: no)")
    normalize_cmcc: bool = option(True, "L2-normalise the BN features inside CMCC (the paper)")
    wrt_form: str = option(
        "stable",
        "WRT computation: stable or official (TripletLoss_WRT); equal on normalised features",
        choices=("official", "stable"),
    )
    vgg_weights: str = option(
        "imagenet",
        "the frozen VGG-16 of PEF: imagenet (torchvision download), timm (timm's hub), the path of a local "
        "torchvision VGG-16 state dict (.pth, .safetensors), or none (random: quick runs and tests only)",
    )
    pef_entry: str = option(
        "conv1_2",
        "where the stem output enters the VGG: conv1_2 (blocks 1-4), block2 (the third-party code: blocks 2-5) or "
        "image (channel mean, 3-channel)",
        choices=("conv1_2", "block2", "image"),
    )
    pef_block_output: str = option(
        "pool",
        "VGG block outputs compared: pool (after each max pooling) or relu (relu1_2, relu2_2, ...)",
        choices=("pool", "relu"),
    )
    sobel_combine: str = option(
        "sum", "the four Sobel maps: sum (the paper's words), abs or magnitude", choices=("sum", "abs", "magnitude")
    )
    non_local_form: str = option(
        "official",
        "non-local bottleneck: official (the AGW code's 1 channel) or corrected (C/2)",
        choices=("official", "corrected"),
    )
    gem_p: float = option(3.0, "GeM exponent p")
    feature: str = option(
        "fc", "test feature: fc (BN feature, the paper's) or pool (pre-BN GeM feature)", choices=("fc", "pool")
    )
    eval_every: int = option(2, "evaluate every this many epochs (0: only the final evaluation)")

    def validate(self) -> MSOConfig:
        """The shared checks and MSO's: non-negative weights, a positive GeM exponent, an existing VGG file."""
        super().validate()
        for name in ("lambda_pef", "lambda_cmcc"):
            if getattr(self, name) < 0:
                fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not self.gem_p > 0:
            fail(f"--gem-p must be > 0, got {self.gem_p}")
        if self.vgg_weights not in _VGG_SOURCES and not Path(self.vgg_weights).is_file():
            fail(
                f"--vgg-weights must be one of {list(_VGG_SOURCES)} or the path of an existing VGG-16 state dict "
                f"file, got {self.vgg_weights!r}"
            )
        return self


class MSORecipe(Recipe):
    """MSO :cite:`gao2021mso` trained as the paper describes (see the module's table and choices).

    Examples:
        >>> recipe = MSORecipe(MSORecipe.quick_config())
        >>> model = recipe.build_model(4)
        >>> type(model).__name__, sorted(recipe.build_criterion().weights)
        ('MSO', ['ce', 'cmcc', 'pef', 'wrt'])
    """

    name = "mso"
    config_class = MSOConfig
    quick_run: Mapping[str, Any] = {"vgg_weights": "none", "pef_block_output": "relu"}  # see the module docstring
    pipelines: Mapping[str, str] = {"sysu": "mso", "regdb": "mso", "llcm": "mso", "synthetic": "light"}
    config: MSOConfig

    def build_model(self, num_classes: int, *, pretrained: bool | None = None) -> nn.Module:
        """:class:`~vireid_layers.models.MSO` with the configured backbone, PEF and non-local form.

        ``pretrained=False`` builds both the backbone and the VGG-16 without pretrained weights (a checkpoint to
        be loaded holds both); ``None`` takes ``--pretrained`` and ``--vgg-weights``.
        """
        c = self.config
        vgg: Any = None if c.vgg_weights == "none" or pretrained is False else c.vgg_weights
        return MSO(
            num_classes,
            backbone=c.backbone,
            pretrained=c.pretrained if pretrained is None else pretrained,
            vgg_weights=vgg,
            pef_entry=c.pef_entry,  # type: ignore[arg-type]
            pef_block_output=c.pef_block_output,  # type: ignore[arg-type]
            sobel_combine=c.sobel_combine,  # type: ignore[arg-type]
            non_local_form=c.non_local_form,  # type: ignore[arg-type]
            gem_p=c.gem_p,
        )

    def build_criterion(self) -> nn.Module:
        """:class:`~vireid_layers.models.MSOCriterion` with the configured weights and normalisations."""
        c = self.config
        return MSOCriterion(
            lambda_wrt=c.lambda_triplet,
            lambda_pef=c.lambda_pef,
            lambda_cmcc=c.lambda_cmcc,
            normalize_wrt=c.normalize_wrt,
            normalize_cmcc=c.normalize_cmcc,
            wrt_form=c.wrt_form,  # type: ignore[arg-type]
        )

    def build_schedule(self) -> MSOSchedule:
        """:class:`MSOSchedule` with the configured warm-up, milestones and decay."""
        c = self.config
        return MSOSchedule(c.warmup_epochs, tuple(c.milestones), c.gamma)

    def check_model(self, model: nn.Module) -> None:
        """The shared probe (the test feature), then the training forward, whose PEF needs a large enough stem map.

        Raises:
            ConfigurationError: the model refused the size (e.g. a stem output below PEF's minimum).
        """
        super().check_model(model)
        c = self.config
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros(2, 3, c.height, c.width), torch.tensor([0, 1]))
        except ValueError as error:
            fail(f"--height {c.height} --width {c.width} (--pef-block-output {c.pef_block_output}): {error}")
        finally:
            model.train(was_training)


register_recipe("mso", MSORecipe)
