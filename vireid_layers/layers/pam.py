"""PAM: the Pattern Alignment Module of MPANet :cite:`wu2021mpanet`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._validation import check_map

__all__ = ["PAM", "PAMOutput"]

# Official state-dict prefix of the pattern-map generator (``spatial_attention``, a Conv2d(C, l, 1) with bias).
_OFFICIAL_PREFIX = "spatial_attention."


class PAMOutput(NamedTuple):
    r"""Output of :class:`PAM`.

    Attributes:
        features: :math:`(N, (l + 1) C)` pattern features :math:`[p_1; \dots; p_l; g(F)]`.
        masks: :math:`(N, l, H, W)` pattern maps :math:`M` in :math:`(0, 1)`, for
            :func:`~vireid_layers.separation_loss`.
    """

    features: Tensor
    masks: Tensor


class PAM(nn.Module):
    r"""Pattern Alignment Module: :math:`l` sigmoid pattern maps pool :math:`l` pattern features.

    A :math:`1\times1` convolution :math:`A` (the "light-weight generator") produces :math:`l` pattern maps
    from the feature map :math:`F`; each map weights :math:`F` and is average-pooled, and the global average
    of :math:`F` is appended last (Eq. 4–6 of :cite:`wu2021mpanet`):

    .. math::

        M = \sigma(A(F)) \in (0, 1)^{l \times h \times w}, \qquad
        p_k = \frac{1}{hw} \sum_{u=1}^{h} \sum_{v=1}^{w} M_{k,uv}\, F_{:,uv}, \qquad
        f = [\,p_1;\ \dots;\ p_l;\ g(F)\,] \in \mathbb{R}^{(l+1)C}

    :math:`p_k = g(M_k \odot F)` is the spatial **mean** over all :math:`h w` positions, as in the paper and
    the official code: it is *not* divided by the mask's mass :math:`\sum_{uv} M_{k,uv}`, so a pattern map
    that is small everywhere also gives a small feature. All parts are pooled with one ``einsum`` (a batched
    matrix product of the :math:`(l, hw)` maps and the :math:`(hw, C)` features), in at least float32, also
    under autocast; the outputs are cast back to the input's dtype.

    Initialisation as in the official code: the convolution's weight has PyTorch's default (Kaiming-uniform)
    init and its bias is zero, so every map starts near :math:`\sigma(\cdot) \approx 0.5`. The official
    keys ``spatial_attention.weight`` / ``spatial_attention.bias`` load into ``generator.*`` with
    ``load_state_dict(strict=True)``. The maps are returned for the separation loss, which the official model
    computes in training only.

    An empty batch gives empty outputs; NaN in a sample propagates to its features and maps. Integer input
    raises :class:`TypeError`, a zero-sized map (whose mean would be NaN) :class:`ValueError`.

    Args:
        channels: number of channels :math:`C` of the feature map (2048 after a ResNet-50).
        num_parts: number of pattern maps :math:`l` (official 6).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output: :class:`PAMOutput` with ``features`` :math:`(N, (l + 1) C)` and ``masks``
          :math:`(N, l, H, W)`.

    Examples:
        >>> pam = PAM(64, num_parts=6)
        >>> out = pam(torch.randn(2, 64, 12, 4))
        >>> out.features.shape, out.masks.shape
        (torch.Size([2, 448]), torch.Size([2, 6, 12, 4]))
    """

    def __init__(
        self,
        channels: int,
        *,
        num_parts: int = 6,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"`channels` must be a positive integer, got {channels!r}")
        if isinstance(num_parts, bool) or not isinstance(num_parts, int) or num_parts < 1:
            raise ValueError(f"`num_parts` must be a positive integer, got {num_parts!r}")
        self.channels = channels
        self.num_parts = num_parts
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        self.generator = nn.Conv2d(channels, num_parts, 1, bias=True, **dd)  # A
        self._register_load_state_dict_pre_hook(self._convert_official_state_dict)
        self.reset_parameters()

    @property
    def out_features(self) -> int:
        """Length :math:`(l + 1) C` of the output feature."""
        return (self.num_parts + 1) * self.channels

    def reset_parameters(self) -> None:
        """Official initialisation: PyTorch's default convolution weight, zero bias."""
        self.generator.reset_parameters()
        nn.init.zeros_(self.generator.bias)

    def pattern_maps(self, x: Tensor) -> Tensor:
        r"""The pattern maps :math:`M = \sigma(A(F))`.

        Args:
            x: :math:`(N, C, H, W)` feature map :math:`F`.

        Returns:
            :math:`(N, l, H, W)` maps in :math:`(0, 1)`, in the input's dtype.
        """
        check_map(x, "x", self.channels)
        logits = self.generator(x)
        return torch.sigmoid(logits.to(torch.promote_types(logits.dtype, torch.float32))).to(x.dtype)

    def forward(self, x: Tensor) -> PAMOutput:
        """Pool the :math:`l` pattern features and the global feature; also return the maps."""
        masks = self.pattern_maps(x)
        positions = x.shape[2] * x.shape[3]
        with torch.autocast(device_type=x.device.type, enabled=False):
            acc = torch.promote_types(x.dtype, torch.float32)
            xf = x.to(acc)
            parts = torch.einsum("nkhw,nchw->nkc", masks.to(acc), xf) / positions  # (N, l, C)
            features = torch.cat([parts.flatten(1), xf.mean(dim=(2, 3))], dim=1)
        return PAMOutput(features.to(x.dtype), masks)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"{self.channels}, num_parts={self.num_parts}"

    def _convert_official_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str, *args: Any) -> None:
        """Rename the official ``spatial_attention.*`` keys to ``generator.*``, in place."""
        for name in ("weight", "bias"):
            old = f"{prefix}{_OFFICIAL_PREFIX}{name}"
            if old in state_dict:
                state_dict[f"{prefix}generator.{name}"] = state_dict.pop(old)  # type: ignore[attr-defined]
