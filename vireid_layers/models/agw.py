"""AGW: the cross-modality baseline of :cite:`ye2021agw` (non-local attention, GeM, WRT) on the two-stream backbone."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from .._distributed import all_gather_cat, distributed_info
from .._validation import check_choice, check_int, check_nonnegative
from ..backbones.two_stream import TwoStreamBackbone
from ..distances import at_least_float32
from ..layers.gem import GeM
from ..layers.non_local import NonLocal, NonLocalForm
from ..losses.triplet import HardTripletLoss
from ..losses.wrt import WRTForm, WRTLoss
from ..modality import Modality
from ._assembly import bn_neck_head, embed_with_flip, reset_bn_neck_head, resolve_backbone
from ._pretrained import PretrainedMixin

__all__ = ["AGW", "AGWCriterion", "AGWFeature", "AGWMethod", "AGWOutput", "OFFICIAL_NON_LOCAL_BLOCKS"]

AGWMethod = Literal["agw", "base"]
AGWFeature = Literal["fc", "pool"]
_METHODS = ("agw", "base")
_FEATURES = ("fc", "pool")
#: Non-local blocks per stage of the official network (``non_layers = [0, 2, 3, 0]``): after the last 2
#: residual blocks of layer2 and the last 3 of layer3.
OFFICIAL_NON_LOCAL_BLOCKS: tuple[int, ...] = (0, 2, 3, 0)


class AGWOutput(NamedTuple):
    r"""Everything the AGW losses need from one training forward pass (rows in input order).

    Attributes:
        pooled: :math:`(N, D)` GeM-pooled (``method="base"``: average-pooled) features *before* the BN neck:
            the input of the WRT (or triplet) loss.
        features: :math:`(N, D)` BN-neck output ``neck(pooled)``.
        logits: :math:`(N, \text{num\_classes})` classifier output on ``features``: the input of the identity
            (cross-entropy) loss.
    """

    pooled: Tensor
    features: Tensor
    logits: Tensor

    def gather(self) -> AGWOutput:
        """This output concatenated over every DDP rank (rank order), differentiably; itself without a process group.

        Examples:
            >>> import torch
            >>> from vireid_layers.models import AGW
            >>> out = AGW(4, backbone="resnet18")(torch.randn(2, 3, 64, 32), torch.tensor([0, 1]))
            >>> out.gather() is out  # a single process
            True
        """
        if distributed_info()[1] == 1:
            return self
        return AGWOutput(*(all_gather_cat(t) for t in self))


class AGW(PretrainedMixin, nn.Module):
    r"""The AGW baseline: two-stream backbone with non-local blocks, GeM pooling, a BN neck and a classifier.

    The official cross-modality AGW network of :cite:`ye2021agw` built from
    :class:`~vireid_layers.TwoStreamBackbone`, :class:`~vireid_layers.NonLocal` and :class:`~vireid_layers.GeM`.
    For a ResNet-50 it computes::

        images (N, 3, H, W), modalities (N,)
          -> stem of each sample's modality
          -> layer1
          -> layer2, a non-local block after each of its blocks 2 and 3 (its last two)
          -> layer3, a non-local block after each of its blocks 3, 4 and 5 (its last three)
          -> layer4 (last stride 1) -> GeM (p = 3)     pooled (N, D = 2048)
          -> BN neck (BatchNorm1d, bias frozen at 0) -> classifier (Linear, no bias)

    **Placement for other backbones.** ``non_local_blocks`` gives the number :math:`k_s` of non-local blocks
    of every stage :math:`s` (official :math:`(0, 2, 3, 0)`); stage :math:`s` gets one after each of its last
    :math:`\min(k_s, B_s)` residual blocks, :math:`B_s` being its number of blocks. That is the official rule
    ("the last :math:`k` blocks of a stage"), capped at the stage's length: ResNet-34 and ResNet-50
    (:math:`B = 3, 4, 6, 3`) get the official five positions, ResNet-101 (:math:`3, 4, 23, 3`) the last three
    blocks of layer3 (20, 21, 22), and ResNet-18 (:math:`2, 2, 2, 2`) one block after each of the two blocks
    of layer2 and of layer3 (four in all). A stage that receives non-local blocks must be an
    ``nn.Sequential`` of residual blocks (every ResNet-like timm model); a backbone without four stages needs
    an explicit ``non_local_blocks``.

    The non-local blocks sit *between* the residual blocks of a stage, but the backbone module is neither
    modified nor copied: they live in :attr:`non_local` (``non_local[s][j]`` is the :math:`j`-th block of stage
    :math:`s`, as the official ``NL_{s+1}[j]``), and the forward walks the stage's blocks itself. So a
    pretrained backbone keeps its parameter names, and a backbone passed in is shared, not changed.

    ``method="base"`` is the official ``--method base``: average pooling and no non-local block (train it
    with :class:`AGWCriterion` ``(method="base")``, the batch-hard triplet loss).

    :meth:`forward` (training) returns an :class:`AGWOutput`; the official objective is
    ``cross_entropy(out.logits, labels) + WRTLoss()(out.pooled, labels)`` (:class:`AGWCriterion`).
    :meth:`embed` gives the official test features, ``"fc"`` (the L2-normalised BN feature, the one the
    official code selects checkpoints on) or ``"pool"`` (the L2-normalised pre-BN feature).

    Initialisation as in the official code: non-local blocks are the identity (zero output BatchNorm),
    BN-neck weight :math:`\mathcal N(1, 0.01)` and bias 0 (frozen, ``requires_grad=False``), classifier weight
    :math:`\mathcal N(0, 0.001)`.

    Args:
        num_classes: number of training identities (395 for SYSU-MM01, 206 for RegDB, 713 for LLCM).
        backbone: a timm model name passed to :func:`~vireid_layers.build_two_stream_backbone` (with last
            stride 1), or an already built :class:`~vireid_layers.TwoStreamBackbone` (reused, not copied).
        pretrained: ``pretrained`` argument of the builder (``False``, ``True`` or a checkpoint path); only
            with a model name.
        method: ``"agw"`` (non-local blocks and GeM) or ``"base"`` (average pooling, no non-local block).
        non_local_blocks: non-local blocks per stage, see above; default :data:`OFFICIAL_NON_LOCAL_BLOCKS` for
            ``"agw"``, none for ``"base"``.
        non_local_form: ``"official"`` (the released code's one-channel bottleneck; reproduces its numbers and
            checkpoints) or ``"corrected"`` (the intended :math:`C/2` channels); see
            :class:`~vireid_layers.NonLocal`.
        gem_p: the GeM exponent (official 3, fixed).
        learnable_p: learn the GeM exponent (the single-modality survey's variant; the input is then clamped
            at :math:`10^{-6}`, see :class:`~vireid_layers.GeM`).
        backbone_kwargs: further keyword arguments of :func:`~vireid_layers.build_two_stream_backbone`; only
            with a model name.

    Shape:
        - ``images``: :math:`(N, 3, H, W)`.
        - ``modalities``: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
          :class:`~vireid_layers.Modality` for a single-modality batch. No batch order is assumed.
        - Output of :meth:`forward`: :class:`AGWOutput` with :math:`(N, D)` features.
        - Output of :meth:`embed`: :math:`(N, D)`.

    Examples:
        >>> import torch
        >>> from vireid_layers.models import AGW
        >>> model = AGW(10, backbone="resnet18")
        >>> model.non_local_positions
        ((), (0, 1), (0, 1), ())
        >>> images, modalities = torch.randn(4, 3, 64, 32), torch.tensor([0, 1, 0, 1])
        >>> out = model(images, modalities)
        >>> out.pooled.shape, out.logits.shape
        (torch.Size([4, 512]), torch.Size([4, 10]))
        >>> _ = model.eval()
        >>> with torch.no_grad():
        ...     model.embed(images, modalities).shape, model.embed(images, 1, mode="pool").shape
        (torch.Size([4, 512]), torch.Size([4, 512]))
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str | TwoStreamBackbone = "resnet50",
        pretrained: bool | str | os.PathLike[str] = False,
        method: AGWMethod = "agw",
        non_local_blocks: Sequence[int] | None = None,
        non_local_form: NonLocalForm = "official",
        gem_p: float = 3.0,
        learnable_p: bool = False,
        backbone_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_int(num_classes, "num_classes")
        self.method: str = check_choice(method, "method", _METHODS)
        if not isinstance(learnable_p, bool):
            raise TypeError(f"`learnable_p` must be a bool, got {type(learnable_p).__name__} {learnable_p!r}")
        if self.method == "base" and learnable_p:
            raise ValueError("`learnable_p=True` needs method='agw': method='base' pools by averaging")
        backbone = resolve_backbone(backbone, pretrained, backbone_kwargs)
        self.backbone = backbone
        counts = self._check_counts(non_local_blocks, backbone)
        self.non_local = nn.ModuleList()
        for s, count in enumerate(counts):
            stage = backbone.stages[s]
            if count and not isinstance(stage, nn.Sequential):
                raise ValueError(
                    f"`non_local_blocks` puts {count} non-local block(s) in stage {s}, but stage {s} of "
                    f"{backbone.model_name or 'the backbone'} is a {type(stage).__name__}, not an nn.Sequential of "
                    "residual blocks; use a ResNet-like backbone or no non-local block in that stage"
                )
            num = min(count, len(stage)) if count else 0
            self.non_local.append(
                nn.ModuleList(NonLocal(backbone.channels[s], form=non_local_form) for _ in range(num))
            )
        self.non_local_form: str = check_choice(non_local_form, "non_local_form", ("official", "corrected"))
        if self.method == "agw":
            self.pool: nn.Module = GeM(p=gem_p, learnable=learnable_p)
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        dim = backbone.num_features
        self.neck, self.classifier = bn_neck_head(dim, num_classes)
        self.reset_parameters()

    def _check_counts(self, counts: Sequence[int] | None, backbone: TwoStreamBackbone) -> tuple[int, ...]:
        stages = backbone.num_stages
        if counts is None:
            if self.method == "base":
                return (0,) * stages
            if stages != len(OFFICIAL_NON_LOCAL_BLOCKS):
                raise ValueError(
                    f"the official non-local placement {OFFICIAL_NON_LOCAL_BLOCKS} is defined for 4 stages; the "
                    f"backbone has {stages}: pass `non_local_blocks` with one count per stage"
                )
            return OFFICIAL_NON_LOCAL_BLOCKS
        if isinstance(counts, (str, bytes)) or not isinstance(counts, Sequence):
            raise TypeError(f"`non_local_blocks` must be a sequence of ints, got {type(counts).__name__} {counts!r}")
        if len(counts) != stages:
            raise ValueError(
                f"`non_local_blocks` must have one count per stage ({stages}), got {len(counts)}: {list(counts)}"
            )
        out = tuple(check_int(c, "non_local_blocks", minimum=0) for c in counts)
        if self.method == "base" and any(out):
            raise ValueError(f"method='base' has no non-local block, got `non_local_blocks`={list(out)}")
        return out

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
        """Re-initialise AGW's own blocks (non-local, GeM, BN neck, classifier) officially; the backbone is kept."""
        for blocks in self.non_local:
            for block in blocks:
                block.reset_parameters()
        if isinstance(self.pool, GeM):
            self.pool.reset_parameters()
        reset_bn_neck_head(self.neck, self.classifier)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        counts = [len(blocks) for blocks in self.non_local]
        return (
            f"num_classes={self.num_classes}, method={self.method!r}, embed_dim={self.embed_dim}, "
            f"non_local_blocks={counts}, non_local_form={self.non_local_form!r}"
        )

    def forward(self, images: Tensor, modalities: Tensor | int | Modality) -> AGWOutput:
        """Training forward: the pooled features, BN features and logits of every image.

        The same computation runs in eval mode (BatchNorms then use their running statistics); use
        :meth:`embed` for retrieval features.

        Args:
            images: :math:`(N, 3, H, W)` images.
            modalities: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
                :class:`~vireid_layers.Modality` for the whole batch.

        Returns:
            :class:`AGWOutput` of :math:`N` rows in input order.
        """
        pooled = self._pooled(images, modalities)
        features = self.neck(pooled)
        return AGWOutput(pooled, features, self.classifier(features))

    def embed(
        self,
        images: Tensor,
        modalities: Tensor | int | Modality,
        *,
        mode: AGWFeature = "fc",
        flip: bool = False,
    ) -> Tensor:
        r"""Retrieval embeddings: the official test features, L2-normalised.

        * ``mode="fc"``: :math:`\operatorname{BN}(x) / \|\operatorname{BN}(x)\|`, the BN-neck feature, which the
          official code uses to select checkpoints (its "FC" row).
        * ``mode="pool"``: :math:`x / \|x\|`, the pooled pre-BN feature (its "POOL" row).

        ``flip=True`` adds the embedding of the horizontally flipped image, not re-normalised (as
        :meth:`DEEN.embed <vireid_layers.models.DEEN.embed>`; cosine ranking is the same as for the
        re-normalised mean).

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
        pooled = self._pooled(images, modalities)
        return F.normalize(self.neck(pooled) if mode == "fc" else pooled, dim=1)

    def _pooled(self, images: Tensor, modalities: Tensor | int | Modality) -> Tensor:
        """Stems, every stage with its non-local blocks, and the pooling: the pre-BN feature."""
        x = self.backbone.forward_stem(images, modalities)
        return self.pool(_non_local_stages(self.backbone, self.non_local, x))


def _non_local_stages(backbone: TwoStreamBackbone, non_local: nn.ModuleList, x: Tensor) -> Tensor:
    """AGW's trunk: every shared stage of ``backbone``, each followed inside by its ``non_local`` blocks.

    The non-local blocks of a stage follow its last residual blocks (AGW and MSO share this trunk).
    """
    for s, blocks in enumerate(non_local):
        if len(blocks) == 0:
            x = backbone.forward_stage(s, x)
            continue
        stage = backbone.stages[s]
        first = len(stage) - len(blocks)
        for b, block in enumerate(stage):
            x = block(x)
            if b >= first:
                x = blocks[b - first](x)
    return x


def _non_local_positions(backbone: TwoStreamBackbone, non_local: nn.ModuleList) -> tuple[tuple[int, ...], ...]:
    """For every stage, the 0-based indices of the residual blocks followed by a non-local block."""
    out = []
    for s, blocks in enumerate(non_local):
        length = len(backbone.stages[s]) if len(blocks) else 0
        out.append(tuple(range(length - len(blocks), length)))
    return tuple(out)


class AGWCriterion(nn.Module):
    r"""AGW's training objective as named terms: identity loss plus WRT (or, for the base method, triplet).

    The official ``train.py`` of :cite:`ye2021agw` minimises

    .. math::

        \mathcal L = \mathcal L_{id} + \lambda\, \mathcal L_{wrt},

    with :math:`\mathcal L_{id}` the cross-entropy of ``out.logits`` and :math:`\mathcal L_{wrt}` the weighted
    regularised triplet loss (:class:`~vireid_layers.WRTLoss`, raw features) on ``out.pooled``, the pre-BN GeM
    features of the whole batch, both modalities together; :math:`\lambda = 1` officially (no weighting). With
    ``method="base"`` (the official ``--method base``) the metric term is the batch-hard triplet loss
    (:class:`~vireid_layers.HardTripletLoss`, margin 0.3) instead.

    :meth:`forward` returns the *unweighted* terms ``{"ce", "wrt"}`` (``{"ce", "triplet"}`` for ``"base"``) and
    :meth:`total` their weighted sum, the interface of :class:`~vireid_layers.engine.Trainer` (as
    :class:`~vireid_layers.models.DEENCriterion`). Every term is computed in at least float32 whatever the
    autocast dtype of the model: half-precision outputs are promoted to float32, float64 outputs stay float64
    (``torch.promote_types(dtype, torch.float32)``; never cast down).

    **WRT form.** ``wrt_form="official"`` is the official ``TripletLoss_WRT`` exactly, the loss that trained
    the published AGW numbers: its negative weights vanish once every negative of an anchor is beyond about
    14, so on the official network's pooled features (nearest negatives 15–56 apart) its WRT term is 42.44
    where the default ``wrt_form="stable"`` gives 18.48 (see :func:`~vireid_layers.wrt_loss` and
    ``docs/agw.rst``). The official AGW recipe passes ``wrt_form="official"``.

    Args:
        method: ``"agw"`` (WRT) or ``"base"`` (batch-hard triplet).
        lambda_triplet: weight :math:`\lambda` of the metric term (WRT or triplet).
        margin: triplet margin for ``"base"`` (official 0.3); unused by WRT, which has none.
        normalize: L2-normalise the features inside WRT (AGW ``False``; MSO ``True``).
        wrt_form: ``"stable"`` (default) or ``"official"``: the ``form`` of :class:`~vireid_layers.WRTLoss`.

    Shape:
        - ``out``: an :class:`AGWOutput` of :math:`N` images.
        - ``labels``: :math:`(N,)`, passed as the ``identity`` field of ``batch`` (an
          :class:`~vireid_layers.data.ImageSample` or any object with that attribute).
        - Output: ``{"ce", "wrt"}`` or ``{"ce", "triplet"}`` scalars.

    Examples:
        >>> import torch
        >>> from vireid_layers.data import ImageSample
        >>> from vireid_layers.models import AGW, AGWCriterion
        >>> model, criterion = AGW(4, backbone="resnet18"), AGWCriterion()
        >>> images = torch.randn(8, 3, 64, 32)
        >>> labels, modalities = torch.arange(4).repeat(2), torch.tensor([0] * 4 + [1] * 4)
        >>> terms = criterion(model(images, modalities), ImageSample(images, labels, labels, modalities))
        >>> sorted(terms), criterion.total(terms).shape
        (['ce', 'wrt'], torch.Size([]))
    """

    def __init__(
        self,
        *,
        method: AGWMethod = "agw",
        lambda_triplet: float = 1.0,
        margin: float = 0.3,
        normalize: bool = False,
        wrt_form: WRTForm = "stable",
    ) -> None:
        super().__init__()
        self.method: str = check_choice(method, "method", _METHODS)
        check_nonnegative(lambda_triplet, "lambda_triplet")
        self.metric_name = "wrt" if self.method == "agw" else "triplet"
        self.weights = {"ce": 1.0, self.metric_name: float(lambda_triplet)}
        self.metric: nn.Module = (
            WRTLoss(normalize=normalize, form=wrt_form) if self.method == "agw" else HardTripletLoss(margin=margin)
        )

    def extra_repr(self) -> str:
        """The method and the weight of the metric term."""
        return f"method={self.method!r}, lambda_triplet={self.weights[self.metric_name]}"

    def forward(self, out: AGWOutput, batch: Any) -> dict[str, Tensor]:
        """The unweighted loss terms of one (possibly DDP-gathered) batch."""
        labels = batch.identity
        return {
            "ce": F.cross_entropy(at_least_float32(out.logits), labels),
            self.metric_name: self.metric(at_least_float32(out.pooled), labels),
        }

    def total(self, terms: Mapping[str, Tensor]) -> Tensor:
        """The weighted sum the optimiser minimises."""
        return sum(self.weights[k] * v for k, v in terms.items())  # type: ignore[return-value]
