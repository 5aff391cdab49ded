"""Per-epoch learning-rate schedules and the backbone/head parameter groups of the official recipes.

The trainer calls a schedule as ``factor = schedule(epoch)`` at the start of every epoch and sets each
parameter group's learning rate to ``group["base_lr"] * factor``. A schedule is a plain function of the epoch, so
it has no state of its own: resuming only needs the epoch number.

DEEN :cite:`zhang2023deen`, AGW :cite:`ye2021agw` and DDAG :cite:`ye2020ddag` share one schedule shape, a linear
warm-up followed by step decays (:class:`WarmupStepSchedule`); they differ in the milestones
(:class:`DEENSchedule`: 20 and 80; :class:`AGWSchedule`: 20 and 50). They also share the parameter groups
(:func:`head_param_groups`): the BN neck and the classifier at the full rate, everything else at a tenth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

__all__ = [
    "AGWSchedule",
    "DEENSchedule",
    "WarmupStepSchedule",
    "deen_lr_factor",
    "deen_param_groups",
    "head_param_groups",
    "warmup_step_factor",
]


def warmup_step_factor(
    epoch: int,
    *,
    warmup_epochs: int = 10,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> float:
    r"""The factor of a linear warm-up followed by step decays (``adjust_learning_rate`` of DEEN, AGW, DDAG).

    .. math::

        f(e) = \begin{cases} (e + 1) / W & e < W \\ \gamma^{\#\{m \in \text{milestones} : e \ge m\}} & e \ge W
        \end{cases}

    Args:
        epoch: 0-based epoch.
        warmup_epochs: :math:`W`; 0 disables the warm-up.
        milestones: epochs at which the factor is multiplied by ``gamma``.
        gamma: decay per milestone.

    Returns:
        The multiplier of every group's base learning rate.

    Examples:
        >>> [warmup_step_factor(e, milestones=(20, 50)) for e in (0, 9, 10, 19, 20, 49, 50, 80)]
        [0.1, 1.0, 1.0, 1.0, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002]
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"`epoch` must be a non-negative int, got {epoch!r}")
    if epoch < warmup_epochs:
        return (epoch + 1) / warmup_epochs
    factor = 1.0
    for milestone in milestones:
        if epoch >= milestone:
            factor *= gamma
    return factor


def deen_lr_factor(
    epoch: int,
    *,
    warmup_epochs: int = 10,
    milestones: Sequence[int] = (20, 80),
    gamma: float = 0.1,
) -> float:
    r"""The factor of the official DEEN schedule :cite:`zhang2023deen`: :func:`warmup_step_factor` at 20 and 80.

    With the defaults: a linear warm-up over epochs 0-9 (0.1 ... 1.0), 1 until epoch 19, 0.1 until 79, 0.01 after
    (the official branch for epoch 120 is unreachable and not reproduced).

    Examples:
        >>> [deen_lr_factor(e) for e in (0, 9, 10, 19, 20, 79, 80, 150)]
        [0.1, 1.0, 1.0, 1.0, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002]
    """
    return warmup_step_factor(epoch, warmup_epochs=warmup_epochs, milestones=milestones, gamma=gamma)


@dataclass(frozen=True)
class WarmupStepSchedule:
    """:func:`warmup_step_factor` with its settings bound, as a picklable, printable callable ``epoch -> factor``.

    Examples:
        >>> WarmupStepSchedule(warmup_epochs=2, milestones=(4,))(3)
        1.0
    """

    warmup_epochs: int = 10
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def __call__(self, epoch: int) -> float:
        """The factor of ``epoch``."""
        return warmup_step_factor(epoch, warmup_epochs=self.warmup_epochs, milestones=self.milestones, gamma=self.gamma)


@dataclass(frozen=True)
class DEENSchedule(WarmupStepSchedule):
    """The official DEEN schedule :cite:`zhang2023deen`: warm-up over 10 epochs, x0.1 at 20 and 80 (151 epochs).

    Examples:
        >>> DEENSchedule(warmup_epochs=2, milestones=(4,))(3)
        1.0
        >>> [DEENSchedule()(e) for e in (0, 20, 80)]
        [0.1, 0.1, 0.010000000000000002]
    """

    milestones: tuple[int, ...] = (20, 80)


@dataclass(frozen=True)
class AGWSchedule(WarmupStepSchedule):
    """The official AGW (and DDAG) schedule :cite:`ye2021agw`: warm-up over 10 epochs, x0.1 at 20 and 50 (81 epochs).

    Examples:
        >>> [AGWSchedule()(e) for e in (0, 9, 20, 49, 50, 80)]
        [0.1, 1.0, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002]
    """

    milestones: tuple[int, ...] = (20, 50)


def head_param_groups(
    model: nn.Module,
    lr: float,
    *,
    weight_decay: float = 5e-4,
    backbone_scale: float = 0.1,
    head: Callable[[str], bool] | None = None,
) -> list[dict]:
    """The official parameter groups of DEEN, AGW and DDAG: the head at ``lr``, the rest at ``backbone_scale * lr``.

    The head is the BN neck and the classifier (names starting with ``neck.`` or ``classifier.``, as in
    :class:`~vireid_layers.models.DEEN` and :class:`~vireid_layers.models.AGW`); everything else, AGW's
    non-local blocks and DEEN's MFA and DEE included, is in the backbone group, as in the official code.
    Parameters with ``requires_grad=False`` (the frozen BN-neck bias) are left out. Each group carries
    ``base_lr``, the rate the trainer's per-epoch schedule multiplies.

    Args:
        model: the network.
        lr: base learning rate of the head (official 0.1).
        weight_decay: on every group (official 5e-4).
        backbone_scale: factor of the other parameters' rate (official 0.1).
        head: ``name -> bool`` telling which parameters belong to the head; default: names starting with
            ``neck.`` or ``classifier.``.

    Returns:
        Two groups for ``torch.optim.SGD``: ``[backbone, head]``.

    Examples:
        >>> net = nn.ModuleDict({"body": nn.Linear(2, 2), "classifier": nn.Linear(2, 3)})
        >>> [(len(g["params"]), g["lr"]) for g in head_param_groups(net, 0.1)]
        [(2, 0.010000000000000002), (2, 0.1)]
    """
    if head is None:

        def head(name: str) -> bool:
            return name.startswith(("neck.", "classifier."))

    backbone, top = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (top if head(name) else backbone).append(param)
    if not top:
        raise ValueError("no head parameters found (expected names starting with 'neck.' or 'classifier.')")
    return [
        {"params": backbone, "lr": lr * backbone_scale, "base_lr": lr * backbone_scale, "weight_decay": weight_decay},
        {"params": top, "lr": lr, "base_lr": lr, "weight_decay": weight_decay},
    ]


#: The DEEN name of :func:`head_param_groups` (the same function).
deen_param_groups = head_param_groups
