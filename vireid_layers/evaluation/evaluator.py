"""The evaluation of a model on a dataset's test split: ``ProtocolEvaluator(model) -> ProtocolResult``.

:class:`ProtocolEvaluator` embeds the test images and runs a protocol. Its :meth:`~ProtocolEvaluator.report`
returns the same result as a :class:`ProtocolReport`, the object a training run logs: the named numbers
(:meth:`~ProtocolReport.to_metrics`), the results table, the JSON summary and the CMC plot, which is the
interface :class:`~vireid_layers.engine.Trainer` reads from any evaluation result (it knows nothing of CMC
curves or re-identification).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .._validation import check_int
from ..data import ImageDataset, ImageRecord, VIReIDDataset
from ..modality import Modality
from .extraction import FlipMode, extract_features
from .protocols import EvaluationProtocol, ProtocolResult, evaluate_protocol, negative_cosine_similarity
from .protocols.settings import check_caller_settings, rerank_parameters

__all__ = ["ProtocolEvaluator", "ProtocolReport", "default_embed"]

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

    The evaluation a training run needs, in one object: its bound method :meth:`report` is what
    :class:`~vireid_layers.engine.Trainer` takes as ``evaluate`` or ``test``. A call builds a loader over each
    side's records (``ImageDataset(records, transform)``), embeds every image through the stem of its side
    (:func:`~vireid_layers.evaluation.extract_features`, which L2-normalises each feature and puts the model in
    eval mode), and runs the protocol (:func:`~vireid_layers.evaluation.evaluate_protocol`: each image used by
    any trial is embedded once, each trial ranks its gallery by ``distance``).

    The result states how it was obtained (:attr:`~vireid_layers.evaluation.ProtocolResult.settings`): the
    protocol's own settings, plus ``feature``, ``flip`` and ``selection`` from this object. A test-time option
    keeps its plain row beside it: with ``rerank`` the plain ranking of the same features, with ``flip`` and
    ``plain_row`` a second extraction without flip (:meth:`~vireid_layers.evaluation.ProtocolResult.with_baseline`),
    so the table prints the plain row(s) above the modified one (with both options, all four rows).

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
            :func:`~vireid_layers.evaluation.negative_cosine_similarity`.
        rerank: ``None`` / ``False`` (off), ``True`` (k-reciprocal re-ranking with the official ``k1=20, k2=6,
            lambda_value=0.3``) or a mapping overriding some of ``k1``, ``k2``, ``lambda_value``: each trial is
            ranked by ``distance`` (the plain row) and re-ranked from it
            (:func:`~vireid_layers.evaluation.evaluate_protocol`'s ``rerank``).
        feature: the name of the test feature, stated in the result (e.g. ``"plain"``, ``"official"`` for DEEN's
            six-part feature, AGW's ``"fc"`` / ``"pool"``); ``None`` prints "not stated".
        selection: how the evaluated checkpoint was chosen, stated in the result: ``"val"`` (validation
            identities), ``"test"`` (the test set), ``"last"`` (no selection); ``None`` prints "not stated".
        plain_row: with ``flip``, also evaluate without flip and attach that result as the plain row (a second
            extraction of every image); ignored without flip.

    Raises:
        TypeError: a field of the wrong type (``protocol``, ``dataset``, ``embed``, ``distance``, ``rerank``,
            ``plain_row``).
        ValueError: a bad ``flip``, ``rerank`` parameter, ``feature`` or ``selection``, or a count below its
            minimum.

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
        >>> result.settings["feature"], result.settings["flip"], result.settings["rerank"]
        (None, False, None)

        With flip and re-ranking, stating the feature and the checkpoint selection, every row is printed:

        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     records = []
        ...     for identity, colour in enumerate(["red", "green", "blue"]):
        ...         for m in Modality:
        ...             path = Path(tmp) / f"{identity}-{m.name}.png"
        ...             Image.new("RGB", (4, 8), colour).save(path)
        ...             records.append(ImageRecord(path, identity, 1 + m, m))
        ...     dataset = VIReIDDataset("toy", Path(tmp), (), tuple(records))
        ...     evaluator = ProtocolEvaluator(
        ...         RegDBProtocol("v2i"), dataset, to_float, flip="mean", rerank={"k1": 2, "k2": 1},
        ...         feature="colour", selection="last",
        ...     )
        ...     result = evaluator(Colour())
        >>> [b.settings["flip"] for b in result.baselines], [bool(b.settings["rerank"]) for b in result.baselines]
        ([False, False, 'mean'], [False, True, False])
        >>> result.settings["feature"], result.settings["selection"], result.settings["rerank"]["k1"]
        ('colour', 'last', 2)
        >>> [line.split(" | ")[0] for line in result.format_table().splitlines() if "(reported)" in line]
        ['| plain', '| re-ranked', '| flip (mean)', '| flip (mean), re-ranked']
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
    rerank: bool | Mapping[str, float] | None = None
    feature: str | None = None
    selection: str | None = None
    plain_row: bool = True

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
        rerank_parameters(self.rerank)  # raises on a bad value
        self.settings()  # checks feature and selection
        if not isinstance(self.plain_row, bool):
            raise TypeError(f"`plain_row` must be a bool, got {type(self.plain_row).__name__}")

    def settings(self, *, flip: FlipMode | Literal[False] | None = None) -> dict[str, Any]:
        """What the results state of this evaluation: ``feature``, ``flip`` (this one, or ``flip``), ``selection``.

        Raises:
            ValueError: ``feature`` or ``selection`` is not a non-empty string or ``None``.
        """
        return check_caller_settings(
            {"feature": self.feature, "flip": self.flip if flip is None else flip, "selection": self.selection}
        )

    def extract(
        self,
        model: nn.Module,
        records: list[ImageRecord],
        modality: Modality,
        *,
        flip: FlipMode | Literal[False] | None = None,
    ) -> Tensor:
        """Features of ``records`` through the stem of ``modality``: :math:`(N, D)` on the CPU.

        ``flip`` overrides this evaluator's ``flip`` (``None`` keeps it).
        """
        flip = self.flip if flip is None else flip
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
            model, loader, modality, forward=forward, device=self.device, flip=flip, normalize=self.normalize
        )
        return features

    def __call__(self, model: nn.Module) -> ProtocolResult:
        """Embed the test images with ``model`` and return the protocol's per-trial metrics and mean ± std.

        With ``flip`` and ``plain_row``, the images are embedded a second time without flip and that result (with
        its own plain ranking when re-ranking) is attached as the plain row(s).
        """
        result = self._evaluate(model, self.flip)
        if self.flip and self.plain_row:
            result = result.with_baseline(self._evaluate(model, False))
        return result

    def _evaluate(self, model: nn.Module, flip: FlipMode | Literal[False]) -> ProtocolResult:
        return evaluate_protocol(
            self.protocol,
            self.dataset,
            lambda records, modality: self.extract(model, records, modality, flip=flip),
            trials=self.trials,
            distance=self.distance,
            rerank=self.rerank,
            settings=self.settings(flip=flip),
        )

    def report(self, model: nn.Module) -> ProtocolReport:
        """:meth:`__call__` as a :class:`ProtocolReport`: what a :class:`~vireid_layers.engine.Trainer` logs."""
        return ProtocolReport(self(model))


@dataclass(frozen=True)
class ProtocolReport:
    """A :class:`~vireid_layers.evaluation.ProtocolResult` seen through the engine's evaluation interface.

    :class:`~vireid_layers.engine.Trainer` reads an evaluation result through these methods (see
    :class:`~vireid_layers.engine.EvaluationResult`): :meth:`to_metrics` (required: the named numbers it logs
    and selects the checkpoint on), :meth:`summary` (one log line), :meth:`format_table` and :meth:`as_dict`
    (the final ``results.md`` and ``results.json``) and :meth:`plot_curves` (the CMC figure of the run
    directory).

    Attributes:
        result: the protocol's result.

    Examples:
        >>> from vireid_layers.evaluation import ProtocolResult, TrialResult, retrieval_metrics
        >>> m = retrieval_metrics(torch.tensor([[0.1, 0.9]]), torch.tensor([1]), torch.tensor([1, 2]))
        >>> report = ProtocolReport(ProtocolResult("toy", {}, "standard", (TrialResult(0, 1, 2, m),)))
        >>> report.to_metrics()["rank1"], report.summary()
        (1.0, 'rank1=100.00, mAP=100.00, mINP=100.00')
    """

    result: ProtocolResult

    def to_metrics(self) -> dict[str, float]:
        """Every mean metric of the result (fractions): ``rank{k}``, ``rank{k}_dedup``, ``mAP``, ``mINP``."""
        return {key: float(value) for key, value in self.result.mean.items()}

    def summary(self) -> str:
        """Rank-1 (of the reported CMC), mAP and mINP in percent, for one log line."""
        reported = self.result.reported()
        return ", ".join(f"{key}={100 * reported[key][0]:.2f}" for key in ("rank1", "mAP", "mINP"))

    def format_table(self, digits: int = 2) -> str:
        """The result's markdown table (:meth:`~vireid_layers.evaluation.ProtocolResult.format_table`)."""
        return self.result.format_table(digits=digits)

    def as_dict(self) -> dict[str, Any]:
        """The result's JSON summary (:meth:`~vireid_layers.evaluation.ProtocolResult.as_dict`)."""
        return self.result.as_dict()

    def cmc_curves(self) -> dict[str, list[float]]:
        """Both CMC curves averaged over the trials, the reported definition first: ``{label: [rank 1, ...]}``.

        Each trial's curve is cut to the shortest one (a gallery smaller than the maximum rank gives a shorter
        curve), so every rank averages all trials.
        """
        labels = {"dedup": "identity-deduplicated", "standard": "standard"}
        order = ("dedup", "standard") if self.result.reported_cmc == "dedup" else ("standard", "dedup")
        out: dict[str, list[float]] = {}
        for definition in order:
            curves = [
                (t.metrics.cmc_dedup if definition == "dedup" else t.metrics.cmc).double() for t in self.result.trials
            ]
            length = min(c.numel() for c in curves)
            if length == 0:
                continue
            label = labels[definition] + (" (reported)" if definition == self.result.reported_cmc else "")
            out[label] = torch.stack([c[:length] for c in curves]).mean(0).tolist()
        return out

    def plot_curves(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write ``cmc.png`` into ``directory``: both CMC curves (reported first), a legend, whole-number ranks.

        Returns:
            The files written (none when matplotlib is not installed or the curves are empty).
        """
        curves = self.cmc_curves()
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            return []
        if not curves:
            return []
        fig, ax = plt.subplots(figsize=(6, 4))
        for (label, curve), style in zip(curves.items(), ("-o", "--s"), strict=False):
            ax.plot(range(1, len(curve) + 1), [100 * v for v in curve], style, markersize=4, label=label)
        length = max(len(c) for c in curves.values())
        ax.set(xlabel="rank", ylabel="matching rate (%)", ylim=(0, 100), xlim=(0.5, length + 0.5))
        ax.set_title(f"CMC, mean over {self.result.num_trials} trial(s)\n{self.result.protocol}", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(title="CMC", loc="lower right")
        path = Path(directory) / "cmc.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return [path]
