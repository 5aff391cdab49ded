r"""Embedding maps: a 2-D projection of features, coloured by identity, with one marker per modality.

The projection is t-SNE :cite:`vandermaaten2008tsne` from scikit-learn when it is installed, or PCA computed
here with a singular value decomposition. Both modalities are projected together, so a modality gap (the
visible and the infrared images of one person far apart) shows as two separate clouds of circles and
triangles, and its closing during training as circles and triangles of one colour coming together.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._drawing import (
    MODALITY_MARKERS,
    MODALITY_NAMES,
    check_features,
    check_modality_vector,
    check_vector,
    identity_colors,
    new_figure,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ProjectionMethod", "plot_embedding_map", "project_embeddings", "resolve_projection"]

ProjectionMethod = Literal["auto", "tsne", "pca"]
"""``"tsne"`` (scikit-learn), ``"pca"``, or ``"auto"``: t-SNE when scikit-learn is installed, else PCA."""

_METHODS = ("auto", "tsne", "pca")
_MIN_TSNE_POINTS = 5  # below this, t-SNE's perplexity has no meaningful value: PCA is used
_LABELS = {"tsne": "t-SNE", "pca": "PCA"}
_EXACT_SVD_SIZE = 512  # up to this many rows or columns, PCA takes the exact SVD; above, a randomized one
_OVERSAMPLING = 10  # extra dimensions of the randomized range finder
_POWER_ITERATIONS = 8


def resolve_projection(method: ProjectionMethod = "auto") -> Literal["tsne", "pca"]:
    """The projection ``method`` stands for: ``"auto"`` is ``"tsne"`` when scikit-learn is importable, else ``"pca"``.

    Raises:
        ValueError: an unknown method.
        ImportError: ``"tsne"`` without scikit-learn.

    Examples:
        >>> from vireid_layers.visualize import resolve_projection
        >>> resolve_projection("pca")
        'pca'
    """
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {list(_METHODS)}, got {method!r}")
    available = importlib.util.find_spec("sklearn") is not None
    if method == "auto":
        return "tsne" if available else "pca"
    if method == "tsne" and not available:
        raise ImportError("t-SNE needs scikit-learn: pip install 'vireid-layers[viz]' (or use method='pca')")
    return method  # type: ignore[return-value]


def _principal_axes(centred: Tensor) -> Tensor:
    """The leading right singular vectors of ``centred`` (at most two rows): exact SVD, or randomized when large."""
    n, d = centred.shape
    if min(n, d) <= _EXACT_SVD_SIZE:
        return torch.linalg.svd(centred, full_matrices=False).Vh[:2]
    # Randomized SVD (Halko et al.): a seeded Gaussian start, power iterations with re-orthonormalisation, and the
    # exact SVD of the small projection Q^T X.
    generator = torch.Generator(device=centred.device).manual_seed(0)
    width = min(2 + _OVERSAMPLING, d)
    basis = torch.linalg.qr(centred @ torch.randn(d, width, generator=generator, dtype=centred.dtype)).Q
    for _ in range(_POWER_ITERATIONS):
        basis = torch.linalg.qr(centred.T @ basis).Q
        basis = torch.linalg.qr(centred @ basis).Q
    return torch.linalg.svd(basis.T @ centred, full_matrices=False).Vh[:2]


def _pca(x: Tensor) -> Tensor:
    """The first two principal components of ``x`` (float64), each with a fixed sign; zeros where rank < 2."""
    centred = x - x.mean(dim=0, keepdim=True)
    axes = _principal_axes(centred)
    # Sign convention: the coordinate of largest magnitude of each principal axis is positive.
    pivot = axes.gather(1, axes.abs().argmax(dim=1, keepdim=True))
    axes = axes * torch.where(pivot < 0, -1.0, 1.0).to(axes.dtype)
    out = centred @ axes.T
    return F.pad(out, (0, 2 - out.shape[1]))  # fewer than two axes (N = 1 or D = 1): zero coordinates


def project_embeddings(
    features: Tensor,
    *,
    method: ProjectionMethod = "auto",
    normalize: bool = True,
    seed: int = 0,
    perplexity: float = 30.0,
) -> Tensor:
    r"""Project :math:`(N, D)` features to 2-D with t-SNE or PCA.

    With ``normalize`` each feature is first L2-normalised, the geometry of the cosine ranking every protocol
    uses. PCA projects the centred features :math:`\tilde X = X - \bar x` on their first two right singular
    vectors,

    .. math:: Y = \tilde X V_{:, :2}, \qquad \tilde X = U \Sigma V^\top,

    each axis signed so that its largest coordinate is positive (a deterministic result). When both :math:`N`
    and :math:`D` exceed 512, :math:`V_{:, :2}` comes from a randomized SVD :cite:`halko2011randomized` (a
    seeded Gaussian sketch of 12 columns, 8 power iterations) in a fraction of the time of a full SVD; it is
    exact to rounding when the two leading singular values stand out from the 13th, and otherwise returns
    another orthonormal pair of nearly equal variance, an equally faithful projection. t-SNE is
    :class:`sklearn.manifold.TSNE` (PCA initialisation, ``random_state=seed``) with the perplexity capped at
    :math:`(N - 1) / 3`; with fewer than 5 points PCA is used instead.

    Args:
        features: :math:`(N, D)` finite features.
        method: ``"auto"``, ``"tsne"`` or ``"pca"`` (see :func:`resolve_projection`).
        normalize: L2-normalise the features first.
        seed: random state of t-SNE.
        perplexity: t-SNE perplexity.

    Returns:
        :math:`(N, 2)` float32 coordinates on the CPU.

    Raises:
        TypeError, ValueError: bad features (shape, dtype, NaN or inf) or arguments.

    Examples:
        >>> from vireid_layers.visualize import project_embeddings
        >>> x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
        >>> project_embeddings(x, method="pca").shape
        torch.Size([4, 2])
    """
    x = check_features(features)
    resolved = resolve_projection(method)
    if not isinstance(normalize, bool):
        raise TypeError(f"`normalize` must be a bool, got {type(normalize).__name__} {normalize!r}")
    if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float)) or not perplexity > 0:
        raise ValueError(f"`perplexity` must be a number > 0, got {perplexity!r}")
    if x.shape[0] == 0:
        return torch.zeros(0, 2)
    if normalize:
        x = F.normalize(x, dim=1)
    if resolved == "pca" or x.shape[0] < _MIN_TSNE_POINTS:
        return _pca(x).float()
    from sklearn.manifold import TSNE

    tsne = TSNE(
        n_components=2,
        perplexity=min(float(perplexity), (x.shape[0] - 1) / 3),
        init="pca",
        learning_rate="auto",
        random_state=seed,
    )
    return torch.from_numpy(np.asarray(tsne.fit_transform(x.numpy()), dtype=np.float32))


def plot_embedding_map(
    features: Tensor,
    identities: Tensor,
    modalities: Tensor,
    *,
    method: ProjectionMethod = "auto",
    normalize: bool = True,
    seed: int = 0,
    perplexity: float = 30.0,
    title: str | None = None,
    size: float = 5.0,
) -> Figure:
    """Scatter the 2-D projection of features: colour = identity, circle = visible, triangle = infrared.

    Both modalities are projected together (:func:`project_embeddings`), so the distance between an identity's
    circles and triangles shows the modality gap. One scatter (a
    :class:`~matplotlib.collections.PathCollection`) is drawn per modality present, with one point per sample,
    visible first; the legend names the markers.

    Args:
        features: :math:`(N, D)` features, e.g. the query and gallery features of a trial.
        identities: :math:`(N,)` identities (the colours; best with at most 20 distinct identities).
        modalities: :math:`(N,)` 0 (visible) / 1 (infrared) (the markers).
        method: ``"auto"``, ``"tsne"`` or ``"pca"``.
        normalize: L2-normalise the features first.
        seed: random state of t-SNE.
        perplexity: t-SNE perplexity.
        title: axes title; default names the projection and the counts.
        size: figure width and height in inches.

    Returns:
        The figure, with one axes.

    Examples:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from vireid_layers.visualize import plot_embedding_map
        >>> features = torch.randn(12, 8)
        >>> ids, modalities = torch.arange(3).repeat(4), torch.tensor([0, 1]).repeat_interleave(6)
        >>> fig = plot_embedding_map(features, ids, modalities, method="pca")
        >>> [len(c.get_offsets()) for c in fig.axes[0].collections]
        [6, 6]
    """
    x = check_features(features)
    ids = check_vector(identities, x.shape[0], "identities")
    mods = check_modality_vector(modalities, x.shape[0])
    resolved = resolve_projection(method)
    points = project_embeddings(x, method=resolved, normalize=normalize, seed=seed, perplexity=perplexity).numpy()
    if resolved == "tsne" and x.shape[0] < _MIN_TSNE_POINTS:
        resolved = "pca"
    palette, index = identity_colors(ids)
    fig = new_figure(size, size)
    ax = fig.add_subplot()
    for modality in (0, 1):
        rows = (mods == modality).numpy()
        if not rows.any():
            continue
        ax.scatter(
            points[rows, 0],
            points[rows, 1],
            c=palette[index.numpy()[rows]],
            marker=MODALITY_MARKERS[modality],
            s=28,
            edgecolors="black",
            linewidths=0.3,
            label=MODALITY_NAMES[modality],
        )
    legend = ax.legend(loc="best", fontsize=8, markerscale=1.2)
    for handle in legend.legend_handles:  # the legend explains the markers, not the colours
        handle.set_facecolor("lightgray")
    counts = f"{int(ids.unique().numel())} identities, {x.shape[0]} images"
    ax.set_title(title if title is not None else f"{_LABELS[resolved]} of the embeddings ({counts})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig
