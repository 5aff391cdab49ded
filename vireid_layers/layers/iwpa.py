"""IWPA: the Intra-modality Weighted-Part Aggregation module of DDAG :cite:`ye2020ddag`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_batch_statistics, check_choice, check_floating, check_map, check_shape

__all__ = ["IWPA", "IWPAForm"]

IWPAForm = Literal["official", "paper"]
_FORMS = ("official", "paper")


class IWPA(nn.Module):
    r"""Intra-modality Weighted-Part Aggregation: part attention, learnable part weights and a residual BatchNorm.

    The feature map :math:`X` of the last backbone stage is pooled into :math:`p` horizontal stripes
    :math:`x_1, \dots, x_p \in \mathbb{R}^C` (adaptive average pooling to :math:`(p, 1)`). Three
    :math:`1\times1` convolutions :math:`u, v, z` (:math:`C \to C`, with bias), a softmax part attention
    (Eq. 2–4) and softmax-normalised part weights :math:`w = \operatorname{softmax}(g)` give the aggregated
    part feature

    .. math::

        \alpha_{ij} = \frac{\exp\big(u(x_i)^\top v(x_j)\big)}{\sum_{k=1}^{p} \exp\big(u(x_i)^\top v(x_k)\big)},
        \qquad \bar x_i = \sum_{j=1}^{p} \alpha_{ij}\, z(x_j), \qquad
        a = \sum_{i=1}^{p} w_i\, \bar x_i .

    The logits are not scaled by :math:`1/\sqrt{C}` (as officially), so with :math:`C = 2048` the attention
    is often close to one-hot. The output depends on ``form``:

    * ``"official"`` (default; reproduces the released code and its checkpoints, Eq. 5 as implemented):

      .. math:: x^* = \operatorname{BN}_{\text{iwpa}}\big(a + f\big), \qquad f = \operatorname{BN}_{\text{neck}}(x^o)

      where ``global_feature`` :math:`f` is the **caller's** BN-neck output of the globally average-pooled
      map :math:`x^o = \operatorname{GAP}(X)` (the tensor that feeds the baseline identity classifier; it is
      required), and :math:`\operatorname{BN}_{\text{iwpa}}` is this module's own ``bottleneck``.
    * ``"paper"`` (Eq. 5 as written):

      .. math:: x^* = \operatorname{BN}(x^o) + a

      where ``global_feature`` is the **pre-BN** pooled feature :math:`x^o` (optional: :math:`\operatorname{GAP}(X)`
      when omitted; pass another pooling's output, e.g. GeM, to use it instead) and :math:`\operatorname{BN}` is
      this module's ``bottleneck``.

    In both forms ``bottleneck`` is a ``BatchNorm1d(C)`` initialised as the official one: weight
    :math:`\mathcal{N}(1, 0.01)`, bias 0 and frozen (``requires_grad=False``, the BN-neck convention). A
    learnable shift would be redundant in the paper form anyway: the rows of :math:`\alpha` and :math:`w` sum
    to 1, so the bias of :math:`z` already adds a free shift to :math:`x^*`. The gate :math:`g` starts at
    :math:`1/p` (uniform part weights; softmax is shift-invariant, so only the constant matters).

    **Stripes.** Stripe :math:`i` averages rows :math:`[\lfloor iH/p \rfloor, \lceil (i+1)H/p \rceil)` over the
    full width (adaptive pooling). The stripes are disjoint, as the paper says, only when :math:`p` divides
    :math:`H`; otherwise neighbouring stripes share a row, e.g. :math:`p = 4`, :math:`H = 18` gives rows
    :math:`[0, 5), [4, 9), [9, 14), [13, 18)`. This is the official behaviour and is kept. A map with fewer
    rows than parts (:math:`H < p`), where the official code silently gives several stripes the same row, is
    refused with :class:`ValueError`, as is a map of width 0.

    **Official checkpoints.** The official module wraps :math:`u` in a one-element ``nn.Sequential``, so its
    keys are ``fc1.0.weight`` / ``fc1.0.bias`` (``wpa.fc1.0.*`` in a full DDAG checkpoint), next to the plain
    ``fc2.*`` (:math:`v`), ``fc3.*`` (:math:`z`), ``gate`` and ``bottleneck.*``; it also builds a ``W`` block (a
    :math:`1\times1` convolution and a zero-initialised ``BatchNorm2d``) that its forward never uses. This
    module keeps :math:`u` a plain convolution (``fc1.weight`` / ``fc1.bias``) and creates no dead parameters;
    its load-state-dict hook renames ``fc1.0.*`` to ``fc1.*`` and drops the ``W.*`` keys, so a state dict of
    the official module loads with ``strict=True``, and so do the module's own state dicts.

    **Bad input.** An empty batch gives an empty output. Integer ``x`` or ``global_feature`` raise
    :class:`TypeError`. In training mode a one-sample batch raises :class:`ValueError` (the ``BatchNorm1d``
    needs two values per channel). NaN in ``x`` or ``global_feature`` propagates to the output (to every
    row in training mode, through the batch statistics).

    Args:
        channels: channels :math:`C` of the feature map (2048 after stage 4 of a ResNet-50).
        parts: number of stripes :math:`p` (official: 3).
        form: ``"official"`` (default) or ``"paper"``; see above.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - ``x``: :math:`(N, C, H, W)`, the last feature map.
        - ``global_feature``: :math:`(N, C)`; required with ``form="official"`` (the BN-neck feature),
          optional with ``form="paper"`` (the pre-BN pooled feature).
        - Output: :math:`(N, C)`, the part-aggregated feature :math:`x^*`. In training mode the BatchNorm needs
          :math:`N > 1`, as every ``BatchNorm1d``.

    Examples:
        >>> iwpa = IWPA(16, parts=3)
        >>> x = torch.randn(4, 16, 6, 3)
        >>> neck = nn.BatchNorm1d(16)
        >>> iwpa(x, neck(x.mean((2, 3)))).shape
        torch.Size([4, 16])
        >>> iwpa.part_attention(x).shape  # each row sums to 1
        torch.Size([4, 3, 3])
        >>> IWPA(16, form="paper")(x).shape  # global feature defaults to GAP(x)
        torch.Size([4, 16])
    """

    def __init__(
        self,
        channels: int,
        *,
        parts: int = 3,
        form: IWPAForm = "official",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"`channels` must be a positive integer, got {channels!r}")
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
            raise ValueError(f"`parts` must be a positive integer, got {parts!r}")
        self.form: str = check_choice(form, "form", _FORMS)
        self.channels, self.parts = channels, parts
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        self.fc1 = nn.Conv2d(channels, channels, 1, **dd)  # u: queries
        self.fc2 = nn.Conv2d(channels, channels, 1, **dd)  # v: keys
        self.fc3 = nn.Conv2d(channels, channels, 1, **dd)  # z: values
        self.gate = nn.Parameter(torch.empty(parts, **dd))
        self.bottleneck = nn.BatchNorm1d(channels, **dd)
        self.bottleneck.bias.requires_grad_(False)
        self._register_load_state_dict_pre_hook(self._convert_official_state_dict)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: default 1×1 convs, gate 1/p, BN weight N(1, 0.01) with a zero frozen bias."""
        for conv in (self.fc1, self.fc2, self.fc3):
            conv.reset_parameters()
        nn.init.constant_(self.gate, 1.0 / self.parts)
        self.bottleneck.reset_running_stats()
        nn.init.normal_(self.bottleneck.weight, 1.0, 0.01)
        nn.init.zeros_(self.bottleneck.bias)

    def _check_map(self, x: Tensor) -> None:
        check_map(x, "x", self.channels, min_height=self.parts, why=f"one row per part at least, parts={self.parts}")

    def part_features(self, x: Tensor) -> Tensor:
        r"""The stripe features :math:`x_1, \dots, x_p` (adaptive average pooling of ``x`` to :math:`(p, 1)`).

        Args:
            x: :math:`(N, C, H, W)` feature map.

        Returns:
            :math:`(N, p, C)` tensor.
        """
        self._check_map(x)
        return F.adaptive_avg_pool2d(x, (self.parts, 1)).flatten(2).transpose(1, 2)

    def _embed(self, parts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # A 1x1 conv on a part vector is a linear map; weight.flatten(1) is a view of the (C, C, 1, 1) kernel.
        q, k, v = (F.linear(parts, conv.weight.flatten(1), conv.bias) for conv in (self.fc1, self.fc2, self.fc3))
        return q, k, v

    def part_attention(self, x: Tensor) -> Tensor:
        r"""The part attention :math:`\alpha` of Eq. 2–3, for inspection and visualisation.

        Args:
            x: :math:`(N, C, H, W)` feature map.

        Returns:
            :math:`(N, p, p)` tensor whose rows sum to 1; entry :math:`(i, j)` is the weight of stripe :math:`j`
            in the refined stripe :math:`i`.
        """
        q, k, _ = self._embed(self.part_features(x))
        return torch.softmax(torch.matmul(q, k.transpose(1, 2)), dim=-1)

    def forward(self, x: Tensor, global_feature: Tensor | None = None) -> Tensor:
        """Aggregate the attention-refined stripes of ``x`` with ``global_feature``; see the class docstring."""
        parts = self.part_features(x)
        n = x.shape[0]
        if global_feature is None:
            if self.form == "official":
                raise ValueError(
                    "`global_feature` is required with form='official': pass the BN-neck feature "
                    f"BN_neck(GAP(x)) of shape ({n}, {self.channels}), got None"
                )
            global_feature = x.mean(dim=(2, 3))
        context = f"to match `x` of shape {tuple(x.shape)}"
        check_shape(global_feature, "global_feature", f"({n}, {self.channels})", why=context)
        check_floating(global_feature, "global_feature")
        check_batch_statistics(x, "x", self.training, per_position=False)
        q, k, v = self._embed(parts)
        # Softmax attention over p parts, unscaled logits as officially (Eq. 2-4): R = softmax(Q K^T) V.
        refined = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (N, p, C)
        weights = torch.softmax(self.gate, dim=0)
        aggregated = (refined * weights.unsqueeze(-1)).sum(dim=1)  # (N, C)
        if self.form == "official":
            return self.bottleneck(aggregated + global_feature)
        return self.bottleneck(global_feature) + aggregated

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"{self.channels}, parts={self.parts}, form={self.form!r}"

    def _convert_official_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str, *args: Any) -> None:
        """Map an official state dict onto this module, in place (``load_state_dict`` passes a copy).

        ``fc1.0.weight`` / ``fc1.0.bias`` (the official one-element ``nn.Sequential``) become ``fc1.weight`` /
        ``fc1.bias``, and the unused ``W.*`` keys (a conv and a BatchNorm2d never called) are dropped. Keys
        already in this module's layout are left alone.
        """
        sd: dict[str, Tensor] = state_dict  # type: ignore[assignment]
        for name in ("weight", "bias"):
            old = f"{prefix}fc1.0.{name}"
            if old in sd:
                sd[f"{prefix}fc1.{name}"] = sd.pop(old)
        for key in [k for k in sd if k.startswith(f"{prefix}W.")]:
            del sd[key]
