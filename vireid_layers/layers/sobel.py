"""Sobel edges: the fixed four-direction Sobel convolution of MSO :cite:`gao2021mso`."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_choice, check_map
from ..distances import safe_sqrt

__all__ = ["SobelCombine", "SobelEdges", "sobel_edges", "sobel_kernels"]

SobelCombine = Literal["sum", "abs", "magnitude", "none"]
_COMBINES = ("sum", "abs", "magnitude", "none")

# K0..K3, rows top to bottom, in the order of the MSO reference (applied as cross-correlation, like nn.Conv2d).
_KERNELS = (
    ((-1.0, -2.0, -1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0)),  # K0: vertical gradient (horizontal edges)
    ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0)),  # K1: horizontal gradient (vertical edges)
    ((-2.0, -1.0, 0.0), (-1.0, 0.0, 1.0), (0.0, 1.0, 2.0)),  # K2: diagonal (45°)
    ((0.0, 1.0, 2.0), (-1.0, 0.0, 1.0), (-2.0, -1.0, 0.0)),  # K3: anti-diagonal (135°)
)


def sobel_kernels(*, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
    r"""The four fixed :math:`3\times3` Sobel kernels :math:`K_0, \dots, K_3` as a :math:`(4, 1, 3, 3)` tensor.

    .. math::

        K_0 = \begin{bmatrix} -1 & -2 & -1 \\ 0 & 0 & 0 \\ 1 & 2 & 1 \end{bmatrix}, \quad
        K_1 = \begin{bmatrix} -1 & 0 & 1 \\ -2 & 0 & 2 \\ -1 & 0 & 1 \end{bmatrix}, \quad
        K_2 = \begin{bmatrix} -2 & -1 & 0 \\ -1 & 0 & 1 \\ 0 & 1 & 2 \end{bmatrix}, \quad
        K_3 = \begin{bmatrix} 0 & 1 & 2 \\ -1 & 0 & 1 \\ -2 & -1 & 0 \end{bmatrix}

    Args:
        device: device of the tensor.
        dtype: dtype of the tensor (default: the default float dtype).

    Returns:
        :math:`(4, 1, 3, 3)` tensor, usable as the weight of :func:`torch.nn.functional.conv2d`.

    Examples:
        >>> sobel_kernels().sum(0)[0]
        tensor([[-4., -2.,  2.],
                [-4.,  0.,  4.],
                [-2.,  2.,  4.]])
    """
    return torch.tensor(_KERNELS, device=device, dtype=dtype).unsqueeze(1)


def _check_stride(stride: object) -> int:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"`stride` must be a positive integer, got {stride!r}")
    return stride


def _sobel(x: Tensor, kernels: Tensor, combine: str, stride: int) -> Tensor:
    """Apply the (4, 1, 3, 3) ``kernels`` to the channel sum of ``x`` and combine the four responses."""
    # The same kernel on every input channel, summed over channels, is the kernel on the channel sum.
    responses = F.conv2d(x.sum(1, keepdim=True), kernels, stride=stride, padding=1)  # (N, 4, H', W')
    if combine == "none":
        return responses
    if combine == "sum":
        return responses.sum(1, keepdim=True)
    if combine == "abs":
        return responses.abs().sum(1, keepdim=True)
    return safe_sqrt(responses.pow(2).sum(1, keepdim=True)).to(responses.dtype)


def _check_input(x: object) -> Tensor:
    x = check_map(x, "x")
    if x.shape[1] < 1:
        raise ValueError(f"`x` must have at least one channel, got shape {tuple(x.shape)}")
    return x


def sobel_edges(x: Tensor, *, combine: SobelCombine = "sum", stride: int = 1) -> Tensor:
    r"""Edge map of an image batch with the four fixed Sobel kernels of MSO's "Sobel convolution module".

    Every kernel :math:`K_d` (see :func:`sobel_kernels`) is applied, as a zero-padded (padding 1)
    cross-correlation like :class:`torch.nn.Conv2d`, to every input channel and the responses are summed over
    the channels, as EDCNN's ``SobelConv2d`` does with its kernel copied to each input channel: the response
    of a colour image is the response to :math:`R + G + B`, and a 3-channel replicated infrared image gives
    three times the response of its single channel. The four direction maps
    :math:`r_d = K_d \star \sum_c x_c` are then combined:

    .. math::

        e_{\text{sum}} = \sum_{d=0}^{3} r_d, \qquad
        e_{\text{abs}} = \sum_{d=0}^{3} |r_d|, \qquad
        e_{\text{magnitude}} = \sqrt{\textstyle\sum_{d=0}^{3} r_d^2}

    ``combine="sum"`` (default) is the paper's "adding these four channels together", the form inferred for the
    unreleased official code. Because the sum of signed responses is linear, it equals **one** oriented
    derivative, the convolution with :math:`\sum_d K_d = \left[\begin{smallmatrix} -4 & -2 & 2 \\ -4 & 0 & 4
    \\ -2 & 2 & 4 \end{smallmatrix}\right]`. It answers a ramp :math:`x_{ij} = a\,i + b\,j` (row :math:`i`,
    column :math:`j`) with :math:`8a + 20b`: a derivative along :math:`(2, 5)`, signed, and blind to every edge
    whose gradient is along :math:`(5, -2)`. ``"abs"`` and ``"magnitude"`` are orientation-free edge
    strengths (the magnitude uses the library's safe square root, so a flat region gives :math:`10^{-6}` with
    a zero gradient rather than an infinite one); ``"none"`` returns the four direction maps.

    An empty batch gives an empty output and NaN propagates (also through the magnitude's clamp). Integer input
    raises :class:`TypeError`, a zero-sized map :class:`ValueError`.

    Args:
        x: :math:`(N, C, H, W)` images (RGB, 3-channel replicated infrared or single-channel); the kernels are
            created with the device and dtype of ``x`` at every call.
        combine: ``"sum"`` (default), ``"abs"``, ``"magnitude"`` or ``"none"``.
        stride: stride of the convolution (1 keeps the size).

    Returns:
        :math:`(N, 1, H', W')` edge map, or :math:`(N, 4, H', W')` direction maps (:math:`K_0, \dots, K_3`) for
        ``combine="none"``, with :math:`H' = \lfloor (H - 1)/s \rfloor + 1` (:math:`H' = H` for
        :math:`s = 1`).

    Examples:
        >>> x = torch.zeros(1, 1, 4, 5)
        >>> x[..., 2:] = 1.0  # a vertical step edge; the zero padding makes the right border an edge too
        >>> sobel_edges(x, combine="none")[0, :, 1]  # K0 (horizontal edges) does not respond
        tensor([[ 0.,  0.,  0.,  0.,  0.],
                [ 0.,  4.,  4.,  0., -4.],
                [ 0.,  3.,  3.,  0., -3.],
                [ 0.,  3.,  3.,  0., -3.]])
        >>> sobel_edges(x, combine="abs")[0, 0, 1]
        tensor([ 0., 10., 10.,  0., 10.])
    """
    x = _check_input(x)
    check_choice(combine, "combine", _COMBINES)
    stride = _check_stride(stride)
    return _sobel(x, sobel_kernels(device=x.device, dtype=x.dtype), combine, stride)


class SobelEdges(nn.Module):
    r"""The fixed Sobel convolution module of MSO :cite:`gao2021mso`; see :func:`sobel_edges`.

    The four kernels are a non-learnable, non-persistent buffer (``kernels``, shape :math:`(4, 1, 3, 3)`):
    they move with the module, are cast to the input's dtype at call time and never enter a state dict.

    Args:
        combine: ``"sum"`` (default, the paper's signed sum of the four direction maps), ``"abs"``,
            ``"magnitude"`` or ``"none"`` (the four maps).
        stride: stride of the convolution (1 keeps the size).
        device: device of the kernel buffer.
        dtype: dtype of the kernel buffer.

    Shape:
        - Input: :math:`(N, C, H, W)`, any :math:`C \ge 1`.
        - Output: :math:`(N, 1, H', W')`, or :math:`(N, 4, H', W')` for ``combine="none"``.

    Examples:
        >>> sobel = SobelEdges(combine="magnitude")
        >>> sobel(torch.randn(2, 3, 288, 144)).shape
        torch.Size([2, 1, 288, 144])
    """

    kernels: Tensor

    def __init__(
        self,
        *,
        combine: SobelCombine = "sum",
        stride: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.combine: str = check_choice(combine, "combine", _COMBINES)
        self.stride = _check_stride(stride)
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        self.register_buffer("kernels", torch.empty(4, 1, 3, 3, **dd), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Fill the (non-learnable) kernel buffer with :math:`K_0, \dots, K_3`."""
        with torch.no_grad():
            self.kernels.copy_(sobel_kernels(device=self.kernels.device, dtype=self.kernels.dtype))

    def forward(self, x: Tensor) -> Tensor:
        """Edge map of ``x``; see :func:`sobel_edges`."""
        x = _check_input(x)
        return _sobel(x, self.kernels.to(device=x.device, dtype=x.dtype), self.combine, self.stride)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"combine={self.combine!r}, stride={self.stride}"
