"""One modality's retrieval embedding as a single-input module, and its ``torch.export`` program."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_int
from ..modality import Modality

__all__ = ["ModalityEmbedding", "export_embedding"]


def _modality(value: object) -> Modality:
    try:
        return Modality.parse(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise ValueError(f"`modality` must be 0 / 'visible' or 1 / 'infrared', got {value!r}") from error


class ModalityEmbedding(nn.Module):
    r"""``model.embed(images, modality, ...)`` with the modality and the embedding options fixed.

    The modality is a Python constant, so the model's :class:`~vireid_layers.TwoStreamBackbone` picks the stem
    when the module is traced: an exported graph holds one stem, no gather/scatter by modality and no
    data-dependent shape. The wrapped model is shared, not copied, and is put in eval mode by
    :func:`export_embedding`.

    Args:
        model: a model with ``embed(images, modalities, **options)`` (every model of
            :mod:`vireid_layers.models`).
        modality: the modality of every input image: ``0`` / ``"visible"`` or ``1`` / ``"infrared"`` (or a
            :class:`~vireid_layers.Modality`).
        mode: the ``mode`` of ``model.embed`` (DEEN ``"plain"`` / ``"official"``, AGW ``"fc"`` / ``"pool"``);
            ``None`` for the model's default.
        flip: add the embedding of the horizontally flipped images (``embed(..., flip=True)``).

    Shape:
        - ``images``: :math:`(N, 3, H, W)`, normalised as the model's test transform does.
        - Output: ``model.embed``'s, e.g. :math:`(N, D)` or DEEN's official :math:`(N, 2(1 + K), D)`.

    Examples:
        >>> import torch
        >>> from vireid_layers.export import ModalityEmbedding
        >>> from vireid_layers.models import AGW
        >>> module = ModalityEmbedding(AGW(4, backbone="resnet18").eval(), "infrared", mode="pool")
        >>> module
        ModalityEmbedding(
          modality=INFRARED, mode='pool', flip=False
          (model): AGW(...)
        )
        >>> module(torch.randn(2, 3, 64, 32)).shape
        torch.Size([2, 512])
    """

    def __init__(
        self, model: nn.Module, modality: int | str | Modality, *, mode: str | None = None, flip: bool = False
    ):
        super().__init__()
        if not callable(getattr(model, "embed", None)):
            raise TypeError(f"`model` must have an embed(images, modalities) method, got {type(model).__name__}")
        if not isinstance(flip, bool):
            raise TypeError(f"`flip` must be a bool, got {type(flip).__name__} {flip!r}")
        if mode is not None and not isinstance(mode, str):
            raise TypeError(f"`mode` must be a str or None, got {type(mode).__name__} {mode!r}")
        self.model = model
        self.modality = _modality(modality)
        self.mode, self.flip = mode, flip

    def extra_repr(self) -> str:
        """The fixed modality and embedding options."""
        return f"modality={self.modality.name}, mode={self.mode!r}, flip={self.flip}"

    def forward(self, images: Tensor) -> Tensor:
        """The embeddings of ``images``, all of :attr:`modality`."""
        options: dict[str, Any] = {"flip": self.flip}
        if self.mode is not None:
            options["mode"] = self.mode
        return self.model.embed(images, int(self.modality), **options)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, the previous train / eval mode of every submodule restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def example_images(model: nn.Module, height: int, width: int, batch: int = 2) -> Tensor:
    """Random :math:`(B, C, H, W)` images on the model's device and in its floating dtype."""
    height, width = check_int(height, "height"), check_int(width, "width")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    channels = getattr(getattr(model, "backbone", None), "in_chans", 3)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, channels, height, width, generator=generator, dtype=dtype).to(device)


def export_embedding(
    model: nn.Module,
    modality: int | str | Modality,
    *,
    height: int,
    width: int,
    mode: str | None = None,
    flip: bool = False,
) -> torch.export.ExportedProgram:
    r"""``torch.export`` of one modality's retrieval embedding, with a dynamic batch size.

    The model is traced in eval mode (its previous mode is restored afterwards): BatchNorm uses its running
    statistics, DEE's dropout is off, and for DEEN the official-form MFA runs its associative
    :math:`Q (K^\top V)` product and ``mode="official"`` the DEE branches, exactly what
    :meth:`~vireid_layers.models.DEEN.embed` computes. The batch dimension is symbolic (``Dim("batch",
    min=1)``); height and width are fixed (the MFA of DEEN folds positions, so the spatial size is part of
    the graph).

    Args:
        model: a model of :mod:`vireid_layers.models` (any module with ``embed``).
        modality: the modality of the inputs, fixed in the graph (``"visible"`` / ``"infrared"`` / 0 / 1).
        height: input height (the model's test size, e.g. 384 for DEEN, 288 for AGW).
        width: input width (144).
        mode: ``model.embed``'s ``mode``; ``None`` for the model's default.
        flip: add the flipped images' embedding.

    Returns:
        The :class:`torch.export.ExportedProgram`; ``program.module()(images)`` runs it, and
        ``torch.export.save(program, "model.pt2")`` writes it.

    Examples:
        >>> import torch
        >>> from vireid_layers.export import export_embedding
        >>> from vireid_layers.models import AGW
        >>> program = export_embedding(AGW(4, backbone="resnet18", method="base"), "visible", height=64, width=32)
        >>> program.module()(torch.randn(5, 3, 64, 32)).shape  # any batch size
        torch.Size([5, 512])
    """
    wrapper = ModalityEmbedding(model, modality, mode=mode, flip=flip)
    images = example_images(model, height, width)
    batch = torch.export.Dim("batch", min=1)
    with _eval_mode(model), torch.no_grad():
        wrapper(images)  # a wrong size or option fails here with the model's own message
        return torch.export.export(wrapper, (images,), dynamic_shapes={"images": {0: batch}})
