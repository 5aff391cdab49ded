"""MSO: the Multi-feature Space joint Optimization network of :cite:`gao2021mso`, built from the library's blocks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._distributed import all_gather_cat, distributed_info
from .._validation import check_choice
from ..backbones.two_stream import TwoStreamBackbone
from ..layers.non_local import NonLocalForm
from ..layers.sobel import SobelCombine
from ..losses.pef import PEFBlockOutput, PEFEntry, PEFLoss
from ..modality import Modality
from ._assembly import embed_with_flip, reset_bn_neck_head
from ._pretrained import PretrainedMixin
from .agw import AGW, _non_local_positions, _non_local_stages

__all__ = ["MSO", "MSOFeature", "MSOOutput", "VGGWeights"]

MSOFeature = Literal["fc", "pool"]
_FEATURES = ("fc", "pool")
#: What the ``vgg_weights`` argument of :class:`MSO` accepts.
VGGWeights = str | os.PathLike[str] | Mapping[str, Tensor] | None


class MSOOutput(NamedTuple):
    r"""Everything the MSO losses need from one training forward pass (rows in input order).

    Attributes:
        pooled: :math:`(N, D)` GeM-pooled features *before* the BN neck: the input of :math:`\mathcal L_{wrt}`
            (L2-normalised inside the loss).
        features: :math:`(N, D)` BN-neck output ``neck(pooled)``: the input of :math:`\mathcal L_{cmcc}`
            (L2-normalised inside the loss) and the test feature.
        logits: :math:`(N, \text{num\_classes})` classifier output on ``features``: the input of
            :math:`\mathcal L_{id}`.
        pef: 0-dim float32 tensor, :math:`\mathcal L_{pef}` of this batch (Eq. 2): each image's stem output
            against the Sobel edges of the image through the frozen VGG-16, averaged within each modality, the
            two modality means added. It is computed inside the model, where the stem output is, so that the
            :math:`N \times 64 \times H/4 \times W/4` stem maps never leave it (nor cross DDP ranks).
    """

    pooled: Tensor
    features: Tensor
    logits: Tensor
    pef: Tensor

    def gather(self) -> MSOOutput:
        r"""This output concatenated over every DDP rank (rank order), differentiably; itself without a process group.

        ``pooled``, ``features`` and ``logits`` are all-gathered along their rows
        (:func:`vireid_layers.engine.all_gather_cat`), so WRT, CMCC and the identity loss see the global batch and
        each rank receives the gradient of its own rows. ``pef`` becomes the mean of the ranks' values (gathered
        differentiably too): with the same number of images of each modality on every rank (the identity
        sampler's batches) it equals :math:`\mathcal L_{pef}` of the global batch, and each rank's stems receive
        the gradient of their own images.

        Examples:
            >>> import torch
            >>> from vireid_layers.models import MSO
            >>> out = MSO(4, backbone="resnet18")(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))
            >>> out.gather() is out  # a single process
            True
        """
        if distributed_info()[1] == 1:
            return self
        return MSOOutput(
            all_gather_cat(self.pooled),
            all_gather_cat(self.features),
            all_gather_cat(self.logits),
            all_gather_cat(self.pef.reshape(1)).mean(),
        )


def _resolve_vgg_weights(weights: object) -> object:
    """``"timm"`` becomes the state dict of timm's pretrained ``vgg16`` (torchvision's weights, same keys)."""
    if isinstance(weights, str) and weights == "timm":
        import timm

        return timm.create_model("vgg16", pretrained=True).state_dict()
    return weights


class MSO(PretrainedMixin, nn.Module):
    r"""The MSO network: the two-stream AGW network plus the perceptual edge features loss on its stems.

    MSO :cite:`gao2021mso` (no official code exists) trains the cross-modality AGW network
    (:class:`~vireid_layers.models.AGW`) with two more losses: :math:`\mathcal L_{pef}` in the single-modality
    feature space of each stem and :math:`\mathcal L_{cmcc}` in the common feature space. For a ResNet-50 it
    computes::

        images x (N, 3, H, W), modalities (N,)
          -> stem (layer0) of each sample's modality     f^m (N, 64, H/4, W/4)
             f^m, Sobel(x) -> frozen VGG-16 blocks 1-4     pef: L_pef (Eq. 2-3), a scalar
          -> layer1 -> layer2 (+2 non-local) -> layer3 (+3 non-local) -> layer4 (last stride 1)
          -> GeM (p = 3)                                  pooled x (N, D = 2048)            -> L_wrt (L2-normalised)
          -> BN neck (BatchNorm1d, bias frozen at 0)      features g                        -> L_cmcc (L2-normalised)
          -> classifier (Linear, no bias)                 logits                            -> L_id

    The trunk, pooling, BN neck and classifier are exactly AGW's (same module names, so an AGW state dict loads
    into them), built by :class:`~vireid_layers.models.AGW` with ``method="agw"``: non-local blocks after the
    last 2 blocks of stage 2 and the last 3 of stage 3 (``non_local_blocks``, ``non_local_form``), GeM with
    :math:`p = 3`. The MSO-specific part is ``self.pef``, a :class:`~vireid_layers.PEFLoss` holding the frozen
    VGG-16: :meth:`forward` runs it on the stem output :math:`f^m` and the input images (their Sobel edges) and
    returns the loss value in :attr:`MSOOutput.pef`. The VGG parameters are frozen (``requires_grad=False``),
    stay in eval mode whatever :meth:`train` is called with, and are part of the state dict
    (``pef.features.*``); :meth:`embed` never runs them. The choices the paper leaves open (how :math:`f` and
    the edge map enter the VGG, which layers end the blocks, the combination of the four Sobel maps) are the
    arguments ``pef_entry``, ``pef_block_output`` and ``sobel_combine``, with the defaults documented in
    ``docs/mso.rst`` and :class:`~vireid_layers.PEFLoss`.

    :class:`~vireid_layers.models.MSOCriterion` turns the output into
    :math:`\mathcal L_{id} + \mathcal L_{wrt} + \mathcal L_{pef} + \mathcal L_{cmcc}`. :meth:`embed` gives the
    test feature of the paper: the BN-neck output, compared by cosine similarity.

    **Backbones.** Any supported timm backbone works with ``pef_entry="image"`` (the stem output is reduced to
    its channel mean before the VGG); the entries ``"conv1_2"`` (default) and ``"block2"`` feed the stem output
    itself to a VGG layer that takes 64 channels, so they need a stem with 64 output channels (every ResNet).
    The non-local placement needs stages that are ``nn.Sequential`` of residual blocks where it puts blocks (see
    :class:`~vireid_layers.models.AGW`); pass ``non_local_blocks=(0, 0, 0, 0)`` otherwise. PEF needs a stem
    output of at least :math:`16 \times 16` (:math:`8 \times 8` with ``pef_block_output="relu"``): 64×64 input
    images for a ResNet (288×144 in the paper).

    Initialisation: AGW's (non-local blocks, GeM, BN-neck weight :math:`\mathcal N(1, 0.01)` and frozen zero
    bias, classifier :math:`\mathcal N(0, 0.001)`); the VGG from ``vgg_weights``.

    Args:
        num_classes: number of training identities (395 for SYSU-MM01, 206 for RegDB).
        backbone: a timm model name passed to :func:`~vireid_layers.build_two_stream_backbone` (with last
            stride 1), or an already built :class:`~vireid_layers.TwoStreamBackbone` (reused, not copied).
        pretrained: ``pretrained`` argument of the builder (``False``, ``True`` or a checkpoint path); only
            with a model name.
        vgg_weights: the VGG-16 of PEF: ``None`` (random initialisation; the loss then measures nothing
            meaningful, for tests only), ``"imagenet"`` (torchvision's ``VGG16_Weights.IMAGENET1K_V1``,
            downloaded and cached by torchvision), ``"timm"`` (timm's ``vgg16`` with ``pretrained=True``, the
            same torchvision weights through timm's hub cache), a path to a torchvision/timm VGG-16 state dict
            (``.pth`` or ``.safetensors``), or such a state dict. The paper: "pre-trained on ImageNet".
        pef_entry: where the stem output enters the VGG: ``"conv1_2"`` (default), ``"block2"`` or ``"image"``,
            see :class:`~vireid_layers.PEFLoss`.
        pef_block_output: ``"pool"`` (default) or ``"relu"``: where each VGG block's output is taken.
        sobel_combine: how the four Sobel maps are combined: ``"sum"`` (the paper's words, default), ``"abs"``
            or ``"magnitude"``, see :func:`~vireid_layers.sobel_edges`.
        non_local_blocks: non-local blocks per stage (default AGW's :math:`(0, 2, 3, 0)`).
        non_local_form: ``"official"`` (AGW code's one-channel bottleneck, default) or ``"corrected"``, see
            :class:`~vireid_layers.NonLocal`.
        gem_p: the GeM exponent (paper 3).
        backbone_kwargs: further keyword arguments of :func:`~vireid_layers.build_two_stream_backbone`; only
            with a model name.

    Shape:
        - ``images``: :math:`(N, 3, H, W)`, the normalised network input (infrared images 3-channel replicated).
        - ``modalities``: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
          :class:`~vireid_layers.Modality` for a single-modality batch. No batch order is assumed.
        - Output of :meth:`forward`: :class:`MSOOutput`.
        - Output of :meth:`embed`: :math:`(N, D)`.

    Examples:
        >>> import torch
        >>> from vireid_layers.models import MSO
        >>> model = MSO(10, backbone="resnet18")  # vgg_weights="imagenet" (or a local file) for the real thing
        >>> images, modalities = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
        >>> out = model(images, modalities)
        >>> out.pooled.shape, out.logits.shape, out.pef.shape
        (torch.Size([4, 512]), torch.Size([4, 10]), torch.Size([]))
        >>> _ = model.eval()
        >>> with torch.no_grad():
        ...     model.embed(images, modalities).shape, model.embed(images, 1, mode="pool").shape
        (torch.Size([4, 512]), torch.Size([4, 512]))
    """

    #: ``config.json`` records neither the backbone's nor the VGG-16's source: ``model.safetensors`` holds both.
    weight_arguments: ClassVar[Mapping[str, Any]] = {"pretrained": False, "vgg_weights": None}

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str | TwoStreamBackbone = "resnet50",
        pretrained: bool | str | os.PathLike[str] = False,
        vgg_weights: VGGWeights = None,
        pef_entry: PEFEntry = "conv1_2",
        pef_block_output: PEFBlockOutput = "pool",
        sobel_combine: SobelCombine = "sum",
        non_local_blocks: tuple[int, ...] | None = None,
        non_local_form: NonLocalForm = "official",
        gem_p: float = 3.0,
        backbone_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # AGW builds and validates the trunk; MSO keeps its modules under AGW's names (not a subclass: an MSO is
        # not an AGW for the official AGW checkpoint loader).
        agw = AGW(
            num_classes,
            backbone=backbone,
            pretrained=pretrained,
            method="agw",
            non_local_blocks=non_local_blocks,
            non_local_form=non_local_form,
            gem_p=gem_p,
            backbone_kwargs=backbone_kwargs,
        )
        self.backbone: TwoStreamBackbone = agw.backbone
        self.non_local: nn.ModuleList = agw.non_local
        self.pool: nn.Module = agw.pool
        self.neck: nn.BatchNorm1d = agw.neck
        self.classifier: nn.Linear = agw.classifier
        self.non_local_form: str = agw.non_local_form
        entry = check_choice(pef_entry, "pef_entry", ("conv1_2", "block2", "image"))
        if entry != "image" and self.backbone.stem_channels != 64:
            raise ValueError(
                f"`pef_entry`={entry!r} feeds the stem output to a VGG layer that takes 64 channels, but the stem "
                f"of {self.backbone.model_name or 'the backbone'} has {self.backbone.stem_channels} channels; "
                "use pef_entry='image'"
            )
        if isinstance(vgg_weights, str) and vgg_weights == "timm":
            vgg_weights = _resolve_vgg_weights(vgg_weights)  # type: ignore[assignment]
        self.pef = PEFLoss(
            entry=entry,  # type: ignore[arg-type]
            weights=vgg_weights,
            block_output=pef_block_output,
            combine=sobel_combine,
        )

    @property
    def num_classes(self) -> int:
        """Number of classifier outputs."""
        return self.classifier.out_features

    @property
    def embed_dim(self) -> int:
        """Dimension :math:`D` of the pooled and BN features (2048 for a ResNet-50)."""
        return self.classifier.in_features

    @property
    def non_local_positions(self) -> tuple[tuple[int, ...], ...]:
        """For every stage, the 0-based indices of the residual blocks followed by a non-local block."""
        return _non_local_positions(self.backbone, self.non_local)

    def reset_parameters(self) -> None:
        """Re-initialise MSO's own blocks (non-local, GeM, BN neck, classifier) as AGW; backbone and VGG are kept."""
        for blocks in self.non_local:
            for block in blocks:
                block.reset_parameters()
        self.pool.reset_parameters()  # type: ignore[operator]
        reset_bn_neck_head(self.neck, self.classifier)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        counts = [len(blocks) for blocks in self.non_local]
        return (
            f"num_classes={self.num_classes}, embed_dim={self.embed_dim}, non_local_blocks={counts}, "
            f"non_local_form={self.non_local_form!r}"
        )

    def forward(self, images: Tensor, modalities: Tensor | int | Modality) -> MSOOutput:
        """Training forward: the pooled and BN features, the logits and the PEF loss of the batch.

        The same computation runs in eval mode (BatchNorms then use their running statistics); use
        :meth:`embed` for retrieval features, which skips PEF.

        Args:
            images: :math:`(N, 3, H, W)` images.
            modalities: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
                :class:`~vireid_layers.Modality` for the whole batch.

        Returns:
            :class:`MSOOutput` of :math:`N` rows in input order.
        """
        stem = self.backbone.forward_stem(images, modalities)
        if not isinstance(modalities, Tensor):  # forward_stem has checked it is one valid modality
            modalities = torch.full((images.shape[0],), int(modalities), dtype=torch.long, device=images.device)
        pef = self.pef(stem, images, modalities)
        pooled = self.pool(self._trunk(stem))
        features = self.neck(pooled)
        return MSOOutput(pooled, features, self.classifier(features), pef)

    def embed(
        self,
        images: Tensor,
        modalities: Tensor | int | Modality,
        *,
        mode: MSOFeature = "fc",
        flip: bool = False,
    ) -> Tensor:
        r"""Retrieval embeddings, L2-normalised.

        * ``mode="fc"`` (default): :math:`g / \|g\|`, the BN-neck feature: the paper's test feature ("we use the
          features after the BN layer ... cosine distance").
        * ``mode="pool"``: :math:`x / \|x\|`, the pooled pre-BN feature.

        ``flip=True`` adds the embedding of the horizontally flipped image, not re-normalised (as
        :meth:`AGW.embed <vireid_layers.models.AGW.embed>`); the paper does not flip at test time. PEF never
        runs here.

        BatchNorm layers follow the module's mode: call ``model.eval()`` (and ``torch.inference_mode()``) for
        retrieval.

        Args:
            images: :math:`(N, 3, H, W)` images.
            modalities: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
                :class:`~vireid_layers.Modality` for the whole batch (a query or gallery set).
            mode: ``"fc"`` or ``"pool"``.
            flip: add the embedding of the horizontally flipped images.

        Returns:
            :math:`(N, D)` embeddings.
        """
        mode = check_choice(mode, "mode", _FEATURES)
        return embed_with_flip(lambda x, m: self._embed(x, m, mode), images, modalities, flip)

    def _embed(self, images: Tensor, modalities: Tensor | int | Modality, mode: str) -> Tensor:
        pooled = self.pool(self._trunk(self.backbone.forward_stem(images, modalities)))
        return F.normalize(self.neck(pooled) if mode == "fc" else pooled, dim=1)

    def _trunk(self, x: Tensor) -> Tensor:
        """The shared stages with their non-local blocks after the last residual blocks (AGW's trunk)."""
        return _non_local_stages(self.backbone, self.non_local, x)
