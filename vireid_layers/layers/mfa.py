"""MFA: the Multistage Feature Aggregation block of DEEN :cite:`zhang2023deen`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_batch_statistics, check_choice, check_map
from ._matmul import matmul_chain

__all__ = ["MFA", "MFAForm"]

MFAForm = Literal["official", "paper"]
_FORMS = ("official", "paper")


def _projection(in_channels: int, out_channels: int, stride: int, dd: dict[str, Any]) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, **dd)


def _output(in_channels: int, out_channels: int, stride: int, dd: dict[str, Any]) -> nn.Sequential:
    # Conv1x1 + BatchNorm2d with a zero-initialised BatchNorm: the block starts as the identity.
    # Keys ``W.0.*`` / ``W.1.*`` match the official checkpoints.
    return nn.Sequential(_projection(in_channels, out_channels, stride, dd), nn.BatchNorm2d(out_channels, **dd))


def _flat(x: Tensor, rows: int) -> Tensor:
    """``x.view(B, rows, -1)`` in the official memory order, also for channels_last and empty-batch inputs."""
    return x.reshape(x.shape[0], rows, x.shape[1] * x.shape[2] * x.shape[3] // rows)


class _ChannelAggregation(nn.Module):
    r"""The channel part of MFA (the official ``CNL``): a :math:`C' \times C'` channel affinity."""

    def __init__(self, high: int, low: int, stride: int, form: str, dd: dict[str, Any]) -> None:
        super().__init__()
        self.low, self.form = low, form
        self.g = _projection(low, low, 1, dd)
        self.theta = _projection(high, low, 1, dd)
        self.phi = _projection(low, low, stride, dd)
        self.W = _output(low, high, stride, dd)

    def forward(self, x_h: Tensor, x_l: Tensor) -> Tensor:
        q = _flat(self.theta(x_h), self.low)  # (B, C', N_h)
        k = _flat(self.phi(x_l), self.low)  # (B, C', N_h): the strided key lives at x_h's resolution
        v = _flat(self.g(x_l), self.low)  # (B, C', N_l)
        if self.form == "official":
            # No softmax: (Q K^T / C') V, associative. The C'xC' order is cheaper at MFA1/MFA2, the N_h x N_l
            # order at MFA3 (few positions, C' = 512); matmul_chain picks from the shapes.
            y = matmul_chain(q, k.transpose(1, 2), v) / self.low
        else:
            y = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return self.W(y.view(x_l.shape[0], self.low, *x_l.shape[2:])) + x_h


class _SpatialAggregation(nn.Module):
    """The spatial part of MFA (the official ``PNL``): a position affinity between ``x_h`` and ``x_l``."""

    def __init__(self, high: int, low: int, reduction: int, form: str, dd: dict[str, Any]) -> None:
        super().__init__()
        self.low, self.reduction, self.form = low, reduction, form
        self.inner = low // reduction
        self.g = _projection(low, self.inner, 1, dd)
        self.theta = _projection(high, self.inner, 1, dd)
        self.phi = _projection(low, self.inner, 1, dd)
        self.W = _output(self.inner, high, 1, dd)

    def forward(self, x_h: Tensor, x_l: Tensor) -> Tensor:
        theta, phi, g = self.theta(x_h), self.phi(x_l), self.g(x_l)
        if self.form == "official":
            for name, t in (("x_high", x_h), ("x_low", x_l)):
                positions = t.shape[2] * t.shape[3]
                if positions % self.reduction:
                    raise ValueError(
                        f"MFA (form='official') folds each {self.inner}-channel map into {self.low} rows, "
                        f"which needs H*W of `{name}` to be divisible by reduction={self.reduction}; got "
                        f"{tuple(t.shape[2:])} ({positions} positions). Use an input size whose stage maps "
                        "have an even number of positions (e.g. 384x144, 288x144, 256x128) or form='paper'"
                    )
            # The official code views each (C'/r)xN map as C' rows of N/r "folded positions".
            q = _flat(theta, self.low).transpose(1, 2)  # (B, N_h/r, C')
            k = _flat(phi, self.low)  # (B, C', N_l/r)
            v = _flat(g, self.low).transpose(1, 2)  # (B, N_l/r, C')
            # No softmax, so (Q K) V / n = Q (K V) / n: the cheaper order from the shapes. Q (K V) at MFA1/MFA2
            # (many positions: never the (N_h/r)x(N_l/r) matrix), (Q K) V at MFA3 (few positions, C' = 512).
            y = matmul_chain(q, k, v) / k.shape[-1]  # (B, N_h/r, C')
            y = y.transpose(1, 2).reshape(theta.shape)
        else:
            # The fused SDPA kernels (CPU flash, CUDA flash / memory-efficient) need 4-D (batch, heads, L, E)
            # operands with a unit last-dimension stride; transposed views fall back to the math kernel, which
            # materialises the (N_h x N_l) attention. One head of C'/r channels, made contiguous.
            q = theta.flatten(2).transpose(1, 2).contiguous().unsqueeze(1)  # (B, 1, N_h, C'/r)
            k = phi.flatten(2).transpose(1, 2).contiguous().unsqueeze(1)  # (B, 1, N_l, C'/r)
            v = g.flatten(2).transpose(1, 2).contiguous().unsqueeze(1)
            y = F.scaled_dot_product_attention(q, k, v, scale=1.0).squeeze(1)  # (B, N_h, C'/r)
            y = y.transpose(1, 2).reshape(theta.shape)
        return self.W(y) + x_h


class MFA(nn.Module):
    r"""Multistage Feature Aggregation: channel then spatial attention from a low-level into a high-level map.

    With :math:`f_l` the map entering a backbone stage and :math:`f_h` the map it produces, and
    :math:`1\times1` convolutions :math:`\psi` (queries from :math:`f_h`, keys and values from :math:`f_l`),
    the paper (Eq. 7–9) computes

    .. math::

        M^c = \operatorname{softmax}\big(\psi^1_q(f_h)\,\psi^1_k(f_l)^\top\big), \quad
        f_h^c = \omega^c\big(M^c\,\psi^1_v(f_l)\big) + f_h, \quad
        f_h^s = \omega^s\big(M^s\,\psi^2_v(f_l)\big) + f_h^c

    with :math:`M^c` a :math:`C' \times C'` channel affinity and :math:`M^s` a position affinity. The
    official code (the default, ``form="official"``) differs in three ways:

    * no softmax: :math:`M^c = \psi_q\psi_k^\top / C'` and :math:`M^s = \tilde\psi_q \tilde\psi_k^\top / (N_l/r)`;
    * for strided blocks (``stride=2``) the key projection :math:`\psi^1_k` and the output projection
      :math:`\omega^c` are stride-2 :math:`1\times1` convolutions;
    * the spatial part projects to :math:`C'/r` channels (:math:`r = 2`) and *folds* each map into
      :math:`C'` rows of :math:`N/r` positions (the tilde above): position :math:`p` of the first half of
      the flattened map and position :math:`p` of the second half become one pseudo-position. The number of
      positions of both inputs must therefore be divisible by :math:`r`; a clear error says so otherwise.

    Without a softmax the attention is associative, :math:`(QK^\top)V = Q(K^\top V)`, and the official form
    evaluates each product in the order with fewer multiplications, chosen from the shapes (the choice is
    static under ``torch.compile``; both orders give the same value up to rounding). For the spatial part,
    with :math:`n_h = N_h/r`, :math:`n_l = N_l/r` folded positions, :math:`(QK^\top)V` costs
    :math:`2 n_h n_l C'` and :math:`Q(K^\top V)` costs :math:`C'^2 (n_h + n_l)` multiply-adds per sample, so
    :math:`Q(K^\top V)` is taken when the positions are many (MFA1 and MFA2 at 384×144: it never builds the
    :math:`n_h \times n_l` matrix) and :math:`(QK^\top)V` when they are few and the channels many (MFA3:
    :math:`n_h = 108`, :math:`n_l = 432`, :math:`C' = 512`, about three times fewer multiplications). The
    channel part likewise takes :math:`(QK^\top)V` (the :math:`C' \times C'` affinity) when
    :math:`C'(N_h + N_l) \le 2 N_h N_l` (MFA1, MFA2) and :math:`Q(K^\top V)` otherwise (MFA3). The paper form uses
    :func:`torch.nn.functional.scaled_dot_product_attention` (unscaled logits, as in Eq. 7) over the
    unfolded :math:`C'/r`-channel positions. In both forms every output projection ends in a BatchNorm with
    zero weight and bias, so a freshly built block is the identity :math:`f_h^s = f_h`.

    A state dict of the official ``MFA_block`` (``CNL.*``, ``PNL.*``) loads with ``load_state_dict(strict=True)``
    (the keys are renamed to ``channel.*`` / ``spatial.*``; the module's own state dicts load too).

    An empty batch gives an empty output. Integer inputs raise :class:`TypeError`; a zero-sized map, a
    folded form whose position counts are not divisible by :math:`r`, or (in training mode) a one-position,
    one-sample ``x_high`` (a single value per BatchNorm channel) raise :class:`ValueError`. A NaN in the
    inputs propagates to the output.

    Args:
        high_channels: channels :math:`C_h` of the stage output (256, 512, 1024 for MFA1–3 on a ResNet-50).
        low_channels: channels :math:`C' = C_l` of the stage input (64, 256, 512).
        stride: 1 when the stage keeps the resolution (MFA1), 2 when it halves it (MFA2, MFA3).
        form: ``"official"`` (default, reproduces the released code and checkpoints) or ``"paper"``.
        reduction: channel reduction :math:`r` of the spatial part (official: 2).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - ``x_high``: :math:`(N, C_h, H_h, W_h)`, the stage output.
        - ``x_low``: :math:`(N, C_l, H_l, W_l)`, the stage input, with
          :math:`(H_h, W_h) = (\lceil H_l/s \rceil, \lceil W_l/s \rceil)`.
        - Output: :math:`(N, C_h, H_h, W_h)`.

    Examples:
        >>> mfa = MFA(32, 16, stride=2)
        >>> x_low, x_high = torch.randn(2, 16, 8, 4), torch.randn(2, 32, 4, 2)
        >>> out = mfa(x_high, x_low)
        >>> out.shape, torch.equal(out, x_high)  # the identity at initialisation
        (torch.Size([2, 32, 4, 2]), True)
    """

    def __init__(
        self,
        high_channels: int,
        low_channels: int,
        *,
        stride: int = 1,
        form: MFAForm = "official",
        reduction: int = 2,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("high_channels", high_channels), ("low_channels", low_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if stride not in (1, 2):
            raise ValueError(f"`stride` must be 1 or 2, got {stride!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"`reduction` must be a positive integer, got {reduction!r}")
        if low_channels % reduction:
            raise ValueError(f"`low_channels` ({low_channels}) must be divisible by `reduction` ({reduction})")
        self.form: str = check_choice(form, "form", _FORMS)
        self.high_channels, self.low_channels = high_channels, low_channels
        self.stride, self.reduction = stride, reduction
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        self.channel = _ChannelAggregation(high_channels, low_channels, stride, self.form, dd)
        self.spatial = _SpatialAggregation(high_channels, low_channels, reduction, self.form, dd)
        self._register_load_state_dict_pre_hook(self._convert_official_state_dict)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default convolution init and zero output BatchNorms (the official init)."""
        for part in (self.channel, self.spatial):
            for module in part.modules():
                if isinstance(module, nn.Conv2d):
                    module.reset_parameters()
            bn = part.W[1]
            bn.reset_running_stats()
            nn.init.zeros_(bn.weight)
            nn.init.zeros_(bn.bias)

    def forward(self, x_high: Tensor, x_low: Tensor) -> Tensor:
        """Aggregate ``x_low`` into ``x_high``: the channel part, then the spatial part."""
        check_map(x_high, "x_high", self.high_channels)
        check_map(x_low, "x_low", self.low_channels)
        if x_high.shape[0] != x_low.shape[0]:
            raise ValueError(
                f"`x_high` and `x_low` must have the same batch size, got {x_high.shape[0]} and {x_low.shape[0]}"
            )
        s = self.stride
        expected = ((x_low.shape[2] + s - 1) // s, (x_low.shape[3] + s - 1) // s)
        if tuple(x_high.shape[2:]) != expected:
            raise ValueError(
                f"`x_high` must have spatial size {expected} = ceil(`x_low` size {tuple(x_low.shape[2:])} / "
                f"stride {s}), got {tuple(x_high.shape[2:])}"
            )
        check_batch_statistics(x_high, "x_high", self.training, per_position=True)
        return self.spatial(self.channel(x_high, x_low), x_low)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return (
            f"{self.high_channels}, {self.low_channels}, stride={self.stride}, form={self.form!r}, "
            f"reduction={self.reduction}"
        )

    def _convert_official_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str, *args: Any) -> None:
        """Rename the official ``CNL.*`` / ``PNL.*`` keys to ``channel.*`` / ``spatial.*``, in place."""
        renames = {f"{prefix}CNL.": f"{prefix}channel.", f"{prefix}PNL.": f"{prefix}spatial."}
        for key in [k for k in state_dict if k.startswith(tuple(renames))]:
            old = next(p for p in renames if key.startswith(p))
            state_dict[renames[old] + key[len(old) :]] = state_dict.pop(key)  # type: ignore[attr-defined]
