"""MSO's training objective :cite:`gao2021mso`: identity, WRT, PEF and CMCC losses as named terms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_labels, check_modalities, check_nonnegative
from ..distances import at_least_float32
from ..losses.cmcc import CMCCLoss
from ..losses.wrt import WRTForm, WRTLoss
from .mso import MSOOutput

__all__ = ["MSOCriterion"]

_TERMS = ("ce", "wrt", "pef", "cmcc")


class MSOCriterion(nn.Module):
    r"""MSO's objective as named terms: identity, weighted regularised triplet, PEF and CMCC losses.

    The paper :cite:`gao2021mso` minimises (Eq. 10, every weight 1)

    .. math::

        \mathcal L = \mathcal L_{id} + \lambda_{wrt}\,\mathcal L_{wrt} + \lambda_{pef}\,\mathcal L_{pef}
            + \lambda_{cmcc}\,\mathcal L_{cmcc},

    with :math:`\mathcal L_{id}` the cross-entropy of ``out.logits``, :math:`\mathcal L_{wrt}` AGW's weighted
    regularised triplet loss (:class:`~vireid_layers.WRTLoss`) on "the L2-norm results of the features before
    the BN layer", ``out.pooled`` L2-normalised (``normalize_wrt=True``), over the whole batch, both
    modalities together; :math:`\mathcal L_{pef}` the perceptual edge features loss that the model computed
    on its stems (``out.pef``, see :class:`~vireid_layers.models.MSO`); and :math:`\mathcal L_{cmcc}` the
    cross-modality contrastive-centre loss (:class:`~vireid_layers.CMCCLoss`) on the BN-neck features
    ``out.features``, L2-normalised (``normalize_cmcc=True``), grouped by the labels and modalities of the
    batch (no batch order is assumed).

    :meth:`forward` returns the *unweighted* terms ``{"ce", "wrt", "pef", "cmcc"}`` and :meth:`total` their
    weighted sum (the interface of :class:`~vireid_layers.engine.Trainer`). Every term is computed in at least
    float32 whatever the autocast dtype of the model: half-precision outputs are promoted to float32, float64
    outputs stay float64 (never cast down).

    Args:
        lambda_wrt: weight of :math:`\mathcal L_{wrt}` (paper 1).
        lambda_pef: weight of :math:`\mathcal L_{pef}` (paper 1).
        lambda_cmcc: weight of :math:`\mathcal L_{cmcc}` (paper 1).
        normalize_wrt: L2-normalise the pre-BN features inside WRT (paper ``True``; AGW's code ``False``).
        normalize_cmcc: L2-normalise the BN features inside CMCC (paper ``True``; the third-party code
            ``False``).
        wrt_form: ``"stable"`` (default) or ``"official"``: the ``form`` of :class:`~vireid_layers.WRTLoss`. On
            L2-normalised features every distance is at most 2, where both forms give the same value.

    Shape:
        - ``out``: an :class:`~vireid_layers.models.MSOOutput` of :math:`N` images.
        - ``batch``: an object with ``identity`` (:math:`(N,)` labels in :math:`[0, K)`) and ``modality``
          (:math:`(N,)` of 0 / 1) attributes, e.g. an :class:`~vireid_layers.data.ImageSample`.
        - Output: ``{"ce", "wrt", "pef", "cmcc"}`` scalars.

    Examples:
        >>> import torch
        >>> from vireid_layers.data import ImageSample
        >>> from vireid_layers.models import MSO, MSOCriterion
        >>> model, criterion = MSO(4, backbone="resnet18"), MSOCriterion()
        >>> images = torch.randn(8, 3, 64, 64)
        >>> labels, modalities = torch.arange(4).repeat(2), torch.tensor([0] * 4 + [1] * 4)
        >>> terms = criterion(model(images, modalities), ImageSample(images, labels, labels, modalities))
        >>> sorted(terms), criterion.total(terms).shape
        (['ce', 'cmcc', 'pef', 'wrt'], torch.Size([]))
    """

    def __init__(
        self,
        *,
        lambda_wrt: float = 1.0,
        lambda_pef: float = 1.0,
        lambda_cmcc: float = 1.0,
        normalize_wrt: bool = True,
        normalize_cmcc: bool = True,
        wrt_form: WRTForm = "stable",
    ) -> None:
        super().__init__()
        for name, value in (("normalize_wrt", normalize_wrt), ("normalize_cmcc", normalize_cmcc)):
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be a bool, got {type(value).__name__} {value!r}")
        self.weights: dict[str, float] = {
            "ce": 1.0,
            "wrt": check_nonnegative(lambda_wrt, "lambda_wrt"),
            "pef": check_nonnegative(lambda_pef, "lambda_pef"),
            "cmcc": check_nonnegative(lambda_cmcc, "lambda_cmcc"),
        }
        self.wrt = WRTLoss(normalize=normalize_wrt, form=wrt_form)
        self.cmcc = CMCCLoss(normalize=normalize_cmcc)

    def extra_repr(self) -> str:
        """The weights and the normalisations."""
        w = self.weights
        return (
            f"lambda_wrt={w['wrt']}, lambda_pef={w['pef']}, lambda_cmcc={w['cmcc']}, "
            f"normalize_wrt={self.wrt.normalize}, normalize_cmcc={self.cmcc.normalize}"
        )

    def forward(self, out: MSOOutput, batch: Any) -> dict[str, Tensor]:
        """The unweighted loss terms of one (possibly DDP-gathered) batch."""
        if not isinstance(out, MSOOutput):
            raise TypeError(f"`out` must be an MSOOutput, got {type(out).__name__}")
        if out.pef.dim() != 0:
            raise ValueError(f"`out.pef` must be a 0-dim tensor (the PEF loss), got shape {tuple(out.pef.shape)}")
        n, num_classes = out.logits.shape
        labels = check_labels(batch.identity, n, "batch.identity")
        modalities = check_modalities(batch.modality, n, "batch.modality")
        if not torch.compiler.is_compiling() and labels.numel() > 0:
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"`batch.identity` must hold labels in [0, {num_classes}) (the classifier's outputs), "
                    f"got values in [{low}, {high}]"
                )
        return {
            "ce": F.cross_entropy(at_least_float32(out.logits), labels),
            "wrt": self.wrt(at_least_float32(out.pooled), labels),
            "pef": at_least_float32(out.pef),
            "cmcc": self.cmcc(at_least_float32(out.features), labels, modalities),
        }

    def total(self, terms: Mapping[str, Tensor]) -> Tensor:
        """The weighted sum the optimiser minimises."""
        missing = [k for k in _TERMS if k not in terms]
        if missing:
            raise ValueError(f"`terms` must hold {list(_TERMS)}, missing {missing}")
        return sum(self.weights[k] * terms[k] for k in _TERMS)  # type: ignore[return-value]
