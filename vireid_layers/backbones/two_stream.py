"""Two-stream backbone: modality-specific stems and shared stages cut out of one timm model.

The design of DDAG/AGW :cite:`ye2020ddag` and DEEN :cite:`zhang2023deen`: the stem of a CNN (for a ResNet
``conv1 -> bn1 -> act -> maxpool``) is duplicated, one copy per modality, and every later stage is shared by
both modalities. The last stage keeps the resolution of the one before it (last stride 1).
"""

from __future__ import annotations

import copy
import difflib
import numbers
import os
import pickle
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, overload

import timm
import torch
import torch.nn.functional as F
from timm.layers import BlurPool2d, Conv2dSame
from torch import Tensor, nn

from .._deprecation import renamed_keyword
from .._validation import check_floating, check_int, check_modalities, check_shape
from ..modality import Modality, merge_by_modality, split_by_modality

__all__ = ["TwoStreamBackbone", "build_two_stream_backbone"]

_RESNET_STEM = ("conv1", "bn1", "act1", "maxpool")
# Classifier keys of timm/torchvision checkpoints; the backbone has no head, so they are ignored on load.
_HEAD_PREFIXES = ("fc.", "head.", "classifier.", "last_linear.")
# Arguments the builder sets itself: the backbone has no classifier and is split into stem and stages here.
_RESERVED_TIMM_KWARGS = ("num_classes", "features_only", "out_indices")
_SUPPORTED = (
    "ResNet-like timm models (attributes conv1, bn1, act1, maxpool and layer1, layer2, ...: resnet*, "
    "resnext*, seresnet*, wide_resnet*, resnet50d, ...) and ConvNeXt-like timm models (a `stem` module "
    "followed by a `stages` sequence: convnext*, ...)"
)


class TwoStreamBackbone(nn.Module):
    r"""Modality-specific stems followed by shared stages, each sample routed by its modality.

    The two-stream design of DDAG and AGW :cite:`ye2020ddag`, reused by DEEN :cite:`zhang2023deen`: only the
    stem is modality specific; every stage is shared, so a training batch mixes both modalities from the
    first stage on. Every sample goes through the stem of its own modality whatever its position in the
    batch (no "visible half first" assumption). The stages are exposed one by one
    (:meth:`forward_stage`) so that blocks such as MFA or DEE can be inserted between them, with their
    channels and reductions (:attr:`channels`, :attr:`reductions`).

    Build it from a timm model with :func:`build_two_stream_backbone`; the constructor takes the parts
    themselves, for a network of one's own.

    Args:
        stem: the visible stem, :math:`(N, C_{in}, H, W) \to (N, C_0, H / r_0, W / r_0)`.
        stages: the shared stages, applied in order to the stem output.
        stem_channels: channels :math:`C_0` of the stem output.
        stem_reduction: spatial reduction :math:`r_0` of the stem output with respect to the input.
        channels: output channels of every stage.
        reductions: spatial reduction of every stage output with respect to the input.
        infrared_stem: the infrared stem; a deep copy of ``stem`` (same initial weights) when omitted.
        in_chans: input channels :math:`C_{in}` of both stems. Infrared images are fed as 3-channel
            replicated grey images, as in the official code bases.
        model_name: name of the timm model the parts come from (shown by ``repr``).
        last_stride: stride of the last stage (shown by ``repr``; the builder has already applied it).
        pretrained_cfg: timm's pretrained configuration of the model (input size, ``mean``, ``std``, ...).

    Shape:
        - ``x``: :math:`(N, C_{in}, H, W)` floating point.
        - ``modalities``: :math:`(N,)` integer or bool tensor of 0 (visible) / 1 (infrared), or a single
          ``int`` / :class:`~vireid_layers.Modality` for a batch of one modality.
        - Output: :math:`(N, C_{last}, H / r_{last}, W / r_{last})`, the last stage's feature map.

    Examples:
        >>> stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        >>> stages = [nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Conv2d(16, 32, 3, padding=1)]
        >>> backbone = TwoStreamBackbone(
        ...     stem, stages, stem_channels=8, stem_reduction=2, channels=[16, 32], reductions=[4, 4]
        ... )
        >>> backbone(torch.randn(3, 3, 16, 8), torch.tensor([1, 0, 1])).shape
        torch.Size([3, 32, 4, 2])
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Iterable[nn.Module],
        *,
        stem_channels: int,
        stem_reduction: int,
        channels: Sequence[int],
        reductions: Sequence[int],
        infrared_stem: nn.Module | None = None,
        in_chans: int = 3,
        model_name: str = "",
        last_stride: int = 1,
        pretrained_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        stages = list(stages)
        if not stages:
            raise ValueError("`stages` must hold at least one module, got none")
        for value, arg in ((stem_channels, "stem_channels"), (stem_reduction, "stem_reduction")):
            check_int(value, arg)
        check_int(in_chans, "in_chans")
        for values, arg in ((channels, "channels"), (reductions, "reductions")):
            if len(values) != len(stages):
                raise ValueError(
                    f"`{arg}` must have one entry per stage ({len(stages)}), got {len(values)}: {list(values)}"
                )
            for value in values:
                check_int(value, arg)
        self.visible_stem = stem
        self.infrared_stem = copy.deepcopy(stem) if infrared_stem is None else infrared_stem
        self.stages = nn.ModuleList(stages)
        self.in_chans = in_chans
        self.model_name = model_name
        self.last_stride = last_stride
        self.pretrained_cfg: dict[str, Any] = dict(pretrained_cfg or {})
        self._stem_channels = int(stem_channels)
        self._stem_reduction = int(stem_reduction)
        self._channels = tuple(int(c) for c in channels)
        self._reductions = tuple(int(r) for r in reductions)

    @property
    def stem_channels(self) -> int:
        """Channels of the stem output."""
        return self._stem_channels

    @property
    def stem_reduction(self) -> int:
        """Spatial reduction of the stem output with respect to the input (4 for ResNet and ConvNeXt)."""
        return self._stem_reduction

    @property
    def channels(self) -> list[int]:
        """Output channels of every stage, e.g. ``[256, 512, 1024, 2048]`` for ResNet-50."""
        return list(self._channels)

    @property
    def reductions(self) -> list[int]:
        """Spatial reduction of every stage output, e.g. ``[4, 8, 16, 16]`` with last stride 1."""
        return list(self._reductions)

    @property
    def num_features(self) -> int:
        """Channels of the last stage, i.e. of :meth:`forward`'s output."""
        return self._channels[-1]

    @property
    def num_stages(self) -> int:
        """Number of shared stages."""
        return len(self.stages)

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """Description of the stem and every stage in the timm style (``num_chs``, ``reduction``, ``module``)."""
        info = [{"num_chs": self._stem_channels, "reduction": self._stem_reduction, "module": "stem"}]
        info += [
            {"num_chs": c, "reduction": r, "module": f"stages.{i}"}
            for i, (c, r) in enumerate(zip(self._channels, self._reductions, strict=True))
        ]
        return info

    def extra_repr(self) -> str:
        """Model name, last stride, input channels, and channels and reductions per stage."""
        return (
            f"model_name={self.model_name!r}, last_stride={self.last_stride}, in_chans={self.in_chans}, "
            f"channels={list(self._channels)}, reductions={list(self._reductions)}"
        )

    @renamed_keyword("modality", "modalities")
    def forward_stem(self, x: Tensor, modalities: Tensor | int | Modality) -> Tensor:
        """Run every sample through the stem of its modality.

        With a tensor, the rows of each modality are gathered, run through their stem and scattered back
        to their positions, so each stem sees only its own rows (its BatchNorm statistics stay
        single-modality, as in the official code) and no batch order is assumed. Gathering needs
        ``torch.nonzero``, whose output size depends on the data: under ``torch.compile`` this is a graph
        break, so only the shared part (:meth:`forward_stages`) compiles with ``fullgraph=True``.

        Args:
            x: :math:`(N, C_{in}, H, W)` images.
            modalities: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
                :class:`~vireid_layers.Modality` for the whole batch (evaluation). Formerly ``modality``
                (still accepted as a keyword, with a :class:`FutureWarning`, for one release).

        Returns:
            :math:`(N, C_0, H / r_0, W / r_0)` stem features in batch order.
        """
        x = self._check_images(x)
        if not isinstance(modalities, Tensor):
            stem = self.infrared_stem if _parse_modality(modalities) == Modality.INFRARED else self.visible_stem
            return stem(x)
        modalities = check_modalities(modalities, x.shape[0])
        visible, infrared, visible_index, infrared_index = split_by_modality(x, modalities)
        return merge_by_modality(
            self.visible_stem(visible), self.infrared_stem(infrared), visible_index, infrared_index
        )

    def forward_stage(self, index: int, x: Tensor) -> Tensor:
        """Run the shared stage ``index`` (0-based) on ``x``.

        Args:
            index: stage index in ``range(num_stages)``.
            x: :math:`(N, C, h, w)` input of the stage: the stem output for stage 0, else the output of the
                previous stage (or of a block inserted after it, with the same channels).

        Returns:
            :math:`(N, C_{index}, H / r_{index}, W / r_{index})` feature map.
        """
        check_int(index, "index", minimum=0)
        if index >= len(self.stages):
            raise ValueError(f"`index` must be in [0, {len(self.stages)}), got {index}")
        check_shape(x, "x", "(N, C, h, w)")
        return self.stages[index](x)

    def forward_stages(self, x: Tensor) -> Tensor:
        """Run all shared stages in order on a stem output (the modality-agnostic part).

        Args:
            x: :math:`(N, C_0, h, w)` stem features.

        Returns:
            the last stage's feature map.
        """
        check_shape(x, "x", f"(N, {self._stem_channels}, h, w)", why="the stem output")
        for stage in self.stages:
            x = stage(x)
        return x

    @overload
    def forward_features(
        self, x: Tensor, modalities: Tensor | int | Modality, *, return_stages: Literal[False] = ...
    ) -> Tensor: ...

    @overload
    def forward_features(
        self, x: Tensor, modalities: Tensor | int | Modality, *, return_stages: Literal[True]
    ) -> list[Tensor]: ...

    @renamed_keyword("modality", "modalities")
    def forward_features(
        self, x: Tensor, modalities: Tensor | int | Modality, *, return_stages: bool = False
    ) -> Tensor | list[Tensor]:
        """Stem and all stages; the last feature map, or every intermediate one.

        Args:
            x: :math:`(N, C_{in}, H, W)` images.
            modalities: as in :meth:`forward_stem`.
            return_stages: return ``[stem, stage_1, ..., stage_S]`` instead of the last map.

        Returns:
            the last stage's :math:`(N, C_{last}, h, w)` map, or the list of the stem output and every stage
            output.
        """
        features = [self.forward_stem(x, modalities)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features if return_stages else features[-1]

    @renamed_keyword("modality", "modalities")
    def forward(self, x: Tensor, modalities: Tensor | int | Modality) -> Tensor:
        """Last feature map of ``x``, each sample through the stem of its modality.

        Args:
            x: :math:`(N, C_{in}, H, W)` images.
            modalities: :math:`(N,)` tensor of 0 (visible) / 1 (infrared), or one ``int`` /
                :class:`~vireid_layers.Modality` for the whole batch (formerly ``modality``).

        Returns:
            :math:`(N, C_{last}, H / r_{last}, W / r_{last})` feature map.
        """
        return self.forward_features(x, modalities)

    def _check_images(self, x: Tensor) -> Tensor:
        return check_floating(check_shape(x, "x", f"(N, {self.in_chans}, H, W)"), "x")


def build_two_stream_backbone(
    name: str,
    *,
    pretrained: bool | str | os.PathLike[str] = False,
    last_stride: int = 1,
    in_chans: int = 3,
    **timm_kwargs: Any,
) -> TwoStreamBackbone:
    r"""Build a :class:`TwoStreamBackbone` from a timm model: two copies of its stem, its stages shared.

    One timm model is created (``timm.create_model(name, num_classes=0, ...)``), its weights are loaded, and
    it is cut into a stem and stages; the infrared stem is a deep copy of the visible one, so both start
    from the same (pretrained) weights, as in DDAG/AGW :cite:`ye2020ddag` and DEEN :cite:`zhang2023deen`.
    The classifier head is dropped.

    Supported are ResNet-like timm models (stem ``conv1, bn1, act1, maxpool``; stages ``layer1...layer4``;
    e.g. resnet18/34/50/101, resnet50d, resnext50_32x4d, seresnet50, wide_resnet50_2) and ConvNeXt-like timm
    models (stem ``stem``; stages ``stages[0...3]``; e.g. convnext_tiny). The family is recognised by these
    attributes, not by name.

    Last stride 1 removes the stride of the last stage, as the official code does (not by dilation): every
    strided convolution of the last stage gets stride 1 (a ConvNeXt :math:`2\times2` downsampling
    convolution is zero-padded by one pixel on the right and bottom so that the resolution is kept), and a
    pooling that only decimates (the ``AvgPool2d`` of an avg-down shortcut, an anti-aliasing blur pool) is
    replaced by ``Identity``, exactly what timm builds for a stride-1 block. No weight changes. For the
    dilation-based alternative pass ``last_stride=2, output_stride=16`` (a timm argument).

    Args:
        name: timm model name, e.g. ``"resnet50"`` (a pretrained tag such as ``"resnet50.a1_in1k"`` is
            allowed).
        pretrained: ``False`` for random initialisation; ``True`` for timm's own pretrained loading (a
            ``pretrained_cfg_overlay=dict(file=...)`` in ``timm_kwargs`` points timm at a local file); or the
            path of a local ``.pth``/``.pt``/``.bin`` (read with ``torch.load(weights_only=True)``) or
            ``.safetensors`` checkpoint holding timm's keys: a plain state dict, or a dict with a
            ``"state_dict"`` or ``"model"`` entry. A ``"module."`` prefix is stripped and classifier keys
            (``fc.``, ``head.``, ...) are ignored; any missing stem/stage key, unexpected key or shape
            mismatch raises :class:`ValueError` listing them.
        last_stride: 1 (the VI-ReID setting: the last stage keeps the previous resolution) or 2 (timm's
            original network).
        in_chans: input channels of both stems, passed to timm. Infrared images are fed as 3-channel
            replicated grey images, as in the official code bases, so the default 3 serves both modalities.
        **timm_kwargs: further arguments of ``timm.create_model`` (``drop_path_rate``,
            ``pretrained_cfg_overlay``, ``output_stride``, ...).

    Returns:
        the backbone, in training mode.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if ``name`` is no timm model or not a supported architecture, or the checkpoint does
            not fit the model.
        FileNotFoundError: if ``pretrained`` is a path and no file exists there.

    Examples:
        >>> backbone = build_two_stream_backbone("resnet18")
        >>> x = torch.randn(2, 3, 64, 32)
        >>> backbone(x, torch.tensor([0, 1])).shape
        torch.Size([2, 512, 4, 2])
        >>> backbone.channels, backbone.reductions
        ([64, 128, 256, 512], [4, 8, 16, 16])
    """
    _check_model_name(name)
    if check_int(last_stride, "last_stride", minimum=0) not in (1, 2):
        raise ValueError(f"`last_stride` must be 1 or 2, got {last_stride}")
    check_int(in_chans, "in_chans")
    checkpoint = _check_pretrained(pretrained)
    reserved = sorted(set(timm_kwargs) & set(_RESERVED_TIMM_KWARGS))
    if reserved:
        raise TypeError(
            f"build_two_stream_backbone() does not accept {reserved}: the backbone has no classifier and "
            "is split into stem and stages by the builder"
        )

    model = timm.create_model(name, pretrained=pretrained is True, num_classes=0, in_chans=in_chans, **timm_kwargs)
    parts = _split(model, name)
    if checkpoint is not None:
        _load_checkpoint(model, checkpoint, parts, name)
    if last_stride == 1:
        _remove_stride(parts.stages[-1], name)
    stem_channels, stem_reduction, channels, reductions = _probe(model, parts, in_chans, name)
    if last_stride == 1 and len(reductions) > 1 and reductions[-1] != reductions[-2]:
        raise ValueError(
            f"could not remove the stride of the last stage of {name!r} (reductions {reductions}); use last_stride=2"
        )
    return TwoStreamBackbone(
        parts.stem,
        parts.stages,
        stem_channels=stem_channels,
        stem_reduction=stem_reduction,
        channels=channels,
        reductions=reductions,
        in_chans=in_chans,
        model_name=name,
        last_stride=last_stride,
        pretrained_cfg=getattr(model, "pretrained_cfg", None),
    )


class _Parts(NamedTuple):
    """A timm model cut into stem and stages, with the state-dict prefixes of each."""

    stem: nn.Module
    stages: list[nn.Module]
    prefixes: tuple[str, ...]


class _SamePaddedConv2d(nn.Conv2d):
    r"""A stride-1 convolution that zero-pads its input so that the output keeps the input's size.

    Replaces a strided convolution whose padding only fits its stride (ConvNeXt's ``k=2, s=2``
    downsampling): with stride 1 and kernel :math:`k` the input is padded by :math:`\lfloor
    d(k-1)/2\rfloor` before and the rest after, like ``padding="same"``. Parameter names are those of
    :class:`~torch.nn.Conv2d`, so state dicts are unchanged.
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> _SamePaddedConv2d:
        """A stride-1 copy of ``conv`` that shares its parameters."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=1,
            padding=0,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            device="meta",
        )
        new.weight = conv.weight
        new.bias = conv.bias
        new.padding_mode = conv.padding_mode
        return new

    def _pad(self) -> tuple[int, int, int, int]:
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        th, tw = dh * (kh - 1), dw * (kw - 1)
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", same_pad={self._pad()}"

    def forward(self, x: Tensor) -> Tensor:
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        x = F.pad(x, self._pad(), mode=mode)
        return F.conv2d(x, self.weight, self.bias, 1, 0, self.dilation, self.groups)


def _parse_modality(value: object) -> Modality:
    """One modality for the whole batch: an ``int`` or a :class:`Modality` (a tensor takes the other path)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`modalities` must be an (N,) tensor, an int or a Modality, got {type(value).__name__} {value!r}"
        )
    return Modality.parse(value, name="modalities")


def _check_model_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a timm model name (str), got {type(name).__name__} {name!r}")
    if ":" in name:  # "hf-hub:..." and other sources are resolved by timm itself
        return
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {close}?" if close else "; see timm.list_models()"
        raise ValueError(f"`name` must be a timm model name, got unknown model {name!r}{hint}")


def _check_pretrained(pretrained: object) -> Path | None:
    if isinstance(pretrained, bool):
        return None
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(
            f"`pretrained` must be a bool or a checkpoint path, got {type(pretrained).__name__} {pretrained!r}"
        )
    path = Path(pretrained)
    if not path.is_file():
        raise FileNotFoundError(f"`pretrained` checkpoint file not found: {str(path)!r}")
    return path


def _split(model: nn.Module, name: str) -> _Parts:
    """Cut a timm model into its stem and stages, recognising the family by its attributes."""
    if all(isinstance(getattr(model, a, None), nn.Module) for a in _RESNET_STEM):
        stage_names = []
        while isinstance(getattr(model, f"layer{len(stage_names) + 1}", None), nn.Module):
            stage_names.append(f"layer{len(stage_names) + 1}")
        if len(stage_names) >= 2:
            stem = nn.Sequential(OrderedDict((a, getattr(model, a)) for a in _RESNET_STEM))
            prefixes = tuple(f"{a}." for a in (*_RESNET_STEM, *stage_names))
            return _Parts(stem, [getattr(model, s) for s in stage_names], prefixes)
    stem, stages = getattr(model, "stem", None), getattr(model, "stages", None)
    if isinstance(stem, nn.Module) and isinstance(stages, (nn.Sequential, nn.ModuleList)) and len(stages) >= 2:
        return _Parts(stem, list(stages), ("stem.", "stages."))
    raise ValueError(
        f"`name` {name!r} builds a timm {type(model).__name__}, which cannot be split into a stem and stages; "
        f"supported are {_SUPPORTED}"
    )


def _preview(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a checkpoint file into a state dict with any ``module.`` prefix stripped."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ImportError(
                f"reading the .safetensors checkpoint {str(path)!r} needs the `safetensors` package: "
                "pip install safetensors"
            ) from err
        obj: object = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"`pretrained` checkpoint {str(path)!r} cannot be read with torch.load(weights_only=True); "
                "save a state dict (model.state_dict()) instead of a pickled object"
            ) from err
    if isinstance(obj, Mapping):
        for entry in ("state_dict", "model"):
            if isinstance(obj.get(entry), Mapping):
                obj = obj[entry]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise TypeError(
            f"`pretrained` checkpoint {str(path)!r} must hold a state dict (str -> Tensor) or a dict with a "
            f"'state_dict' or 'model' entry, got {type(obj).__name__}"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_checkpoint(model: nn.Module, path: Path, parts: _Parts, name: str) -> None:
    """Load a checkpoint into the timm model; every stem and stage tensor must be present and fit."""
    state = _read_state_dict(path)
    own = model.state_dict()
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    head = _HEAD_PREFIXES + ((f"{classifier}.",) if isinstance(classifier, str) else ())
    # BatchNorm's num_batches_tracked counters are absent from old checkpoints (torchvision's ResNets).
    missing = [
        k for k in own if k.startswith(parts.prefixes) and k not in state and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in own and not k.startswith(head)]
    mismatched = [
        f"{k} {tuple(v.shape)} (model {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    problems = [
        f"{len(keys)} {what}: {_preview(keys)}"
        for keys, what in (
            (missing, "missing keys"),
            (unexpected, "unexpected keys"),
            (mismatched, "shape mismatches"),
        )
        if keys
    ]
    if problems:
        raise ValueError(
            f"`pretrained` checkpoint {str(path)!r} does not fit timm model {name!r}: " + "; ".join(problems)
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def _keeps_size(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` with stride 1 keeps the spatial size of its input."""
    if isinstance(conv, Conv2dSame):  # pads dynamically from its stride
        return True
    if isinstance(conv.padding, str):
        return conv.padding == "same"
    return all(2 * p == d * (k - 1) for p, d, k in zip(conv.padding, conv.dilation, conv.kernel_size, strict=True))


def _unstrided(module: nn.Module, path: str, name: str) -> nn.Module | None:
    """The stride-1 version of ``module`` (possibly ``module`` itself, changed), or None if not strided."""
    # Other modules may carry a descriptive `stride` (timm's BasicBlock); the strided layers are these
    # types, and the builder's probe checks that the stage keeps its input resolution afterwards.
    if not isinstance(module, (nn.Conv2d, BlurPool2d, nn.AvgPool2d, nn.MaxPool2d)):
        return None
    stride = module.stride
    strides = tuple(stride) if isinstance(stride, (tuple, list)) else (stride, stride)
    if all(s == 1 for s in strides):
        return None
    if isinstance(module, nn.Conv2d):
        module.stride = (1, 1)
        if _keeps_size(module):
            return module
        if type(module) is nn.Conv2d:
            return _SamePaddedConv2d.from_conv(module)
    elif isinstance(module, BlurPool2d):
        return nn.Identity()  # anti-aliased decimation; timm builds no blur pool in a stride-1 block
    elif isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        kernel = module.kernel_size
        kernels = tuple(kernel) if isinstance(kernel, (tuple, list)) else (kernel, kernel)
        if kernels == strides:
            return nn.Identity()  # pure decimation (avg-down shortcut); timm uses Identity at stride 1
    raise ValueError(
        f"cannot remove the stride of `{path}` ({type(module).__name__}) in the last stage of {name!r}; "
        "use last_stride=2"
    )


def _remove_stride(stage: nn.Module, name: str) -> None:
    """Give every strided layer of ``stage`` stride 1 in place, keeping all parameters."""
    for parent_name, parent in list(stage.named_modules()):
        for child_name, child in list(parent.named_children()):
            path = f"{parent_name}.{child_name}" if parent_name else child_name
            replacement = _unstrided(child, path, name)
            if replacement is not None and replacement is not child:
                setattr(parent, child_name, replacement)


def _probe(model: nn.Module, parts: _Parts, in_chans: int, name: str) -> tuple[int, int, list[int], list[int]]:
    """Channels and reductions of the stem and every stage, measured on one zero image in eval mode."""
    largest = max((int(i.get("reduction", 0)) for i in getattr(model, "feature_info", [])), default=0)
    size = 2 * max(largest, 32)
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (None, torch.float32)
    training = model.training
    model.eval()  # no BatchNorm statistics update, no dropout
    try:
        with torch.no_grad():
            x = parts.stem(torch.zeros(1, in_chans, size, size, device=device, dtype=dtype))
            shapes = [x.shape]
            for stage in parts.stages:
                x = stage(x)
                shapes.append(x.shape)
    except Exception as err:
        raise ValueError(
            f"`name` {name!r}: the stem and stages do not run in sequence ({err}); supported are {_SUPPORTED}"
        ) from err
    finally:
        model.train(training)
    channels = [int(s[1]) for s in shapes]
    reductions = [size // int(s[-2]) for s in shapes]
    return channels[0], reductions[0], channels[1:], reductions[1:]
