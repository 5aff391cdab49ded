"""DEE: the Diverse Embedding Expansion module of DEEN :cite:`zhang2023deen`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .._validation import check_map, check_probability

__all__ = ["DEE"]

_DILATIONS = (1, 2, 3)


class DEE(nn.Module):
    r"""Diverse Embedding Expansion: append :math:`K` generated copies of a feature map along the batch.

    Each branch :math:`i` generates an embedding from the feature map :math:`f` with three dilated
    :math:`3\times3` convolutions :math:`\varphi^{d}_i` (dilation :math:`d \in \{1, 2, 3\}`,
    :math:`C \to C/4`, no bias), averaged, a ReLU and a :math:`1\times1` convolution :math:`\theta_i`
    (:math:`C/4 \to C`, with bias):

    .. math::

        f_+^{i} = \theta_i\Big(\operatorname{ReLU}\big(\tfrac{1}{3}\textstyle\sum_{d=1}^{3}
        \varphi^{d}_i(f)\big)\Big), \qquad
        \operatorname{DEE}(f) = \operatorname{Dropout}_{p}\big([\,f;\ f_+^{1};\ \dots;\ f_+^{K}\,]\big)

    where :math:`[\cdot\,;\cdot]` concatenates along the batch. This is the official computation: the paper
    (Eq. 1) writes a sum where the code averages, counts the original embedding among its "three branches"
    (so the official :math:`K = 2`), and the dropout (:math:`p = 0.01`) covers the original rows too.

    The module evaluates all branches at once: one convolution per dilation produces the :math:`K \cdot C/4`
    reduced channels of every branch, and one grouped :math:`1\times1` convolution (``groups=K``) maps them
    back. This is exactly the per-branch computation (the weights are the per-branch weights stacked along
    the output channels), costs fewer kernel launches, and a state dict of the official ``DEE_module``
    (``FC11``…``FC13``, ``FC1``, ``FC21``…``FC23``, ``FC2``) loads into it with ``load_state_dict(strict=True)``.

    An empty batch gives an empty :math:`(0, C, H, W)` output; NaN in a sample propagates to its original and
    generated rows. Integer input raises :class:`TypeError`, a zero-sized map :class:`ValueError`.

    Args:
        channels: number of input channels :math:`C` (1024 after stage 3 of a ResNet-50, 512 for RegDB);
            must be divisible by 4.
        num_branches: number of generated embeddings :math:`K` (official: 2).
        dropout: dropout probability over the concatenated output (official: 0.01).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output: :math:`((1 + K) N, C, H, W)`; rows ``[0, N)`` are the (dropped-out) input and rows
          ``[i N, (i + 1) N)`` the embeddings of branch :math:`i`.

    Examples:
        >>> dee = DEE(64)
        >>> dee(torch.randn(2, 64, 6, 3)).shape
        torch.Size([6, 64, 6, 3])
        >>> generated = dee.generate(torch.randn(2, 64, 6, 3))
        >>> generated.shape
        torch.Size([2, 2, 64, 6, 3])
    """

    def __init__(
        self,
        channels: int,
        *,
        num_branches: int = 2,
        dropout: float = 0.01,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 4 or channels % 4:
            raise ValueError(f"`channels` must be a positive multiple of 4, got {channels!r}")
        if isinstance(num_branches, bool) or not isinstance(num_branches, int) or num_branches < 1:
            raise ValueError(f"`num_branches` must be a positive integer, got {num_branches!r}")
        self.channels = channels
        self.num_branches = num_branches
        self.dropout = check_probability(dropout, "dropout")
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        reduced = channels // 4
        self.dilated = nn.ModuleList(
            nn.Conv2d(channels, num_branches * reduced, 3, padding=d, dilation=d, bias=False, **dd) for d in _DILATIONS
        )
        self.project = nn.Conv2d(num_branches * reduced, num_branches * channels, 1, groups=num_branches, **dd)
        self._register_load_state_dict_pre_hook(self._convert_official_state_dict)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: Kaiming-normal (fan-in) weights, PyTorch's default uniform 1×1 bias."""
        for conv in self.dilated:
            # Per-branch fan-in equals the stacked conv's fan-in (C·3·3), so one call matches the official init.
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
        # The official 1x1 conv has fan-in C/4 per branch, which is also the grouped conv's fan-in.
        nn.init.kaiming_normal_(self.project.weight, a=0, mode="fan_in")
        bound = 1.0 / (self.channels // 4) ** 0.5
        nn.init.uniform_(self.project.bias, -bound, bound)

    def generate(self, x: Tensor) -> Tensor:
        r"""The generated embeddings :math:`f_+^1, \dots, f_+^K` without the original rows and dropout.

        Args:
            x: :math:`(N, C, H, W)` feature map.

        Returns:
            :math:`(K, N, C, H, W)` tensor.
        """
        check_map(x, "x", self.channels)
        reduced = sum(conv(x) for conv in self.dilated) / len(_DILATIONS)
        out = self.project(F.relu(reduced))  # (N, K*C, H, W), branch-major channels
        return rearrange(out, "n (k c) h w -> k n c h w", k=self.num_branches)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the input and its :math:`K` generated embeddings along the batch, then dropout."""
        generated = self.generate(x)
        out = torch.cat([x.unsqueeze(0), generated.to(x.dtype)], dim=0).flatten(0, 1)
        return F.dropout(out, self.dropout, self.training)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"{self.channels}, num_branches={self.num_branches}, dropout={self.dropout}"

    def _convert_official_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str, *args: Any) -> None:
        """Rewrite official per-branch keys (``FC{b}{d}``, ``FC{b}``) into the fused layout, in place."""
        official = [f"{prefix}FC{b}{d}.weight" for b in range(1, self.num_branches + 1) for d in (1, 2, 3)]
        if not all(key in state_dict for key in official):
            return
        assert isinstance(state_dict, dict)  # load_state_dict always passes a mutable copy
        for j in range(len(_DILATIONS)):
            keys = [f"{prefix}FC{b}{j + 1}.weight" for b in range(1, self.num_branches + 1)]
            state_dict[f"{prefix}dilated.{j}.weight"] = torch.cat([state_dict.pop(k) for k in keys], dim=0)
        weights = [state_dict.pop(f"{prefix}FC{b}.weight") for b in range(1, self.num_branches + 1)]
        biases = [state_dict.pop(f"{prefix}FC{b}.bias") for b in range(1, self.num_branches + 1)]
        state_dict[f"{prefix}project.weight"] = torch.cat(weights, dim=0)
        state_dict[f"{prefix}project.bias"] = torch.cat(biases, dim=0)
