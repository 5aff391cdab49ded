r"""Distance histograms: intra- vs inter-identity pair distances, for same- and cross-modality pairs.

A model separates identities when the intra-identity distances sit left of the inter-identity ones; the
cross-modality panel shows whether it still does when the two images come from different modalities, which
is the whole difficulty of visible-infrared re-identification.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..distances import pairwise_euclidean
from ._drawing import (
    MATCH_COLOR,
    NON_MATCH_COLOR,
    check_features,
    check_modality_vector,
    check_vector,
    new_figure,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PairDistances", "PairMetric", "pair_distances", "plot_distance_histograms"]

PairMetric = Literal["cosine", "euclidean"]
"""``"cosine"``: :math:`1 - \\cos(a, b)`; ``"euclidean"``: :math:`\\|a - b\\|`."""


class PairDistances(NamedTuple):
    """The distances of every unordered pair of samples, in four groups.

    Attributes:
        same_modality_intra: pairs of one identity and one modality.
        same_modality_inter: pairs of two identities, one modality.
        cross_modality_intra: pairs of one identity, one visible and one infrared image.
        cross_modality_inter: pairs of two identities, one visible and one infrared image.
    """

    same_modality_intra: Tensor
    same_modality_inter: Tensor
    cross_modality_intra: Tensor
    cross_modality_inter: Tensor


def pair_distances(
    features: Tensor,
    identities: Tensor,
    modalities: Tensor,
    *,
    metric: PairMetric = "cosine",
    normalize: bool = True,
) -> PairDistances:
    r"""Distances of all :math:`N(N-1)/2` unordered pairs, split by identity and by modality.

    .. math::

        d_{\cos}(a, b) = 1 - \frac{a^\top b}{\|a\|\,\|b\|}, \qquad d_{\mathrm{euc}}(a, b) = \|a - b\|

    computed in float32, float64 inputs in float64 (the Euclidean one through
    :func:`~vireid_layers.distances.pairwise_euclidean`, after
    L2 normalisation when ``normalize``). Pair :math:`(i, j)`, :math:`i < j`, is *intra* when
    :math:`y_i = y_j` and *cross-modality* when :math:`m_i \ne m_j`. One :math:`N \times N` matrix is built
    (no loop); its memory is :math:`O(N^2)`, so subsample large test sets first.

    Args:
        features: :math:`(N, D)` finite features.
        identities: :math:`(N,)` identities.
        modalities: :math:`(N,)` 0 (visible) / 1 (infrared).
        metric: ``"cosine"`` or ``"euclidean"``.
        normalize: L2-normalise the features before the Euclidean distance (the cosine one is scale-free).

    Returns:
        :class:`PairDistances`, each a 1-D tensor in row-major pair order (possibly empty).

    Examples:
        >>> from vireid_layers.visualize import pair_distances
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> d = pair_distances(x, torch.tensor([5, 5, 6]), torch.tensor([0, 1, 1]))
        >>> d.cross_modality_intra.tolist(), d.cross_modality_inter.tolist(), d.same_modality_inter.tolist()
        ([0.0], [1.0], [1.0])
    """
    x = check_features(features)
    x = x.to(torch.promote_types(features.dtype, torch.float32))  # float32 (float64 inputs stay float64)
    n = x.shape[0]
    ids = check_vector(identities, n, "identities")
    mods = check_modality_vector(modalities, n)
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"`metric` must be 'cosine' or 'euclidean', got {metric!r}")
    if not isinstance(normalize, bool):
        raise TypeError(f"`normalize` must be a bool, got {type(normalize).__name__} {normalize!r}")
    if metric == "cosine":
        with torch.autocast(device_type=x.device.type, enabled=False):  # fp32 even under a bf16 autocast
            unit = F.normalize(x, dim=1)
            d = 1.0 - unit @ unit.T
    else:
        d = pairwise_euclidean(F.normalize(x, dim=1) if normalize else x)
    upper = torch.ones(n, n, dtype=torch.bool).triu(diagonal=1)
    same_id = ids.unsqueeze(0) == ids.unsqueeze(1)
    same_mod = mods.unsqueeze(0) == mods.unsqueeze(1)
    return PairDistances(
        d[upper & same_mod & same_id],
        d[upper & same_mod & ~same_id],
        d[upper & ~same_mod & same_id],
        d[upper & ~same_mod & ~same_id],
    )


def plot_distance_histograms(
    features: Tensor,
    identities: Tensor,
    modalities: Tensor,
    *,
    bins: int = 40,
    metric: PairMetric = "cosine",
    normalize: bool = True,
    title: str | None = None,
) -> Figure:
    """Histograms of intra- and inter-identity pair distances, one panel for same- and one for cross-modality pairs.

    Both panels share the bin edges (``bins`` equal bins over the range of all pair distances). Each group is
    drawn as a filled step histogram (a :class:`~matplotlib.patches.StepPatch`) normalised to unit area, since
    inter-identity pairs far outnumber intra-identity ones; the legend gives every group's pair count and mean,
    and a dashed vertical line marks the mean. An empty group is drawn as zeros.

    Args:
        features: :math:`(N, D)` features.
        identities: :math:`(N,)` identities.
        modalities: :math:`(N,)` 0 (visible) / 1 (infrared).
        bins: number of bins.
        metric: ``"cosine"`` or ``"euclidean"`` (see :func:`pair_distances`).
        normalize: L2-normalise before the Euclidean distance.
        title: figure title.

    Returns:
        The figure with two axes: same-modality pairs, cross-modality pairs.

    Examples:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from vireid_layers.visualize import plot_distance_histograms
        >>> features = torch.randn(16, 8)
        >>> ids, modalities = torch.arange(4).repeat(4), torch.tensor([0, 1]).repeat(8)
        >>> fig = plot_distance_histograms(features, ids, modalities, bins=10)
        >>> [ax.get_title() for ax in fig.axes]
        ['same-modality pairs', 'cross-modality pairs']
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"`bins` must be an int >= 1, got {bins!r}")
    groups = pair_distances(features, identities, modalities, metric=metric, normalize=normalize)
    groups = PairDistances(*(g.double() for g in groups))
    everything = torch.cat(list(groups))
    if everything.numel() == 0:
        low, high = 0.0, 1.0
    else:
        low, high = float(everything.min()), float(everything.max())
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    width = (high - low) / bins
    fig = new_figure(9.0, 3.4)
    axes = fig.subplots(1, 2, sharex=True)
    panels = (
        ("same-modality pairs", groups.same_modality_intra, groups.same_modality_inter),
        ("cross-modality pairs", groups.cross_modality_intra, groups.cross_modality_inter),
    )
    for ax, (name, intra, inter) in zip(axes, panels, strict=True):
        groups_of_panel = (("intra-identity", intra, MATCH_COLOR), ("inter-identity", inter, NON_MATCH_COLOR))
        for label, values, color in groups_of_panel:
            counts = torch.histogram(values, bins=edges).hist
            density = counts / (max(values.numel(), 1) * width)
            mean = f", mean {float(values.mean()):.3f}" if values.numel() else ""
            ax.stairs(
                density.numpy(),
                edges.numpy(),
                fill=True,
                alpha=0.45,
                color=color,
                label=f"{label} (n={values.numel()}{mean})",
            )
            if values.numel():
                ax.axvline(float(values.mean()), color=color, linestyle="--", linewidth=1.0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"{metric} distance", fontsize=8)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("density", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
