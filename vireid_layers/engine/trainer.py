"""A plain, method-agnostic PyTorch training loop: AMP, compile, channels-last, DDP, exact resume, logging.

The trainer knows nothing about re-identification. It calls ``output = forward(model, batch)`` (by default
``model(batch.image, batch.modality)`` for :class:`~vireid_layers.data.datasets.folder.ImageSample` batches),
optionally gathers ``output`` and ``batch`` across DDP ranks, calls ``terms = criterion(output, batch)`` (a dict of
named scalar loss terms) and back-propagates their total: ``criterion.total(terms)`` when the criterion defines
it, else the plain sum. Each term is logged separately.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint, strip_prefixes, unwrap_model
from .distributed import distributed_info, gather_nested
from .run_directory import RunDirectory, _jsonable, environment_info

__all__ = ["AmpMode", "Trainer", "TrainingResult", "default_forward"]

AmpMode = Literal["auto", "bf16", "fp16"] | None
Criterion = Callable[[Any, Any], Mapping[str, Tensor]]
Evaluator = Callable[[nn.Module], Any]
_AMP_MODES = ("auto", "bf16", "fp16", None)
_SELECT_ON = ("val", "test", "last")
CHECKPOINT_FORMAT = 1


def default_forward(model: nn.Module, batch: Any) -> Any:
    """``model(images, modalities)`` for a batch with ``image``/``modality`` fields or keys, else ``model(*batch)``."""
    if isinstance(batch, Mapping):
        return model(batch["image"], batch["modality"])
    if hasattr(batch, "image") and hasattr(batch, "modality"):
        return model(batch.image, batch.modality)
    if isinstance(batch, tuple | list):
        return model(*batch)
    return model(batch)


def _to_device(batch: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(batch, Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4 and batch.is_floating_point():
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_to_device(v, device, channels_last) for v in batch))
    if isinstance(batch, tuple | list):
        return type(batch)(_to_device(v, device, channels_last) for v in batch)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device, channels_last) for k, v in batch.items()}
    return batch


def _find_sampler(loader: Any) -> Any:
    for attr in ("batch_sampler", "sampler"):
        sampler = getattr(loader, attr, None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            return sampler
    return None


def _metric_values(result: Any) -> dict[str, float]:
    """Scalar metrics of an evaluation result: a ``ProtocolResult`` (its mean) or a mapping of numbers."""
    if hasattr(result, "mean") and isinstance(result.mean, Mapping):
        return {k: float(v) for k, v in result.mean.items()}
    if isinstance(result, Mapping):
        return {k: float(v) for k, v in result.items() if isinstance(v, int | float)}
    raise TypeError(f"an evaluation callable must return a ProtocolResult or a mapping, got {type(result).__name__}")


def format_results_table(result: Any, digits: int = 2) -> str:
    """The final results table: ``ProtocolResult.format_table`` or a one-row table of a metric mapping."""
    if hasattr(result, "format_table"):
        return result.format_table(digits=digits)
    values = _metric_values(result)
    keys = [k for k in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP") if k in values]
    header = "| " + " | ".join(k.replace("rank", "Rank-") for k in keys) + " |"
    row = "| " + " | ".join(f"{100 * values[k]:.{digits}f}" for k in keys) + " |"
    return "\n".join([header, "|" + "--:|" * len(keys), row])


@dataclass
class TrainingResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        epochs: number of epochs completed (including those of a resumed run).
        best_epoch: epoch of the selected checkpoint (``None`` without evaluation).
        best_metric: its selection metric.
        selected_on: ``"val"``, ``"test"`` or ``"last"``.
        history: one dict per epoch: mean loss terms, lr, time, evaluation metrics.
        final: the result of the final test evaluation (``ProtocolResult`` or mapping), if any.
    """

    epochs: int
    best_epoch: int | None
    best_metric: float | None
    selected_on: str
    history: list[dict[str, Any]] = field(default_factory=list)
    final: Any = None


class Trainer:
    """Train any model with a criterion returning named loss terms.

    Args:
        model: the network (not yet wrapped; the trainer moves it to ``device`` and wraps it for DDP/compile).
        criterion: ``criterion(output, batch) -> {name: scalar tensor}``; the total is ``criterion.total(terms)``
            if defined, else ``sum(terms.values())``.
        optimizer: the optimizer over ``model``'s parameters. Each group's ``base_lr`` (default: its ``lr`` at
            construction) is multiplied by ``scheduler_fn(epoch)`` at the start of every epoch.
        scheduler_fn: ``epoch -> factor`` (e.g. :class:`~vireid_layers.engine.schedule.DEENSchedule`); ``None``
            keeps the learning rate constant.
        train_loader: iterable of batches; a batch sampler or sampler with ``set_epoch`` (and ``state_dict``) is
            found on ``loader.batch_sampler`` / ``loader.sampler`` and driven by the trainer.
        device: where to train; default CUDA if available, else CPU.
        amp: ``"auto"`` (bf16 on CUDA, none on CPU), ``"bf16"`` (autocast, no scaler), ``"fp16"`` (autocast +
            ``GradScaler``) or ``None`` (float32).
        channels_last: convert the model and 4-D image batches to channels-last memory format.
        compile: wrap the model in ``torch.compile`` (``True`` or a dict of ``torch.compile`` keyword arguments).
        grad_clip: clip the global gradient norm to this value (after unscaling); ``None`` disables it.
        run_dir: directory for logs, metrics, checkpoints and plots; ``None`` writes nothing.
        epochs: number of epochs :meth:`fit` runs.
        forward: ``(model, batch) -> output``; default :func:`default_forward`.
        gather: ``(output, batch) -> (output, batch)`` merging all ranks (DDP); default: every tensor of both is
            concatenated along dim 0 with an autograd-aware all-gather (:func:`~.distributed.gather_nested`).
        evaluate: ``model -> ProtocolResult | {metric: value}``, run every ``eval_every`` epochs and after the
            last one; used for model selection.
        eval_every: evaluation period in epochs (0: only the final evaluation).
        select_on: the split ``evaluate`` uses: ``"val"``, ``"test"`` (logged as ``selected_on=test``) or
            ``"last"`` (no selection; the last epoch is kept, ``evaluate`` is only reported).
        select_metric: key of the evaluation metrics maximised for selection.
        test: ``model -> ProtocolResult | mapping`` run once at the end on the selected model: the final table.
        config: configuration written to ``config.json``.
        sync_bn: convert BatchNorm layers to ``SyncBatchNorm`` under DDP.
        deterministic: ``torch.use_deterministic_algorithms(True)`` and ``cudnn.benchmark = False``.
        log_every: log (and write a CSV/JSONL row) every this many steps; the epoch mean is always logged.
        checkpoint_every: write ``last.pt`` every this many epochs (and after the last one).
        checkpoint_every_steps: also write ``last.pt`` every this many optimisation steps *within* an epoch
            (``None``: only at epoch ends). A run resumed from such a checkpoint continues the epoch at the
            next batch, with the sampler position, the RNG states and the epoch's running means restored, so it
            ends bit-identical to the uninterrupted run when the loader has no worker processes (workers draw
            their augmentation seeds when an epoch's iterator starts, so with workers the batches are the same
            but their random augmentations are not).
        progress: show a tqdm progress bar when tqdm is installed.

    Raises:
        ValueError: an invalid option; the message names it and the allowed values.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: Criterion,
        optimizer: torch.optim.Optimizer,
        scheduler_fn: Callable[[int], float] | None,
        train_loader: Any,
        *,
        device: torch.device | str | None = None,
        amp: AmpMode = "auto",
        channels_last: bool = False,
        compile: bool | Mapping[str, Any] = False,
        grad_clip: float | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        epochs: int = 1,
        forward: Callable[[nn.Module, Any], Any] = default_forward,
        gather: Callable[[Any, Any], tuple[Any, Any]] | None = None,
        evaluate: Evaluator | None = None,
        eval_every: int = 1,
        select_on: Literal["val", "test", "last"] = "val",
        select_metric: str = "rank1",
        test: Evaluator | None = None,
        config: Mapping[str, Any] | None = None,
        sync_bn: bool = False,
        deterministic: bool = False,
        log_every: int = 10,
        checkpoint_every: int = 1,
        checkpoint_every_steps: int | None = None,
        progress: bool = True,
    ) -> None:
        _check_options(amp, select_on, epochs, eval_every, log_every, checkpoint_every, grad_clip)
        if not callable(criterion):
            raise TypeError(f"`criterion` must be callable (output, batch) -> dict, got {type(criterion).__name__}")
        if scheduler_fn is not None and not callable(scheduler_fn):
            raise TypeError(f"`scheduler_fn` must be callable epoch -> factor or None, got {scheduler_fn!r}")

        self.rank, self.world_size = distributed_info()
        self.device = torch.device(device) if device is not None else _default_device()
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" else None
        self.amp = amp
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == "fp16" else None
        self.channels_last = channels_last
        self.grad_clip = grad_clip
        self.epochs = epochs
        self.forward_fn = forward
        self.gather_fn = gather
        self.evaluate_fn = evaluate
        self.eval_every = eval_every
        self.select_on = select_on
        self.select_metric = select_metric
        self.test_fn = test
        self.log_every = log_every
        self.checkpoint_every = checkpoint_every
        if checkpoint_every_steps is not None and (
            isinstance(checkpoint_every_steps, bool)
            or not isinstance(checkpoint_every_steps, int)
            or checkpoint_every_steps < 1
        ):
            raise ValueError(f"`checkpoint_every_steps` must be an int >= 1 or None, got {checkpoint_every_steps!r}")
        self.checkpoint_every_steps = checkpoint_every_steps
        self.progress = progress
        self.criterion = criterion
        self.optimizer = optimizer
        self.scheduler_fn = scheduler_fn
        self.train_loader = train_loader
        self.sampler = _find_sampler(train_loader)

        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        self.model, self.module = self._prepare_model(model, channels_last, sync_bn, compile)
        if isinstance(criterion, nn.Module):
            criterion.to(self.device)
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])

        self.epoch = 0  # next epoch to run
        self.global_step = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.run = RunDirectory(run_dir, enabled=self.rank == 0)
        self.run_dir = self.run.path
        self.config = dict(config or {})
        self._loss_terms: list[str] = []
        # Progress inside the current epoch (steps consumed, running sums): saved by mid-epoch checkpoints.
        self._step_in_epoch = 0
        self._epoch_sums: dict[str, float] = {}

    def _prepare_model(
        self, model: nn.Module, channels_last: bool, sync_bn: bool, compile: bool | Mapping[str, Any]
    ) -> tuple[nn.Module, nn.Module]:
        """Move, convert and wrap the model: ``(model to call, bare module for state dicts and evaluation)``."""
        model = model.to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.world_size > 1:
            if sync_bn:  # SyncBatchNorm reuses the BatchNorm parameters, so the optimizer stays valid
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        module = unwrap_model(model)
        if compile:
            model = torch.compile(model, **(dict(compile) if isinstance(compile, Mapping) else {}))
        return model, module

    # ------------------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: model, optimizer, scaler, schedule epoch, sampler and RNGs.

        Mid-epoch (``checkpoint_every_steps``) the state also holds the steps consumed in the epoch and the running
        sums of its logged values, and the sampler position is the number of batches the loop has consumed (a
        loader with workers has pulled more from the sampler).
        """
        sampler_state = self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else {}
        if sampler_state and self._step_in_epoch:
            sampler_state = {**sampler_state, "num_yielded": self._step_in_epoch}
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "step_in_epoch": self._step_in_epoch,
            "epoch_sums": dict(self._epoch_sums),
            "global_step": self.global_step,
            "model": strip_prefixes(self.module.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"epoch": self.epoch, "lr": [g["lr"] for g in self.optimizer.param_groups]},
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "sampler": sampler_state,
            "rng": rng_state(),
            "best": {"metric": self.best_metric, "epoch": self.best_epoch},
            "history": self.history,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the run continues at ``state["epoch"]``, after its ``step_in_epoch``)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported checkpoint format {state.get('format')!r}; expected {CHECKPOINT_FORMAT}")
        self.module.load_state_dict(strip_prefixes(state["model"]))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if state["sampler"] and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state["sampler"])
        self.epoch = int(state["epoch"])
        self._step_in_epoch = int(state.get("step_in_epoch", 0))
        self._epoch_sums = {str(k): float(v) for k, v in state.get("epoch_sums", {}).items()}
        self.global_step = int(state["global_step"])
        self.best_metric = state["best"]["metric"]
        self.best_epoch = state["best"]["epoch"]
        self.history = list(state["history"])
        restore_rng_state(state["rng"])

    def save_checkpoint(self, path: str | os.PathLike[str]) -> Path | None:
        """Write :meth:`state_dict` atomically (rank 0 only; other ranks return ``None``)."""
        if self.rank != 0:
            return None
        return save_checkpoint(self.state_dict(), path)

    def resume(self, path: str | os.PathLike[str]) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint` (``weights_only=True``) and continue from it."""
        self.load_state_dict(load_checkpoint(path, map_location=self.device))
        self.run.log(f"resumed from {path} at epoch {self.epoch} (step {self.global_step})")

    # ------------------------------------------------------------------------------------------ loop

    def _set_lr(self, epoch: int) -> float:
        factor = 1.0 if self.scheduler_fn is None else float(self.scheduler_fn(epoch))
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        return factor

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _total(self, terms: Mapping[str, Tensor]) -> Tensor:
        total = getattr(self.criterion, "total", None)
        if callable(total):
            return total(terms)
        return sum(terms.values())  # type: ignore[return-value]

    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimisation step on one batch; returns the loss terms, their total and the gradient norm."""
        batch = _to_device(batch, self.device, self.channels_last)
        with self._autocast():
            output = self.forward_fn(self.model, batch)
        if self.world_size > 1:
            output, batch = (self.gather_fn or _gather_both)(output, batch)
        terms = self.criterion(output, batch)  # losses in fp32 (criteria cast where they need)
        if not isinstance(terms, Mapping) or not terms:
            raise TypeError(f"`criterion` must return a non-empty dict of loss terms, got {type(terms).__name__}")
        total = self._total(terms)
        if not torch.isfinite(total.detach()):
            values = {k: float(v.detach()) for k, v in terms.items()}
            raise FloatingPointError(f"non-finite loss at step {self.global_step}: {values}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        grad_norm = float("nan")
        if self.grad_clip is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.global_step += 1
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["total"] = float(total.detach())
        out["grad_norm"] = grad_norm
        return out

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch and return the mean of every logged quantity."""
        factor = self._set_lr(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.model.train()
        sums, count = dict(self._epoch_sums), self._step_in_epoch  # non-empty when resumed mid-epoch
        start = time.perf_counter()
        bar = _progress_bar(self.train_loader, epoch) if self.progress and self.rank == 0 else None
        source = bar if bar is not None else self.train_loader
        if count:  # resumed mid-epoch: starting an iterator draws a seed from the global RNG (DataLoader), which
            cpu_rng = torch.get_rng_state()  # the interrupted run drew at the epoch's start, before the checkpoint
            iterator = iter(source)
            torch.set_rng_state(cpu_rng)
        else:
            iterator = iter(source)
        for batch in iterator:
            values = self.train_step(batch)
            count += 1
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            self._step_in_epoch, self._epoch_sums = count, sums
            self._loss_terms = [k for k in values if k not in ("total", "grad_norm")]
            if bar is not None:
                bar.set_postfix(loss=f"{values['total']:.3f}")
            if self.global_step % self.log_every == 0:
                row = {"kind": "train", "epoch": epoch, "step": self.global_step, "lr": self._head_lr(), **values}
                self.run.log_metrics(row)
            every = self.checkpoint_every_steps
            if every is not None and count % every == 0 and self.run_dir is not None:
                self.save_checkpoint(self.run_dir / "last.pt")
        if bar is not None:
            bar.close()
        self._step_in_epoch, self._epoch_sums = 0, {}
        if count == 0:
            raise ValueError("`train_loader` yielded no batch: the dataset is smaller than one batch")
        means = {k: v / count for k, v in sums.items()}
        means.update(lr=self._head_lr(), lr_factor=factor, steps=count, time_s=time.perf_counter() - start)
        return means

    def _head_lr(self) -> float:
        return max(g["lr"] for g in self.optimizer.param_groups)

    def _evaluate(self, fn: Evaluator) -> Any:
        self.model.eval()
        try:
            return fn(self.module)
        finally:
            self.model.train()

    def _write_run_files(self) -> None:
        self.run.write_json("config.json", self.config)
        env = environment_info(self.device)
        env.update(amp=self.amp, channels_last=self.channels_last, world_size=self.world_size)
        self.run.write_json("env.json", env)

    def _log_config_changes(self) -> None:
        """On resume, log every configuration value that differs from the run's ``config.json`` (kept as it was)."""
        if self.run_dir is None or not (self.run_dir / "config.json").is_file():
            return
        recorded = json.loads((self.run_dir / "config.json").read_text(encoding="utf-8"))
        current = json.loads(json.dumps(_jsonable(self.config)))
        changed = {k: (recorded.get(k), current.get(k)) for k in sorted({*recorded, *current})}
        changed = {k: v for k, v in changed.items() if v[0] != v[1]}
        if changed:
            shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            self.run.log(f"warning: resuming with a configuration that differs from config.json: {shown}")

    def fit(self, resume: str | os.PathLike[str] | None = None) -> TrainingResult:
        """Run the remaining epochs (all of them, or those after the checkpoint ``resume``), then the final test.

        Returns:
            :class:`TrainingResult`.
        """
        if resume is not None:
            self.resume(resume)
            self._log_config_changes()
        else:
            self._write_run_files()
        if self.select_on == "test" and self.evaluate_fn is not None:
            self.run.log("model selection: selected_on=test (the checkpoint is chosen on the test set)")
        self.run.log(
            f"training {self.epochs} epochs on {self.device} (amp={self.amp}, channels_last={self.channels_last}, "
            f"world_size={self.world_size}), starting at epoch {self.epoch}"
        )
        last_eval = None
        while self.epoch < self.epochs:
            epoch = self.epoch
            means = self.train_one_epoch(epoch)
            record = {"kind": "epoch", "epoch": epoch, "step": self.global_step, **means}
            terms = " ".join(f"{k}={means[k]:.4f}" for k in [*self._loss_terms, "total"])
            self.run.log(
                f"epoch {epoch}: {terms} lr={means['lr']:.2e} steps={means['steps']} time={means['time_s']:.1f}s"
            )
            last = epoch + 1 == self.epochs
            due = self.eval_every > 0 and (epoch + 1) % self.eval_every == 0
            self.epoch = epoch + 1
            if self.evaluate_fn is not None and (due or last):
                last_eval = self._evaluate(self.evaluate_fn)
                metrics = _metric_values(last_eval)
                record.update({f"eval_{k}": v for k, v in metrics.items()})
                self.run.log_metrics({"kind": "eval", "epoch": epoch, "step": self.global_step, **metrics})
                shown = ", ".join(f"{k}={100 * metrics[k]:.2f}" for k in ("rank1", "mAP", "mINP") if k in metrics)
                self.run.log(f"evaluation after epoch {epoch} ({self.select_on}): {shown}")
                if self.select_on != "last":
                    if self.select_metric not in metrics:
                        known = list(metrics)
                        raise KeyError(f"`select_metric` {self.select_metric!r} is not an evaluation metric: {known}")
                    value = metrics[self.select_metric]
                    if self.best_metric is None or value > self.best_metric:
                        self.best_metric, self.best_epoch = value, epoch
                        if self.run_dir is not None:
                            self.save_checkpoint(self.run_dir / "best.pt")
                        self.run.log(
                            f"new best {self.select_metric}={100 * value:.2f} at epoch {epoch} "
                            f"(selected_on={self.select_on})"
                        )
            self.history.append(record)
            if self.run_dir is not None and (self.epoch % self.checkpoint_every == 0 or last):
                self.save_checkpoint(self.run_dir / "last.pt")
        return self._finish(last_eval)

    def _finish(self, last_eval: Any) -> TrainingResult:
        selected = self.select_on if self.best_epoch is not None else "last"
        if selected != "last" and self.run_dir is not None and (self.run_dir / "best.pt").is_file():
            state = load_checkpoint(self.run_dir / "best.pt", map_location=self.device)
            self.module.load_state_dict(strip_prefixes(state["model"]))
            self.run.log(f"loaded the best checkpoint (epoch {self.best_epoch}, selected_on={selected})")
        final = None
        if self.test_fn is not None:
            final = self._evaluate(self.test_fn)
            table = format_results_table(final)
            self.run.log(f"final results (selected_on={selected}):\n{table}")
            payload = final.as_dict() if hasattr(final, "as_dict") else _metric_values(final)
            self.run.write_json(
                "results.json",
                {"selected_on": selected, "best_epoch": self.best_epoch, "epochs": self.epoch, "results": payload},
            )
            self.run.write_text("results.md", f"selected_on={selected}\n\n{table}\n")
        cmc = _cmc_curve(final if final is not None else last_eval)
        self.run.plot(self._loss_terms, cmc)
        self.run.close()
        return TrainingResult(self.epoch, self.best_epoch, self.best_metric, selected, self.history, final)


def _check_options(
    amp: object,
    select_on: object,
    epochs: object,
    eval_every: object,
    log_every: object,
    checkpoint_every: object,
    grad_clip: object,
) -> None:
    if amp not in _AMP_MODES:
        raise ValueError(f"`amp` must be one of {list(_AMP_MODES)}, got {amp!r}")
    if select_on not in _SELECT_ON:
        raise ValueError(f"`select_on` must be one of {list(_SELECT_ON)}, got {select_on!r}")
    for name, value, minimum in (
        ("epochs", epochs, 1),
        ("eval_every", eval_every, 0),
        ("log_every", log_every, 1),
        ("checkpoint_every", checkpoint_every, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}")
    if grad_clip is not None and not (isinstance(grad_clip, int | float) and grad_clip > 0):
        raise ValueError(f"`grad_clip` must be a positive number or None, got {grad_clip!r}")


def _progress_bar(loader: Any, epoch: int) -> Any:
    """A tqdm bar over ``loader`` when tqdm is installed and stderr is a terminal, else ``None``."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(loader, desc=f"epoch {epoch}", leave=False)


def _cmc_curve(result: Any) -> list[float] | None:
    trials = getattr(result, "trials", None)
    if not trials:
        return None
    curves = [t.metrics.cmc.float() for t in trials if t.metrics.cmc.numel()]
    if not curves:
        return None
    length = min(c.numel() for c in curves)
    return torch.stack([c[:length] for c in curves]).mean(0).tolist()


def _gather_both(output: Any, batch: Any) -> tuple[Any, Any]:
    return gather_nested(output), gather_nested(batch)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
