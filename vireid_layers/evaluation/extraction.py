r"""Test-time feature extraction through one modality's stem, with optional horizontal-flip averaging."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..modality import Modality

__all__ = ["FlipMode", "extract_features"]

FlipMode = Literal["sum", "mean"]
"""``"sum"``: DEEN ``test.py``; ``"mean"``: CAJ ``testa.py`` (see :func:`extract_features`)."""

Forward = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _default_forward(model: nn.Module, images: Tensor, modalities: Tensor) -> Tensor:
    return model(images, modalities)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _as_long(values: Any, name: str, n: int, batch: int) -> Tensor:
    out = torch.as_tensor(values).reshape(-1).long().cpu()
    if out.numel() != n:
        raise ValueError(f"batch {batch} of `loader`: `{name}` has {out.numel()} values for {n} images")
    return out


def _unpack(batch: Any, index: int) -> tuple[Tensor, Any, Any, Any]:
    if isinstance(batch, Mapping):
        missing = [k for k in ("image", "identity", "camera") if k not in batch]
        if missing:
            raise KeyError(f"batch {index} of `loader` lacks the keys {missing}; it has {sorted(batch)}")
        image, identity, camera, modality = batch["image"], batch["identity"], batch["camera"], batch.get("modality")
    elif isinstance(batch, (tuple, list)) and len(batch) == 4:
        image, identity, camera, modality = batch
    else:
        raise TypeError(
            f"batch {index} of `loader` must be a mapping with keys image, identity, camera(, modality) or a tuple "
            f"(image, identity, camera, modality), got {type(batch).__name__}"
        )
    if not isinstance(image, Tensor):
        raise TypeError(f"batch {index} of `loader`: `image` must be a Tensor, got {type(image).__name__}")
    return image, identity, camera, modality


def _check_flip(flip: object) -> FlipMode | None:
    if flip is None or flip is False:
        return None
    if flip in ("sum", "mean"):
        return flip  # type: ignore[return-value]
    raise ValueError(f"`flip` must be False, 'sum' (DEEN) or 'mean' (CAJ), got {flip!r}")


def _check_batch_modality(values: Any, modality: Modality, n: int, index: int) -> None:
    values = _as_long(values, "modality", n, index)
    if bool((values != int(modality)).any()):
        found = sorted({int(v) for v in values.unique()})
        raise ValueError(
            f"batch {index} of `loader` holds modality values {found} but `modality` is {modality.name} "
            f"({int(modality)}): the images would go through the other modality's stem. Pass "
            "check_modality=False to do this on purpose."
        )


class _Embedder:
    """One batch through the chosen stem, with the flip averaging and normalisation of extract_features."""

    def __init__(
        self,
        model: nn.Module,
        forward: Forward,
        modality: Modality,
        device: torch.device,
        normalize: bool,
        flip: FlipMode | None,
    ) -> None:
        self.model, self.forward, self.modality = model, forward, modality
        self.device, self.normalize, self.flip = device, normalize, flip

    def features(self, images: Tensor, modalities: Tensor, batch: int) -> Tensor:
        out = self.forward(self.model, images, modalities)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"the model returned {type(out).__name__} for batch {batch}; pass `forward` to select the (N, D) "
                "feature tensor, e.g. forward=lambda m, x, mod: m(x, mod)[0]"
            )
        if out.ndim != 2 or out.shape[0] != images.shape[0]:
            raise ValueError(
                f"the model must return ({images.shape[0]}, D) features for batch {batch}, got shape "
                f"{tuple(out.shape)}; pass `forward` to select or flatten them"
            )
        out = out.float()
        return F.normalize(out, dim=1) if self.normalize else out

    def __call__(self, images: Tensor, batch: int) -> Tensor:
        images = images.to(self.device, non_blocking=True)
        modalities = torch.full((images.shape[0],), int(self.modality), dtype=torch.long, device=self.device)
        feats = self.features(images, modalities, batch)
        if self.flip is None:
            return feats
        flipped = self.features(torch.flip(images, dims=(-1,)), modalities, batch)
        if self.flip == "sum":
            return feats + flipped
        mean = (feats + flipped) / 2
        return F.normalize(mean, dim=1) if self.normalize else mean


def extract_features(
    model: nn.Module,
    loader: Iterable[Any],
    modality: Modality | str | int,
    *,
    flip: FlipMode | Literal[False] | None = False,
    device: torch.device | str | None = None,
    normalize: bool = True,
    forward: Forward | None = None,
    check_modality: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Embed every image of a loader through the stem of one modality, in eval mode and without autograd.

    Each batch goes through ``forward(model, images, modalities)`` (default ``model(images, modalities)``)
    where ``modalities`` is an :math:`(N,)` long tensor filled with ``modality``: the model's stem is chosen
    by this argument, never by the data. With :math:`n(f) = f / \|f\|` when ``normalize`` and
    :math:`n(f) = f` otherwise, and :math:`\tilde x` the horizontally flipped image:

    .. math::

        \text{flip=False:}\ n(f(x)), \qquad
        \text{flip="sum":}\ n(f(x)) + n(f(\tilde x)), \qquad
        \text{flip="mean":}\ n\Big(\tfrac12\big(n(f(x)) + n(f(\tilde x))\big)\Big).

    ``"sum"`` is DEEN's ``test.py`` (L2-normalised features of the image and its flip added, not
    re-normalised); ``"mean"`` is CAJ's ``testa.py`` (averaged, then re-normalised). Under cosine ranking
    both give the same order.

    The model is put in eval mode and every submodule's ``training`` flag is restored afterwards (also on
    error). Features are returned on the CPU in float32.

    Args:
        model: the network; called as ``model(images, modalities)`` unless ``forward`` is given.
        loader: iterable of batches, each a mapping with keys ``image``, ``identity``, ``camera`` (and
            optionally ``modality``) or a tuple ``(image, identity, camera, modality)``, such as a
            ``DataLoader`` over :class:`~vireid_layers.data.datasets.folder.ImageDataset`.
        modality: the stem to use: a :class:`~vireid_layers.Modality`, 0/1 or a name (``"visible"``, ``"ir"``).
        flip: ``False``/``None``, ``"sum"`` or ``"mean"``.
        device: where the model runs; default the device of its first parameter (CPU without parameters).
        normalize: L2-normalise each feature (in float32) as described above.
        forward: ``(model, images, modalities) -> (N, D)`` features, to pick an output of a model that
            returns several (e.g. ``lambda m, x, mod: m(x, mod)[1]`` for AGW's BN feature).
        check_modality: raise when a batch carries ``modality`` values different from ``modality`` (the
            swapped-stem mistake of the official DEEN RegDB ``test.py``); ``False`` allows it on purpose.

    Returns:
        ``(features, identities, cameras)``: :math:`(N, D)` float32, :math:`(N,)` long, :math:`(N,)` long, on
        the CPU, in loader order.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, a batch has an unknown structure or the model output is
            not a tensor.
        ValueError: a bad ``flip``, a model output that is not :math:`(N, D)`, or a modality mismatch.

    Examples:
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x, modalities):
        ...         return x.flatten(1) + modalities.unsqueeze(1)
        >>> batches = [{"image": torch.ones(2, 1, 1, 2), "identity": [7, 8], "camera": [3, 3], "modality": [1, 1]}]
        >>> feats, ids, cams = extract_features(Net(), batches, "infrared", normalize=False)
        >>> feats.tolist(), ids.tolist(), cams.tolist()
        ([[2.0, 2.0], [2.0, 2.0]], [7, 8], [3, 3])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    modality = Modality.parse(modality)
    flip_mode = _check_flip(flip)
    if forward is None:
        forward = _default_forward
    elif not callable(forward):
        raise TypeError(f"`forward` must be callable (model, images, modalities) -> Tensor, got {forward!r}")
    device = _model_device(model) if device is None else torch.device(device)
    embed = _Embedder(model, forward, modality, device, normalize, flip_mode)
    states = [(m, m.training) for m in model.modules()]
    features, identities, cameras = [], [], []
    try:
        model.eval()
        with torch.inference_mode():
            for index, batch in enumerate(loader):
                images, ids, cams, mods = _unpack(batch, index)
                n = images.shape[0]
                if check_modality and mods is not None:
                    _check_batch_modality(mods, modality, n, index)
                identities.append(_as_long(ids, "identity", n, index))
                cameras.append(_as_long(cams, "camera", n, index))
                features.append(embed(images, index).cpu())
    finally:
        for module, training in states:
            module.training = training
    if not features:
        empty = torch.empty(0, dtype=torch.long)
        return torch.empty(0, 0), empty, empty.clone()
    return torch.cat(features), torch.cat(identities), torch.cat(cameras)
