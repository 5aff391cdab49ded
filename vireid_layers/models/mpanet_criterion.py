"""MPANet's training objective :cite:`wu2021mpanet` as named terms."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_labels, check_modalities, check_positive
from ..losses.center_cluster import CenterClusterAnchors, CenterClusterLoss
from ..losses.modality_learning import MutualMeanDirection, MutualMeanLoss
from ..losses.separation import SeparationLoss
from .mpanet import MPANetOutput

__all__ = ["MPANetCriterion"]

_TERMS = ("ce", "center_cluster", "separation", "visible", "infrared", "mutual_mean")


def _at_least_float32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask`` (0 when the mask is empty), without a data-dependent shape."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


class MPANetCriterion(nn.Module):
    r"""MPANet's objective as named terms: identity, center cluster, separation, specific-identity and mutual mean.

    The official ``Baseline`` of :cite:`wu2021mpanet` minimises

    .. math::

        \mathcal L = \mathcal L_{id} + \lambda_{cc}\,\mathcal L_{cc} + \lambda_{sep}\,\mathcal L_{sep}
            + \lambda_{sid}\,(\mathcal L_v + \mathcal L_i) + \lambda_{MM}\,\mathcal L_{MM}

    with :math:`\mathcal L_{id}` the cross-entropy of ``out.logits`` (shared classifier on the BN-neck feature),
    :math:`\mathcal L_{cc}` the center cluster loss (:class:`~vireid_layers.CenterClusterLoss`, margin
    :math:`\rho = 0.7`) on the pre-BN PAM feature ``out.features``, :math:`\mathcal L_{sep}` the separation loss
    (:class:`~vireid_layers.SeparationLoss`, batch mean) of the pattern maps ``out.masks``,
    :math:`\mathcal L_v, \mathcal L_i` the cross-entropies of the own-modality classifiers ``out.modality_logits``
    averaged over the visible and over the infrared rows (0 for a modality without rows), and
    :math:`\mathcal L_{MM}` the mutual mean loss (:class:`~vireid_layers.MutualMeanLoss`) between
    ``out.modality_logits`` and the other modality's mean classifier ``out.mean_logits``.

    Official weights (``configs/SYSU.yml`` and ``RegDB.yml``): :math:`\lambda_{cc} = 1`, :math:`\lambda_{sep} =
    0.5`, :math:`\lambda_{MM} = 2.5` and :math:`\lambda_{sid} = 1.0`: the code adds :math:`\mathcal L_v +
    \mathcal L_i` twice with weight 0.5, where the paper (Eq. 14) states :math:`\lambda_{sid} = 0.5`. The KL of
    :math:`\mathcal L_{MM}` follows the code (``mutual_mean="official"``: :math:`\mathrm{KL}(p_{own}\,\|\,q_{mean})`,
    one average over all rows) or the paper (``"paper"``, Eq. 10: :math:`\mathrm{KL}(q_{mean}\,\|\,p_{own})`,
    averaged per modality). ``anchors`` selects the center cluster loss's inter-centre average (``"official"``:
    the code's anchors, as a function of the labels; ``"paper"``: the mean over identity pairs).

    :meth:`forward` returns the *unweighted* terms ``{"ce", "center_cluster", "separation", "visible",
    "infrared", "mutual_mean"}`` and :meth:`total` their weighted sum (the interface of
    :class:`~vireid_layers.engine.Trainer`). Every term is computed in at least float32 (float64 outputs stay
    float64), whatever the autocast dtype of the model. No batch order is assumed: labels and modalities come
    from ``batch.identity`` and ``batch.modality``.

    Args:
        lambda_center_cluster: weight :math:`\lambda_{cc}` (official 1).
        lambda_separation: weight :math:`\lambda_{sep}` (official 0.5).
        lambda_specific: weight :math:`\lambda_{sid}` of :math:`\mathcal L_v + \mathcal L_i` (official
            effective 1.0; paper 0.5).
        lambda_mutual_mean: weight :math:`\lambda_{MM}` (official 2.5).
        margin: center cluster margin :math:`\rho` (official 0.7).
        anchors: ``"official"`` or ``"paper"``, see :class:`~vireid_layers.CenterClusterLoss`.
        mutual_mean: KL direction, ``"official"`` or ``"paper"``, see :class:`~vireid_layers.MutualMeanLoss`.

    Shape:
        - ``out``: a :class:`~vireid_layers.models.MPANetOutput` of :math:`N` rows.
        - ``batch.identity``: :math:`(N,)` in :math:`[0, K)`; ``batch.modality``: :math:`(N,)` of 0 / 1.
        - Output: the six scalars.

    Examples:
        >>> import torch
        >>> from vireid_layers.data import ImageSample
        >>> from vireid_layers.models import MPANet, MPANetCriterion
        >>> model, criterion = MPANet(4, backbone="resnet18"), MPANetCriterion()
        >>> images = torch.randn(8, 3, 64, 32)
        >>> labels, modalities = torch.arange(4).repeat_interleave(2), torch.tensor([1, 0] * 4)
        >>> terms = criterion(model(images, modalities), ImageSample(images, labels, labels, modalities))
        >>> sorted(terms)
        ['ce', 'center_cluster', 'infrared', 'mutual_mean', 'separation', 'visible']
        >>> criterion.total(terms).backward()
    """

    def __init__(
        self,
        *,
        lambda_center_cluster: float = 1.0,
        lambda_separation: float = 0.5,
        lambda_specific: float = 1.0,
        lambda_mutual_mean: float = 2.5,
        margin: float = 0.7,
        anchors: CenterClusterAnchors = "official",
        mutual_mean: MutualMeanDirection = "official",
    ) -> None:
        super().__init__()
        weights = {
            "lambda_center_cluster": lambda_center_cluster,
            "lambda_separation": lambda_separation,
            "lambda_specific": lambda_specific,
            "lambda_mutual_mean": lambda_mutual_mean,
        }
        for name, value in weights.items():
            check_positive(value, name, allow_zero=True)
            if not math.isfinite(value):
                raise ValueError(f"`{name}` must be finite, got {value}")
        self.lambda_center_cluster = float(lambda_center_cluster)
        self.lambda_separation = float(lambda_separation)
        self.lambda_specific = float(lambda_specific)
        self.lambda_mutual_mean = float(lambda_mutual_mean)
        self.center_cluster = CenterClusterLoss(margin=margin, anchors=anchors)
        self.separation = SeparationLoss()
        self.mutual_mean = MutualMeanLoss(direction=mutual_mean)

    @property
    def weights(self) -> dict[str, float]:
        """The weight of every term in :meth:`total`."""
        return {
            "ce": 1.0,
            "center_cluster": self.lambda_center_cluster,
            "separation": self.lambda_separation,
            "visible": self.lambda_specific,
            "infrared": self.lambda_specific,
            "mutual_mean": self.lambda_mutual_mean,
        }

    def extra_repr(self) -> str:
        """The weights and the variants."""
        return (
            f"lambda_center_cluster={self.lambda_center_cluster}, lambda_separation={self.lambda_separation}, "
            f"lambda_specific={self.lambda_specific}, lambda_mutual_mean={self.lambda_mutual_mean}, "
            f"margin={self.center_cluster.margin}, anchors={self.center_cluster.anchors!r}, "
            f"mutual_mean={self.mutual_mean.direction!r}"
        )

    def forward(self, out: MPANetOutput, batch: Any) -> dict[str, Tensor]:
        """The unweighted loss terms of one (possibly gathered) batch."""
        if not isinstance(out, MPANetOutput):
            raise TypeError(f"`out` must be an MPANetOutput, got {type(out).__name__}")
        n, num_classes = out.logits.shape
        labels = self._check_labels(batch.identity, n, num_classes)
        modalities = check_modalities(batch.modality, n, "batch.modality")
        is_ir = modalities.to(out.logits.device).bool()
        with torch.autocast(device_type=out.logits.device.type, enabled=False):
            specific = F.cross_entropy(_at_least_float32(out.modality_logits), labels, reduction="none")
            terms = {
                "ce": F.cross_entropy(_at_least_float32(out.logits), labels),
                "center_cluster": self.center_cluster(_at_least_float32(out.features), labels),
                "separation": self.separation(_at_least_float32(out.masks)),
                "visible": _masked_mean(specific, ~is_ir),
                "infrared": _masked_mean(specific, is_ir),
                "mutual_mean": self.mutual_mean(
                    _at_least_float32(out.modality_logits), _at_least_float32(out.mean_logits), modalities
                ),
            }
        return terms

    @staticmethod
    def _check_labels(labels: object, n: int, num_classes: int) -> Tensor:
        labels = check_labels(labels, n, "batch.identity")
        if not torch.compiler.is_compiling() and labels.numel() > 0:
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"`batch.identity` must hold labels in [0, {num_classes}) (the classifier's outputs), "
                    f"got values in [{low}, {high}]"
                )
        return labels.long()

    def total(self, terms: Mapping[str, Tensor]) -> Tensor:
        r"""The weighted sum the optimiser minimises (see the class equation)."""
        missing = [k for k in _TERMS if k not in terms]
        if missing:
            raise ValueError(f"`terms` must hold {list(_TERMS)}, missing {missing}")
        weights = self.weights
        total = terms["ce"]
        for name in _TERMS[1:]:
            total = total + weights[name] * terms[name]
        return total
