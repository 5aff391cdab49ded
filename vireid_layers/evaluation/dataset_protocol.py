"""The standard evaluation protocol of a dataset named at the configuration boundary."""

from __future__ import annotations

from typing import Literal

from .._validation import check_choice, check_int
from .protocols import Direction, EvaluationProtocol, build_protocol

__all__ = ["DEFAULT_DIRECTIONS", "protocol_for_dataset"]

#: The direction every paper reports first, by dataset: infrared queries for SYSU-MM01 and LLCM, visible
#: queries for RegDB. The built-in synthetic dataset is written in SYSU-MM01's layout and evaluated like it.
DEFAULT_DIRECTIONS: dict[str, Direction] = {
    "llcm": Direction.INFRARED_TO_VISIBLE,
    "regdb": Direction.VISIBLE_TO_INFRARED,
    "synthetic": Direction.INFRARED_TO_VISIBLE,
    "sysu": Direction.INFRARED_TO_VISIBLE,
}


def protocol_for_dataset(
    dataset: str,
    *,
    direction: Direction | str | None = None,
    mode: Literal["all", "indoor"] = "all",
    num_trials: int = 10,
) -> EvaluationProtocol:
    """The usual evaluation protocol of a dataset, by the dataset's registry name (``--dataset``).

    It picks the direction and the arguments; the protocol itself comes from the protocol registry
    (:func:`~vireid_layers.evaluation.build_protocol` with the generic names ``"sysu"``, ``"regdb"``, ``"llcm"``).

    * ``"sysu"`` and ``"synthetic"``: :class:`~vireid_layers.evaluation.SYSUProtocol` (single-shot, seeded
      galleries) in ``mode`` over ``num_trials`` galleries;
    * ``"llcm"``: :class:`~vireid_layers.evaluation.LLCMProtocol` over ``num_trials`` galleries;
    * ``"regdb"``: :class:`~vireid_layers.evaluation.RegDBProtocol`. A RegDB split is one trial evaluated with
      its own model (read the split with ``build_dataset("regdb", root, trial=t)`` and pool the results with
      :meth:`~vireid_layers.evaluation.ProtocolResult.combine`), so ``num_trials`` does not apply.

    Args:
        dataset: ``"sysu"``, ``"regdb"``, ``"llcm"`` or ``"synthetic"``.
        direction: a :class:`~vireid_layers.evaluation.Direction` or its name (``"i2v"``, ``"v2i"``, ...);
            ``None`` or ``"auto"`` gives :data:`DEFAULT_DIRECTIONS` of the dataset.
        mode: SYSU-MM01's ``"all"`` or ``"indoor"`` search; other datasets have only ``"all"``.
        num_trials: galleries averaged (SYSU-MM01, LLCM, synthetic).

    Returns:
        The protocol.

    Raises:
        ValueError: unknown dataset, direction or mode, or ``mode="indoor"`` for a dataset without it.

    Examples:
        >>> protocol_for_dataset("sysu", mode="indoor").name
        'SYSU-MM01 indoor-search single-shot, seeded gallery, infrared→visible'
        >>> protocol_for_dataset("regdb").name, protocol_for_dataset("llcm", direction="v2i", num_trials=2).name
        ('RegDB visible→infrared', 'LLCM visible→infrared')
    """
    check_choice(dataset, "dataset", sorted(DEFAULT_DIRECTIONS))
    check_choice(mode, "mode", ("all", "indoor"))
    check_int(num_trials, "num_trials")
    resolved = DEFAULT_DIRECTIONS[dataset] if direction in (None, "auto") else Direction.parse(direction)  # type: ignore[arg-type]
    name = "sysu" if dataset == "synthetic" else dataset  # the synthetic dataset is in SYSU-MM01's layout
    if name == "sysu":
        return build_protocol(name, mode=mode, direction=resolved, num_trials=num_trials)
    if mode != "all":
        raise ValueError(
            f"`mode` {mode!r} exists only for SYSU-MM01 (and the synthetic dataset), got dataset {dataset!r}"
        )
    if name == "regdb":
        return build_protocol(name, direction=resolved)
    return build_protocol(name, direction=resolved, num_trials=num_trials)
