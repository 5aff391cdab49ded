"""ONNX export of one modality's embedding (opset 18, dynamic batch) and its parity check with ONNX Runtime."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._version import __version__
from ..modality import Modality
from .embedding import ModalityEmbedding, example_images, export_embedding

__all__ = ["ONNX_OPSET", "PARITY_ATOL", "OnnxParity", "check_onnx_parity", "export_onnx", "run_onnx"]

#: The default ONNX opset: 18, the oldest opset of ``torch.onnx``'s exporter, read by ONNX Runtime >= 1.14.
ONNX_OPSET = 18
#: Largest absolute difference allowed between ONNX Runtime's float32 embedding and the eager model in
#: float64, on the components of L2-normalised embeddings (each in :math:`[-1, 1]`): about 840 float32 ulps
#: at 1, the rounding of a few hundred float32 operations on the longest path of a ResNet-50 network
#: (measured: below :math:`10^{-6}` for ResNet-18 DEEN and AGW, see the deployment guide).
PARITY_ATOL = 1e-4

_SDPA = torch.ops.aten.scaled_dot_product_attention.default


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError("running an ONNX model needs `onnxruntime`: pip install 'vireid-layers[export]'") from error
    return onnxruntime


def _sdpa_as_4d(query: Tensor, key: Tensor, value: Tensor, *args: Any, **kwargs: Any) -> Any:
    """A 3-D attention as the 4-D one with a single head (the ONNX translation handles only 4-D)."""
    if query.dim() != 3:
        return NotImplemented  # kept as it is (the decomposition sees its own 4-D call again)
    return _SDPA(query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1), *args, **kwargs).squeeze(1)


def _onnx_ready(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Rewrite 3-D ``scaled_dot_product_attention`` (MFA's paper-form channel part) as 4-D, when there is any."""
    has_3d = any(
        node.target is _SDPA
        and getattr(node.args[0], "meta", {}).get("val") is not None
        and node.args[0].meta["val"].dim() == 3
        for node in program.graph.nodes
    )
    return program.run_decompositions({_SDPA: _sdpa_as_4d}) if has_3d else program


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    modality: int | str | Modality,
    *,
    height: int,
    width: int,
    mode: str | None = None,
    flip: bool = False,
    opset: int = ONNX_OPSET,
    program: torch.export.ExportedProgram | None = None,
) -> Path:
    """Write one modality's embedding as an ONNX model: input ``images``, output ``embeddings``, dynamic batch.

    The graph comes from :func:`export_embedding` (``torch.export``, eval mode, the modality's stem only) and
    is translated by ``torch.onnx.export(..., dynamo=True)`` (needs ``onnx`` and ``onnxscript``, the
    ``export`` extra). Preprocessing is *not* part of the graph: feed float32 images
    :math:`(N, 3, H, W)` as :class:`~vireid_layers.data.ImagePreprocessor` makes them. The file's metadata
    (``metadata_props``) records the modality, the size, the embedding options, the opset, the library
    version and that note. See the deployment guide for the operators used.

    Args:
        model: the model (any module with ``embed``).
        path: the ``.onnx`` file to write (the folder must exist).
        modality: the modality of every input image, fixed in the graph.
        height: input height, fixed.
        width: input width, fixed.
        mode: ``model.embed``'s ``mode``; ``None`` for the default.
        flip: add the flipped images' embedding.
        opset: the ONNX opset (18 or later).
        program: an already exported program of the same model and options (skips ``torch.export``).

    Returns:
        ``path``.

    Examples:
        >>> import tempfile
        >>> import torch
        >>> from vireid_layers.export import export_onnx, run_onnx
        >>> from vireid_layers.models import AGW
        >>> path = export_onnx(AGW(4, backbone="resnet18"), f"{tempfile.mkdtemp()}/agw.onnx", 1, height=64, width=32)
        >>> run_onnx(path, torch.randn(3, 3, 64, 32)).shape
        torch.Size([3, 512])
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < ONNX_OPSET:
        raise ValueError(f"`opset` must be an int >= {ONNX_OPSET}, got {opset!r}")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"`path` {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    wrapper = ModalityEmbedding(model, modality, mode=mode, flip=flip)
    if program is None:
        program = export_embedding(model, modality, height=height, width=width, mode=mode, flip=flip)
    images = example_images(model, height, width)
    onnx_program = torch.onnx.export(
        _onnx_ready(program),
        (images,),
        dynamo=True,
        opset_version=opset,
        input_names=["images"],
        output_names=["embeddings"],
        verbose=False,
    )
    metadata = {
        "vireid_layers.version": __version__,
        "vireid_layers.model": type(model).__name__,
        "vireid_layers.modality": wrapper.modality.name.lower(),
        "vireid_layers.input": f"float32 (N, 3, {height}, {width}), normalised; preprocessing is not in the graph",
        "vireid_layers.mode": str(mode),
        "vireid_layers.flip": str(flip),
        "vireid_layers.opset": str(opset),
    }
    onnx_program.model.metadata_props.update(metadata)  # the ONNX IR model that ``save`` serialises
    onnx_program.save(str(path))
    return path


def run_onnx(path: str | os.PathLike[str], images: Tensor) -> Tensor:
    """Run an exported ONNX model on ``images`` with ONNX Runtime (CPU); the embeddings as a float32 tensor.

    Args:
        path: the ``.onnx`` file of :func:`export_onnx`.
        images: :math:`(N, 3, H, W)` float images (converted to float32 on the CPU).

    Returns:
        The ``embeddings`` output.
    """
    ort = _onnxruntime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    array = images.detach().to("cpu", torch.float32).contiguous().numpy()
    return torch.from_numpy(session.run(None, {name: array})[0])


@dataclass(frozen=True)
class OnnxParity:
    """How far ONNX Runtime's embedding is from the eager model's (in float64).

    Attributes:
        max_abs_diff: the largest absolute difference of one component.
        min_cosine: the smallest cosine similarity between an ONNX and an eager embedding (rows flattened).
        atol: the tolerance :attr:`max_abs_diff` is held to.
        batch_sizes: the batch sizes compared.
    """

    max_abs_diff: float
    min_cosine: float
    atol: float
    batch_sizes: tuple[int, ...]

    @property
    def passed(self) -> bool:
        """``max_abs_diff <= atol`` (and no NaN)."""
        return math.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.atol


def check_onnx_parity(
    model: nn.Module,
    path: str | os.PathLike[str],
    modality: int | str | Modality,
    *,
    height: int,
    width: int,
    mode: str | None = None,
    flip: bool = False,
    batch_sizes: tuple[int, ...] = (1, 3),
    atol: float = PARITY_ATOL,
) -> OnnxParity:
    """Compare an exported ONNX model, run with ONNX Runtime, with the eager model run in float64.

    The eager reference runs a float64 copy of the model (``copy.deepcopy(model).double()``, eval mode), so the
    difference measured is the float32 rounding of the ONNX model alone. Random images, one batch per size in
    ``batch_sizes`` (several sizes exercise the dynamic batch axis).

    Args:
        model: the exported model.
        path: its ``.onnx`` file.
        modality: the modality it was exported for.
        height: input height.
        width: input width.
        mode: the ``mode`` it was exported with.
        flip: the ``flip`` it was exported with.
        batch_sizes: the batch sizes to compare.
        atol: the tolerance of :attr:`OnnxParity.passed`; default :data:`PARITY_ATOL`.

    Returns:
        An :class:`OnnxParity`.
    """
    import copy

    reference = ModalityEmbedding(copy.deepcopy(model).double().eval(), modality, mode=mode, flip=flip)
    diff, cosine = 0.0, 1.0
    for i, n in enumerate(batch_sizes):
        images = example_images(model, height, width, batch=check_batch(n)).cpu().float()
        images = images + 0.1 * i  # a different batch per size
        got = run_onnx(path, images).double()
        with torch.no_grad():
            expected = reference(images.double().to(next(reference.parameters()).device)).cpu()
        if got.shape != expected.shape:
            raise ValueError(f"the ONNX output has shape {tuple(got.shape)}, the model's {tuple(expected.shape)}")
        d = float((got - expected).abs().max())
        c = float(torch.nn.functional.cosine_similarity(got.flatten(1), expected.flatten(1)).min())
        diff = math.nan if math.isnan(d) or math.isnan(diff) else max(diff, d)  # NaN is never a pass
        cosine = math.nan if math.isnan(c) or math.isnan(cosine) else min(cosine, c)
    return OnnxParity(diff, cosine, float(atol), tuple(batch_sizes))


def check_batch(n: object) -> int:
    """A positive batch size."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`batch_sizes` must hold positive ints, got {n!r}")
    return n
