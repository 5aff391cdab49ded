"""DDAG's training objective :cite:`ye2020ddag`, with the dynamic dual aggregation weight kept in its state."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_int, check_labels, check_positive
from ..losses._reduction import Reduction, check_reduction
from ..losses.graph import GraphAttentionLoss, dynamic_aggregation_weight
from ..losses.triplet import HardTripletLoss
from .ddag import DDAGOutput

__all__ = ["DDAGCriterion"]

_TERMS = ("ce", "triplet", "part", "graph")


def _at_least_float32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


class DDAGCriterion(nn.Module):
    r"""DDAG's objective as named terms: identity, triplet, weighted-part and dynamically weighted graph losses.

    The official ``train_ddag.py`` of :cite:`ye2020ddag` minimises (Eq. 1, 10, 11)

    .. math::

        \mathcal L^t = \underbrace{\mathcal L_{id} + \lambda_{tri}\,\mathcal L_{tri}
            + \lambda_{wp}\,\mathcal L_{wp}}_{\mathcal L_P^t} + w^t\, \mathcal L_g, \qquad
        w^t = \begin{cases} 0 & t = 0, \\ \dfrac{1}{1 + \mathbb E\big[\mathcal L_P^{t-1}\big]} & t > 0, \end{cases}

    with :math:`\mathcal L_{id}` the cross-entropy of ``out.logits``, :math:`\mathcal L_{tri}` the batch-hard
    triplet loss (:class:`~vireid_layers.HardTripletLoss`, margin 0.3) on ``out.pooled`` (pre-BN, both
    modalities together), :math:`\mathcal L_{wp}` the cross-entropy of ``out.part_logits`` (IWPA's :math:`x^*`
    through the same classifier), :math:`\mathcal L_g` the NLL of ``out.graph``
    (:class:`~vireid_layers.GraphAttentionLoss`, mean over nodes) and :math:`\mathbb E[\mathcal L_P^{t-1}]` the
    plain mean of :math:`\mathcal L_P` over the batches of the previous epoch (the official ``AverageMeter``).
    :math:`\lambda_{tri} = \lambda_{wp} = 1` officially.

    :meth:`forward` returns the *unweighted* terms ``{"ce", "triplet", "part", "graph"}`` and :meth:`total` their
    weighted sum (the interface of :class:`~vireid_layers.engine.Trainer`). Every term is computed in at
    least float32, whatever the autocast dtype of the model.

    **The dynamic weight is state.** In training mode (``criterion.train()``, the default) every :meth:`forward`
    adds the batch's detached :math:`\mathcal L_P` to a running sum; :meth:`set_epoch` at the start of every
    epoch closes the previous epoch (its mean sets :math:`w`). The running sum, the count, the previous mean
    and the epoch are *buffers*, so ``criterion.state_dict()`` carries them and a resumed run continues with
    the weight (and, mid-epoch, the partial sums) it had: the uninterrupted and the resumed run train with
    the same :math:`w`. The official script restarts at :math:`w = 0` after a resume, a different objective
    for the resumed epochs; to reproduce it, do not restore the criterion's state. ``set_epoch`` is
    idempotent, so a trainer may call it at the start of every epoch, resumed or not. In eval mode nothing
    is accumulated. The accumulation stays on the device (no host synchronisation per step); ``set_epoch``
    reads the mean once per epoch and raises :class:`ValueError` if it is not finite (a diverged run).

    Args:
        lambda_triplet: weight :math:`\lambda_{tri}` of the triplet loss.
        lambda_part: weight :math:`\lambda_{wp}` of the weighted-part loss.
        margin: triplet margin (official 0.3).
        graph_weight: ``None`` (the dynamic weight :math:`w^t`, official) or a fixed weight of the graph loss.
        graph_reduction: ``"mean"`` over the nodes (official) or ``"sum"`` (the paper's Eq. 9).

    Shape:
        - ``out``: a :class:`~vireid_layers.models.DDAGOutput` of :math:`N` images, with ``graph`` (the model
          called with labels).
        - ``labels``: :math:`(N,)` in :math:`[0, K)`, passed as the ``identity`` field of ``batch`` (an
          :class:`~vireid_layers.data.ImageSample` or any object with that attribute).
        - Output: ``{"ce", "triplet", "part", "graph"}`` scalars.

    Examples:
        >>> import torch
        >>> from vireid_layers.data import ImageSample
        >>> from vireid_layers.models import DDAG, DDAGCriterion
        >>> model, criterion = DDAG(4, backbone="resnet18"), DDAGCriterion()
        >>> images = torch.randn(8, 3, 64, 32)
        >>> labels, modalities = torch.arange(4).repeat(2), torch.tensor([0] * 4 + [1] * 4)
        >>> out = model(images, modalities, labels=labels)
        >>> terms = criterion(out, ImageSample(images, labels, labels, modalities))
        >>> sorted(terms), criterion.graph_weight  # epoch 0: the graph loss is off
        (['ce', 'graph', 'part', 'triplet'], 0.0)
        >>> criterion.set_epoch(1)  # closes epoch 0: w = 1 / (1 + mean L_P)
        >>> expected = 1 / (1 + float((terms["ce"] + terms["triplet"] + terms["part"]).detach()))
        >>> abs(criterion.graph_weight - expected) < 1e-6
        True
    """

    running_sum: Tensor
    running_count: Tensor
    previous_epoch_mean: Tensor
    epoch: Tensor

    def __init__(
        self,
        *,
        lambda_triplet: float = 1.0,
        lambda_part: float = 1.0,
        margin: float = 0.3,
        graph_weight: float | None = None,
        graph_reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        for name, value in (("lambda_triplet", lambda_triplet), ("lambda_part", lambda_part)):
            check_positive(value, name, allow_zero=True)
            if not math.isfinite(value):
                raise ValueError(f"`{name}` must be finite, got {value}")
        if graph_weight is not None:
            check_positive(graph_weight, "graph_weight", allow_zero=True)
            if not math.isfinite(graph_weight):
                raise ValueError(f"`graph_weight` must be finite or None, got {graph_weight}")
        if check_reduction(graph_reduction) == "none":
            raise ValueError(f"`graph_reduction` must be 'mean' or 'sum', got {graph_reduction!r}")
        self.lambda_triplet, self.lambda_part = float(lambda_triplet), float(lambda_part)
        self.fixed_graph_weight = None if graph_weight is None else float(graph_weight)
        self.triplet = HardTripletLoss(margin=margin)
        self.graph = GraphAttentionLoss(reduction=graph_reduction)
        # The dynamic dual aggregation state (float64, as the official Python-float AverageMeter).
        dd = {"dtype": torch.float64}
        self.register_buffer("running_sum", torch.zeros((), **dd))
        self.register_buffer("running_count", torch.zeros((), **dd))
        self.register_buffer("previous_epoch_mean", torch.full((), float("nan"), **dd))  # NaN: no epoch closed yet
        self.register_buffer("epoch", torch.zeros((), dtype=torch.int64))

    @property
    def weights(self) -> dict[str, float]:
        """The weight of every term in :meth:`total`, the graph's the current :attr:`graph_weight`."""
        return {"ce": 1.0, "triplet": self.lambda_triplet, "part": self.lambda_part, "graph": self.graph_weight}

    @property
    def graph_weight(self) -> float:
        """The current weight :math:`w` of the graph loss (a Python float; reads the device once)."""
        return float(self._graph_weight())

    def _graph_weight(self) -> Tensor:
        if self.fixed_graph_weight is not None:
            return torch.tensor(self.fixed_graph_weight, dtype=torch.float64, device=self.running_sum.device)
        mean = self.previous_epoch_mean
        return torch.where(torch.isnan(mean), torch.zeros_like(mean), 1.0 / (1.0 + mean))

    def extra_repr(self) -> str:
        """The weights, and the epoch of the dynamic weight."""
        graph = "dynamic" if self.fixed_graph_weight is None else self.fixed_graph_weight
        return (
            f"lambda_triplet={self.lambda_triplet}, lambda_part={self.lambda_part}, graph_weight={graph}, "
            f"graph_reduction={self.graph.reduction!r}"
        )

    def forward(self, out: DDAGOutput, batch: Any) -> dict[str, Tensor]:
        r"""The unweighted loss terms of one (possibly gathered) batch; accumulates :math:`\mathcal L_P` in training."""
        if not isinstance(out, DDAGOutput):
            raise TypeError(f"`out` must be a DDAGOutput, got {type(out).__name__}")
        if out.graph is None:
            raise ValueError(
                "`out.graph` is None: the graph loss needs the graph branch, which runs only when the model is "
                "called with labels, model(images, modalities, labels=labels)"
            )
        labels = self._check_labels(batch.identity, out)
        terms = {
            "ce": F.cross_entropy(_at_least_float32(out.logits), labels),
            "triplet": self.triplet(_at_least_float32(out.pooled), labels),
            "part": F.cross_entropy(_at_least_float32(out.part_logits), labels),
            "graph": self.graph(_at_least_float32(out.graph), labels),
        }
        if self.training:
            with torch.no_grad():
                loss_p = terms["ce"] + self.lambda_triplet * terms["triplet"] + self.lambda_part * terms["part"]
                self.running_sum.add_(loss_p.to(self.running_sum.dtype))
                self.running_count.add_(1.0)
        return terms

    @staticmethod
    def _check_labels(labels: object, out: DDAGOutput) -> Tensor:
        n, num_classes = out.logits.shape
        labels = check_labels(labels, n, "batch.identity")
        if not torch.compiler.is_compiling() and labels.numel() > 0:
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"`batch.identity` must hold labels in [0, {num_classes}) (the classifier's outputs), "
                    f"got values in [{low}, {high}]"
                )
        return labels

    def total(self, terms: Mapping[str, Tensor]) -> Tensor:
        r"""The weighted sum the optimiser minimises: :math:`\mathcal L_P + w\, \mathcal L_g`."""
        missing = [k for k in _TERMS if k not in terms]
        if missing:
            raise ValueError(f"`terms` must hold {list(_TERMS)}, missing {missing}")
        graph = terms["graph"]
        weight = self._graph_weight().to(device=graph.device, dtype=graph.dtype)
        return terms["ce"] + self.lambda_triplet * terms["triplet"] + self.lambda_part * terms["part"] + weight * graph

    def set_epoch(self, epoch: int) -> None:
        r"""Start epoch ``epoch``: close the previous epoch, whose mean :math:`\mathcal L_P` gives :math:`w`.

        Idempotent: calling it again with the current epoch (e.g. after resuming mid-epoch) changes nothing.
        Moving to a later epoch closes the accumulated batches; without any (a fresh criterion, or an epoch
        without batches) the previous mean, and so :math:`w`, is kept (:math:`w = 0` if none).

        Args:
            epoch: the 0-based epoch about to start; not before the current one.

        Raises:
            ValueError: ``epoch`` is before the current epoch, or the closed epoch's mean is not finite.
        """
        epoch = check_int(epoch, "epoch", minimum=0)
        current = int(self.epoch)
        if epoch < current:
            raise ValueError(f"`epoch` must not go back: the criterion is at epoch {current}, got {epoch}")
        if epoch == current:
            return
        count = float(self.running_count)
        if count > 0:
            mean = float(self.running_sum) / count
            if not math.isfinite(mean):
                raise ValueError(
                    f"the mean L_P of epoch {current} is {mean}: the training diverged, the dynamic graph weight "
                    "1 / (1 + mean) is undefined"
                )
            dynamic_aggregation_weight(mean)  # validates (finite, non-negative)
            self.previous_epoch_mean.fill_(mean)
            self.running_sum.zero_()
            self.running_count.zero_()
        self.epoch.fill_(epoch)
