r"""The DDAG recipe :cite:`ye2020ddag`: DDAG trained and evaluated the way its official code does it.

The official values (``train_ddag.py`` and ``test_ddag.py`` of the official repository, README command
``--dataset sysu --lr 0.1 --graph --wpa --part 3``; see the reference notes) are the defaults of
:class:`DDAGConfig`:

========================  ===================================================================================
model                     :class:`~vireid_layers.models.DDAG`: two-stream ResNet-50 (torchvision ImageNet
                          weights, last stride 1), BN neck, IWPA (3 stripes, official residual), CGSA (4 heads
                          of 512, dropout 0.2, ELU on the output layer), one classifier for both CE losses
criterion                 :class:`~vireid_layers.models.DDAGCriterion`: CE + batch-hard triplet (margin 0.3, on
                          the pre-BN pooled features) + CE of the IWPA feature + :math:`w^t` graph NLL (mean over
                          the nodes), :math:`w^t` the dynamic dual aggregation weight: 0 in epoch 0, then
                          :math:`1 / (1 + \text{mean } \mathcal L_P)` of the previous epoch (the engine calls the
                          criterion's ``set_epoch`` at every epoch start and checkpoints its state)
training forward          ``model(images, modalities, labels=identities)``: the graph branch needs the labels
                          (:meth:`DDAGRecipe.forward`)
parameter groups          :func:`ddag_param_groups`: the rest of the network (stems and trunk) at 0.1 x the rate;
                          IWPA and CGSA ("new layers") at 1 x; BN neck and classifier at the rate
optimiser                 SGD, momentum 0.9, Nesterov, weight decay 5e-4 on every group, head rate 0.1
schedule                  :class:`DDAGSchedule`: linear warm-up over 10 epochs, x0.1 at 20, x0.01 at 50; 81 epochs
                          (the paper: 30 and 50, 80 epochs)
batches                   8 identities x 4 visible + 4 infrared images; ``official`` epoch length
transforms                288 x 144; ``ddag``: pad 10, random crop, horizontal flip (no random erasing)
evaluation                every 2 epochs; the ``att`` feature (IWPA's :math:`x^*`, L2-normalised: the paper's
                          test feature and the official selection criterion), cosine similarity, no flip
========================  ===================================================================================

The quick synthetic run is :data:`~vireid_layers.recipes.QUICK_RUN` with the official loss weights and the
dynamic graph weight: no weight needs scaling (unlike DEEN's metric losses), since the identity, part and
triplet losses fall from random weights and the run learns. The graph loss starts late: its branch starts from
scratch, receives no gradient in epoch 0 (:math:`w = 0`) and only a weight :math:`w \approx 0.1` afterwards (the
mean :math:`\mathcal L_P` of a random network is large), so it stays near :math:`\ln 32 \approx 3.47` (uniform
predictions) for about eight epochs and falls to about 1.1 by the last one, as :math:`w` grows (measured, seed
0). The quick run's ResNet-18 ends in a :math:`4 \times 2` map at 64 x 32, which IWPA's adaptive pooling splits
into 3 overlapping stripes.

Examples:
    >>> from vireid_layers.recipes import build_recipe
    >>> recipe = build_recipe("ddag", dataset="synthetic")
    >>> recipe.config.feature, recipe.config.graph_weight, recipe.build_schedule()
    ('att', None, DDAGSchedule(warmup_epochs=1, milestones=(11,), gamma=0.1))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..engine import WarmupStepSchedule
from ..models import DDAG, DDAGCriterion
from .base import Recipe, register_recipe
from .config import RecipeConfig, fail, option

__all__ = ["DDAGConfig", "DDAGRecipe", "DDAGSchedule", "ddag_param_groups"]

_HEAD = ("neck.", "classifier.")
_NEW_LAYERS = ("iwpa.", "cgsa.")


def ddag_param_groups(
    model: nn.Module,
    lr: float,
    *,
    weight_decay: float = 5e-4,
    backbone_scale: float = 0.1,
    attention_scale: float = 1.0,
) -> list[dict]:
    """The official parameter groups of DDAG :cite:`ye2020ddag`: backbone, attention (IWPA, CGSA) and head.

    ``train_ddag.py`` puts the BN neck, the classifier, IWPA and the five graph attention layers in the "new
    layers" group at the full rate and every other parameter (the two stems and the shared trunk) at a tenth.
    Here the new layers are split into their own group so that their rate can be set apart
    (``attention_scale``, official 1). Parameters with ``requires_grad=False`` (the frozen BN-neck biases) are
    left out. Each group carries ``base_lr``, the rate the trainer's per-epoch schedule multiplies.

    Args:
        model: a :class:`~vireid_layers.models.DDAG` (parameter names ``neck.``, ``classifier.``, ``iwpa.``,
            ``cgsa.``, the rest the backbone).
        lr: the head's rate (official 0.1).
        weight_decay: on every group (official 5e-4).
        backbone_scale: factor of the backbone's rate (official 0.1).
        attention_scale: factor of IWPA's and CGSA's rate (official 1).

    Returns:
        Three groups: ``[backbone, attention, head]``.

    Raises:
        ValueError: no parameter named as the head or as IWPA/CGSA.

    Examples:
        >>> from vireid_layers.models import DDAG
        >>> groups = ddag_param_groups(DDAG(4, backbone="resnet18"), 0.1)
        >>> [round(g["lr"], 4) for g in groups], [len(g["params"]) > 0 for g in groups]
        ([0.01, 0.1, 0.1], [True, True, True])
    """
    backbone, attention, head = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith(_HEAD):
            head.append(param)
        elif name.startswith(_NEW_LAYERS):
            attention.append(param)
        else:
            backbone.append(param)
    if not head or not attention:
        raise ValueError(
            "a DDAG needs head parameters (names starting with 'neck.' or 'classifier.') and attention parameters "
            f"('iwpa.' or 'cgsa.'), got {len(head)} and {len(attention)}"
        )
    rates = (lr * backbone_scale, lr * attention_scale, lr)
    return [
        {"params": params, "lr": rate, "base_lr": rate, "weight_decay": weight_decay}
        for params, rate in zip((backbone, attention, head), rates, strict=True)
    ]


@dataclass(frozen=True)
class DDAGSchedule(WarmupStepSchedule):
    """The official DDAG schedule :cite:`ye2020ddag`: warm-up over 10 epochs, x0.1 at 20 and 50 (81 epochs).

    ``train_ddag.py`` decays at epochs 20 and 50; the paper states 30 and 50 (and 80 epochs).

    Examples:
        >>> [DDAGSchedule()(e) for e in (0, 9, 19, 20, 50)]
        [0.1, 1.0, 1.0, 0.1, 0.010000000000000002]
    """

    milestones: tuple[int, ...] = (20, 50)


@dataclass
class DDAGConfig(RecipeConfig):
    """Every value of a DDAG run: the shared values with DDAG's official SYSU-MM01 defaults, and DDAG's own.

    Examples:
        >>> c = DDAGConfig()
        >>> c.height, c.batch_identities, c.milestones, c.parts, c.graph_hidden, c.feature
        (288, 8, (20, 50), 3, 512, 'att')
    """

    height: int = option(288, "image height")
    batch_identities: int = option(8, "identities per batch (P)")
    lr: float = option(0.1, "learning rate of the head (BN neck and classifier)")
    backbone_lr_scale: float = option(0.1, "the stems and the trunk learn at this times --lr")
    attention_lr_scale: float = option(1.0, "IWPA and CGSA (the official 'new layers') learn at this times --lr")
    epochs: int = option(81, "epochs")
    milestones: tuple[int, ...] = option((20, 50), "epochs at which the learning rate is multiplied by --gamma")
    lambda_triplet: float = option(1.0, "weight of the batch-hard triplet loss (pre-BN pooled features)")
    margin: float = option(0.3, "triplet margin")
    lambda_part: float = option(1.0, "weight of the IWPA (weighted-part) identity loss")
    graph_weight: float | None = option(
        None,
        "fixed weight of the graph loss; none: the dynamic dual aggregation 1 / (1 + mean L_P of the previous "
        "epoch), 0 in the first epoch (official)",
    )
    graph_reduction: str = option(
        "mean", "graph NLL over the nodes: mean (official) or sum (the paper's Eq. 9)", choices=("mean", "sum")
    )
    parts: int = option(3, "IWPA stripes p")
    iwpa_form: str = option(
        "official",
        "IWPA residual: official (the BN-neck feature, then IWPA's BatchNorm) or paper (Eq. 5)",
        choices=("official", "paper"),
    )
    graph_hidden: int = option(512, "CGSA size d per head (official 512, paper 256)")
    graph_heads: int = option(4, "CGSA heads L")
    graph_dropout: float = option(0.2, "CGSA dropout (node inputs, attention, hidden)")
    graph_output_elu: bool = option(True, "the official ELU on CGSA's output layer (the paper has none)")
    feature: str = option(
        "att",
        "test feature: att (IWPA's x*, the paper's and the official selection's) or fc (BN-neck feature)",
        choices=("att", "fc"),
    )
    eval_every: int = option(2, "evaluate every this many epochs (0: only the final evaluation)")

    def validate(self) -> DDAGConfig:
        """The shared checks and DDAG's: non-negative weights and rates, a dropout in [0, 1)."""
        super().validate()
        for name in ("lambda_part", "attention_lr_scale"):
            if getattr(self, name) < 0:
                fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.graph_weight is not None and self.graph_weight < 0:
            fail(f"--graph-weight must be >= 0 or none, got {self.graph_weight}")
        for name in ("parts", "graph_hidden", "graph_heads"):
            if getattr(self, name) < 1:
                fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.graph_dropout < 1:
            fail(f"--graph-dropout must be in [0, 1), got {self.graph_dropout}")
        return self


class DDAGRecipe(Recipe):
    """DDAG :cite:`ye2020ddag` trained the official way (see the module's table).

    Examples:
        >>> recipe = DDAGRecipe(DDAGRecipe.quick_config())
        >>> model = recipe.build_model(4)
        >>> type(model).__name__, model.parts, sorted(recipe.build_criterion().weights)
        ('DDAG', 3, ['ce', 'graph', 'part', 'triplet'])
    """

    name = "ddag"
    config_class = DDAGConfig
    pipelines: Mapping[str, str] = {"sysu": "ddag", "regdb": "ddag", "llcm": "ddag", "synthetic": "light"}
    config: DDAGConfig

    def build_model(self, num_classes: int, *, pretrained: bool | None = None) -> nn.Module:
        """:class:`~vireid_layers.models.DDAG` with the configured backbone, IWPA and CGSA."""
        c = self.config
        return DDAG(
            num_classes,
            backbone=c.backbone,
            pretrained=c.pretrained if pretrained is None else pretrained,
            parts=c.parts,
            iwpa_form=c.iwpa_form,  # type: ignore[arg-type]
            graph_hidden=c.graph_hidden,
            graph_heads=c.graph_heads,
            graph_dropout=c.graph_dropout,
            graph_output_elu=c.graph_output_elu,
        )

    def build_criterion(self) -> nn.Module:
        """:class:`~vireid_layers.models.DDAGCriterion` with the configured weights, margin and graph weight."""
        c = self.config
        return DDAGCriterion(
            lambda_triplet=c.lambda_triplet,
            lambda_part=c.lambda_part,
            margin=c.margin,
            graph_weight=c.graph_weight,
            graph_reduction=c.graph_reduction,  # type: ignore[arg-type]
        )

    def build_schedule(self) -> DDAGSchedule:
        """:class:`DDAGSchedule` with the configured warm-up, milestones and decay."""
        c = self.config
        return DDAGSchedule(c.warmup_epochs, tuple(c.milestones), c.gamma)

    def param_groups(self, model: nn.Module) -> list[dict]:
        """:func:`ddag_param_groups` with the configured rate, weight decay and scales."""
        c = self.config
        return ddag_param_groups(
            model,
            c.lr,
            weight_decay=c.weight_decay,
            backbone_scale=c.backbone_lr_scale,
            attention_scale=c.attention_lr_scale,
        )

    def forward(self, model: nn.Module, batch: Any) -> Any:
        """The training forward with the labels, which the graph branch needs: ``model(image, modality, labels=)``."""
        return model(batch.image, batch.modality, labels=batch.identity)


register_recipe("ddag", DDAGRecipe)
