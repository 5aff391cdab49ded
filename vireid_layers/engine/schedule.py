"""Per-epoch learning-rate schedules and the DEEN parameter groups.

The trainer calls a schedule as ``factor = schedule(epoch)`` at the start of every epoch and sets each
parameter group's learning rate to ``group["base_lr"] * factor``. A schedule is a plain function of the epoch, so
it has no state of its own: resuming only needs the epoch number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["DEENSchedule", "deen_lr_factor", "deen_param_groups"]


def deen_lr_factor(
    epoch: int,
    *,
    warmup_epochs: int = 10,
    milestones: Sequence[int] = (20, 80),
    gamma: float = 0.1,
) -> float:
    r"""The factor of the official DEEN schedule :cite:`zhang2023deen` (``train.py::adjust_learning_rate``).

    .. math::

        f(e) = \begin{cases} (e + 1) / W & e < W \\ \gamma^{\#\{m \in \text{milestones} : e \ge m\}} & e \ge W
        \end{cases}

    With the defaults: a linear warm-up over epochs 0-9 (0.1 ... 1.0), 1 until epoch 19, 0.1 until 79, 0.01 after
    (the official branch for epoch 120 is unreachable and not reproduced).

    Args:
        epoch: 0-based epoch.
        warmup_epochs: :math:`W`; 0 disables the warm-up.
        milestones: epochs at which the factor is multiplied by ``gamma``.
        gamma: decay per milestone.

    Returns:
        The multiplier of every group's base learning rate.

    Examples:
        >>> [deen_lr_factor(e) for e in (0, 9, 10, 19, 20, 79, 80, 150)]
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


@dataclass(frozen=True)
class DEENSchedule:
    """:func:`deen_lr_factor` with its settings bound, as a picklable, printable callable ``epoch -> factor``.

    Examples:
        >>> DEENSchedule(warmup_epochs=2, milestones=(4,))(3)
        1.0
    """

    warmup_epochs: int = 10
    milestones: tuple[int, ...] = (20, 80)
    gamma: float = 0.1

    def __call__(self, epoch: int) -> float:
        """The factor of ``epoch``."""
        return deen_lr_factor(epoch, warmup_epochs=self.warmup_epochs, milestones=self.milestones, gamma=self.gamma)


def deen_param_groups(
    model: nn.Module,
    lr: float,
    *,
    weight_decay: float = 5e-4,
    backbone_scale: float = 0.1,
    head: Callable[[str], bool] | None = None,
) -> list[dict]:
    """The official DEEN parameter groups: the head (BN neck and classifier) at ``lr``, the rest at ``0.1 lr``.

    Parameters with ``requires_grad=False`` (the frozen BN-neck bias) are left out. Each group carries
    ``base_lr``, the rate the trainer's per-epoch schedule multiplies.

    Args:
        model: the network (a :class:`~vireid_layers.models.DEEN` by default: head = ``neck.*`` and
            ``classifier.*``).
        lr: base learning rate of the head (official 0.1).
        weight_decay: on every group (official 5e-4).
        backbone_scale: factor of the other parameters' rate (official 0.1).
        head: ``name -> bool`` telling which parameters belong to the head; default: names starting with
            ``neck.`` or ``classifier.``.

    Returns:
        Two groups for ``torch.optim.SGD``: ``[backbone, head]``.

    Examples:
        >>> net = nn.ModuleDict({"body": nn.Linear(2, 2), "classifier": nn.Linear(2, 3)})
        >>> [(len(g["params"]), g["lr"]) for g in deen_param_groups(net, 0.1)]
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
