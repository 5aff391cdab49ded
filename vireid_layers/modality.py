"""The modality convention of the library and helpers to split and merge a batch by modality.

Every loss and model in vireid-layers receives the modality of each sample as an explicit ``(N,)`` tensor
holding :attr:`Modality.VISIBLE` (0) or :attr:`Modality.INFRARED` (1). Nothing infers the modality from the
position of a row in the batch.
"""

from __future__ import annotations

import enum
import operator

import torch
from torch import Tensor

from ._validation import check_modalities, check_tensor

__all__ = ["Modality", "merge_by_modality", "split_by_modality"]


class Modality(enum.IntEnum):
    """The two imaging modalities of visible-infrared re-identification.

    The integer values are the ones every ``modalities`` tensor of the library holds. The official code bases
    use ``modal=1`` for visible and ``modal=2`` for thermal in their forward passes; :meth:`from_official`
    converts that convention.

    Examples:
        >>> Modality.INFRARED
        <Modality.INFRARED: 1>
        >>> Modality.from_official(2)
        <Modality.INFRARED: 1>
        >>> Modality.parse("visible")
        <Modality.VISIBLE: 0>
    """

    VISIBLE = 0
    INFRARED = 1

    @classmethod
    def from_official(cls, modal: int) -> Modality:
        """Convert the AGW/DDAG/DEEN ``modal`` argument (1 = visible, 2 = thermal) to a :class:`Modality`."""
        if modal == 1:
            return cls.VISIBLE
        if modal == 2:
            return cls.INFRARED
        raise ValueError(f"`modal` must be 1 (visible) or 2 (thermal/infrared), got {modal!r}")

    @classmethod
    def parse(cls, value: str | int | Modality, *, name: str = "modality") -> Modality:
        """Accept a :class:`Modality`, 0/1, or a name (``"visible"``, ``"rgb"``, ``"infrared"``, ``"ir"``, ...).

        ``name`` is the argument named in the :class:`ValueError` (e.g. ``"modalities"`` for a backbone).
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().lower()
            if key in {"visible", "vis", "rgb", "v"}:
                return cls.VISIBLE
            if key in {"infrared", "ir", "thermal", "nir", "t", "i"}:
                return cls.INFRARED
            raise ValueError(
                f"`{name}` must be 'visible' (or 'rgb', 'vis') or 'infrared' (or 'ir', 'thermal', 'nir'), got {value!r}"
            )
        if not isinstance(value, bool):
            try:
                index = operator.index(value)  # int, numpy integers, 0-d integer tensors
            except TypeError:
                index = None
            if index in (0, 1):
                return cls(index)
        raise ValueError(f"`{name}` must be 0 (visible), 1 (infrared) or a modality name, got {value!r}")


def split_by_modality(x: Tensor, modalities: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Split a batch into its visible and infrared rows, remembering where each row came from.

    Args:
        x: any tensor whose first dimension is the batch, :math:`(N, *)`.
        modalities: :math:`(N,)` integer tensor of 0 (visible) / 1 (infrared).

    Returns:
        ``(visible, infrared, visible_index, infrared_index)``: the rows of each modality in batch order and
        their positions in ``x``, so that :func:`merge_by_modality` restores the batch.

    Examples:
        >>> x = torch.arange(4.0).unsqueeze(1)
        >>> vis, ir, vi, ii = split_by_modality(x, torch.tensor([1, 0, 0, 1]))
        >>> vis.flatten().tolist(), ir.flatten().tolist()
        ([1.0, 2.0], [0.0, 3.0])
    """
    check_tensor(x, "x")
    modalities = check_modalities(modalities, x.shape[0])
    is_ir = modalities.bool()
    visible_index = torch.nonzero(~is_ir).flatten()
    infrared_index = torch.nonzero(is_ir).flatten()
    return x[visible_index], x[infrared_index], visible_index, infrared_index


def merge_by_modality(visible: Tensor, infrared: Tensor, visible_index: Tensor, infrared_index: Tensor) -> Tensor:
    """Inverse of :func:`split_by_modality`: scatter the two parts back to their batch positions.

    Examples:
        >>> x = torch.randn(5, 3)
        >>> parts = split_by_modality(x, torch.tensor([0, 1, 1, 0, 1]))
        >>> torch.equal(merge_by_modality(*parts), x)
        True
    """
    n = visible.shape[0] + infrared.shape[0]
    out = visible.new_empty((n, *visible.shape[1:]))
    out[visible_index] = visible
    out[infrared_index] = infrared.to(visible.dtype)
    return out
