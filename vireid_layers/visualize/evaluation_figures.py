"""Every figure of an evaluation, written to a run directory in one call (the evaluation script's flags)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.transforms.functional import pil_to_tensor

from ..data.datasets.folder import load_image
from ..data.records import ImageRecord
from ..evaluation.evaluator import ProtocolEvaluator
from ._drawing import check_vector, spread
from .activation_map import ActivationMethod, activation_maps, plot_activation_maps
from .distance_histogram import plot_distance_histograms
from .embedding_map import _LABELS, ProjectionMethod, plot_embedding_map, resolve_projection
from .ranked_list import _trial_ranked_lists

__all__ = ["FIGURES", "save_evaluation_figures"]

#: The figures :func:`save_evaluation_figures` can write, by name (also the PNG file names).
FIGURES: tuple[str, ...] = ("ranked_lists", "embedding_map", "distance_histograms", "activation_maps")


def _device(evaluator: ProtocolEvaluator, model: nn.Module) -> torch.device:
    if evaluator.device is not None:
        return torch.device(evaluator.device)
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _columns(records: list[ImageRecord], field: str) -> Tensor:
    return torch.tensor([int(getattr(r, field)) for r in records], dtype=torch.long)


def _pairs(
    query_records: list[ImageRecord], gallery_records: list[ImageRecord], count: int
) -> list[tuple[ImageRecord, ImageRecord]]:
    """Up to ``count`` identities seen on both sides (spread over them): the first query and gallery image of each."""
    first_query: dict[int, ImageRecord] = {}
    first_gallery: dict[int, ImageRecord] = {}
    for record in query_records:
        first_query.setdefault(record.identity, record)
    for record in gallery_records:
        first_gallery.setdefault(record.identity, record)
    common = sorted(set(first_query) & set(first_gallery))
    if not common:
        return []
    return [(first_query[common[i]], first_gallery[common[i]]) for i in spread(len(common), count, "count")]


def _activation_figure(
    evaluator: ProtocolEvaluator,
    model: nn.Module,
    pairs: list[tuple[ImageRecord, ImageRecord]],
    method: ActivationMethod,
    device: torch.device,
    title: str,
) -> object:
    """Maps of the query and gallery image of each pair; Grad-CAM targets each image's cross-modality partner."""
    records = [q for q, _ in pairs] + [g for _, g in pairs]
    pictures = [load_image(r.path) for r in records]
    transform = evaluator.transform
    inputs = torch.stack([transform(p) if transform is not None else pil_to_tensor(p).float() / 255 for p in pictures])
    height, width = inputs.shape[-2:]
    display = torch.stack([pil_to_tensor(p.resize((width, height))) for p in pictures]).float() / 255
    modalities = torch.tensor([int(r.modality) for r in records], dtype=torch.long)
    inputs, modalities = inputs.to(device), modalities.to(device)

    def embed(net: nn.Module, images: Tensor, mods: Tensor) -> Tensor:
        return evaluator.embed(net, images, mods).flatten(1)

    targets = None
    if method == "gradcam":
        training = [(m, m.training) for m in model.modules()]
        try:
            model.eval()
            with torch.no_grad():
                own = embed(model, inputs, modalities)
        finally:
            for module, flag in training:
                module.training = flag
        n = len(pairs)
        targets = torch.cat([own[n:], own[:n]])  # each image's partner: the same person in the other modality
    maps = activation_maps(model, inputs, modalities, method=method, targets=targets, embed=embed)
    labels = [f"id {r.identity}" for r in records]
    return plot_activation_maps(display, maps.cpu(), modalities.cpu(), labels=labels, title=title)


def save_evaluation_figures(
    evaluator: ProtocolEvaluator,
    model: nn.Module,
    run_dir: str | os.PathLike[str],
    *,
    figures: Iterable[str] = FIGURES,
    trial: int = 0,
    k: int = 10,
    queries: int = 6,
    max_identities: int = 20,
    max_points: int = 2000,
    projection: ProjectionMethod = "auto",
    activation_method: ActivationMethod = "gradcam",
    activation_identities: int = 6,
    label: str = "",
    prefix: str = "",
    subdir: str = "figures",
    dpi: int = 100,
    seed: int = 0,
) -> dict[str, Path]:
    """Render the evaluation figures of a model and write them as PNGs to ``run_dir/subdir``.

    The features are those the evaluation ranks: ``evaluator.extract`` (its transform, embedding, flip and
    normalisation, through the stem of each side) of trial ``trial``'s queries and gallery
    (``evaluator.protocol.select(evaluator.dataset, trial)``), and ``evaluator.distance`` ranks them.

    * ``ranked_lists.png``: :func:`~vireid_layers.visualize.plot_ranked_lists` of ``queries`` queries spread
      over the trial, top ``k``, with the protocol's removal rule;
    * ``embedding_map.png``: :func:`~vireid_layers.visualize.plot_embedding_map` of the query and gallery
      features of up to ``max_identities`` identities (spread over the sorted ids, so colours stay apart);
    * ``distance_histograms.png``: :func:`~vireid_layers.visualize.plot_distance_histograms` of the query and
      gallery features (at most ``max_points`` of each side, a seeded random subset, since pairs grow as
      :math:`N^2`);
    * ``activation_maps.png``: :func:`~vireid_layers.visualize.plot_activation_maps` of one query and one gallery
      image of ``activation_identities`` identities, visible row above infrared row; with Grad-CAM each image's
      target is its partner's embedding, so the map shows what makes the two modalities match.

    Args:
        evaluator: the evaluation of the run (protocol, dataset, transform, embedding, distance, device).
        model: the network.
        run_dir: the run directory; the PNGs go to ``run_dir/subdir`` (created).
        figures: names out of :data:`FIGURES`.
        trial: the protocol trial (gallery draw).
        k: gallery images per ranked list.
        queries: ranked lists drawn.
        max_identities: identities in the embedding map.
        max_points: images per side in the distance histograms.
        projection: ``"auto"``, ``"tsne"`` or ``"pca"`` for the embedding map.
        activation_method: ``"gradcam"`` or ``"activation"``.
        activation_identities: identities (columns) of the activation maps.
        label: prefixed to every figure's title (e.g. ``"trained"``).
        prefix: prefixed to every file name (e.g. ``"epoch10_"``).
        subdir: folder inside ``run_dir``.
        dpi: resolution of the PNGs.
        seed: seed of the t-SNE and of the histogram subset.

    Returns:
        ``{name: path}`` of the files written, in the order of ``figures``.

    Raises:
        ValueError: an unknown figure name or bad argument.

    Examples:
        A call as the evaluation script makes it, after ``result = evaluator(model)``::

            save_evaluation_figures(evaluator, model, Path(checkpoint).parent, figures=["ranked_lists"])
    """
    if not isinstance(evaluator, ProtocolEvaluator):
        raise TypeError(f"`evaluator` must be a ProtocolEvaluator, got {type(evaluator).__name__}")
    names = list(dict.fromkeys(figures))
    unknown = [n for n in names if n not in FIGURES]
    if unknown or not names:
        raise ValueError(f"`figures` must hold names out of {list(FIGURES)}, got {list(figures)!r}")
    protocol, dataset = evaluator.protocol, evaluator.dataset
    out_dir = Path(run_dir) / subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    device = _device(evaluator, model)
    queries_c, gallery_c = protocol.query_candidates(dataset), protocol.gallery_candidates(dataset)
    selection = protocol.select(dataset, trial)
    q_records = [queries_c[i] for i in selection.query]
    g_records = [gallery_c[i] for i in selection.gallery]
    head = f"{label}: " if label else ""

    features: dict[str, Tensor] = {}
    if any(n in names for n in FIGURES[:3]):
        features["query"] = evaluator.extract(model, q_records, protocol.query_modality)
        features["gallery"] = evaluator.extract(model, g_records, protocol.gallery_modality)
    generator = torch.Generator().manual_seed(seed)

    written: dict[str, Path] = {}
    for name in names:
        if name == "ranked_lists":
            distances = evaluator.distance(features["query"], features["gallery"])
            title = f"{head}{protocol.name}, trial {trial}"
            fig = _trial_ranked_lists(protocol, q_records, g_records, distances, k=k, queries=queries, title=title)
        elif name in ("embedding_map", "distance_histograms"):
            records = q_records + g_records
            x = torch.cat([features["query"], features["gallery"]])
            ids, mods = _columns(records, "identity"), _columns(records, "modality")
            if name == "embedding_map":
                unique = ids.unique()
                keep = unique[spread(unique.numel(), max_identities, "max_identities")]
                rows = torch.isin(ids, keep)
                method = resolve_projection(projection)
                title = f"{head}{_LABELS[method]}, {_counts(ids, rows)}"
                fig = plot_embedding_map(x[rows], ids[rows], mods[rows], method=method, seed=seed, title=title)
            else:
                rows = _subset(len(q_records), len(g_records), max_points, generator)
                fig = plot_distance_histograms(
                    x[rows], ids[rows], mods[rows], title=f"{head}pair distances of {rows.numel()} test images"
                )
        else:
            pairs = _pairs(q_records, g_records, activation_identities)
            if not pairs:
                continue  # no identity on both sides of the trial: nothing to compare
            kind = "Grad-CAM of the cross-modality match" if activation_method == "gradcam" else "activation maps"
            fig = _activation_figure(evaluator, model, pairs, activation_method, device, f"{head}{kind}")
        path = out_dir / f"{prefix}{name}.png"
        fig.savefig(path, dpi=dpi)  # type: ignore[attr-defined]
        written[name] = path
    return written


def _counts(ids: Tensor, rows: Tensor) -> str:
    return f"{int(ids[rows].unique().numel())} identities, {int(rows.sum())} query + gallery images"


def _subset(num_query: int, num_gallery: int, limit: int, generator: torch.Generator) -> Tensor:
    """Row positions: at most ``limit`` queries and ``limit`` gallery images (seeded random when more)."""
    limit = int(check_vector([limit], 1, "max_points")[0])
    if limit < 2:
        raise ValueError(f"`max_points` must be >= 2, got {limit}")
    parts = []
    for offset, count in ((0, num_query), (num_query, num_gallery)):
        if count <= limit:
            parts.append(torch.arange(offset, offset + count))
        else:
            parts.append(offset + torch.randperm(count, generator=generator)[:limit].sort().values)
    return torch.cat(parts)
