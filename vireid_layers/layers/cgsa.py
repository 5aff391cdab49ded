"""CGSA: the Cross-modality Graph Structured Attention of DDAG :cite:`ye2020ddag`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import (
    check_embeddings,
    check_floating,
    check_labels,
    check_nonnegative,
    check_probability,
    check_shape,
)

__all__ = ["CGSA", "graph_attention"]

_XAVIER_GAIN = 1.414  # the official (pyGAT) gain, slightly below sqrt(2)


def graph_attention(
    h: Tensor,
    adjacency_mask: Tensor,
    a_src: Tensor,
    a_dst: Tensor,
    *,
    negative_slope: float = 0.2,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    r"""One graph attention aggregation :cite:`ye2020ddag` (GAT), for one head or a stack of heads.

    With projected node features :math:`h_i \in \mathbb{R}^d` and the attention vector
    :math:`a = [a_{src}; a_{dst}] \in \mathbb{R}^{2d}` (DDAG Eq. 7, :math:`w^g`),

    .. math::

        e_{ij} = \operatorname{LeakyReLU}\big(a^\top [h_i \,\|\, h_j]\big)
               = \operatorname{LeakyReLU}\big(a_{src}^\top h_i + a_{dst}^\top h_j\big), \qquad
        \alpha_{ij} = \frac{\exp(e_{ij})}{\sum_{k:\,A_{ik}} \exp(e_{ik})}, \qquad
        h'_i = \sum_{j:\,A_{ij}} \operatorname{Dropout}_p(\alpha)_{ij}\, h_j .

    The logits are the sum of an :math:`(N, 1)` and a :math:`(1, N)` vector: the :math:`(N, N, 2d)` tensor of
    concatenated pairs that the official code materialises is never built. Non-edges get the most negative
    finite value of the accumulation dtype before the softmax (the official code uses :math:`-9\cdot10^{15}`):
    the results are identical whenever a row has an edge (the masked exponentials underflow to exactly 0 in
    both), and a row without any edge gives a uniform row in both instead of NaN. The softmax runs in at
    least float32 (also under autocast). No activation is applied.

    :math:`N = 0` nodes give an empty output. Integer ``h``, ``a_src`` or ``a_dst`` raise :class:`TypeError`.
    NaN in a node's features propagates to every node of its row block (the attention-weighted sum multiplies
    it by an exact 0 for non-neighbours, and :math:`0 \cdot \text{NaN} = \text{NaN}`), so a NaN never becomes a
    plausible value.

    Args:
        h: :math:`(*, N, d)` projected node features (:math:`*` = optional head dimensions).
        adjacency_mask: :math:`(N, N)` (or broadcastable to :math:`(*, N, N)`) boolean mask, ``True`` where
            node :math:`i` attends to node :math:`j`; a non-boolean tensor is read as a weighted adjacency
            whose positive entries are edges (the official ``adj > 0``).
        a_src: :math:`(*, d)` first half of the attention vector (applied to the attending node :math:`i`).
        a_dst: :math:`(*, d)` second half (applied to the attended node :math:`j`).
        negative_slope: LeakyReLU slope (official 0.2).
        dropout: dropout probability on the attention coefficients.
        training: apply the dropout (pass ``module.training``).

    Returns:
        :math:`(*, N, d)` aggregated features :math:`h'`.

    Examples:
        >>> labels = torch.tensor([0, 0, 1])
        >>> mask = labels[:, None] == labels[None, :]
        >>> out = graph_attention(torch.eye(3), mask, torch.zeros(3), torch.zeros(3))
        >>> out  # with h = I the output is the attention matrix itself
        tensor([[0.5000, 0.5000, 0.0000],
                [0.5000, 0.5000, 0.0000],
                [0.0000, 0.0000, 1.0000]])
    """
    h = check_floating(check_shape(h, "h", "(*, N, d)"), "h")
    n, d = h.shape[-2], h.shape[-1]
    context = f"to match `h` of shape {tuple(h.shape)}"
    mask_shape = f"({n}, {n})" if isinstance(adjacency_mask, Tensor) and adjacency_mask.ndim <= 2 else f"(*, {n}, {n})"
    adjacency_mask = check_shape(adjacency_mask, "adjacency_mask", mask_shape, why=context)
    for name, vector in (("a_src", a_src), ("a_dst", a_dst)):
        check_floating(check_shape(vector, name, f"(*, {d})", why=context), name)
    check_probability(dropout, "dropout")
    if adjacency_mask.dtype != torch.bool:
        adjacency_mask = adjacency_mask > 0

    src = torch.matmul(h, a_src.unsqueeze(-1).to(h.dtype))  # (*, N, 1): a_src . h_i
    dst = torch.matmul(h, a_dst.unsqueeze(-1).to(h.dtype))  # (*, N, 1): a_dst . h_j
    acc = torch.promote_types(h.dtype, torch.float32)
    logits = F.leaky_relu(src.to(acc) + dst.to(acc).transpose(-1, -2), negative_slope)  # (*, N, N)
    logits = logits.masked_fill(~adjacency_mask, torch.finfo(acc).min)
    attention = F.dropout(torch.softmax(logits, dim=-1), dropout, training)
    return torch.matmul(attention.to(h.dtype), h)


class _GraphAttentionLayer(nn.Module):
    """``heads`` independent graph attention heads, stored stacked: ``W`` (heads, in, out), ``a`` (heads, 2 out, 1)."""

    def __init__(self, in_features: int, out_features: int, heads: int, dd: dict[str, Any]) -> None:
        super().__init__()
        self.in_features, self.out_features, self.heads = in_features, out_features, heads
        self.W = nn.Parameter(torch.empty(heads, in_features, out_features, **dd))
        self.a = nn.Parameter(torch.empty(heads, 2 * out_features, 1, **dd))

    def reset_parameters(self) -> None:
        # Per head, as the official per-layer init: xavier-uniform of W (in, out) and a (2 out, 1), gain 1.414.
        for i in range(self.heads):
            nn.init.xavier_uniform_(self.W[i], gain=_XAVIER_GAIN)
            nn.init.xavier_uniform_(self.a[i], gain=_XAVIER_GAIN)

    def forward(self, x: Tensor, mask: Tensor, negative_slope: float, dropout: float) -> Tensor:
        h = torch.matmul(x, self.W)  # (N, in) @ (L, in, d) -> (L, N, d)
        a = self.a.squeeze(-1)
        d = self.out_features
        return graph_attention(
            h, mask, a[:, :d], a[:, d:], negative_slope=negative_slope, dropout=dropout, training=self.training
        )

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, heads={self.heads}"


class CGSA(nn.Module):
    r"""Cross-modality Graph Structured Attention: a two-layer graph attention network over the batch.

    The nodes are the :math:`N` pooled features of a batch (both modalities); node :math:`i` is connected to
    node :math:`j` iff they have the same identity label (Eq. 6, self-loops included), so the graph is one
    clique per identity and no information crosses identities. :math:`L` heads of :func:`graph_attention`
    project the nodes with :math:`h^l(x) = x W^l` (:math:`C \to d`), aggregate them and are concatenated after
    an ELU (Eq. 8); a one-head output layer maps the :math:`Ld` features to the identity logits
    (:math:`Ld \to` ``num_classes``), and the result is a log-softmax over identities, the input of the
    NLL graph loss (Eq. 9, :func:`vireid_layers.losses.graph.graph_attention_loss`):

    .. math::

        x^g_i = \big\Vert_{l=1}^{L} \operatorname{ELU}\Big(\sum_{j:\,y_j = y_i} \alpha^l_{ij}\, h^l(\tilde x_j)\Big),
        \qquad
        o_i = \sum_{j:\,y_j = y_i} \alpha^{out}_{ij}\, h^{out}(\tilde x^g_j), \qquad
        \text{output}_i = \log\operatorname{softmax}\big(\operatorname{ELU}(o_i)\big)

    with :math:`\tilde{\cdot}` the dropout (:math:`p` = ``dropout``) applied to the node features and to
    the concatenated hidden features; the attention coefficients are dropped out with the same :math:`p`.

    **Official vs paper.** The official code (the defaults) uses :math:`d` = ``hidden=512`` and applies an
    ELU to the output layer before the log-softmax (``output_elu=True``). The paper states :math:`d = 256`
    and no activation after the output layer: ``CGSA(C, num_classes, hidden=256, output_elu=False)``. Both
    use :math:`L = 4` heads; the paper gives neither the LeakyReLU slope nor the dropout (official: 0.2 and
    0.2, the defaults here). The official training feeds the pre-BN
    average-pooled features of the whole batch, and uses the branch in training only (the graph needs the
    labels); it is computed in eval mode too (without dropout) if called.

    The :math:`L` heads are evaluated as one batched computation: their weights are stored stacked,
    ``attentions.W`` :math:`(L, C, d)` and ``attentions.a`` :math:`(L, 2d, 1)`, and the output layer as
    ``out_att.W`` :math:`(1, Ld, K)`, ``out_att.a`` :math:`(1, 2K, 1)` (:math:`K` = ``num_classes``). A state
    dict of the official layers (``attention_0.W`` … ``attention_{L-1}.a`` with ``W`` :math:`(C, d)` and ``a``
    :math:`(2d, 1)`, ``out_att.W`` :math:`(Ld, K)`, ``out_att.a`` :math:`(2K, 1)`) is converted on
    ``load_state_dict``, also when the module is nested in a larger model (the hook honours the prefix).
    Initialisation is the official one: xavier-uniform with gain 1.414, per head.

    An empty batch gives an empty :math:`(0, K)` output and a one-node batch a finite one. Integer
    ``features`` raise :class:`TypeError`, non-integer ``labels`` :class:`TypeError`. NaN in the features
    propagates to the output.

    Args:
        in_features: node feature size :math:`C` (2048, the pooled ResNet-50 feature).
        num_classes: number of training identities :math:`K` (395 for SYSU-MM01, 206 for RegDB).
        hidden: per-head feature size :math:`d` (official 512, paper 256).
        heads: number of heads :math:`L` (official and paper 4).
        dropout: dropout probability on the node features, on the concatenated hidden features and on every
            attention matrix (official 0.2).
        negative_slope: LeakyReLU slope of the attention logits (official 0.2).
        output_elu: apply an ELU to the output layer before the log-softmax (official ``True``, paper ``False``).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - ``features``: :math:`(N, C)`.
        - ``labels``: :math:`(N,)` integer identity labels (only their equality is used; any values).
        - Output: :math:`(N, K)` log-probabilities (float32 or wider, also under autocast).

    Examples:
        >>> cgsa = CGSA(32, num_classes=5, hidden=8)
        >>> labels = torch.tensor([0, 0, 3, 3, 0, 3])
        >>> log_probs = cgsa(torch.randn(6, 32), labels)
        >>> log_probs.shape
        torch.Size([6, 5])
        >>> torch.allclose(log_probs.exp().sum(1), torch.ones(6))
        True
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        hidden: int = 512,
        heads: int = 4,
        dropout: float = 0.2,
        negative_slope: float = 0.2,
        output_elu: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_features", in_features),
            ("num_classes", num_classes),
            ("hidden", hidden),
            ("heads", heads),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if not isinstance(output_elu, bool):
            raise TypeError(f"`output_elu` must be a bool, got {type(output_elu).__name__} {output_elu!r}")
        self.in_features, self.num_classes = in_features, num_classes
        self.hidden, self.heads = hidden, heads
        self.dropout = check_probability(dropout, "dropout")
        self.negative_slope = check_nonnegative(negative_slope, "negative_slope")
        self.output_elu = output_elu
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        self.attentions = _GraphAttentionLayer(in_features, hidden, heads, dd)
        self.out_att = _GraphAttentionLayer(heads * hidden, num_classes, 1, dd)
        self._register_load_state_dict_pre_hook(self._convert_official_state_dict)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: xavier-uniform (gain 1.414) of every ``W`` and ``a``, per head."""
        self.attentions.reset_parameters()
        self.out_att.reset_parameters()

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Graph-attend the batch within each identity and return per-node log-probabilities over identities."""
        features = check_shape(check_embeddings(features, "features"), "features", f"(N, {self.in_features})")
        n = features.shape[0]
        labels = check_labels(labels, n)
        mask = labels.unsqueeze(1) == labels.unsqueeze(0)  # (N, N), self-loops included
        x = F.dropout(features, self.dropout, self.training)
        hidden = F.elu(self.attentions(x, mask, self.negative_slope, self.dropout))  # (L, N, d)
        hidden = hidden.transpose(0, 1).reshape(n, self.heads * self.hidden)  # heads concatenated in order
        hidden = F.dropout(hidden, self.dropout, self.training)
        out = self.out_att(hidden, mask, self.negative_slope, self.dropout).squeeze(0)  # (N, K)
        if self.output_elu:
            out = F.elu(out)
        return F.log_softmax(out, dim=1, dtype=torch.promote_types(out.dtype, torch.float32))

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return (
            f"{self.in_features}, {self.num_classes}, hidden={self.hidden}, heads={self.heads}, "
            f"dropout={self.dropout}, negative_slope={self.negative_slope}, output_elu={self.output_elu}"
        )

    def _convert_official_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str, *args: Any) -> None:
        """Stack the official per-head ``attention_{i}.W/.a`` and add the head dim to ``out_att``, in place."""
        sd: dict[str, Tensor] = state_dict  # type: ignore[assignment]  # load_state_dict passes a mutable copy
        for name in ("W", "a"):
            keys = [f"{prefix}attention_{i}.{name}" for i in range(self.heads)]
            if all(key in sd for key in keys):
                sd[f"{prefix}attentions.{name}"] = torch.stack([sd.pop(key) for key in keys])
            key = f"{prefix}out_att.{name}"
            if key in sd and sd[key].ndim == 2:
                sd[key] = sd[key].unsqueeze(0)
