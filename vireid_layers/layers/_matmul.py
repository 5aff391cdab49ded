"""The cheaper association of a chain of three batched matrix products (MFA's softmax-free attention)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["matmul_chain"]


def matmul_chain(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    r"""``a @ b @ c`` for batched :math:`(B, p, q)`, :math:`(B, q, r)`, :math:`(B, r, s)`, in the cheaper order.

    :math:`(ab)c` costs :math:`p r (q + s)` multiply-adds per batch element and holds a :math:`p \times r`
    intermediate; :math:`a(bc)` costs :math:`q s (p + r)` and holds a :math:`q \times s` one. The order with
    fewer multiplications is taken (ties: :math:`(ab)c`). The choice reads only shapes, so it is fixed under
    ``torch.compile``; both orders give the same value up to rounding.
    """
    p, q, r, s = a.shape[-2], a.shape[-1], b.shape[-1], c.shape[-1]
    if p * r * (q + s) <= q * s * (p + r):
        return torch.matmul(torch.matmul(a, b), c)
    return torch.matmul(a, torch.matmul(b, c))
