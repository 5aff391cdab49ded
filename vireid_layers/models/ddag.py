"""DDAG: the Dynamic Dual-Attentive Aggregation network of :cite:`ye2020ddag`, assembled from the library's blocks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from .._distributed import all_gather_cat, distributed_info
from .._validation import check_choice, check_int, check_labels
from ..backbones.two_stream import TwoStreamBackbone
from ..layers.cgsa import CGSA
from ..layers.iwpa import IWPA, IWPAForm
from ..modality import Modality
from ._assembly import bn_neck_head, embed_with_flip, reset_bn_neck_head, resolve_backbone
from ._pretrained import PretrainedMixin

__all__ = ["DDAG", "DDAGFeature", "DDAGOutput"]

DDAGFeature = Literal["att", "fc"]
_FEATURES = ("att", "fc")


class DDAGOutput(NamedTuple):
    r"""Everything the DDAG losses need from one forward pass (rows in input order).

    Attributes:
        pooled: :math:`(N, D)` globally average-pooled last map :math:`x^o` *before* the BN neck: the input of
            the triplet loss and the node features of the graph branch.
        features: :math:`(N, D)` BN-neck output :math:`f = \operatorname{BN}_{\text{neck}}(x^o)`.
        logits: :math:`(N, K)` classifier output on ``features``: the input of :math:`\mathcal L_{id}`.
        part_features: :math:`(N, D)` IWPA output :math:`x^*` (the official ``feat_att``, the test feature).
        part_logits: :math:`(N, K)` the *same* classifier on ``part_features``: the input of
            :math:`\mathcal L_{wp}`.
        graph: :math:`(N, K)` CGSA log-probabilities over the identities (the input of :math:`\mathcal L_g`), or
            ``None`` when the forward pass received no labels (evaluation).
    """

    pooled: Tensor
    features: Tensor
    logits: Tensor
    part_features: Tensor
    part_logits: Tensor
    graph: Tensor | None

    def gather(self) -> DDAGOutput:
        """This output concatenated over every DDP rank (rank order), differentiably; itself without a process group.

        Every tensor is all-gathered along its rows (:func:`vireid_layers.engine.all_gather_cat`), so the losses
        see the global batch and each rank receives the gradient of its own rows. ``graph`` stays ``None`` when
        it is ``None``. The graph attention itself ran within each rank's batch (one clique per identity of
        that batch), as the official code runs it within each batch.

        Examples:
            >>> import torch
            >>> from vireid_layers.models import DDAG
            >>> out = DDAG(4, backbone="resnet18")(torch.randn(2, 3, 64, 32), torch.tensor([0, 1]))
            >>> out.gather() is out  # a single process
            True
        """
        if distributed_info()[1] == 1:
            return self
        return DDAGOutput(*(None if t is None else all_gather_cat(t) for t in self))


class DDAG(PretrainedMixin, nn.Module):
    r"""The DDAG network: two-stream backbone, BN neck, IWPA on the last map, CGSA over the batch, one classifier.

    The official network of :cite:`ye2020ddag` built from :class:`~vireid_layers.TwoStreamBackbone`,
    :class:`~vireid_layers.IWPA` and :class:`~vireid_layers.CGSA`. For a ResNet-50 it computes::

        images (N, 3, H, W), modalities (N,)
          -> stem of each sample's modality -> layer1 -> layer2 -> layer3 -> layer4 (last stride 1)   X
          X -> global average pool                                   pooled x^o (N, D = 2048)
          x^o -> BN neck (BatchNorm1d, bias frozen at 0)            features f -> classifier     logits   (L_id)
          X, f -> IWPA (p = 3 stripes, official form)                part_features x* -> classifier   (L_wp)
          x^o, labels -> CGSA (4 heads, d = 512, one clique per identity)   graph log-probabilities  (L_g)

    The classifier (``Linear``, no bias) is shared by :math:`\mathcal L_{id}` and :math:`\mathcal L_{wp}`, as in
    the paper and the code. IWPA's residual is the BN-neck output :math:`f` (``iwpa_form="official"``, the
    released code and checkpoints; ``"paper"``: Eq. 5 as written, residual :math:`\operatorname{BN}(x^o)`), see
    :class:`~vireid_layers.IWPA`. The triplet loss and the graph take the pre-BN :math:`x^o`.

    **The graph needs the labels.** CGSA joins the images of one identity, so :meth:`forward` runs it only when
    ``labels`` are passed (training; ``output.graph`` is ``None`` otherwise). The trainer's default forward
    passes only images and modalities: train with
    ``forward=lambda model, batch: model(batch.image, batch.modality, labels=batch.identity)``.

    :meth:`forward` returns a :class:`DDAGOutput`; :class:`~vireid_layers.models.DDAGCriterion` turns it into
    :math:`\mathcal L_{id} + \mathcal L_{tri} + \mathcal L_{wp} + w\,\mathcal L_g` with the dynamic weight
    :math:`w` of Eq. 11. :meth:`embed` gives the test features of the official ``test_ddag.py``.

    Initialisation as in the official code: BN-neck weight :math:`\mathcal N(1, 0.01)` and bias 0 (frozen,
    ``requires_grad=False``), classifier weight :math:`\mathcal N(0, 0.001)`, IWPA and CGSA as their own
    ``reset_parameters``. Only the two stems and one trunk are built (the official code builds three complete
    ResNet-50s, and dead ``classifier1``/``classifier2`` and IWPA ``W`` modules); official checkpoints map onto
    this module by renaming ``bottleneck`` to ``neck``, ``wpa`` to ``iwpa``, ``attention_{i}``/``out_att`` to
    ``cgsa.attention_{i}``/``cgsa.out_att``, and the three ResNet prefixes to ``backbone``.

    Args:
        num_classes: number of training identities (395 for SYSU-MM01, 206 for RegDB); also the output size of
            the graph branch.
        backbone: a timm model name passed to :func:`~vireid_layers.build_two_stream_backbone` (with last
            stride 1), or an already built :class:`~vireid_layers.TwoStreamBackbone` (reused, not copied). Any
            supported backbone works: IWPA and CGSA take its last map's channels.
        pretrained: ``pretrained`` argument of the builder (``False``, ``True`` or a checkpoint path); only
            with a model name.
        parts: number :math:`p` of IWPA stripes (official 3).
        iwpa_form: ``"official"`` or ``"paper"``, see :class:`~vireid_layers.IWPA`.
        graph_hidden: per-head size :math:`d` of CGSA (official 512, paper 256).
        graph_heads: number :math:`L` of CGSA heads (official and paper 4).
        graph_dropout: CGSA dropout (official 0.2; the official test script builds the model with 0).
        graph_output_elu: the official ELU on CGSA's output layer (``False``: the paper).
        backbone_kwargs: further keyword arguments of :func:`~vireid_layers.build_two_stream_backbone`; only
            with a model name.

    Shape:
        - ``images``: :math:`(N, 3, H, W)`.
        - ``modalities``: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
          :class:`~vireid_layers.Modality` for a single-modality batch. No batch order is assumed.
        - ``labels``: :math:`(N,)` identity labels in :math:`[0, K)`, or ``None``.
        - Output of :meth:`forward`: :class:`DDAGOutput`.
        - Output of :meth:`embed`: :math:`(N, D)`.

    Examples:
        >>> import torch
        >>> from vireid_layers.models import DDAG
        >>> model = DDAG(10, backbone="resnet18")
        >>> images, modalities = torch.randn(4, 3, 64, 32), torch.tensor([0, 1, 0, 1])
        >>> out = model(images, modalities, labels=torch.tensor([3, 3, 7, 7]))
        >>> out.part_features.shape, out.part_logits.shape, out.graph.shape
        (torch.Size([4, 512]), torch.Size([4, 10]), torch.Size([4, 10]))
        >>> _ = model.eval()
        >>> with torch.no_grad():
        ...     model.embed(images, modalities).shape, model.embed(images, 1, mode="fc").shape
        (torch.Size([4, 512]), torch.Size([4, 512]))
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str | TwoStreamBackbone = "resnet50",
        pretrained: bool | str | os.PathLike[str] = False,
        parts: int = 3,
        iwpa_form: IWPAForm = "official",
        graph_hidden: int = 512,
        graph_heads: int = 4,
        graph_dropout: float = 0.2,
        graph_output_elu: bool = True,
        backbone_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_int(num_classes, "num_classes")
        check_int(parts, "parts")
        backbone = resolve_backbone(backbone, pretrained, backbone_kwargs)
        self.backbone = backbone
        dim = backbone.num_features
        self.neck, self.classifier = bn_neck_head(dim, num_classes)
        self.iwpa = IWPA(dim, parts=parts, form=iwpa_form)
        self.cgsa = CGSA(
            dim,
            num_classes,
            hidden=check_int(graph_hidden, "graph_hidden"),
            heads=check_int(graph_heads, "graph_heads"),
            dropout=graph_dropout,
            output_elu=graph_output_elu,
        )
        self.reset_parameters()

    @property
    def num_classes(self) -> int:
        """Number of classifier (and graph) outputs."""
        return self.classifier.out_features

    @property
    def embed_dim(self) -> int:
        """Dimension :math:`D` of the pooled, BN and part features (2048 for a ResNet-50)."""
        return self.classifier.in_features

    @property
    def parts(self) -> int:
        """Number :math:`p` of IWPA stripes."""
        return self.iwpa.parts

    def reset_parameters(self) -> None:
        """Re-initialise DDAG's own blocks (BN neck, classifier, IWPA, CGSA) officially; the backbone is kept."""
        reset_bn_neck_head(self.neck, self.classifier)
        self.iwpa.reset_parameters()
        self.cgsa.reset_parameters()

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return (
            f"num_classes={self.num_classes}, embed_dim={self.embed_dim}, parts={self.parts}, "
            f"iwpa_form={self.iwpa.form!r}, graph_hidden={self.cgsa.hidden}, graph_heads={self.cgsa.heads}"
        )

    def forward(self, images: Tensor, modalities: Tensor | int | Modality, labels: Tensor | None = None) -> DDAGOutput:
        """Training forward: pooled, BN and part features, both logits, and (with ``labels``) the graph output.

        The same computation runs in eval mode (BatchNorms then use their running statistics, CGSA has no
        dropout); use :meth:`embed` for retrieval features.

        Args:
            images: :math:`(N, 3, H, W)` images.
            modalities: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
                :class:`~vireid_layers.Modality` for the whole batch.
            labels: :math:`(N,)` identity labels in :math:`[0, K)` for the graph branch; ``None`` skips it.

        Returns:
            :class:`DDAGOutput` of :math:`N` rows in input order.
        """
        x = self.backbone(images, modalities)
        if labels is not None:
            labels = check_labels(labels, x.shape[0])
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        features = self.neck(pooled)
        part_features = self._part_features(x, pooled, features)
        graph = None if labels is None else self.cgsa(pooled, labels)
        return DDAGOutput(
            pooled, features, self.classifier(features), part_features, self.classifier(part_features), graph
        )

    def embed(
        self,
        images: Tensor,
        modalities: Tensor | int | Modality,
        *,
        mode: DDAGFeature = "att",
        flip: bool = False,
    ) -> Tensor:
        r"""Retrieval embeddings: the official test features, L2-normalised.

        * ``mode="att"``: :math:`x^* / \|x^*\|`, the IWPA feature: the paper's test representation, and the one
          on which the official code selects checkpoints (its "FC_att" row).
        * ``mode="fc"``: :math:`f / \|f\|`, the BN-neck feature (its "FC" row).

        The official ``test_ddag.py`` extracts the query and gallery sets in eval mode, one modality at a
        time, without flipping. ``flip=True`` adds the embedding of the horizontally flipped image, not
        re-normalised (as :meth:`AGW.embed <vireid_layers.models.AGW.embed>`). CGSA is never run.

        BatchNorm layers follow the module's mode: call ``model.eval()`` (and ``torch.inference_mode()``) for
        retrieval.

        Args:
            images: :math:`(N, 3, H, W)` images.
            modalities: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
                :class:`~vireid_layers.Modality` for the whole batch (a query or gallery set).
            mode: ``"att"`` or ``"fc"``.
            flip: add the embedding of the horizontally flipped images.

        Returns:
            :math:`(N, D)` embeddings.
        """
        mode = check_choice(mode, "mode", _FEATURES)
        return embed_with_flip(lambda x, m: self._embed(x, m, mode), images, modalities, flip)

    def _embed(self, images: Tensor, modalities: Tensor | int | Modality, mode: str) -> Tensor:
        x = self.backbone(images, modalities)
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        features = self.neck(pooled)
        if mode == "fc":
            return F.normalize(features, dim=1)
        return F.normalize(self._part_features(x, pooled, features), dim=1)

    def _part_features(self, x: Tensor, pooled: Tensor, features: Tensor) -> Tensor:
        """IWPA with its residual: the BN-neck feature (official form) or the pre-BN pooled one (paper form)."""
        return self.iwpa(x, features if self.iwpa.form == "official" else pooled)
