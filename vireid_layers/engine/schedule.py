"""Generic per-epoch learning-rate schedules: a linear warm-up followed by step decays.

The trainer calls a schedule as ``factor = schedule(epoch)`` at the start of every epoch and sets each
parameter group's learning rate to ``group["base_lr"] * factor``. A schedule is a plain function of the epoch, so
it has no state of its own: resuming only needs the epoch number. The schedules of particular methods (their
milestones) live in their recipes (:mod:`vireid_layers.recipes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["WarmupStepSchedule", "warmup_step_factor"]


def warmup_step_factor(
    epoch: int,
    *,
    warmup_epochs: int = 10,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> float:
    r"""The factor of a linear warm-up followed by step decays.

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
