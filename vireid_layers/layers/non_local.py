"""NonLocal: the non-local attention block of AGW :cite:`ye2021agw`."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._validation import check_batch_statistics, check_choice, check_map

__all__ = ["NonLocal", "NonLocalForm"]

NonLocalForm = Literal["official", "corrected"]
_FORMS = ("official", "corrected")


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return value


def _dot_product_aggregate(theta: Tensor, phi: Tensor, g: Tensor) -> Tensor:
    r"""``y[:, :, i] = sum_j (theta_i . phi_j) g_j / N`` for ``(B, C', N)`` inputs, in the cheaper order.

    Without a softmax the product is associative: :math:`(\theta^\top\phi)\,g^\top = \theta^\top(\phi g^\top)`.
    The first order builds a :math:`B \times N \times N` matrix, the second a :math:`B \times C' \times C'`
    one; the smaller is used (shapes are static, so the choice is fixed under ``torch.compile``).
    """
    n = theta.shape[-1]
    if theta.shape[1] < n:
        context = torch.matmul(g, phi.transpose(1, 2)) / n  # (B, C'_g, C'_phi): never the N x N matrix
        return torch.matmul(context, theta)  # (B, C', N)
    affinity = torch.matmul(theta.transpose(1, 2), phi) / n  # (B, N, N), smaller than C' x C' here
    return torch.matmul(g, affinity.transpose(1, 2))


class NonLocal(nn.Module):
    r"""Non-local block with a dot-product affinity normalised by the number of positions (AGW).

    With :math:`1\times1` convolutions :math:`\theta, \phi, g` (:math:`C \to C'`, with bias), a
    :math:`1\times1` convolution :math:`W` (:math:`C' \to C`, with bias) followed by a BatchNorm, and
    :math:`N = HW` positions:

    .. math::

        y_i = \frac{1}{N} \sum_{j=1}^{N} \big(\theta(x)_i^\top \phi(x)_j\big)\, g(x)_j, \qquad
        z = \operatorname{BN}\big(W(y)\big) + x

    There is no softmax, so the block evaluates :math:`y = \theta^\top(\phi g^\top)/N`: a
    :math:`C' \times C'` context instead of the :math:`N \times N` affinity the official code materialises
    (:math:`64 \times 648 \times 648` floats, about 107 MB, per layer-2 block at batch 64). Should
    :math:`C' \ge N` (the corrected form on a small map), the :math:`N \times N` order is the smaller one and
    is used instead. The BatchNorm's weight and bias start at zero, so a new block is the identity.

    ``form="official"`` (default) reproduces the released AGW code, whose bottleneck is
    ``reduc_ratio // reduc_ratio`` :math:`= 1` channel whatever ``reduction`` is (an acknowledged bug;
    reproducing published AGW/MSO numbers and loading their checkpoints needs it). With :math:`C' = 1` the
    affinity is rank one and :math:`y_i = \theta_i \cdot \operatorname{mean}_j(\phi_j g_j)`: every position
    receives a position-scaled global scalar. ``form="corrected"`` uses the intended
    :math:`C' = C / \text{reduction}`. An explicit ``inter_channels`` overrides both.

    Parameter names match the official ``Non_local`` module (``g.0``, ``theta``, ``phi``, ``W.0``, ``W.1``;
    ``g`` is a one-layer ``nn.Sequential`` there too), so its state dicts load with
    ``load_state_dict(strict=True)``.

    An empty batch gives an empty output; NaN propagates (to every sample in training mode, through the
    BatchNorm's batch statistics). Integer input raises :class:`TypeError`; a zero-sized map, or in training
    mode a single sample of a single position (one value per BatchNorm channel), raises :class:`ValueError`.

    Args:
        channels: input and output channels :math:`C` (AGW: 512 in layer 2, 1024 in layer 3).
        reduction: the ratio :math:`C / C'` of the corrected form (official argument ``reduc_ratio``, 2).
        inter_channels: :math:`C'`, overriding ``form`` and ``reduction`` when given.
        form: ``"official"`` (:math:`C' = 1`) or ``"corrected"`` (:math:`C' = C / \text{reduction}`).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output: :math:`(N, C, H, W)`.

    Examples:
        >>> block = NonLocal(512)
        >>> x = torch.randn(2, 512, 36, 18)
        >>> out = block(x)
        >>> out.shape, torch.equal(out, x)  # the identity at initialisation
        (torch.Size([2, 512, 36, 18]), True)
        >>> block.extra_repr()
        "512, inter_channels=1, form='official', reduction=2"
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 2,
        inter_channels: int | None = None,
        form: NonLocalForm = "official",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.channels = _positive_int(channels, "channels")
        self.reduction = _positive_int(reduction, "reduction")
        self.form: str = check_choice(form, "form", _FORMS)
        if inter_channels is not None:
            inter = _positive_int(inter_channels, "inter_channels")
        elif self.form == "official":
            inter = reduction // reduction  # the official bottleneck: always 1
        else:
            if channels < reduction:
                raise ValueError(f"`channels` ({channels}) must be >= `reduction` ({reduction}) for form='corrected'")
            inter = channels // reduction
        self.inter_channels = inter
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        self.g = nn.Sequential(nn.Conv2d(channels, inter, 1, **dd))
        self.theta = nn.Conv2d(channels, inter, 1, **dd)
        self.phi = nn.Conv2d(channels, inter, 1, **dd)
        self.W = nn.Sequential(nn.Conv2d(inter, channels, 1, **dd), nn.BatchNorm2d(channels, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default convolution init and a zero output BatchNorm (the official init)."""
        for conv in (self.g[0], self.theta, self.phi, self.W[0]):
            conv.reset_parameters()
        bn = self.W[1]
        bn.reset_running_stats()
        nn.init.zeros_(bn.weight)
        nn.init.zeros_(bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Add the non-local response to ``x``."""
        check_map(x, "x", self.channels)
        check_batch_statistics(x, "x", self.training, per_position=True)
        b, _, h, w = x.shape
        # reshape, not view: also correct for channels_last inputs (same memory order as the official view).
        theta = self.theta(x).reshape(b, self.inter_channels, h * w)
        phi = self.phi(x).reshape(b, self.inter_channels, h * w)
        g = self.g(x).reshape(b, self.inter_channels, h * w)
        y = _dot_product_aggregate(theta, phi, g).reshape(b, self.inter_channels, h, w)
        return self.W(y) + x

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"{self.channels}, inter_channels={self.inter_channels}, form={self.form!r}, reduction={self.reduction}"
