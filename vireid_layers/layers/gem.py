"""GeM: the generalised-mean pooling of AGW :cite:`ye2021agw`."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._deprecation import keyword_only
from .._validation import check_map, check_nonnegative, check_positive

__all__ = ["GeM", "gem"]


@keyword_only("p", "eps", "clamp_min")
def gem(x: Tensor, *, p: float | Tensor = 3.0, eps: float = 1e-12, clamp_min: float | None = None) -> Tensor:
    r"""Generalised-mean pooling over the positions: :math:`\big(\operatorname{mean}(x^p) + \epsilon\big)^{1/p}`.

    .. math::

        \operatorname{GeM}(x)_{nc} = \Big(\frac{1}{HW} \sum_{h, w} \tilde x_{nchw}^{\,p} + \epsilon\Big)^{1/p},
        \qquad \tilde x = \begin{cases} x & \text{clamp\_min} = \text{None} \\
        \max(x, \text{clamp\_min}) & \text{otherwise} \end{cases}

    :math:`p = 1` is average pooling and :math:`p \to \infty` max pooling. With ``clamp_min=None`` and
    :math:`\epsilon = 10^{-12}` this is the official AGW pooling (fixed :math:`p = 3`, the :math:`\epsilon`
    added *after* the mean, no clamp).

    **NaN trap.** Without a clamp the input must be non-negative. A negative :math:`x` with a non-integer
    :math:`p` gives :math:`x^p = \text{NaN}`; even with the integer :math:`p = 3`, a channel whose mean of
    cubes is negative gives a NaN root. AGW relies on its input coming straight from a ReLU (no non-local
    block follows the last stage); a layer with a signed output in front of GeM breaks that. A learnable
    :math:`p` makes it worse: after its first update :math:`p` is no longer an integer, so a single negative
    value gives NaN, and should :math:`p` drift below 1 the gradient
    :math:`\partial x^p / \partial x = p\,x^{p-1}` is infinite at :math:`x = 0`, which every ReLU map
    contains. A positive ``clamp_min`` (the ReID-survey ``GeneralizedMeanPoolingP`` uses :math:`10^{-6}`)
    avoids all of these: every value raised to :math:`p` is :math:`\ge` ``clamp_min`` :math:`> 0` (PyTorch
    already gives :math:`\partial x^p / \partial p = x^p \log x` the value 0 at :math:`x = 0`).

    An empty batch gives an empty :math:`(0, C)` output and non-finite input propagates: NaN gives NaN, and the
    clamp does not turn :math:`-\infty` into ``clamp_min`` (it gives NaN). A map with no
    position (:math:`H = 0` or :math:`W = 0`, whose mean would be NaN) raises :class:`ValueError`, integer
    input :class:`TypeError`.

    The powers and the mean are computed in at least float32 (a float16 cube overflows from
    :math:`x \approx 40`); the result has the dtype of ``x``.

    Args:
        x: :math:`(N, C, H, W)` feature map.
        p: the exponent, a number or a tensor broadcastable to :math:`(N, C)` (e.g. a learnable :math:`(1,)`
            parameter); must be :math:`> 0`.
        eps: :math:`\epsilon`, added to the mean before the root (official :math:`10^{-12}`).
        clamp_min: lower clamp of the input, or ``None`` for no clamp (official AGW).

    Returns:
        :math:`(N, C)` pooled features.

    Examples:
        >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
        >>> gem(x, p=1.0), gem(x, p=3.0)
        (tensor([[2.5000]]), tensor([[2.9240]]))
        >>> gem(-x).isnan().item(), gem(-x, clamp_min=1e-6).isnan().item()
        (True, False)
    """
    x = check_map(x, "x", why="the mean over no position is undefined")
    if not isinstance(p, Tensor):  # a tensor p (learnable) is not checked: that would sync every call
        check_positive(p, "p")
    check_nonnegative(eps, "eps")
    if clamp_min is not None:
        check_positive(clamp_min, "clamp_min")
    return _gem(x, p, eps, clamp_min)


def _gem(x: Tensor, p: float | Tensor, eps: float, clamp_min: float | None) -> Tensor:
    compute = torch.promote_types(x.dtype, torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        xf = x.to(compute)
        if clamp_min is not None:
            # clamp_min keeps NaN but would turn -inf into clamp_min; (xf - xf) is 0 for finite values and NaN
            # for +-inf, so a non-finite input stays non-finite (the gradient is the clamp's).
            xf = xf.clamp_min(clamp_min) + (xf - xf)
        exponent = p.to(compute) if isinstance(p, Tensor) else p
        pooled = (xf.pow(exponent).flatten(2).mean(-1) + eps).pow(1.0 / exponent)
    return pooled.to(x.dtype)


class GeM(nn.Module):
    r"""Generalised-mean pooling of AGW :cite:`ye2021agw`; see :func:`gem`.

    The default is the official AGW pooling: a fixed :math:`p = 3` (a Python constant, not a parameter), the
    :math:`\epsilon = 10^{-12}` added after the mean, and no clamp, which relies on a non-negative input (see
    the NaN trap in :func:`gem`). ``learnable=True`` gives the ReID-survey variant: :math:`p` is a
    :math:`(1,)` parameter (state-dict key ``p``) initialised to ``p`` and shared by all channels, and the
    input is clamped at :math:`10^{-6}` so that the value and the gradients stay finite for any :math:`p`.

    Args:
        p: the exponent, or the initial value of the learnable one; must be :math:`> 0` (official 3).
        learnable: make :math:`p` a parameter.
        eps: :math:`\epsilon`, added to the mean before the root.
        clamp: lower clamp of the input, ``None`` for none, or ``"auto"`` (default): ``None`` for a fixed
            :math:`p` (official AGW), :math:`10^{-6}` for a learnable one (ReID survey).
        device: device of the learnable :math:`p`.
        dtype: dtype of the learnable :math:`p`.

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output: :math:`(N, C)`.

    Examples:
        >>> pool = GeM()
        >>> pool(torch.rand(2, 2048, 18, 9)).shape
        torch.Size([2, 2048])
        >>> GeM(learnable=True)
        GeM(p=3.0, learnable=True, eps=1e-12, clamp=1e-06)
    """

    @keyword_only("p")
    def __init__(
        self,
        *,
        p: float = 3.0,
        learnable: bool = False,
        eps: float = 1e-12,
        clamp: float | Literal["auto"] | None = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(learnable, bool):
            raise TypeError(f"`learnable` must be a bool, got {type(learnable).__name__} {learnable!r}")
        self.init_p = check_positive(p, "p")
        self.learnable = learnable
        self.eps = check_nonnegative(eps, "eps")
        if clamp == "auto":
            self.clamp: float | None = 1e-6 if learnable else None
        elif clamp is None:
            self.clamp = None
        elif isinstance(clamp, str):
            raise ValueError(f"`clamp` must be a number > 0, None or 'auto', got {clamp!r}")
        else:
            self.clamp = check_positive(clamp, "clamp")
        self.p: float | nn.Parameter
        if learnable:
            dd: dict[str, Any] = {"device": device, "dtype": dtype}
            self.p = nn.Parameter(torch.empty(1, **dd))
        else:
            self.p = self.init_p
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set a learnable :math:`p` back to its initial value (nothing to do for a fixed :math:`p`)."""
        if isinstance(self.p, nn.Parameter):
            with torch.no_grad():
                self.p.fill_(self.init_p)

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x`` over its spatial positions; see :func:`gem`."""
        x = check_map(x, "x", why="the mean over no position is undefined")
        return _gem(x, self.p, self.eps, self.clamp)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"p={self.init_p}, learnable={self.learnable}, eps={self.eps}, clamp={self.clamp}"
