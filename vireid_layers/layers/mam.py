"""MAM: the Modality Alleviation Module of MPANet :cite:`wu2021mpanet`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_map, check_positive

__all__ = ["MAM"]

# Official state-dict keys (``channel_attention`` is an ``nn.Sequential(conv, ReLU, conv, Sigmoid)``).
_OFFICIAL_KEYS = {"channel_attention.0.weight": "fc1.weight", "channel_attention.2.weight": "fc2.weight"}


def _instance_norm(x: Tensor, eps: float) -> Tensor:
    """Parameter-free instance normalisation over the spatial dims (the fused op), in (at least) float32."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return F.instance_norm(x.to(torch.promote_types(x.dtype, torch.float32)), eps=eps).to(x.dtype)


class MAM(nn.Module):
    r"""Modality Alleviation Module: channel-attention-guided instance normalisation.

    A squeeze-and-excitation mask :math:`m` decides, channel by channel, how much of the feature map
    :math:`Z` is kept as it is and how much is replaced by its instance-normalised version
    (Eq. 1–3 of :cite:`wu2021mpanet`):

    .. math::

        m = \sigma\big(W_2\,\delta(W_1\, g(Z))\big), \qquad
        F = m \odot Z + (1 - m) \odot \operatorname{IN}(Z), \qquad
        \operatorname{IN}(Z)_{nc} = \frac{Z_{nc} - \operatorname{E}[Z_{nc}]}{\sqrt{\operatorname{Var}[Z_{nc}]+\epsilon}}

    with :math:`g` the global average pooling, :math:`W_1 \in \mathbb{R}^{C/r \times C}` and
    :math:`W_2 \in \mathbb{R}^{C \times C/r}` bias-free :math:`1\times1` convolutions, :math:`\delta` the
    ReLU and :math:`\sigma` the sigmoid. The instance normalisation has no affine parameters and no running
    statistics, so the module computes the same function in training and evaluation mode (the official
    ``InstanceNorm2d(C, track_running_stats=False)``; the statistics are computed in float32, also under
    autocast). Paper and official code agree; MPANet puts one MAM after stage 3 (1024 channels) and one after
    stage 4 (2048 channels) of its ResNet-50. The normalisation is the fused
    :func:`torch.nn.functional.instance_norm` and the blend one ``torch.lerp``
    (:math:`\operatorname{IN}(Z) + m \odot (Z - \operatorname{IN}(Z))`, the same value as :math:`F` above up
    to rounding).

    An empty batch gives an empty output and NaN in a sample propagates to that sample's output. Integer input
    raises :class:`TypeError`; a map with fewer than 2 positions (:math:`HW < 2`, where the instance variance
    is undefined and the official ``InstanceNorm2d`` raises too) raises :class:`ValueError`.

    :math:`W_1, W_2` are initialised Kaiming-normal (``mode="fan_out"``, ReLU gain), as the official ResNet
    constructor's init loop initialises them. The official state-dict keys ``channel_attention.0.weight`` and
    ``channel_attention.2.weight`` load into ``fc1.weight`` and ``fc2.weight`` with
    ``load_state_dict(strict=True)`` (the module's own state dicts load too).

    Args:
        channels: number of channels :math:`C`.
        reduction: reduction ratio :math:`r` of the mask's hidden layer, which has
            :math:`\lfloor C / r \rfloor \ge 1` channels (official 16).
        eps: :math:`\epsilon` of the instance normalisation (official ``1e-5``).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output: :math:`(N, C, H, W)`.

    Examples:
        >>> mam = MAM(64)
        >>> mam(torch.randn(2, 64, 12, 4)).shape
        torch.Size([2, 64, 12, 4])
        >>> mam.channel_mask(torch.randn(2, 64, 12, 4)).shape
        torch.Size([2, 64, 1, 1])
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"`channels` must be a positive integer, got {channels!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, int) or not 1 <= reduction <= channels:
            raise ValueError(f"`reduction` must be an integer in [1, channels={channels}], got {reduction!r}")
        self.channels = channels
        self.reduction = reduction
        self.eps = check_positive(eps, "eps")
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        hidden = channels // reduction
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False, **dd)  # W_1
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False, **dd)  # W_2
        self._register_load_state_dict_pre_hook(self._convert_official_state_dict)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: Kaiming-normal weights, ``mode="fan_out"``, ReLU gain."""
        for conv in (self.fc1, self.fc2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def channel_mask(self, x: Tensor) -> Tensor:
        r"""The channel mask :math:`m = \sigma(W_2\,\delta(W_1\,g(Z)))`.

        Args:
            x: :math:`(N, C, H, W)` feature map :math:`Z`.

        Returns:
            :math:`(N, C, 1, 1)` mask in :math:`(0, 1)`.
        """
        self._check_input(x)
        pooled = x.mean(dim=(2, 3))  # g(Z)
        # The 1x1 convolutions of a 1x1 map are matrix products; keep the conv weights for the official keys.
        hidden = F.relu(F.linear(pooled, self.fc1.weight.flatten(1)))
        return torch.sigmoid(F.linear(hidden, self.fc2.weight.flatten(1)))[:, :, None, None]

    def forward(self, x: Tensor) -> Tensor:
        """Blend the feature map and its instance normalisation channel by channel."""
        mask = self.channel_mask(x)
        # x * m + IN(x) * (1 - m) as one fused lerp: IN(x) + m * (x - IN(x)).
        return torch.lerp(_instance_norm(x, self.eps), x, mask.to(x.dtype))

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"{self.channels}, reduction={self.reduction}, eps={self.eps}"

    def _check_input(self, x: Tensor) -> None:
        check_map(x, "x", self.channels, min_positions=2, why="the instance normalisation needs 2 positions")

    def _convert_official_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str, *args: Any) -> None:
        """Rename the official ``channel_attention.{0,2}.weight`` keys to ``fc1`` / ``fc2``, in place."""
        for old, new in _OFFICIAL_KEYS.items():
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)  # type: ignore[attr-defined]
