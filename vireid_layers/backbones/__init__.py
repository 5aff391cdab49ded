"""Backbones: the two-stream (modality-specific stem, shared stages) network built on timm."""

from .two_stream import TwoStreamBackbone, build_two_stream_backbone

__all__ = ["TwoStreamBackbone", "build_two_stream_backbone"]
