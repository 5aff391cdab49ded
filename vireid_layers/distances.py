r"""Pairwise distances and per-identity centres, in fp32 and without any loop over identities.

All metric losses of the library measure distances through this module so that they share one numerical
contract:

* distances are computed in float32 even under ``torch.autocast`` (a bf16 expansion
  :math:`\|a\|^2 + \|b\|^2 - 2a^\top b` cancels catastrophically);
* the square root is the official ``clamp(min=1e-12).sqrt()``, whose gradient is finite (zero) when two
  embeddings coincide;
* identities are grouped by the position of their first occurrence in the batch ("slots"), which gives
  static shapes, so every function here works under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._deprecation import keyword_only

__all__ = [
    "Centers",
    "class_centers",
    "class_modality_centers",
    "first_occurrence",
    "paired_euclidean",
    "pairwise_euclidean",
    "pairwise_squared_euclidean",
    "safe_sqrt",
]


SQUARED_DISTANCE_EPS = 1e-12
"""The official clamp of squared distances before the square root, ``clamp(min=1e-12).sqrt()``."""

MIN_DISTANCE = SQUARED_DISTANCE_EPS**0.5
r"""The smallest distance the library returns, :math:`\sqrt{10^{-12}} = 10^{-6}`: the clamp of the losses that
compute norms of differences themselves (:func:`paired_euclidean`, the hand-written backward passes of the
triplet and CPM losses) derives from :data:`SQUARED_DISTANCE_EPS`, so both spellings give the same values."""


def at_least_float32(x: Tensor) -> Tensor:
    """Half precision promoted to float32; float32 and float64 as they are (never cast down, unlike ``.float()``)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@keyword_only("eps")
def safe_sqrt(x: Tensor, *, eps: float = SQUARED_DISTANCE_EPS) -> Tensor:
    r"""Square root of ``x`` clamped below at ``eps``: finite value and finite gradient at zero.

    .. math:: \operatorname{safe\_sqrt}(x) = \sqrt{\max(x, \epsilon)}

    This is the ``clamp(min=1e-12).sqrt()`` of the official AGW/DDAG/DEEN losses. Below ``eps`` the gradient
    is exactly zero instead of :math:`1/(2\sqrt{x}) \to \infty`.

    Examples:
        >>> x = torch.zeros(2, requires_grad=True)
        >>> safe_sqrt(x).sum().backward()
        >>> x.grad
        tensor([0., 0.])
    """
    return x.clamp_min(eps).sqrt()


def pairwise_squared_euclidean(x: Tensor, y: Tensor | None = None) -> Tensor:
    r"""Squared Euclidean distances :math:`\|x_i\|^2 + \|y_j\|^2 - 2 x_i^\top y_j` in float32.

    Computed outside autocast with the same ``addmm`` expansion as the official losses. The result can be
    slightly negative for coinciding rows because of rounding; :func:`pairwise_euclidean` clamps it.

    Args:
        x: :math:`(*, N, D)` embeddings (an optional leading batch dimension is supported).
        y: :math:`(*, M, D)` embeddings; ``x`` when omitted.

    Returns:
        :math:`(*, N, M)` float32 tensor.

    Examples:
        >>> pairwise_squared_euclidean(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
        tensor([[ 0., 25.],
                [25.,  0.]])
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = at_least_float32(x)
        xx = x.pow(2).sum(dim=-1, keepdim=True)
        if y is None:
            y, yy = x, xx.transpose(-1, -2)
        else:
            y = at_least_float32(y)
            yy = y.pow(2).sum(dim=-1, keepdim=True).transpose(-1, -2)
        if x.ndim == 2:
            return torch.addmm(xx + yy, x, y.t(), beta=1.0, alpha=-2.0)
        return torch.baddbmm(xx + yy, x, y.transpose(-1, -2), beta=1.0, alpha=-2.0)


def pairwise_euclidean(x: Tensor, y: Tensor | None = None, *, eps: float = SQUARED_DISTANCE_EPS) -> Tensor:
    r"""Euclidean distance matrix in float32 with a safe square root.

    .. math:: D_{ij} = \sqrt{\max(\|x_i\|^2 + \|y_j\|^2 - 2 x_i^\top y_j,\ \epsilon)}

    Args:
        x: :math:`(*, N, D)` embeddings.
        y: :math:`(*, M, D)` embeddings; ``x`` when omitted.
        eps: clamp applied before the square root (the official ``1e-12``).

    Returns:
        :math:`(*, N, M)` float32 tensor; the diagonal of ``pairwise_euclidean(x)`` is about ``1e-6``, as in the
        official code.

    Examples:
        >>> pairwise_euclidean(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
        tensor([[1.0000e-06, 5.0000e+00],
                [5.0000e+00, 1.0000e-06]])
    """
    return safe_sqrt(pairwise_squared_euclidean(x, y), eps=eps)


def paired_euclidean(x: Tensor, y: Tensor, *, eps: float = SQUARED_DISTANCE_EPS) -> Tensor:
    r"""Euclidean distance between matching rows, :math:`\sqrt{\max(\|x_i - y_i\|^2, \epsilon)}`, in float32.

    Computed from the difference of the rows (one subtraction, one square, one sum: cheaper and more
    accurate than the expansion), so it equals the diagonal of ``pairwise_euclidean(x, y)`` up to rounding.

    Args:
        x: :math:`(*, N, D)` embeddings.
        y: :math:`(*, N, D)` embeddings (broadcastable to ``x``).
        eps: clamp applied before the square root.

    Returns:
        :math:`(*, N)` float32 tensor (float64 for float64 inputs).

    Examples:
        >>> paired_euclidean(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]))
        tensor([5.])
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        # ||x - y|| clamped at sqrt(eps): the value of sqrt(max(d^2, eps)), zero gradient below, fewer passes.
        return torch.linalg.vector_norm(at_least_float32(x) - at_least_float32(y), dim=-1).clamp_min(eps**0.5)


def first_occurrence(labels: Tensor) -> Tensor:
    """Index of the first row with the same label, for every row: the identity's "slot".

    Slots give every identity of a batch a fixed position in ``range(N)`` without ``torch.unique`` (whose
    output size depends on the data), so grouped reductions keep static shapes.

    Args:
        labels: :math:`(N,)` integer labels.

    Returns:
        :math:`(N,)` int64 tensor ``s`` with ``labels[s[i]] == labels[i]`` and ``s[i] <= i``.

    Examples:
        >>> first_occurrence(torch.tensor([7, 3, 7, 3, 5]))
        tensor([0, 1, 0, 1, 4])
    """
    if labels.shape[0] == 0:  # a static shape, not a data-dependent branch
        return torch.zeros(0, dtype=torch.long, device=labels.device)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    return same.to(torch.uint8).argmax(dim=1)


class Centers(NamedTuple):
    """Per-identity (and optionally per-modality) mean embeddings, indexed by identity slot.

    Attributes:
        centers: :math:`(*, M, N, D)` mean embedding of identity slot ``s`` in modality ``m`` at
            ``centers[..., m, s, :]`` (``M = 1`` without modalities); zero where the group is empty.
        counts: :math:`(M, N)` number of rows in each group.
        slot: :math:`(N,)` slot of every row (see :func:`first_occurrence`).
        is_slot: :math:`(N,)` ``True`` where a slot is used, i.e. for one row per identity.
    """

    centers: Tensor
    counts: Tensor
    slot: Tensor
    is_slot: Tensor


def class_modality_centers(x: Tensor, labels: Tensor, modalities: Tensor | None = None) -> Centers:
    r"""Mean embedding of every (modality, identity) group by ``index_add`` (no loop, no ordering assumption).

    .. math:: c^{m}_{y} = \frac{1}{|\{i : y_i = y, m_i = m\}|} \sum_{i : y_i = y,\ m_i = m} x_i

    Args:
        x: :math:`(*, N, D)` embeddings; leading dimensions (e.g. DEE branches) share the grouping.
        labels: :math:`(N,)` identity labels.
        modalities: :math:`(N,)` 0/1 modalities, or ``None`` to group by identity only (``M = 1``).

    Returns:
        :class:`Centers`; the sums are accumulated in float32 (float64 inputs stay float64).

    Examples:
        >>> x = torch.tensor([[0.0], [2.0], [10.0], [4.0]])
        >>> c = class_modality_centers(x, torch.tensor([1, 1, 2, 1]), torch.tensor([0, 0, 1, 1]))
        >>> c.centers[0, 0].item(), c.centers[1, 0].item(), c.centers[1, 2].item()
        (1.0, 4.0, 10.0)
    """
    n = labels.shape[0]
    slot = first_occurrence(labels)
    num_modalities = 1 if modalities is None else 2
    index = slot if modalities is None else modalities.long() * n + slot
    with torch.autocast(device_type=x.device.type, enabled=False):
        xf = at_least_float32(x)
        sums = xf.new_zeros((*x.shape[:-2], num_modalities * n, x.shape[-1]))
        sums = sums.index_add(-2, index, xf)
        counts = xf.new_zeros(num_modalities * n).index_add(0, index, xf.new_ones(n))
        centers = sums / counts.clamp_min(1.0).unsqueeze(-1)
    centers = centers.unflatten(-2, (num_modalities, n))
    counts = counts.view(num_modalities, n)
    is_slot = slot == torch.arange(n, device=labels.device)
    return Centers(centers, counts, slot, is_slot)


def class_centers(x: Tensor, labels: Tensor) -> Centers:
    """Mean embedding of every identity, regardless of modality (:func:`class_modality_centers` with ``M = 1``).

    Examples:
        >>> c = class_centers(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([4, 4, 9]))
        >>> c.centers[0, :, 0].tolist(), c.is_slot.tolist()
        ([2.0, 0.0, 5.0], [True, False, True])
    """
    return class_modality_centers(x, labels, None)
