"""Modality learning of MPANet :cite:`wu2021mpanet`: modality-specific and mean classifiers, mutual mean loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import (
    check_choice,
    check_embeddings,
    check_floating,
    check_labels,
    check_modalities,
    check_probability,
    check_shape,
)
from ._numerics import at_least_float32
from ._reduction import Reduction, check_reduction, reduce

__all__ = [
    "ModalityClassifiers",
    "ModalityLearningOutput",
    "MutualMeanDirection",
    "MutualMeanLoss",
    "mean_classifier_momentum",
    "mutual_mean_loss",
]

MutualMeanDirection = Literal["official", "paper"]
_DIRECTIONS = ("official", "paper")

# Official state-dict keys (the mean classifiers are frozen ``nn.Linear`` s whose names end in "_").
_OFFICIAL_KEYS = {
    "visible_classifier.weight": "visible.weight",
    "infrared_classifier.weight": "infrared.weight",
    "visible_classifier_.weight": "visible_mean",
    "infrared_classifier_.weight": "infrared_mean",
}


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``; a zero that stays connected to the graph when ``mask`` is empty."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp_min(1)


def _check_like(x: object, reference: Tensor, name: str) -> Tensor:
    """Check that ``x`` is a floating-point tensor of the same shape as ``reference``."""
    return check_floating(check_shape(x, name, str(tuple(reference.shape))), name)


class ModalityLearningOutput(NamedTuple):
    r"""Output of :class:`ModalityClassifiers`.

    Attributes:
        visible_loss: scalar :math:`\mathcal{L}_v`, the cross-entropy of :math:`C_v` over the visible rows
            (mean over those rows; 0 when there is none).
        infrared_loss: scalar :math:`\mathcal{L}_i`, the cross-entropy of :math:`C_r` over the infrared rows.
        logits: :math:`(N, K)` logits of the row's own modality-specific classifier (:math:`C_v` on visible
            rows, :math:`C_r` on infrared rows), connected to the graph.
        mean_logits: :math:`(N, K)` logits of the *other* modality's mean classifier (:math:`E[\theta_r]`
            on visible rows, :math:`E[\theta_v]` on infrared rows), detached from the graph.
    """

    visible_loss: Tensor
    infrared_loss: Tensor
    logits: Tensor
    mean_logits: Tensor


class ModalityClassifiers(nn.Module):
    r"""The modality-specific classifiers :math:`C_v, C_r` of MPANet and their mean classifiers.

    :math:`C_v` and :math:`C_r` are bias-free linear classifiers trained only on the visible and only on the
    infrared rows (Eq. 8 of :cite:`wu2021mpanet`):

    .. math::

        \mathcal{L}_v = -\frac{1}{n} \sum_{i:\, \text{visible}} \log \operatorname{softmax}(\theta_v f_i)_{y_i},
        \qquad
        \mathcal{L}_i = -\frac{1}{m} \sum_{j:\, \text{infrared}} \log \operatorname{softmax}(\theta_r f_j)_{y_j}

    (the paper's :math:`\mathcal{L}_{sid} = \mathcal{L}_v + \mathcal{L}_i`, weighted :math:`\lambda_2 = 0.5`;
    the official code adds both terms twice, an effective weight of 1.0). Their mean classifiers
    :math:`E[\theta_v], E[\theta_r]` are exponential moving averages of the weights (Eq. 11),

    .. math:: E[\theta] \leftarrow (1 - \alpha)\, E[\theta] + \alpha\, \theta,

    and predict each row with the *other* modality's mean classifier, for :func:`mutual_mean_loss`.

    The mean classifiers are buffers (in the ``state_dict``, not in :meth:`parameters`, so an optimiser never
    sees them; the official code keeps them as frozen parameters inside the optimiser). They start as copies
    of the live weights (:math:`E^{(0)}[\theta] = \theta`) and change only through :meth:`update_mean`, which
    the training loop calls; ``forward`` never updates them. The official code updates them inside its
    forward, every training iteration, *before* predicting: call ``update_mean(alpha)`` right before the
    forward of each iteration to reproduce it, with ``alpha`` from :func:`mean_classifier_momentum`.

    Rows are assigned to a modality by the explicit ``modalities`` tensor (the official code uses the SYSU
    infrared camera ids 3 and 6). Both classifiers are evaluated on all rows and the row's own one is
    selected with ``torch.where``, which keeps shapes static; the cross-entropies are computed in at least
    float32. The mean logits are computed from detached features (the official code computes them under
    ``no_grad``). The official state-dict keys ``visible_classifier.weight``, ``infrared_classifier.weight``,
    ``visible_classifier_.weight`` and ``infrared_classifier_.weight`` load into ``visible.weight``,
    ``infrared.weight``, ``visible_mean`` and ``infrared_mean`` with ``load_state_dict``.

    Args:
        in_features: dimension :math:`D` of the features (official: the 14,336-d BN-neck features).
        num_classes: number of training identities :math:`K`.
        device: device of the parameters and buffers.
        dtype: dtype of the parameters and buffers.

    Shape:
        - ``features``: :math:`(N, D)`.
        - ``labels``, ``modalities``: :math:`(N,)`.
        - Output: :class:`ModalityLearningOutput` (two scalars and two :math:`(N, K)` logits).

    Examples:
        >>> heads = ModalityClassifiers(32, 10)
        >>> labels, modalities = torch.tensor([1, 1, 4, 4]), torch.tensor([0, 1, 0, 1])
        >>> heads.update_mean(0.2)  # once per iteration, before the forward
        >>> out = heads(torch.randn(4, 32), labels, modalities)
        >>> out.logits.shape, out.mean_logits.requires_grad
        (torch.Size([4, 10]), False)
        >>> loss = out.visible_loss + out.infrared_loss + mutual_mean_loss(out.logits, out.mean_logits, modalities)
        >>> [name for name, _ in heads.named_parameters()], [name for name, _ in heads.named_buffers()]
        (['visible.weight', 'infrared.weight'], ['visible_mean', 'infrared_mean'])
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        self.in_features = in_features
        self.num_classes = num_classes
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        self.visible = nn.Linear(in_features, num_classes, bias=False, **dd)  # C_v
        self.infrared = nn.Linear(in_features, num_classes, bias=False, **dd)  # C_r
        self.register_buffer("visible_mean", torch.empty(num_classes, in_features, **dd))  # E[θ_v]
        self.register_buffer("infrared_mean", torch.empty(num_classes, in_features, **dd))  # E[θ_r]
        self.visible_mean: Tensor
        self.infrared_mean: Tensor
        self._register_load_state_dict_pre_hook(self._convert_official_state_dict)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default linear init for :math:`C_v, C_r`; the mean classifiers become copies of them."""
        self.visible.reset_parameters()
        self.infrared.reset_parameters()
        with torch.no_grad():
            self.visible_mean.copy_(self.visible.weight)
            self.infrared_mean.copy_(self.infrared.weight)

    @torch.no_grad()
    def update_mean(self, alpha: float) -> None:
        r"""One EMA step of both mean classifiers: :math:`E[\theta] \leftarrow (1 - \alpha) E[\theta] + \alpha\theta`.

        Args:
            alpha: update rate :math:`\alpha \in [0, 1]` (paper 0.2; see :func:`mean_classifier_momentum` for
                the official schedule). :math:`\alpha = 1` copies the live weights, :math:`\alpha = 0` is a no-op.
        """
        alpha = check_probability(alpha, "alpha")
        for mean, live in ((self.visible_mean, self.visible.weight), (self.infrared_mean, self.infrared.weight)):
            mean.mul_(1.0 - alpha).add_(live.to(mean.dtype), alpha=alpha)

    def forward(self, features: Tensor, labels: Tensor, modalities: Tensor) -> ModalityLearningOutput:
        """Specific-classifier cross-entropies, own logits and the other modality's (detached) mean logits."""
        features = check_shape(check_embeddings(features, "features"), "features", f"(N, {self.in_features})")
        n = features.shape[0]
        labels = check_labels(labels, n)
        modalities = check_modalities(modalities, n)
        if not torch.compiler.is_compiling() and labels.numel() > 0:
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= self.num_classes:
                raise ValueError(
                    f"`labels` must lie in [0, {self.num_classes - 1}] (num_classes={self.num_classes}), "
                    f"got values in [{low}, {high}]"
                )
        is_ir = modalities.bool()
        logits = torch.where(is_ir.unsqueeze(1), self.infrared(features), self.visible(features))
        detached = features.detach()
        mean_logits = torch.where(
            is_ir.unsqueeze(1), F.linear(detached, self.visible_mean), F.linear(detached, self.infrared_mean)
        )
        with torch.autocast(device_type=features.device.type, enabled=False):
            ce = F.cross_entropy(at_least_float32(logits), labels.long(), reduction="none")
            visible_loss = _masked_mean(ce, ~is_ir)
            infrared_loss = _masked_mean(ce, is_ir)
        return ModalityLearningOutput(visible_loss, infrared_loss, logits, mean_logits)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"{self.in_features}, {self.num_classes}"

    def _convert_official_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str, *args: Any) -> None:
        """Rename the official ``{visible,infrared}_classifier[_].weight`` keys, in place."""
        for old, new in _OFFICIAL_KEYS.items():
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)  # type: ignore[attr-defined]


def mutual_mean_loss(
    logits: Tensor,
    mean_logits: Tensor,
    modalities: Tensor,
    *,
    direction: MutualMeanDirection = "official",
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Mutual mean loss: KL divergence between the own specific classifier and the other mean classifier.

    Let :math:`p_i = \operatorname{softmax}(\text{logits}_i)` be the prediction of row :math:`i`'s own
    modality-specific classifier (:math:`C_v` for visible, :math:`C_r` for infrared rows) and
    :math:`q_i = \operatorname{softmax}(\text{mean\_logits}_i)` the prediction of the other modality's mean
    classifier (:math:`E[\theta_r]`, :math:`E[\theta_v]`), e.g. from :class:`ModalityClassifiers`. The
    **paper** (Eq. 10) averages :math:`\mathrm{KL}(q \,\|\, p)` separately over the :math:`n` visible and the
    :math:`m` infrared rows:

    .. math::

        \mathcal{L}_{MM}^{paper} = \frac{1}{n} \sum_{i:\,\text{visible}} \sum_c q_{ic} \log\frac{q_{ic}}{p_{ic}}
          + \frac{1}{m} \sum_{j:\,\text{infrared}} \sum_c q_{jc} \log\frac{q_{jc}}{p_{jc}} .

    The **official** code (the default) reverses the direction and takes one average over all :math:`n + m`
    rows (``KLDivLoss(reduction="batchmean")(log q, p)``):

    .. math:: \mathcal{L}_{MM}^{official} = \frac{1}{n + m} \sum_{i} \sum_c p_{ic} \log\frac{p_{ic}}{q_{ic}},

    with the gradient flowing through :math:`p` in both places (there :math:`p` is the KL's *target*
    argument). In both directions :math:`q` is a constant (``mean_logits`` is detached here). The softmaxes
    are computed in at least float32 (also under autocast). A modality without rows contributes a zero to the
    paper form; an empty batch gives a zero that stays connected to the graph.

    Args:
        logits: :math:`(N, K)` logits of each row's own modality-specific classifier.
        mean_logits: :math:`(N, K)` logits of the other modality's mean classifier.
        modalities: :math:`(N,)` modality of every row, 0 = visible, 1 = infrared (only the paper form uses it).
        direction: ``"official"`` (default: :math:`\mathrm{KL}(p \| q)`, one batch mean) or ``"paper"``
            (:math:`\mathrm{KL}(q \| p)`, one mean per modality).
        reduction: ``"mean"`` (default: the direction's own average above: one mean over the batch for
            ``"official"``, the sum of the two per-modality means for ``"paper"``), ``"sum"`` (the per-row
            divergences summed) or ``"none"`` (the :math:`N` per-row divergences).

    Returns:
        Scalar loss (official weight :math:`\lambda_3 = 2.5`), or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> modalities = torch.tensor([0, 1])
        >>> mutual_mean_loss(logits, logits, modalities)  # identical predictions
        tensor(0.)
        >>> mean_logits = torch.zeros(2, 2)
        >>> official = mutual_mean_loss(logits, mean_logits, modalities)
        >>> paper = mutual_mean_loss(logits, mean_logits, modalities, direction="paper")
        >>> round(official.item(), 4), round(paper.item(), 4)
        (0.3278, 0.8676)
    """
    logits = check_floating(check_shape(logits, "logits", "(N, K)"), "logits")
    mean_logits = _check_like(mean_logits, logits, "mean_logits")
    n = logits.shape[0]
    modalities = check_modalities(modalities, n)
    check_choice(direction, "direction", _DIRECTIONS)
    check_reduction(reduction)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_p = F.log_softmax(at_least_float32(logits), dim=1)
        log_q = F.log_softmax(at_least_float32(mean_logits.detach()), dim=1).to(log_p.dtype)
        if direction == "official":
            kl = (log_p.exp() * (log_p - log_q)).sum(1)
            return reduce(kl, reduction)
        kl = (log_q.exp() * (log_q - log_p)).sum(1)
        if reduction != "mean":
            return reduce(kl, reduction)
        is_ir = modalities.bool()
        return _masked_mean(kl, ~is_ir) + _masked_mean(kl, is_ir)


class MutualMeanLoss(nn.Module):
    r"""Mutual mean loss :cite:`wu2021mpanet`; see :func:`mutual_mean_loss`.

    Args:
        direction: ``"official"`` (default; :math:`\mathrm{KL}(p_{own} \| q_{mean})` averaged over all rows,
            as the released code) or ``"paper"`` (Eq. 10: :math:`\mathrm{KL}(q_{mean} \| p_{own})` averaged
            per modality).
        reduction: ``"mean"`` (the direction's own average, default), ``"sum"`` or ``"none"`` (per row).

    Shape:
        - ``logits``, ``mean_logits``: :math:`(N, K)`.
        - ``modalities``: :math:`(N,)`.
        - Output: scalar, or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> criterion = MutualMeanLoss(direction="paper")
        >>> criterion(torch.randn(4, 10), torch.randn(4, 10), torch.tensor([0, 0, 1, 1])).shape
        torch.Size([])
    """

    def __init__(self, *, direction: MutualMeanDirection = "official", reduction: Reduction = "mean") -> None:
        super().__init__()
        self.direction = check_choice(direction, "direction", _DIRECTIONS)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: Tensor, mean_logits: Tensor, modalities: Tensor) -> Tensor:
        """Compute the loss; see :func:`mutual_mean_loss`."""
        return mutual_mean_loss(
            logits,
            mean_logits,
            modalities,
            direction=self.direction,  # type: ignore[arg-type]
            reduction=self.reduction,  # type: ignore[arg-type]
        )

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"direction={self.direction!r}" + (f", reduction={self.reduction!r}" if self.reduction != "mean" else "")


def mean_classifier_momentum(epoch: int, *, base: float = 0.2, decay_after: int | None = 100) -> float:
    r"""Update rate :math:`\alpha` of the mean classifiers for a (1-based) epoch.

    The paper uses a constant :math:`\alpha = 0.2` (``decay_after=None``). The official training engine sets,
    at the start of every epoch,

    .. math:: \alpha = \text{base} \cdot \min\Big(\frac{\text{decay\_after}}{\text{epoch} + 1},\ 1\Big)

    with ignite's **1-based** epoch counter (the first epoch is 1): :math:`\alpha = 0.2` for epochs 1–99,
    then it decays (0.198 at epoch 100, 0.142 at epoch 140, the last one). A loop that counts epochs from 0
    must pass ``epoch + 1``.

    Args:
        epoch: current epoch, counted from 1.
        base: the undecayed rate (official and paper 0.2), in :math:`(0, 1]`.
        decay_after: the official constant 100 (decay from epoch ``decay_after`` on), or ``None`` for the
            paper's constant rate.

    Returns:
        :math:`\alpha`, to pass to :meth:`ModalityClassifiers.update_mean`.

    Examples:
        >>> mean_classifier_momentum(1), mean_classifier_momentum(99)
        (0.2, 0.2)
        >>> round(mean_classifier_momentum(100), 4), round(mean_classifier_momentum(140), 4)
        (0.198, 0.1418)
        >>> mean_classifier_momentum(140, decay_after=None)
        0.2
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"`epoch` must be a positive integer (epochs are counted from 1), got {epoch!r}")
    base = check_probability(base, "base")
    if base == 0.0:
        raise ValueError(f"`base` must be in (0, 1], got {base}")
    if decay_after is None:
        return base
    if isinstance(decay_after, bool) or not isinstance(decay_after, int) or decay_after < 1:
        raise ValueError(f"`decay_after` must be a positive integer or None, got {decay_after!r}")
    return base * min(decay_after / (epoch + 1), 1.0)
