"""Losses of the VI-ReID methods: one concept per file, each a function plus a module."""

from .center_cluster import CenterClusterAnchors, CenterClusterLoss, center_cluster_loss
from .cmcc import CMCCLoss, cmcc_loss
from .cpm import CPMForm, CPMLoss, cpm_loss
from .graph import DynamicDualAggregation, GraphAttentionLoss, dynamic_aggregation_weight, graph_attention_loss
from .modality_learning import (
    ModalityClassifiers,
    ModalityLearningOutput,
    MutualMeanDirection,
    MutualMeanLoss,
    mean_classifier_momentum,
    mutual_mean_loss,
)
from .orthogonal import OrthogonalLoss, OrthogonalNormalization, orthogonal_loss
from .pef import PEFBlockOutput, PEFEntry, PEFLoss
from .separation import SeparationLoss, separation_loss
from .triplet import HardTripletLoss, hard_triplet_loss
from .wrt import WRTForm, WRTLoss, wrt_loss

__all__ = [
    "CMCCLoss",
    "CPMForm",
    "CPMLoss",
    "CenterClusterAnchors",
    "CenterClusterLoss",
    "DynamicDualAggregation",
    "GraphAttentionLoss",
    "HardTripletLoss",
    "ModalityClassifiers",
    "ModalityLearningOutput",
    "MutualMeanDirection",
    "MutualMeanLoss",
    "OrthogonalLoss",
    "OrthogonalNormalization",
    "PEFBlockOutput",
    "PEFEntry",
    "PEFLoss",
    "SeparationLoss",
    "WRTForm",
    "WRTLoss",
    "center_cluster_loss",
    "cmcc_loss",
    "cpm_loss",
    "dynamic_aggregation_weight",
    "graph_attention_loss",
    "hard_triplet_loss",
    "mean_classifier_momentum",
    "mutual_mean_loss",
    "orthogonal_loss",
    "separation_loss",
    "wrt_loss",
]
