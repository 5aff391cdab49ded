"""The options of a training run as one typed, validated object: :class:`TrainerConfig`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

__all__ = ["AmpMode", "SelectOn", "TrainerConfig"]

AmpMode = Literal["auto", "bf16", "fp16"] | None
SelectOn = Literal["val", "test", "last"]
_AMP_MODES = ("auto", "bf16", "fp16", None)
_SELECT_ON = ("val", "test", "last")


@dataclass(frozen=True)
class TrainerConfig:
    """Every option of :class:`~vireid_layers.engine.Trainer`: precision, layout, loop, logging, selection.

    The collaborators (model, criterion, optimizer, loader, schedule, evaluation callables) are the trainer's
    own arguments; everything here is a plain value, checked when the object is built.

    Attributes:
        epochs: number of epochs :meth:`~vireid_layers.engine.Trainer.fit` runs.
        device: where to train; default CUDA if available, else CPU.
        amp: ``"auto"`` (bf16 on CUDA, none on CPU), ``"bf16"`` (autocast, no scaler), ``"fp16"`` (autocast +
            ``GradScaler``) or ``None`` (float32).
        channels_last: convert the model and 4-D floating-point batches to channels-last memory format.
        compile: wrap the model in ``torch.compile`` (``True`` or a dict of ``torch.compile`` keyword arguments).
        grad_clip: clip the global gradient norm to this value (after unscaling); ``None`` disables it.
        sync_bn: convert BatchNorm layers to ``SyncBatchNorm`` under DDP.
        deterministic: ``torch.use_deterministic_algorithms(True)`` and ``cudnn.benchmark = False``.
        run_dir: directory for logs, metrics, checkpoints and plots; ``None`` writes nothing.
        log_every: write a CSV/JSONL row every this many steps; the epoch mean is always logged.
        checkpoint_every: write ``last.pt`` every this many epochs (and after the last one).
        checkpoint_every_steps: also write ``last.pt`` every this many optimisation steps *within* an epoch
            (``None``: only at epoch ends). A run resumed from such a checkpoint continues the epoch at the
            next batch, with the sampler position, the RNG states and the epoch's running means restored, so it
            ends bit-identical to the uninterrupted run when the loader has no worker processes (workers draw
            their augmentation seeds when an epoch's iterator starts, so with workers the batches are the same
            but their random augmentations are not).
        eval_every: period of the ``evaluate`` callable in epochs (0: only after the last epoch).
        select_on: the split ``evaluate`` measures: ``"val"``, ``"test"`` (the checkpoint is chosen on the test
            set; logged as ``selected_on=test``) or ``"last"`` (no selection: the last epoch is kept and
            ``evaluate`` is only reported).
        select_metric: the evaluation metric maximised for selection; ``None``: the first one the evaluation
            returns.
        progress: show a tqdm progress bar when tqdm is installed and stderr is a terminal.

    Raises:
        ValueError: an invalid option; the message names it, the allowed values and the value received.

    Examples:
        >>> TrainerConfig(epochs=3, amp=None).epochs
        3
        >>> TrainerConfig(amp="fp8")
        Traceback (most recent call last):
        ...
        ValueError: `amp` must be one of ['auto', 'bf16', 'fp16', None], got 'fp8'
    """

    epochs: int = 1
    device: torch.device | str | None = None
    amp: AmpMode = "auto"
    channels_last: bool = False
    compile: bool | Mapping[str, Any] = False
    grad_clip: float | None = None
    sync_bn: bool = False
    deterministic: bool = False
    run_dir: str | os.PathLike[str] | None = None
    log_every: int = 10
    checkpoint_every: int = 1
    checkpoint_every_steps: int | None = None
    eval_every: int = 1
    select_on: SelectOn = "val"
    select_metric: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.amp not in _AMP_MODES:
            raise ValueError(f"`amp` must be one of {list(_AMP_MODES)}, got {self.amp!r}")
        if self.select_on not in _SELECT_ON:
            raise ValueError(f"`select_on` must be one of {list(_SELECT_ON)}, got {self.select_on!r}")
        for name, minimum in (("epochs", 1), ("eval_every", 0), ("log_every", 1), ("checkpoint_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}")
        steps = self.checkpoint_every_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"`checkpoint_every_steps` must be an int >= 1 or None, got {steps!r}")
        clip = self.grad_clip
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, int | float) or not clip > 0):
            raise ValueError(f"`grad_clip` must be a positive number or None, got {clip!r}")
        if not isinstance(self.compile, bool | Mapping):
            raise TypeError(f"`compile` must be a bool or a mapping of torch.compile options, got {self.compile!r}")
        if self.select_metric is not None and not isinstance(self.select_metric, str):
            raise TypeError(f"`select_metric` must be a str or None, got {self.select_metric!r}")

    def as_dict(self) -> dict[str, Any]:
        """The options as plain values (the device and the run directory as strings), for ``env.json``."""
        out = asdict(self)
        for key in ("device", "run_dir"):
            if out[key] is not None:
                out[key] = str(out[key])
        if isinstance(out["compile"], Mapping):
            out["compile"] = dict(out["compile"])
        return out
