"""Figures of a visible-infrared re-identification model: ranked lists, embedding maps, distances, activations.

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` (created outside ``pyplot``; save it with
``fig.savefig``); :func:`save_evaluation_figures` writes them all for a model and its evaluation into a run
directory. matplotlib is an optional dependency, imported only when a figure is drawn:
``pip install 'vireid-layers[viz]'`` (which also brings scikit-learn for t-SNE). The computations behind the
figures (:func:`rank_gallery`, :func:`project_embeddings`, :func:`pair_distances`, :func:`activation_maps`)
need only torch.
"""

from ._drawing import MATCH_COLOR, MODALITY_MARKERS, NON_MATCH_COLOR, QUERY_COLOR, ImageLike
from .activation_map import ActivationMethod, activation_maps, default_activation_layer, plot_activation_maps
from .distance_histogram import PairDistances, PairMetric, pair_distances, plot_distance_histograms
from .embedding_map import ProjectionMethod, plot_embedding_map, project_embeddings, resolve_projection
from .evaluation_figures import FIGURES, save_evaluation_figures
from .ranked_list import RankedLists, plot_protocol_ranked_lists, plot_ranked_lists, rank_gallery

__all__ = [
    "ActivationMethod",
    "FIGURES",
    "ImageLike",
    "MATCH_COLOR",
    "MODALITY_MARKERS",
    "NON_MATCH_COLOR",
    "PairDistances",
    "PairMetric",
    "ProjectionMethod",
    "QUERY_COLOR",
    "RankedLists",
    "activation_maps",
    "default_activation_layer",
    "pair_distances",
    "plot_activation_maps",
    "plot_distance_histograms",
    "plot_embedding_map",
    "plot_protocol_ranked_lists",
    "plot_ranked_lists",
    "project_embeddings",
    "rank_gallery",
    "resolve_projection",
    "save_evaluation_figures",
]
