"""The graph attention loss of DDAG and its dynamic dual aggregation weight :cite:`ye2020ddag`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._deprecation import keyword_only
from .._validation import check_embeddings, check_labels, check_positive
from ._numerics import nonfinite_marker
from ._reduction import Reduction, check_reduction, reduce

__all__ = ["DynamicDualAggregation", "GraphAttentionLoss", "dynamic_aggregation_weight", "graph_attention_loss"]


def graph_attention_loss(log_probs: Tensor, labels: Tensor, *, reduction: Reduction = "mean") -> Tensor:
    r"""Negative log-likelihood of the identity labels under the graph attention output :math:`\mathcal{L}_g`.

    .. math::

        \mathcal{L}_g = -\frac{1}{Z} \sum_{i=1}^{N} \log p_i(y_i), \qquad
        Z = \begin{cases} N & \text{``mean'' (official)} \\ 1 & \text{``sum'' (paper, Eq. 9)} \end{cases}

    where :math:`\log p_i` is row :math:`i` of the log-softmax output of :class:`vireid_layers.layers.cgsa.CGSA`.
    The official training script uses ``F.nll_loss`` (the mean over the :math:`N` nodes); the paper's Eq. 9
    writes the sum. An empty batch gives a zero that stays connected to the graph. A NaN or :math:`+\infty`
    anywhere in a row of ``log_probs`` makes that row's loss NaN, also outside the target column, which
    ``F.nll_loss`` alone never reads; :math:`-\infty` is a valid log-probability (probability 0) and gives
    :math:`+\infty` only at the target (``docs/robustness_losses.rst``).

    Args:
        log_probs: :math:`(N, K)` log-probabilities over the :math:`K` identities.
        labels: :math:`(N,)` identity labels in :math:`[0, K)`.
        reduction: ``"mean"`` (official), ``"sum"`` (paper) or ``"none"`` (per-node losses).

    Returns:
        Scalar loss, or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> log_probs = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
        >>> graph_attention_loss(log_probs, torch.tensor([0, 1]), reduction="none")
        tensor([0.6931, 0.2877])
        >>> graph_attention_loss(log_probs, torch.tensor([0, 1]), reduction="sum")
        tensor(0.9808)
    """
    log_probs = check_embeddings(log_probs, "log_probs")
    labels = check_labels(labels, log_probs.shape[0])
    check_reduction(reduction)
    num_classes = log_probs.shape[1]
    if not torch.compiler.is_compiling() and labels.numel() > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"`labels` must lie in [0, {num_classes}) for `log_probs` of shape {tuple(log_probs.shape)}, "
                f"got values in [{low}, {high}]"
            )
    losses = F.nll_loss(log_probs, labels, reduction="none")
    # NaN / +inf outside the target column are not read by nll_loss; -inf is a valid log-probability.
    marker = nonfinite_marker(torch.where(log_probs == -float("inf"), 0.0, log_probs), 1)
    return reduce(losses + marker.to(losses.dtype), reduction)


class GraphAttentionLoss(nn.Module):
    r"""The NLL graph loss :math:`\mathcal{L}_g` of DDAG :cite:`ye2020ddag`; see :func:`graph_attention_loss`.

    Args:
        reduction: ``"mean"`` (official, default), ``"sum"`` (paper, Eq. 9) or ``"none"``.

    Shape:
        - ``log_probs``: :math:`(N, K)`, the output of :class:`vireid_layers.layers.cgsa.CGSA`.
        - ``labels``: :math:`(N,)`.
        - Output: scalar, or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> criterion = GraphAttentionLoss()
        >>> log_probs = torch.randn(6, 4).log_softmax(dim=1)
        >>> criterion(log_probs, torch.tensor([0, 0, 1, 1, 3, 3])).shape
        torch.Size([])
    """

    def __init__(self, *, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, log_probs: Tensor, labels: Tensor) -> Tensor:
        """Compute the loss; see :func:`graph_attention_loss`."""
        return graph_attention_loss(log_probs, labels, reduction=self.reduction)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"reduction={self.reduction!r}"


def dynamic_aggregation_weight(previous_epoch_mean: float | None) -> float:
    r"""The weight of the graph loss in DDAG's dynamic dual aggregation (equation 11).

    .. math::

        \mathcal{L}^t = \mathcal{L}_P^t + \lambda^t \mathcal{L}_g^t, \qquad
        \lambda^t = \begin{cases} 0 & t = 0 \\ \dfrac{1}{1 + \mathbb{E}[\mathcal{L}_P^{t-1}]} & t > 0 \end{cases}

    where :math:`\mathbb{E}[\mathcal{L}_P^{t-1}]` is the mean of :math:`\mathcal{L}_P = \mathcal{L}_{id} +
    \mathcal{L}_{tri} + \mathcal{L}_{wp}` (the graph loss excluded) over the batches of the previous epoch.
    The paper leaves :math:`t = 0` open; the official script uses 0 (``None`` here).

    Args:
        previous_epoch_mean: mean :math:`\mathcal{L}_P` of the previous epoch, or ``None`` during the first.

    Returns:
        The weight :math:`\lambda^t \in [0, 1]`, a Python float (no gradient flows through it).

    Examples:
        >>> dynamic_aggregation_weight(None)
        0.0
        >>> dynamic_aggregation_weight(3.0)
        0.25
    """
    if previous_epoch_mean is None:
        return 0.0
    if isinstance(previous_epoch_mean, bool) or not isinstance(previous_epoch_mean, (int, float)):
        raise TypeError(
            f"`previous_epoch_mean` must be a real number or None, got {type(previous_epoch_mean).__name__} "
            f"{previous_epoch_mean!r}"
        )
    if not math.isfinite(previous_epoch_mean) or previous_epoch_mean < 0:
        raise ValueError(
            "`previous_epoch_mean` must be a finite, non-negative mean loss (L_P is a sum of non-negative "
            f"losses), got {previous_epoch_mean}"
        )
    return 1.0 / (1.0 + float(previous_epoch_mean))


class DynamicDualAggregation:
    r"""Tracks :math:`\mathbb{E}[\mathcal{L}_P]` per epoch and gives the graph-loss weight of DDAG (equation 11).

    Call :meth:`update` with :math:`\mathcal{L}_P` (the identity, triplet and part losses, **without** the graph
    loss) after every batch, :meth:`step_epoch` at the end of every epoch, and weight the graph loss with
    :attr:`weight`: 0 during the first epoch, then :math:`1 / (1 + \text{mean } \mathcal{L}_P \text{ of the
    previous epoch})` (:func:`dynamic_aggregation_weight`). The mean is the plain mean over batches, as the
    official ``AverageMeter`` (whose per-batch count is a constant); ``update(..., weight=n)`` weights a batch.

    This is a plain Python object, not an ``nn.Module``, like the learning-rate schedulers of
    :mod:`torch.optim.lr_scheduler`: it has no parameters, is not part of the network (so it never enters a
    model's state dict, its ``.to()`` or an official-checkpoint conversion), and holds host-side floats. Save
    it next to the optimizer with :meth:`state_dict` and restore it with :meth:`load_state_dict`; the state
    includes the partial sums of the current epoch, so a mid-epoch checkpoint resumes exactly. Tensor losses
    are accumulated detached on their device, so :meth:`update` does not synchronise with the GPU; the one
    host transfer happens in :meth:`step_epoch` (or :meth:`state_dict`).

    **Resume.** After :meth:`load_state_dict` the weight continues from the checkpointed epoch. The official
    script instead restarts the weight at 0 on resume; to reproduce that, do not restore this object.

    Examples:
        >>> dda = DynamicDualAggregation()
        >>> dda.weight  # first epoch: the graph loss is off
        0.0
        >>> for loss_p in (2.0, 4.0):
        ...     dda.update(loss_p)
        >>> dda.step_epoch()
        >>> dda.weight  # 1 / (1 + 3)
        0.25
        >>> restored = DynamicDualAggregation()
        >>> restored.load_state_dict(dda.state_dict())
        >>> restored.weight, restored.epoch
        (0.25, 1)
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.previous_epoch_mean: float | None = None
        self._sum: float | Tensor = 0.0
        self._count = 0.0

    @property
    def weight(self) -> float:
        """The graph-loss weight for the current epoch (a Python float)."""
        return dynamic_aggregation_weight(self.previous_epoch_mean)

    @keyword_only("weight")
    def update(self, l_p: float | Tensor, *, weight: float = 1) -> None:
        r"""Accumulate one batch's :math:`\mathcal{L}_P` (graph loss excluded) with weight ``weight``.

        Args:
            l_p: the batch loss, a number or a one-element tensor (detached; no gradient is kept).
            weight: the batch's weight in the epoch mean (> 0; 1 gives the official plain mean).
        """
        check_positive(weight, "weight")
        if isinstance(l_p, Tensor):
            if l_p.numel() != 1:
                raise ValueError(f"`l_p` must be a scalar loss, got a tensor of shape {tuple(l_p.shape)}")
            value: float | Tensor = l_p.detach().reshape(()).to(torch.promote_types(l_p.dtype, torch.float32))
        elif isinstance(l_p, bool) or not isinstance(l_p, (int, float)):
            raise TypeError(f"`l_p` must be a real number or a scalar tensor, got {type(l_p).__name__} {l_p!r}")
        else:
            value = float(l_p)
        self._sum = self._sum + value * float(weight)
        self._count += float(weight)

    def step_epoch(self) -> None:
        r"""Close the epoch: its mean :math:`\mathcal{L}_P` sets the weight of the next epoch.

        Raises:
            RuntimeError: if no batch was accumulated since the last call.
            ValueError: if the epoch mean is not finite or negative (e.g. the training diverged).
        """
        if self._count == 0:
            raise RuntimeError(
                "DynamicDualAggregation.step_epoch() was called without any update() in the epoch; "
                "call update(loss_p) after every batch"
            )
        mean = float(self._sum) / self._count
        dynamic_aggregation_weight(mean)  # validates before any state changes
        self.previous_epoch_mean = mean
        self.epoch += 1
        self._sum, self._count = 0.0, 0.0

    def state_dict(self) -> dict[str, Any]:
        """The state as plain Python numbers (the partial sums of the current epoch included)."""
        return {
            "epoch": self.epoch,
            "previous_epoch_mean": self.previous_epoch_mean,
            "running_sum": float(self._sum),
            "running_count": self._count,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict`."""
        expected = {"epoch", "previous_epoch_mean", "running_sum", "running_count"}
        if set(state_dict) != expected:
            raise ValueError(f"`state_dict` must have the keys {sorted(expected)}, got {sorted(state_dict)}")
        mean = state_dict["previous_epoch_mean"]
        dynamic_aggregation_weight(None if mean is None else float(mean))  # validates the value
        self.epoch = int(state_dict["epoch"])
        self.previous_epoch_mean = None if mean is None else float(mean)
        self._sum = float(state_dict["running_sum"])
        self._count = float(state_dict["running_count"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(epoch={self.epoch}, weight={self.weight:.4g})"
