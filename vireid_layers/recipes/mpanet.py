r"""The MPANet recipe :cite:`wu2021mpanet`: MPANet trained and evaluated the way its official code does it.

The official values (``configs/SYSU.yml``, ``configs/RegDB.yml``, ``train.py`` and ``data/`` of the official
repository; see the reference notes) are the defaults of :class:`MPANetConfig` (SYSU-MM01) and, for RegDB,
:attr:`MPANetRecipe.official_per_dataset` (``official_config("regdb")``, ``--dataset regdb``):

========================  ===================================================================================
model                     :class:`~vireid_layers.models.MPANet`: one-stream ResNet-50 (torchvision ImageNet
                          weights, last stride 1), MAM after stages 3 and 4, PAM with 6 pattern maps
                          (14,336-d feature), BN neck, shared and modality-specific classifiers, mean
                          classifiers updated in every training forward (:math:`\alpha = 0.2`, the official
                          decay after epoch 99: the engine calls the model's ``set_epoch`` at every epoch start)
criterion                 :class:`~vireid_layers.models.MPANetCriterion`: CE + 1 center cluster (margin 0.7, pre-BN
                          feature) + 0.5 separation + 1.0 (visible + infrared specific CE: the code adds them
                          twice with 0.5; the paper says 0.5) + 2.5 mutual mean (the code's KL direction)
parameter groups          every parameter at the rate (no head group; the frozen ones left out)
optimiser                 Adam, lr 3.5e-4, weight decay 5e-4 (on every parameter, BN and classifiers included)
schedule                  :class:`MPANetSchedule`: no warm-up, x0.1 at epochs 80 and 120 (SYSU-MM01) / 110
                          (RegDB); 140 epochs
batches                   :class:`~vireid_layers.data.MPANetIdentitySampler`: 16 identities x (4 infrared + 4
                          visible), each identity one block of 8 rows with the modalities alternating (RegDB: 12 x
                          (5 + 5)); 4 (5) distinct images per modality when the identity has them; an epoch of
                          about as many images as the training list (``all_images``)
transforms                384 x 128 (RegDB: 256 x 128); ``mpanet``: bilinear resize, flip, pad 10 (fill 127),
                          random crop, torchvision ``RandomErasing()`` (p 0.5, scale 0.02-0.33, fill 0); test
                          images resized bilinearly
evaluation                every 5 epochs (the official code: every 5 after epoch 115); the BN-neck feature, no
                          flip; SYSU-MM01 and LLCM: L2-normalised, cosine similarity (the official squared
                          Euclidean distance of unit features ranks the same); RegDB: unnormalised, squared
                          Euclidean distance, as the official RegDB evaluation
========================  ===================================================================================

The official code trains with NVIDIA apex's fp16 (``O1``); ``--amp auto`` uses bf16 on CUDA. Its SYSU-MM01
evaluation draws the galleries of the official ``rand_perm_cam.mat``; the recipes use the dataset's protocol
(:func:`~vireid_layers.evaluation.protocol_for_dataset`, seeded single-shot galleries), the same for every recipe.

The quick synthetic run is :data:`~vireid_layers.recipes.QUICK_RUN` (8 identities x (2 + 2) images: blocks of 4
rows) with the official loss weights, Adam at the quick run's 1e-3 and the same warm-up and decay as the other
recipes' quick runs (the official schedule has neither within 14 epochs). No weight needs scaling: from random
weights on the quick run's dataset, Adam at 1e-3 raises the mAP by 1.1 to 3.2 points in 120 steps over seeds 0-4
(``tests/recipes/test_method_runs.py``), while at 3e-3 it does not learn within 30 steps. With fewer training
identities (16) it memorises them without generalising on some seeds: the recipe needs the quick run's 32.

Examples:
    >>> from vireid_layers.recipes import build_recipe
    >>> recipe = build_recipe("mpanet", dataset="synthetic")
    >>> recipe.config.num_parts, recipe.config.lambda_mutual_mean, recipe.pipeline_name()
    (6, 2.5, 'light')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..data import ImageDataset, MPANetIdentitySampler, VIReIDDataset, build_test_transform
from ..engine import WarmupStepSchedule
from ..evaluation import negative_cosine_similarity, squared_euclidean_distance
from ..models import MPANet, MPANetCriterion
from .base import Recipe, register_recipe
from .config import RecipeConfig, fail, option

__all__ = ["MPANetConfig", "MPANetRecipe", "MPANetSchedule"]


@dataclass(frozen=True)
class MPANetSchedule(WarmupStepSchedule):
    """The official MPANet schedule :cite:`wu2021mpanet`: no warm-up, x0.1 at epochs 80 and 120 (140 epochs).

    ``MultiStepLR`` stepped at the end of each epoch; RegDB's configuration decays once, at 110.

    Examples:
        >>> [MPANetSchedule()(e) for e in (0, 79, 80, 119, 120)]
        [1.0, 1.0, 0.1, 0.1, 0.010000000000000002]
    """

    warmup_epochs: int = 0
    milestones: tuple[int, ...] = (80, 120)


@dataclass
class MPANetConfig(RecipeConfig):
    """Every value of an MPANet run: the shared values with MPANet's official SYSU-MM01 defaults, and MPANet's own.

    Examples:
        >>> c = MPANetConfig()
        >>> c.height, c.width, c.batch_identities, c.num_instances, c.optimizer, c.lr, c.milestones
        (384, 128, 16, 4, 'adam', 0.00035, (80, 120))
    """

    height: int = option(384, "image height")
    width: int = option(128, "image width")
    batch_identities: int = option(16, "identities per batch (P; official p_size)")
    num_instances: int = option(
        4, "images per identity and modality (K, half the official k_size); a batch holds 2PK images"
    )
    epoch_length: str = option(
        "all_images", "batches per epoch: all_images (close to the official epoch), official or a number"
    )
    optimizer: str = option("adam", "adam (official) or sgd (momentum, Nesterov)", choices=("sgd", "adam"))
    lr: float = option(3.5e-4, "learning rate of every parameter")
    backbone_lr_scale: float = option(1.0, "the backbone learns at this times --lr (official: one rate)")
    epochs: int = option(140, "epochs")
    warmup_epochs: int = option(0, "linear learning-rate warm-up over these epochs (official: none)")
    milestones: tuple[int, ...] = option(
        (80, 120), "epochs at which the learning rate is multiplied by --gamma (official RegDB: 110)"
    )
    lambda_triplet: float = option(0.0, "MPANet trains no triplet loss (disabled in the official configuration): 0")
    margin: float = option(0.7, "center cluster margin rho")
    lambda_center_cluster: float = option(1.0, "weight of the center cluster loss")
    lambda_separation: float = option(0.5, "weight of the separation loss of the pattern maps")
    lambda_specific: float = option(
        1.0, "weight of the visible and infrared specific identity losses (the code's effective 1.0; paper 0.5)"
    )
    lambda_mutual_mean: float = option(2.5, "weight of the mutual mean (KL) loss")
    anchors: str = option(
        "official",
        "center cluster inter-centre average: official (the code's anchors) or paper (identity pairs)",
        choices=("official", "paper"),
    )
    mutual_mean: str = option(
        "official",
        "mutual mean KL: official (KL(own || mean), one average) or paper (Eq. 10)",
        choices=("official", "paper"),
    )
    num_parts: int = option(6, "PAM pattern maps l")
    modality_attention: int = option(2, "MAM after this many last stages (official 2: stages 3 and 4)")
    mam_reduction: int = option(16, "MAM reduction ratio r")
    shared_stem: bool = option(True, "one stem for both modalities (official one-stream network)")
    feature: str = option("bn", "test feature: bn (the BN-neck output, the official one)", choices=("bn",))
    eval_every: int = option(5, "evaluate every this many epochs (0: only the final evaluation)")

    def validate(self) -> MPANetConfig:
        """The shared checks and MPANet's: non-negative weights, no triplet loss, valid structure values."""
        super().validate()
        for name in ("lambda_center_cluster", "lambda_separation", "lambda_specific", "lambda_mutual_mean"):
            if getattr(self, name) < 0:
                fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.lambda_triplet != 0:
            fail(f"--lambda-triplet must be 0: MPANet trains no triplet loss, got {self.lambda_triplet}")
        if self.modality_attention not in (0, 1, 2):
            fail(f"--modality-attention must be one of [0, 1, 2], got {self.modality_attention}")
        for name in ("num_parts", "mam_reduction"):
            if getattr(self, name) < 1:
                fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        return self


class MPANetRecipe(Recipe):
    """MPANet :cite:`wu2021mpanet` trained the official way (see the module's table).

    Examples:
        >>> recipe = MPANetRecipe(MPANetRecipe.quick_config())
        >>> model = recipe.build_model(4)
        >>> type(model).__name__, model.num_parts, model.shared_stem
        ('MPANet', 6, True)
        >>> regdb = MPANetRecipe.official_config("regdb", root=".")
        >>> regdb.height, regdb.batch_identities, regdb.num_instances, regdb.milestones
        (256, 12, 5, (110,))
    """

    name = "mpanet"
    config_class = MPANetConfig
    pipelines: Mapping[str, str] = {"sysu": "mpanet", "regdb": "mpanet", "llcm": "mpanet", "synthetic": "light"}
    #: ``configs/RegDB.yml``: 256 x 128 images, 12 identities x 10 images (5 per modality), one decay at 110.
    official_per_dataset: Mapping[str, Mapping[str, Any]] = {
        "regdb": {"height": 256, "batch_identities": 12, "num_instances": 5, "milestones": (110,)}
    }
    config: MPANetConfig

    def build_model(self, num_classes: int, *, pretrained: bool | None = None) -> nn.Module:
        """:class:`~vireid_layers.models.MPANet` with the configured backbone, MAM and PAM."""
        c = self.config
        return MPANet(
            num_classes,
            backbone=c.backbone,
            pretrained=c.pretrained if pretrained is None else pretrained,
            num_parts=c.num_parts,
            modality_attention=c.modality_attention,
            mam_reduction=c.mam_reduction,
            shared_stem=c.shared_stem,
        )

    def build_criterion(self) -> nn.Module:
        """:class:`~vireid_layers.models.MPANetCriterion` with the configured weights, margin and forms."""
        c = self.config
        return MPANetCriterion(
            lambda_center_cluster=c.lambda_center_cluster,
            lambda_separation=c.lambda_separation,
            lambda_specific=c.lambda_specific,
            lambda_mutual_mean=c.lambda_mutual_mean,
            margin=c.margin,
            anchors=c.anchors,  # type: ignore[arg-type]
            mutual_mean=c.mutual_mean,  # type: ignore[arg-type]
        )

    def build_schedule(self) -> MPANetSchedule:
        """:class:`MPANetSchedule` with the configured warm-up, milestones and decay."""
        c = self.config
        return MPANetSchedule(c.warmup_epochs, tuple(c.milestones), c.gamma)

    def param_groups(self, model: nn.Module) -> list[dict]:
        """One group of every trainable parameter at the rate (the official optimiser), with ``base_lr``.

        ``--backbone-lr-scale`` other than 1 splits off the backbone (``backbone.*``) at that times the rate.
        """
        c = self.config
        backbone, rest = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                (backbone if name.startswith("backbone.") and c.backbone_lr_scale != 1 else rest).append(param)
        groups = [{"params": rest, "lr": c.lr, "base_lr": c.lr, "weight_decay": c.weight_decay}]
        if backbone:
            rate = c.lr * c.backbone_lr_scale
            groups.insert(0, {"params": backbone, "lr": rate, "base_lr": rate, "weight_decay": c.weight_decay})
        return groups

    def train_loader(
        self,
        dataset: VIReIDDataset,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        pin_memory: bool = False,
    ) -> torch.utils.data.DataLoader:
        """The official batch layout: :class:`~vireid_layers.data.MPANetIdentitySampler` over the training images.

        Each identity is one block of :math:`2K` rows, infrared and visible alternating; :math:`K` distinct images
        per modality where the identity has them (the official sampler draws without replacement).
        """
        c = self.config
        sampler = MPANetIdentitySampler(
            dataset.train,
            c.batch_identities,
            c.num_instances,
            replacement=False,
            epoch_length=self.epoch_length(),
            seed=c.seed,
            num_replicas=world_size,
            rank=rank,
        )
        return torch.utils.data.DataLoader(
            ImageDataset(dataset.train, self.train_transform()),
            batch_sampler=sampler,
            num_workers=c.workers,
            pin_memory=pin_memory,
            persistent_workers=c.workers > 0,
        )

    def test_transform(self) -> Callable[[Any], Tensor]:
        """The official test transform: bilinear resize to the configured size, ImageNet normalisation."""
        from torchvision.transforms.v2 import InterpolationMode

        return build_test_transform(self.config.height, self.config.width, interpolation=InterpolationMode.BILINEAR)

    def embed(self, model: nn.Module, images: Tensor, modalities: Tensor) -> Tensor:
        """The BN-neck feature, unnormalised: the evaluation normalises it or not (:meth:`ranking`)."""
        return model.embed(images, modalities, normalize=False)

    def ranking(self) -> tuple[bool, Callable[[Tensor, Tensor], Tensor]]:
        """``(normalize, distance)``: RegDB unnormalised by squared Euclidean distance; the others by cosine."""
        if self.config.dataset == "regdb":
            return False, squared_euclidean_distance
        return True, negative_cosine_similarity


register_recipe("mpanet", MPANetRecipe)
