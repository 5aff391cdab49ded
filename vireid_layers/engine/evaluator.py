"""The evaluation callable of a training run: ``model -> ProtocolResult`` on a dataset's test split."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .._validation import check_int
from ..data.datasets.folder import ImageDataset
from ..data.records import ImageRecord, VIReIDDataset
from ..evaluation.extraction import FlipMode, extract_features
from ..evaluation.protocols import EvaluationProtocol, ProtocolResult, evaluate_protocol, negative_cosine_similarity
from ..modality import Modality

__all__ = ["ProtocolEvaluator", "default_embed"]

EmbedFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def default_embed(model: nn.Module, images: Tensor, modalities: Tensor) -> Tensor:
    """``model.embed(images, modalities)`` when the model has an ``embed`` method, else ``model(images, modalities)``.

    Examples:
        >>> class Net(nn.Module):
        ...     def forward(self, images, modalities):
        ...         return images.flatten(1)
        ...
        ...     def embed(self, images, modalities):
        ...         return 2 * images.flatten(1)
        >>> default_embed(Net(), torch.ones(1, 1, 1, 2), torch.tensor([0]))
        tensor([[2., 2.]])
    """
    embed = getattr(model, "embed", None)
    if callable(embed):
        return embed(images, modalities)
    return model(images, modalities)


@dataclass
class ProtocolEvaluator:
    r"""Evaluate a model with a protocol on a dataset: ``evaluator(model) -> ProtocolResult``.

    The evaluation a training run needs, in one object that :class:`~vireid_layers.engine.Trainer` accepts as
    ``evaluate`` or ``test``. A call builds a loader over each side's records (``ImageDataset(records,
    transform)``), embeds every image through the stem of its side
    (:func:`~vireid_layers.evaluation.extract_features`, which L2-normalises each feature and puts the model in
    eval mode), and runs the protocol (:func:`~vireid_layers.evaluation.evaluate_protocol`: each image used by
    any trial is embedded once, each trial ranks its gallery by ``distance``).

    ``embed(model, images, modalities)`` gives the features; anything beyond two dimensions is flattened, so
    DEEN's official :math:`(N, 6, D)` embedding ranks by the sum of its six cosine similarities (the
    flattened rows are re-normalised as a whole, which scales every similarity by the same :math:`1/6`).

    Attributes:
        protocol: the protocol (:func:`~vireid_layers.evaluation.protocol_for_dataset` builds the usual one of
            a dataset).
        dataset: the dataset whose ``test`` records are evaluated.
        transform: the test transform applied to each PIL image
            (:func:`~vireid_layers.data.build_test_transform`).
        embed: ``(model, images, modalities) -> (N, ...)`` features; default :func:`default_embed`.
        batch_size: images per forward pass.
        num_workers: loader worker processes.
        device: where the model runs; default the device of its parameters.
        flip: ``False``, ``"sum"`` (DEEN) or ``"mean"`` (CAJ) horizontal-flip test-time augmentation, see
            :func:`~vireid_layers.evaluation.extract_features`.
        trials: the trials to run; default all of the protocol's.
        normalize: L2-normalise every feature (after flip averaging with ``"mean"``, before the sum with
            ``"sum"``); ``False`` keeps ``embed``'s features as they are, which with ``flip="sum"`` and
            :func:`~vireid_layers.evaluation.negative_dot_product` is DEEN's ``test.py`` ranking exactly.
        distance: ``(query, gallery) -> (Q, G)`` distances of the features; default
            :func:`~vireid_layers.evaluation.negative_cosine_similarity`
            (:func:`~vireid_layers.evaluation.k_reciprocal_rerank` re-ranks).

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> from torchvision.transforms.functional import pil_to_tensor
        >>> from vireid_layers.data import ImageRecord, VIReIDDataset
        >>> from vireid_layers.evaluation import RegDBProtocol
        >>> class Colour(nn.Module):  # embeds an image by its mean colour
        ...     def forward(self, images, modalities):
        ...         return images.mean(dim=(2, 3))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     records = []
        ...     for identity, colour in enumerate(["red", "green", "blue"]):
        ...         for m in Modality:
        ...             path = Path(tmp) / f"{identity}-{m.name}.png"
        ...             Image.new("RGB", (4, 8), colour).save(path)
        ...             records.append(ImageRecord(path, identity, 1 + m, m))
        ...     dataset = VIReIDDataset("toy", Path(tmp), (), tuple(records))
        ...     to_float = lambda image: pil_to_tensor(image).float()
        ...     result = ProtocolEvaluator(RegDBProtocol("v2i"), dataset, to_float)(Colour())
        >>> result.mean["rank1"], result.mean["mAP"]
        (1.0, 1.0)
    """

    protocol: EvaluationProtocol
    dataset: VIReIDDataset
    transform: Callable[[Any], Tensor] | None
    embed: EmbedFn = default_embed
    batch_size: int = 128
    num_workers: int = 0
    device: torch.device | str | None = None
    flip: FlipMode | Literal[False] = False
    trials: Sequence[int] | None = None
    normalize: bool = True
    distance: Callable[[Tensor, Tensor], Tensor] = negative_cosine_similarity

    def __post_init__(self) -> None:
        if not isinstance(self.protocol, EvaluationProtocol):
            raise TypeError(f"`protocol` must be an EvaluationProtocol, got {type(self.protocol).__name__}")
        if not isinstance(self.dataset, VIReIDDataset):
            raise TypeError(f"`dataset` must be a VIReIDDataset, got {type(self.dataset).__name__}")
        for name in ("embed", "distance"):
            if not callable(getattr(self, name)):
                raise TypeError(f"`{name}` must be callable, got {getattr(self, name)!r}")
        check_int(self.batch_size, "batch_size")
        check_int(self.num_workers, "num_workers", minimum=0)
        if self.flip not in (False, "sum", "mean"):
            raise ValueError(f"`flip` must be False, 'sum' or 'mean', got {self.flip!r}")

    def extract(self, model: nn.Module, records: list[ImageRecord], modality: Modality) -> Tensor:
        """Features of ``records`` through the stem of ``modality``: :math:`(N, D)` on the CPU."""
        loader = DataLoader(
            ImageDataset(records, self.transform),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=torch.device(self.device).type == "cuda" if self.device is not None else False,
        )
        embed = self.embed

        def forward(net: nn.Module, images: Tensor, modalities: Tensor) -> Tensor:
            return embed(net, images, modalities).flatten(1)

        features, _, _ = extract_features(
            model, loader, modality, forward=forward, device=self.device, flip=self.flip, normalize=self.normalize
        )
        return features

    def __call__(self, model: nn.Module) -> ProtocolResult:
        """Embed the test images with ``model`` and return the protocol's per-trial metrics and mean ± std."""
        return evaluate_protocol(
            self.protocol,
            self.dataset,
            lambda records, modality: self.extract(model, records, modality),
            trials=self.trials,
            distance=self.distance,
        )
