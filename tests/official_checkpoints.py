"""Fake official checkpoints of DEEN, DDAG, MPANet and AGW, written from ``reference/official_checkpoints.md``.

One layout function per model lists every state-dict entry of the official network in state-dict order, with its
shape, dtype, whether it is a parameter (and trainable) or a buffer, and its status (``used``, ``dead`` or
``train-only``), from the tables of that document:

* :func:`resnet50_layout`: the shared ResNet-50 block ("R50 at prefix P", §2), 318 entries;
* :func:`deen_layout` (``variant="sysu"`` / ``"regdb"``, §3), :func:`ddag_layout` (§4), :func:`mpanet_layout` (§5),
  :func:`agw_layout` (§6, ``method="agw"`` / ``"base"``).

:func:`build_state_dict` fills a layout with seeded random values (fan-in scaled weights, BatchNorm statistics
like a trained network's, ``num_batches_tracked`` int64 scalars, the frozen BN-neck shifts at 0); the dead
entries are zero tensors expanded to their shape by default (every key and shape present, no memory).
:func:`official_checkpoint` wraps a state dict as each official script saves it: DEEN ``{'net', 'cmc', 'mAP',
'mINP', 'epoch'}``, DDAG without ``mINP``, AGW's best file with and its periodic file without ``mINP`` (``cmc`` a
float32 NumPy array of 20 values, ``mAP`` / ``mINP`` NumPy float64 scalars, ``epoch`` an int), MPANet the bare
state dict. None of the four official scripts adds a ``module.`` prefix; ``module_prefix=True`` simulates a
``DataParallel``-wrapped copy. :func:`save_checkpoint` writes it as ``torch.save`` does (zip or legacy format),
optionally with the NumPy globals a NumPy 1.x installation writes (``numpy.core.multiarray.*``).
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import types
import zipfile as zipfile_module
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

Status = Literal["used", "dead", "train-only"]
MODELS = ("deen-sysu", "deen-regdb", "ddag", "mpanet", "agw")


@dataclass(frozen=True)
class Entry:
    """One state-dict entry of an official network."""

    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    parameter: bool = True  # False: a buffer (BatchNorm statistics)
    trainable: bool = True  # False: requires_grad=False (frozen BN-neck shifts, MPANet's EMA classifiers)
    status: Status = "used"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _p(key: str, *shape: int, trainable: bool = True) -> Entry:
    return Entry(key, tuple(shape), trainable=trainable)


def bn(prefix: str, channels: int, *, frozen_bias: bool = False) -> list[Entry]:
    """``BN(C)``: weight, bias, running_mean, running_var (float32 [C]) and num_batches_tracked (int64 [])."""
    return [
        _p(f"{prefix}weight", channels),
        _p(f"{prefix}bias", channels, trainable=not frozen_bias),
        Entry(f"{prefix}running_mean", (channels,), parameter=False, trainable=False),
        Entry(f"{prefix}running_var", (channels,), parameter=False, trainable=False),
        Entry(f"{prefix}num_batches_tracked", (), torch.int64, parameter=False, trainable=False),
    ]


# (layer, blocks, w, in0) of §2's table
_R50_LAYERS = ((1, 3, 64, 64), (2, 4, 128, 256), (3, 6, 256, 512), (4, 3, 512, 1024))


def resnet50_layout(prefix: str) -> list[Entry]:
    """ "R50 at prefix P" (§2): torchvision's ``resnet50().state_dict()`` without ``fc``, 318 entries."""
    out = [_p(f"{prefix}conv1.weight", 64, 3, 7, 7), *bn(f"{prefix}bn1.", 64)]
    for layer, blocks, w, in0 in _R50_LAYERS:
        for b in range(blocks):
            p = f"{prefix}layer{layer}.{b}."
            cin = in0 if b == 0 else 4 * w
            out += [_p(f"{p}conv1.weight", w, cin, 1, 1), *bn(f"{p}bn1.", w)]
            out += [_p(f"{p}conv2.weight", w, w, 3, 3), *bn(f"{p}bn2.", w)]
            out += [_p(f"{p}conv3.weight", 4 * w, w, 1, 1), *bn(f"{p}bn3.", 4 * w)]
            if b == 0:
                out += [_p(f"{p}downsample.0.weight", 4 * w, in0, 1, 1), *bn(f"{p}downsample.1.", 4 * w)]
    return out


def _with_status(entries: Iterable[Entry], status: Callable[[str], Status]) -> list[Entry]:
    return [replace(e, status=status(e.key)) for e in entries]


THERMAL, VISIBLE, BASE = "thermal_module.thermal.", "visible_module.visible.", "base_resnet.base."


def three_resnet50s_layout() -> list[Entry]:
    """The three full ResNet-50s of DEEN, DDAG and AGW (thermal first), with §2's dead parts: 954 entries."""
    used_stem = ("conv1.", "bn1.")

    def status(key: str) -> Status:
        for prefix in (THERMAL, VISIBLE):
            if key.startswith(prefix):
                return "used" if key[len(prefix) :].startswith(used_stem) else "dead"
        return "dead" if key[len(BASE) :].startswith(used_stem) else "used"

    return _with_status([*resnet50_layout(THERMAL), *resnet50_layout(VISIBLE), *resnet50_layout(BASE)], status)


def bn_neck_head_layout(dim: int, num_classes: int) -> list[Entry]:
    """``bottleneck`` BN(dim) with its frozen zero shift, then the train-only ``classifier.weight`` (no bias)."""
    return [
        *bn("bottleneck.", dim, frozen_bias=True),
        Entry("classifier.weight", (num_classes, dim), status="train-only"),
    ]


def mfa_layout(prefix: str, high: int, low: int) -> list[Entry]:
    """The 26 entries of an MFA block (§3.4): ``CNL`` (l channels) then ``PNL`` (l/2 channels)."""
    out: list[Entry] = []
    for part, inner in (("CNL", low), ("PNL", low // 2)):
        p = f"{prefix}{part}."
        out += [_p(f"{p}g.weight", inner, low, 1, 1), _p(f"{p}g.bias", inner)]
        out += [_p(f"{p}theta.weight", inner, high, 1, 1), _p(f"{p}theta.bias", inner)]
        out += [_p(f"{p}phi.weight", inner, low, 1, 1), _p(f"{p}phi.bias", inner)]
        out += [_p(f"{p}W.0.weight", high, inner, 1, 1), _p(f"{p}W.0.bias", high), *bn(f"{p}W.1.", high)]
    return out


def dee_layout(channels: int) -> list[Entry]:
    """The 10 entries of DEE (§3.4): per branch b, ``FC{b}1..3`` (no bias) then ``FC{b}`` (weight, bias)."""
    out: list[Entry] = []
    for b in (1, 2):
        out += [_p(f"DEE.FC{b}{d}.weight", channels // 4, channels, 3, 3) for d in (1, 2, 3)]
        out += [_p(f"DEE.FC{b}.weight", channels, channels // 4, 1, 1), _p(f"DEE.FC{b}.bias", channels)]
    return out


def deen_layout(variant: str = "sysu", num_classes: int | None = None) -> list[Entry]:
    """DEEN (§3): 1048 entries for SYSU / LLCM, 1022 for RegDB (no MFA3, DEE on 512 channels, layer4 dead)."""
    if variant not in ("sysu", "regdb"):
        raise ValueError(f"variant must be 'sysu' or 'regdb', got {variant!r}")
    sysu = variant == "sysu"
    num_classes = num_classes or (395 if sysu else 206)
    trunk = three_resnet50s_layout()
    if not sysu:  # the RegDB forward stops after layer3
        trunk = [replace(e, status="dead") if e.key.startswith(f"{BASE}layer4.") else e for e in trunk]
    mfa = [(1, 256, 64), (2, 512, 256), (3, 1024, 512)][: 3 if sysu else 2]
    out = [*trunk, *dee_layout(1024 if sysu else 512)]
    for i, high, low in mfa:
        out += mfa_layout(f"MFA{i}.", high, low)
    return out + bn_neck_head_layout(2048 if sysu else 1024, num_classes)


def ddag_layout(num_classes: int = 395, *, low_dim: int = 512, part: int = 3, nheads: int = 4) -> list[Entry]:
    """DDAG (§4): 991 entries with the defaults (``embed_net(512, 395, part=3, wpa=True)``, 4 heads)."""
    out = [*three_resnet50s_layout(), *bn_neck_head_layout(2048, num_classes)]
    out += [Entry(f"classifier{i}.weight", (num_classes, 2048), status="dead") for i in (1, 2)]
    out += [_p("wpa.gate", part), _p("wpa.fc1.0.weight", 2048, 2048, 1, 1), _p("wpa.fc1.0.bias", 2048)]
    for conv in ("fc2", "fc3"):
        out += [_p(f"wpa.{conv}.weight", 2048, 2048, 1, 1), _p(f"wpa.{conv}.bias", 2048)]
    dead_w = [_p("wpa.W.0.weight", 2048, 2048, 1, 1), _p("wpa.W.0.bias", 2048), *bn("wpa.W.1.", 2048)]
    out += _with_status(dead_w, lambda k: "dead")
    out += bn("wpa.bottleneck.", 2048, frozen_bias=True)
    graph = []
    for i in range(nheads):
        graph += [_p(f"attention_{i}.W", 2048, low_dim), _p(f"attention_{i}.a", 2 * low_dim, 1)]
    graph += [_p("out_att.W", low_dim * nheads, num_classes), _p("out_att.a", 2 * num_classes, 1)]
    return out + _with_status(graph, lambda k: "train-only")


def mpanet_layout(num_classes: int = 395, *, num_parts: int = 6) -> list[Entry]:
    """MPANet (§5): 334 entries (SYSU and RegDB alike), a single-stream ResNet-50 under ``backbone.``."""
    dim = 2048 * (num_parts + 1)
    out = resnet50_layout("backbone.")
    for name, c in (("MAM3", 1024), ("MAM4", 2048)):
        p = f"backbone.{name}.channel_attention."
        out += [Entry(f"{p}0.weight", (c // 16, c, 1, 1)), Entry(f"{p}2.weight", (c, c // 16, 1, 1))]
    out += [_p("spatial_attention.weight", num_parts, 2048, 1, 1), _p("spatial_attention.bias", num_parts)]
    heads = ["visible_classifier", "infrared_classifier", "visible_classifier_", "infrared_classifier_"]
    out += [Entry(f"{h}.weight", (num_classes, dim), trainable=not h.endswith("_"), status="train-only") for h in heads]
    out += bn("bn_neck.", dim, frozen_bias=True)
    return [*out, Entry("classifier.weight", (num_classes, dim), status="train-only")]


def non_local_layout(prefix: str, channels: int) -> list[Entry]:
    """The 13 entries of an AGW ``Non_local`` (§6.4): g (Sequential), W (conv, BN), theta, phi; 1 inner channel."""
    return [
        _p(f"{prefix}g.0.weight", 1, channels, 1, 1),
        _p(f"{prefix}g.0.bias", 1),
        _p(f"{prefix}W.0.weight", channels, 1, 1, 1),
        _p(f"{prefix}W.0.bias", channels),
        *bn(f"{prefix}W.1.", channels),
        _p(f"{prefix}theta.weight", 1, channels, 1, 1),
        _p(f"{prefix}theta.bias", 1),
        _p(f"{prefix}phi.weight", 1, channels, 1, 1),
        _p(f"{prefix}phi.bias", 1),
    ]


def agw_layout(num_classes: int = 395, *, method: str = "agw") -> list[Entry]:
    """AGW (§6): 1025 entries (``--method base``: 960, no ``NL_*``)."""
    out = three_resnet50s_layout()
    if method == "agw":
        out += [e for j in range(2) for e in non_local_layout(f"NL_2.{j}.", 512)]
        out += [e for j in range(3) for e in non_local_layout(f"NL_3.{j}.", 1024)]
    elif method != "base":
        raise ValueError(f"method must be 'agw' or 'base', got {method!r}")
    return out + bn_neck_head_layout(2048, num_classes)


def layout(model: str, **kwargs: Any) -> list[Entry]:
    """The layout of one of :data:`MODELS`."""
    if model.startswith("deen-"):
        return deen_layout(model.removeprefix("deen-"), **kwargs)
    return {"ddag": ddag_layout, "mpanet": mpanet_layout, "agw": agw_layout}[model](**kwargs)


# --------------------------------------------------------------------------------------------------- values

# Frozen at their zero initialisation in every official network (§1, "Frozen zero biases").
_ZERO = ("bottleneck.bias", "wpa.bottleneck.bias", "bn_neck.bias")


def _value(entry: Entry, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    if entry.dtype == torch.int64:  # num_batches_tracked
        return torch.tensor(7, dtype=torch.int64)
    name = entry.key.rsplit(".", 1)[-1]
    if entry.key in _ZERO:
        return torch.zeros(entry.shape, dtype=dtype)
    if name == "running_mean":
        return 0.1 * torch.randn(entry.shape, generator=gen, dtype=dtype)
    if name == "running_var":
        return 0.5 + torch.rand(entry.shape, generator=gen, dtype=dtype)
    if len(entry.shape) == 1 and name == "weight":  # BatchNorm scale
        return 0.5 + 0.5 * torch.rand(entry.shape, generator=gen, dtype=dtype)
    if len(entry.shape) == 1 or entry.key == "wpa.gate":  # biases
        return 0.1 * torch.randn(entry.shape, generator=gen, dtype=dtype)
    fan_in = math.prod(entry.shape[1:])
    return torch.randn(entry.shape, generator=gen, dtype=dtype) / math.sqrt(fan_in)


def build_state_dict(
    entries: Iterable[Entry],
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    dead: Literal["zeros", "random"] = "zeros",
    live: Literal["zeros", "random"] = "random",
) -> OrderedDict[str, Tensor]:
    """A state dict with every entry of ``entries`` (in order): seeded random values in ``dtype``.

    Float entries take ``dtype`` (float32 as in the official files, float64 for exact comparisons);
    ``num_batches_tracked`` stays int64. With ``dead="zeros"`` the dead entries are zero scalars expanded to
    their shape (right key, shape and dtype, no memory); ``"random"`` fills them like the others. ``live``
    does the same for the other entries (``"zeros"``: a small file that still has every key and shape).
    """
    gen = torch.Generator().manual_seed(seed)
    out: OrderedDict[str, Tensor] = OrderedDict()
    for entry in entries:
        if (dead if entry.status == "dead" else live) == "zeros":
            kind = entry.dtype if entry.dtype == torch.int64 else dtype
            out[entry.key] = torch.zeros((), dtype=kind).expand(entry.shape)
        else:
            out[entry.key] = _value(entry, gen, dtype)
    return out


def official_checkpoint(
    model: str,
    state_dict: Mapping[str, Tensor],
    *,
    epoch: int = 80,
    periodic: bool = False,
    module_prefix: bool = False,
) -> Any:
    """``state_dict`` wrapped as the official script of ``model`` saves it.

    ``periodic`` selects AGW's ``_epoch_{n}.t`` file (POOL metrics, no ``mINP``) instead of its ``_best.t``.
    """
    net = OrderedDict((f"module.{k}" if module_prefix else k, v) for k, v in state_dict.items())
    if model == "mpanet":
        return net
    cmc = np.linspace(0.5, 0.99, 20, dtype=np.float32)
    out: dict[str, Any] = {"net": net, "cmc": cmc, "mAP": np.float64(0.47)}
    if model.startswith("deen-") or (model == "agw" and not periodic):
        out["mINP"] = np.float64(0.31)
    elif model not in ("ddag", "agw"):
        raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
    out["epoch"] = int(epoch)
    return out


# ------------------------------------------------------------------------------------------------ writing

# The module NumPy 1.x names in its pickles for what NumPy 2 calls numpy._core.multiarray.*
_NUMPY1_MODULES = {"numpy._core.multiarray": "numpy.core.multiarray"}


class _NumPy1Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """The pure-Python pickler, writing NumPy's reconstructors under their NumPy 1.x module names."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None)
        if module in _NUMPY1_MODULES and self.proto < 4:
            qualname = name or obj.__qualname__
            self.write(pickle.GLOBAL + f"{_NUMPY1_MODULES[module]}\n{qualname}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


_NUMPY1_PICKLE = types.SimpleNamespace(Pickler=_NumPy1Pickler, dump=pickle.dump, __name__="numpy1_pickle")


def save_checkpoint(obj: Any, path: str | Path, *, numpy: Literal[1, 2] = 2, zipfile: bool = True) -> Path:
    """``torch.save(obj, path)``; ``numpy=1`` writes the NumPy globals as NumPy 1.x does, ``zipfile=False`` the
    legacy (pre-1.6) format."""
    path = Path(path)
    kwargs: dict[str, Any] = {"_use_new_zipfile_serialization": zipfile}
    if numpy == 1:
        kwargs["pickle_module"] = _NUMPY1_PICKLE
    torch.save(obj, path, **kwargs)
    return path


def pickled_globals(path: str | Path) -> set[str]:
    """The ``module.name`` globals of the pickles in a checkpoint file, zip or legacy format."""
    path = Path(path)
    if zipfile_module.is_zipfile(path):
        with zipfile_module.ZipFile(path) as archive:
            pickles = [archive.read(n) for n in archive.namelist() if n.endswith("data.pkl")]
    else:  # legacy: magic number, protocol, system info, then the object, each its own pickle
        data, pickles, start = path.read_bytes(), [], 0
        for _ in range(4):
            stream = io.BytesIO(data[start:])
            for *_, _pos in pickletools.genops(stream):
                pass
            pickles.append(data[start : start + stream.tell()])
            start += stream.tell()
    found = set()
    for blob in pickles:
        for op, arg, _ in pickletools.genops(blob):
            if op.name == "GLOBAL":
                found.add(arg.replace(" ", "."))
    return found
