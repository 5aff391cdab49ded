"""MPANet: the Modality and Pattern Alignment Network of :cite:`wu2021mpanet`, assembled from the library's blocks."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._distributed import all_gather_cat, distributed_info
from .._validation import check_int, check_modalities, check_probability
from ..backbones.two_stream import TwoStreamBackbone
from ..layers.mam import MAM
from ..layers.pam import PAM
from ..losses.modality_learning import ModalityClassifiers, mean_classifier_momentum
from ..modality import Modality
from ._assembly import embed_with_flip, resolve_backbone
from ._pretrained import PretrainedMixin

__all__ = ["MPANet", "MPANetOutput"]

# Official key prefixes (DoubtedSteam/MPANet ``Baseline``) -> this module's, applied by the load pre-hook. The
# blocks' own hooks then rename inside MAM (``channel_attention``), PAM (``spatial_attention``) and
# ModalityClassifiers (``{visible,infrared}_classifier[_]``).
_OFFICIAL_HEADS = {
    "spatial_attention.": "pam.spatial_attention.",
    "visible_classifier.": "modality_classifiers.visible_classifier.",
    "infrared_classifier.": "modality_classifiers.infrared_classifier.",
    "visible_classifier_.": "modality_classifiers.visible_classifier_.",
    "infrared_classifier_.": "modality_classifiers.infrared_classifier_.",
    "bn_neck.": "neck.",
}
_OFFICIAL_MAM = re.compile(r"backbone\.MAM(\d+)\.(.*)")
_OFFICIAL_LAYER = re.compile(r"backbone\.layer(\d+)\.(.*)")
_OFFICIAL_STEM = re.compile(r"backbone\.((?:conv1|bn1)\..*)")


def _check_modality_argument(modalities: object, n: int) -> Tensor | Modality:
    """``modalities`` checked: an :math:`(n,)` tensor of 0/1, or one ``int`` / :class:`Modality`."""
    if isinstance(modalities, Tensor):
        if modalities.is_floating_point() or modalities.is_complex():
            raise TypeError(f"`modalities` must be an integer or bool tensor, got dtype {modalities.dtype}")
        return check_modalities(modalities, n)
    if isinstance(modalities, bool) or not isinstance(modalities, int):
        raise TypeError(
            f"`modalities` must be an (N,) tensor, an int or a Modality, got {type(modalities).__name__} {modalities!r}"
        )
    if modalities not in (Modality.VISIBLE, Modality.INFRARED):
        raise ValueError(f"`modalities` must be 0 (visible) or 1 (infrared), got {modalities!r}")
    return Modality(modalities)


class MPANetOutput(NamedTuple):
    r"""Everything the MPANet losses need from one forward pass (rows in input order).

    Attributes:
        features: :math:`(N, (l + 1) C)` PAM feature :math:`f = [p_1; \dots; p_l; g(F)]` *before* the BN neck
            (14,336-d for a ResNet-50 and :math:`l = 6`): the input of the center cluster loss.
        neck_features: :math:`(N, (l + 1) C)` BN-neck output, the input of every classifier and the test feature.
        logits: :math:`(N, K)` shared classifier :math:`C` on ``neck_features``: the input of :math:`\mathcal L_{id}`.
        masks: :math:`(N, l, h, w)` pattern maps :math:`M \in (0, 1)`: the input of :math:`\mathcal L_{sep}`.
        modality_logits: :math:`(N, K)` logits of each row's own modality-specific classifier (:math:`C_v` on
            visible, :math:`C_r` on infrared rows): the input of :math:`\mathcal L_{sid}` and the :math:`p` of
            :math:`\mathcal L_{MM}`.
        mean_logits: :math:`(N, K)` logits of the *other* modality's mean classifier (:math:`E[\theta_r]` on
            visible, :math:`E[\theta_v]` on infrared rows), detached: the :math:`q` of :math:`\mathcal L_{MM}`.
    """

    features: Tensor
    neck_features: Tensor
    logits: Tensor
    masks: Tensor
    modality_logits: Tensor
    mean_logits: Tensor

    def gather(self) -> MPANetOutput:
        """This output concatenated over every DDP rank (rank order), differentiably; itself without a process group.

        Every tensor is all-gathered along its rows (:func:`vireid_layers.engine.all_gather_cat`), so the losses
        see the global batch (the center cluster loss then forms its centres over the global batch) and each
        rank receives the gradient of its own rows. ``mean_logits`` has no gradient to return.

        Examples:
            >>> import torch
            >>> from vireid_layers.models import MPANet
            >>> out = MPANet(4, backbone="resnet18")(torch.randn(2, 3, 64, 32), torch.tensor([0, 1]))
            >>> out.gather() is out  # a single process
            True
        """
        if distributed_info()[1] == 1:
            return self
        return MPANetOutput(*(all_gather_cat(t) for t in self))


class MPANet(PretrainedMixin, nn.Module):
    r"""The MPANet network: backbone with MAM after its last two stages, PAM, BN neck and three classifiers.

    The official network of :cite:`wu2021mpanet` built from :class:`~vireid_layers.TwoStreamBackbone`,
    :class:`~vireid_layers.MAM`, :class:`~vireid_layers.PAM` and :class:`~vireid_layers.ModalityClassifiers`.
    For a ResNet-50 at 384×128 it computes::

        images (N, 3, 384, 128), modalities (N,)
          -> stem (one, shared: the official one-stream network) -> stage1 -> stage2
          -> stage3 (N, 1024, 24, 8) -> MAM3 -> stage4 (last stride 1) (N, 2048, 24, 8) -> MAM4      F
          F -> PAM (l = 6 pattern maps M)      features f = [p_1; ...; p_6; GAP(F)] (N, 14336)   (L_cc)
                                               masks M (N, 6, 24, 8)                               (L_sep)
          f -> BN neck (BatchNorm1d, bias frozen at 0)      neck_features -> classifier C     logits   (L_id)
          neck_features -> C_v (visible rows) / C_r (infrared rows)           modality_logits   (L_sid, L_MM)
          neck_features -> E[C_r] (visible rows) / E[C_v] (infrared rows), no gradient   mean_logits   (L_MM)

    The feature is ordered as the official one: the :math:`l` pattern parts of :math:`C` columns each, then the
    global average pool last (columns 12,288–14,335 for a ResNet-50). ``modality_attention`` says after how many
    of the last stages a :class:`~vireid_layers.MAM` sits: 2 (official: after stages 3 and 4), 1 (only after
    the last stage) or 0 (none).

    **The mean classifiers are updated in the forward**, as in the official code: in training mode every
    :meth:`forward` first makes one EMA step :math:`E[\theta] \leftarrow (1 - \alpha) E[\theta] + \alpha\theta` of
    both mean classifiers (:meth:`~vireid_layers.ModalityClassifiers.update_mean`), then predicts with them.
    :math:`\alpha` is :attr:`mean_update_rate` (official 0.2); :meth:`set_epoch` sets it from the official
    schedule :func:`~vireid_layers.mean_classifier_momentum` (a decay after epoch 99). ``mean_update_rate=None``
    never updates them in the forward (call ``model.modality_classifiers.update_mean`` yourself). In eval mode
    nothing is updated. The official code recognises the infrared rows by the SYSU-MM01 cameras 3 and 6; here
    they are the rows whose ``modalities`` is 1.

    **One stream.** With ``shared_stem=True`` (official) all images go through the visible stem of the
    backbone (whose BatchNorm sees the mixed batch, as the official single ResNet's); the infrared stem is
    frozen (``requires_grad=False``, so DDP and the optimiser ignore it) and unused. ``shared_stem=False`` routes
    each image through the stem of its modality (the DDAG/AGW two-stream arrangement, not in the paper).

    Initialisation as in the official code: BN neck weight 1, bias 0 (frozen), fresh running statistics; the
    shared and the modality-specific classifiers PyTorch's default ``Linear`` init, the mean classifiers copies
    of the live ones; MAM and PAM their own ``reset_parameters``. **Official checkpoints load as they are**:
    ``load_state_dict`` of the official ``Baseline``'s 334 entries (:doc:`/mpanet`) maps ``backbone.conv1``/
    ``bn1`` onto both stems, ``backbone.layer{i}`` onto ``backbone.stages.{i-1}``, ``backbone.MAM{i}`` onto
    ``mam.{i}``, ``spatial_attention`` onto ``pam``, the four modality classifiers onto
    ``modality_classifiers`` and ``bn_neck`` onto ``neck`` (a ResNet-50 backbone with ``num_parts=6``).

    Args:
        num_classes: number of training identities :math:`K` (395 for SYSU-MM01, 206 for RegDB).
        backbone: a timm model name passed to :func:`~vireid_layers.build_two_stream_backbone` (with last
            stride 1), or an already built :class:`~vireid_layers.TwoStreamBackbone` (reused, not copied; with
            ``shared_stem`` its infrared stem is frozen). Any supported backbone works: MAM and PAM take the
            channels of its stages.
        pretrained: ``pretrained`` argument of the builder (``False``, ``True`` or a checkpoint path); only
            with a model name.
        num_parts: number :math:`l` of PAM pattern maps (official 6).
        modality_attention: number of last stages followed by a MAM (official 2; 0, 1 or 2).
        mam_reduction: reduction ratio :math:`r` of the MAM masks (official 16).
        shared_stem: one stem for both modalities (official) or one per modality.
        mean_update_rate: the EMA rate :math:`\alpha` of the mean classifiers applied in every training forward
            (official 0.2), or ``None`` for no update in the forward.
        backbone_kwargs: further keyword arguments of :func:`~vireid_layers.build_two_stream_backbone`; only
            with a model name.

    Shape:
        - ``images``: :math:`(N, 3, H, W)`.
        - ``modalities``: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
          :class:`~vireid_layers.Modality` for a single-modality batch. No batch order is assumed.
        - Output of :meth:`forward`: :class:`MPANetOutput`.
        - Output of :meth:`embed`: :math:`(N, (l + 1) C)`.

    Examples:
        >>> import torch
        >>> from vireid_layers.models import MPANet
        >>> model = MPANet(10, backbone="resnet18")
        >>> images, modalities = torch.randn(4, 3, 64, 32), torch.tensor([0, 1, 0, 1])
        >>> out = model(images, modalities)
        >>> out.features.shape, out.masks.shape, out.logits.shape, out.mean_logits.requires_grad
        (torch.Size([4, 3584]), torch.Size([4, 6, 4, 2]), torch.Size([4, 10]), False)
        >>> _ = model.eval()
        >>> with torch.no_grad():
        ...     model.embed(images, modalities).shape
        torch.Size([4, 3584])
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str | TwoStreamBackbone = "resnet50",
        pretrained: bool | str | os.PathLike[str] = False,
        num_parts: int = 6,
        modality_attention: int = 2,
        mam_reduction: int = 16,
        shared_stem: bool = True,
        mean_update_rate: float | None = 0.2,
        backbone_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_int(num_classes, "num_classes")
        check_int(num_parts, "num_parts")
        if isinstance(modality_attention, bool) or modality_attention not in (0, 1, 2):
            raise ValueError(f"`modality_attention` must be 0, 1 or 2, got {modality_attention!r}")
        if not isinstance(shared_stem, bool):
            raise TypeError(f"`shared_stem` must be a bool, got {type(shared_stem).__name__} {shared_stem!r}")
        backbone = resolve_backbone(backbone, pretrained, backbone_kwargs)
        if modality_attention > backbone.num_stages:
            raise ValueError(
                f"`modality_attention` must not exceed the backbone's {backbone.num_stages} stages, "
                f"got {modality_attention}"
            )
        self.backbone = backbone
        self.shared_stem = shared_stem
        if shared_stem:
            backbone.infrared_stem.requires_grad_(False)
        self.mean_update_rate = (
            None if mean_update_rate is None else check_probability(mean_update_rate, "mean_update_rate")
        )
        stages = backbone.num_stages
        reduction = check_int(mam_reduction, "mam_reduction")
        self.mam = nn.ModuleDict(
            {
                str(i): MAM(backbone.channels[i - 1], reduction=min(reduction, backbone.channels[i - 1]))
                for i in range(stages - modality_attention + 1, stages + 1)
            }
        )
        self.pam = PAM(backbone.num_features, num_parts=num_parts)
        dim = self.pam.out_features
        self.neck = nn.BatchNorm1d(dim)
        self.neck.bias.requires_grad_(False)  # the official BN neck has no learned shift
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        self.modality_classifiers = ModalityClassifiers(dim, num_classes)
        self._register_load_state_dict_pre_hook(self._convert_official_state_dict)
        self.reset_parameters()

    @property
    def num_classes(self) -> int:
        """Number of identities :math:`K` of every classifier."""
        return self.classifier.out_features

    @property
    def embed_dim(self) -> int:
        """Dimension :math:`(l + 1) C` of the PAM and BN-neck features (14,336 for a ResNet-50 and :math:`l = 6`)."""
        return self.classifier.in_features

    @property
    def num_parts(self) -> int:
        """Number :math:`l` of pattern maps."""
        return self.pam.num_parts

    @property
    def modality_attention(self) -> int:
        """Number of last stages followed by a MAM."""
        return len(self.mam)

    def reset_parameters(self) -> None:
        """Re-initialise MPANet's own blocks officially (MAMs, PAM, BN neck, classifiers); the backbone is kept."""
        for mam in self.mam.values():
            mam.reset_parameters()
        self.pam.reset_parameters()
        self.neck.reset_parameters()  # weight 1, bias 0, fresh running statistics
        self.classifier.reset_parameters()
        self.modality_classifiers.reset_parameters()

    def set_epoch(self, epoch: int) -> None:
        r"""Set :attr:`mean_update_rate` for the 0-based ``epoch`` from the official schedule.

        :math:`\alpha = 0.2 \min(100 / (\text{epoch} + 2), 1)`, :func:`~vireid_layers.mean_classifier_momentum`
        of the 1-based epoch ``epoch + 1``: 0.2 up to the 0-based epoch 98, then a slow decay. Does nothing when
        :attr:`mean_update_rate` is ``None``.

        Args:
            epoch: the 0-based epoch about to start.
        """
        epoch = check_int(epoch, "epoch", minimum=0)
        if self.mean_update_rate is not None:
            self.mean_update_rate = mean_classifier_momentum(epoch + 1)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return (
            f"num_classes={self.num_classes}, embed_dim={self.embed_dim}, num_parts={self.num_parts}, "
            f"modality_attention={self.modality_attention}, shared_stem={self.shared_stem}, "
            f"mean_update_rate={self.mean_update_rate}"
        )

    def forward(self, images: Tensor, modalities: Tensor | int | Modality) -> MPANetOutput:
        """Training forward: PAM features and maps, BN features, shared, own-modality and mean-classifier logits.

        In training mode the mean classifiers first take one EMA step (see the class notes). The same
        computation runs in eval mode (BatchNorms then use their running statistics); use :meth:`embed` for
        retrieval features.

        Args:
            images: :math:`(N, 3, H, W)` images.
            modalities: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
                :class:`~vireid_layers.Modality` for the whole batch.

        Returns:
            :class:`MPANetOutput` of :math:`N` rows in input order.
        """
        x = self._maps(images, modalities)
        n = x.shape[0]
        is_ir = self._infrared_rows(modalities, n, x.device)
        pam = self.pam(x)
        neck = self.neck(pam.features)
        heads = self.modality_classifiers
        if self.training and self.mean_update_rate is not None:
            heads.update_mean(self.mean_update_rate)  # official: before the mean predictions
        rows = is_ir.unsqueeze(1)
        own = torch.where(rows, heads.infrared(neck), heads.visible(neck))
        detached = neck.detach()
        mean = torch.where(
            rows, F.linear(detached, heads.visible_mean), F.linear(detached, heads.infrared_mean)
        ).detach()
        return MPANetOutput(pam.features, neck, self.classifier(neck), pam.masks, own, mean)

    def embed(
        self,
        images: Tensor,
        modalities: Tensor | int | Modality,
        *,
        normalize: bool = True,
        flip: bool = False,
    ) -> Tensor:
        r"""Retrieval embeddings: the official test feature, the :math:`(l + 1) C`-d BN-neck output.

        The official model returns the BN-neck feature unnormalised; its SYSU-MM01 evaluation L2-normalises it
        (``normalize=True``, the default), its RegDB evaluation does not (``normalize=False``). Both rank by
        squared Euclidean distance. ``flip=True`` adds the embedding of the horizontally flipped image, not
        re-normalised (the official evaluation does not flip).

        BatchNorm layers follow the module's mode: call ``model.eval()`` (and ``torch.inference_mode()``) for
        retrieval. No classifier runs and nothing is updated.

        Args:
            images: :math:`(N, 3, H, W)` images.
            modalities: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
                :class:`~vireid_layers.Modality` for the whole batch (a query or gallery set).
            normalize: L2-normalise the feature.
            flip: add the embedding of the horizontally flipped images.

        Returns:
            :math:`(N, (l + 1) C)` embeddings.
        """
        if not isinstance(normalize, bool):
            raise TypeError(f"`normalize` must be a bool, got {type(normalize).__name__} {normalize!r}")
        return embed_with_flip(lambda x, m: self._embed(x, m, normalize), images, modalities, flip)

    def _embed(self, images: Tensor, modalities: Tensor | int | Modality, normalize: bool) -> Tensor:
        x = self._maps(images, modalities)
        features = self.neck(self.pam(x).features)
        return F.normalize(features, dim=1) if normalize else features

    def _maps(self, images: Tensor, modalities: Tensor | int | Modality) -> Tensor:
        """The last map :math:`F`: stem, stages, a MAM after each of the last ``modality_attention`` stages."""
        backbone = self.backbone
        if not self.shared_stem:
            x = backbone.forward_stem(images, modalities)
        else:
            x = backbone.forward_stem(images, Modality.VISIBLE)  # checks the images
            _check_modality_argument(modalities, x.shape[0])  # checked although the shared stem does not read it
        for i in range(backbone.num_stages):
            x = backbone.forward_stage(i, x)
            if str(i + 1) in self.mam:
                x = self.mam[str(i + 1)](x)
        return x

    @staticmethod
    def _infrared_rows(modalities: Tensor | int | Modality, n: int, device: torch.device) -> Tensor:
        modalities = _check_modality_argument(modalities, n)
        if isinstance(modalities, Tensor):
            return modalities.to(device=device).bool()
        return torch.full((n,), modalities == Modality.INFRARED, device=device)

    def _convert_official_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str, *args: Any) -> None:
        """Rename the official ``Baseline`` keys (DoubtedSteam/MPANet) to this module's, in place."""
        sd: Any = state_dict
        for key in [k for k in sd if k.startswith(prefix)]:
            renamed = _official_key_names(key[len(prefix) :])
            if renamed != (key[len(prefix) :],):
                value = sd.pop(key)
                for new in renamed:
                    sd[prefix + new] = value


def _official_key_names(key: str) -> tuple[str, ...]:
    """The :class:`MPANet` key(s) of an official ``Baseline`` key; ``(key,)`` for any other key.

    The one place of the official MPANet renaming, used by the load pre-hook of :class:`MPANet` and by
    :func:`vireid_layers.compat.convert_official_mpanet_state_dict`. ``backbone.{conv1,bn1}.*`` (the one stem of
    the official one-stream network) gives two keys, one per stem; ``backbone.layer{i}.*`` becomes
    ``backbone.stages.{i-1}.*``, ``backbone.MAM{i}.*`` ``mam.{i}.*``, and the heads are renamed by prefix
    (``spatial_attention`` -> ``pam.spatial_attention``, the four modality classifiers ->
    ``modality_classifiers.*``, ``bn_neck`` -> ``neck``). The sub-keys of MAM, PAM and the modality classifiers
    keep their official names: those blocks' own load hooks rename them.
    """
    if match := _OFFICIAL_STEM.fullmatch(key):
        return tuple(f"backbone.{stem}.{match[1]}" for stem in ("visible_stem", "infrared_stem"))
    if match := _OFFICIAL_LAYER.fullmatch(key):
        return (f"backbone.stages.{int(match[1]) - 1}.{match[2]}",)
    if match := _OFFICIAL_MAM.fullmatch(key):
        return (f"mam.{match[1]}.{match[2]}",)
    for old, new in _OFFICIAL_HEADS.items():
        if key.startswith(old):
            return (new + key[len(old) :],)
    return (key,)
