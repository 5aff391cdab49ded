"""A plain, method-agnostic PyTorch training loop: AMP, compile, channels-last, DDP, exact resume, logging.

The trainer knows nothing of the models it trains or of what their outputs mean. Each step it calls
``output = forward(model, batch)``, gathers ``output`` and ``batch`` across DDP ranks (the output's own
``gather()`` when it has one), calls ``terms = criterion(output, batch)`` (a dict of named scalar loss terms)
and back-propagates their total: ``criterion.total(terms)`` when the criterion defines it, else the plain sum.
Each term is logged separately. Evaluation callables return named numbers (see
:mod:`~vireid_layers.engine.interfaces`); the trainer logs them, selects the checkpoint on one of them and writes
the final result. Its options are one :class:`~vireid_layers.engine.TrainerConfig`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .batches import default_device, default_forward, default_gather, find_sampler, progress_bar, to_device
from .checkpoint import (
    load_checkpoint,
    remove_stale_temporaries,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    strip_prefixes,
    unwrap_model,
)
from .config import TrainerConfig
from .distributed import distributed_info
from .interfaces import metrics_of, summary_of
from .run_directory import RunDirectory, environment_info

__all__ = ["Trainer", "TrainingResult"]

Evaluator = Callable[[nn.Module], Any]
CHECKPOINT_FORMAT = 1


@dataclass
class TrainingResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        epochs: number of epochs completed (including those of a resumed run).
        best_epoch: epoch of the selected checkpoint (``None`` without evaluation).
        best_metric: its selection metric.
        selected_on: ``"val"``, ``"test"`` or ``"last"``.
        history: one dict per epoch: mean loss terms, lr, time, evaluation metrics.
        final: the result of the final ``test`` evaluation (whatever the callable returned), if any.
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
        model: the network (not yet wrapped; the trainer moves it to the device and wraps it for DDP/compile);
            its ``set_epoch(epoch)``, if defined, is called at the start of every epoch (:meth:`start_epoch`).
        criterion: ``criterion(output, batch) -> {name: scalar tensor}``; the total is ``criterion.total(terms)``
            if defined, else ``sum(terms.values())``; a ``weights`` mapping, when present, labels the loss plot;
            its ``state_dict()`` (an ``nn.Module``'s buffers) is checkpointed and restored, and its
            ``set_epoch(epoch)`` called at the start of every epoch, when it has them
            (:class:`~vireid_layers.engine.interfaces.Criterion`).
        optimizer: the optimizer over ``model``'s parameters. Each group's ``base_lr`` (default: its ``lr`` at
            construction) is multiplied by ``schedule(epoch)`` at the start of every epoch.
        train_loader: iterable of batches; a batch sampler or sampler with ``set_epoch`` (and ``state_dict``) is
            found on ``loader.batch_sampler`` / ``loader.sampler`` and driven by the trainer.
        config: every option of the run (:class:`~vireid_layers.engine.TrainerConfig`); default its defaults.
        schedule: ``epoch -> factor`` (e.g. :class:`~vireid_layers.engine.WarmupStepSchedule`); ``None`` keeps the
            learning rate constant.
        forward: ``(model, batch) -> output``; default :func:`default_forward`.
        gather: ``(output, batch) -> (output, batch)`` merging all ranks under DDP; default
            :func:`default_gather`.
        evaluate: ``model -> result`` run every ``config.eval_every`` epochs and after the last one, for model
            selection; the result is a mapping of numbers or an object with ``to_metrics()``
            (:class:`~vireid_layers.engine.interfaces.EvaluationResult`).
        test: ``model -> result`` run once at the end on the selected model: the final table, ``results.json``
            and the evaluation's own plots.
        hparams: the run's settings, written to ``config.json`` (and compared with it on resume).

    Raises:
        TypeError: a collaborator of the wrong kind; the message names it.

    Examples:
        >>> import torch.nn.functional as F
        >>> net = nn.Linear(4, 2)
        >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
        >>> trainer = Trainer(
        ...     net,
        ...     lambda out, batch: {"ce": F.cross_entropy(out, batch[1])},
        ...     torch.optim.SGD(net.parameters(), lr=0.1),
        ...     data,
        ...     TrainerConfig(epochs=2, device="cpu", progress=False),
        ...     forward=lambda model, batch: model(batch[0]),
        ... )
        >>> result = trainer.fit()  # doctest: +ELLIPSIS
        training 2 epochs on cpu ...
        >>> result.epochs, len(result.history)
        (2, 2)
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: Callable[[Any, Any], Mapping[str, Tensor]],
        optimizer: torch.optim.Optimizer,
        train_loader: Any,
        config: TrainerConfig | None = None,
        *,
        schedule: Callable[[int], float] | None = None,
        forward: Callable[[nn.Module, Any], Any] | None = None,
        gather: Callable[[Any, Any], tuple[Any, Any]] | None = None,
        evaluate: Evaluator | None = None,
        test: Evaluator | None = None,
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        config = TrainerConfig() if config is None else config
        _check_collaborators(config, criterion, optimizer, schedule, forward, gather, evaluate, test)

        self.config = config
        self.rank, self.world_size = distributed_info()
        self.device = torch.device(config.device) if config.device is not None else default_device()
        amp = config.amp
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" else None
        self.amp = amp
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == "fp16" else None
        self.criterion = criterion
        self.optimizer = optimizer
        self.schedule = schedule
        self.train_loader = train_loader
        self.sampler = find_sampler(train_loader)
        self.forward_fn = forward or default_forward
        self.gather_fn = gather or default_gather
        self.evaluate_fn = evaluate
        self.test_fn = test

        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        self.model, self.module = self._prepare_model(model, config.channels_last, config.sync_bn, config.compile)
        if isinstance(criterion, nn.Module):
            criterion.to(self.device)
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])

        self.epoch = 0  # next epoch to run
        self.global_step = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.run = RunDirectory(config.run_dir, enabled=self.rank == 0)
        self.run_dir = self.run.path
        self.hparams = dict(hparams or {})
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
        """Everything needed to continue exactly: model, criterion, optimizer, scaler, schedule epoch, sampler, RNGs.

        ``criterion`` holds ``criterion.state_dict()`` when the criterion has one and it is not empty (a stateful
        criterion, e.g. a loss weight that depends on the previous epoch, kept in buffers), else ``{}``.

        Mid-epoch (``checkpoint_every_steps``) the state also holds the steps consumed in the epoch and the running
        sums of its logged values, and the sampler position is the number of batches the loop has consumed (a
        loader with workers has pulled more from the sampler). ``logs`` holds the rows written so far to each
        per-step file of the run directory, which a resumed run cuts back to.
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
            "criterion": self._criterion_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"epoch": self.epoch, "lr": [g["lr"] for g in self.optimizer.param_groups]},
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "sampler": sampler_state,
            "rng": rng_state(),
            "best": {"metric": self.best_metric, "epoch": self.best_epoch},
            "history": self.history,
            "world_size": self.world_size,
            "logs": self.run.row_counts(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the run continues at ``state["epoch"]``, after its ``step_in_epoch``)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported checkpoint format {state.get('format')!r}; expected {CHECKPOINT_FORMAT}")
        self.module.load_state_dict(strip_prefixes(state["model"]))
        self._load_criterion_state(state.get("criterion"))
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

    def _criterion_state(self) -> dict[str, Any]:
        """``criterion.state_dict()`` when the criterion defines one (an ``nn.Module`` does), else ``{}``."""
        state_dict = getattr(self.criterion, "state_dict", None)
        return dict(state_dict()) if callable(state_dict) else {}

    def _load_criterion_state(self, state: Mapping[str, Any] | None) -> None:
        """Restore :meth:`_criterion_state` strictly; ``None`` (a checkpoint without it) keeps the current one."""
        load = getattr(self.criterion, "load_state_dict", None)
        if state is None:
            if self._criterion_state():
                self.run.log("warning: the checkpoint holds no criterion state; the criterion keeps its own")
            return
        if state and not callable(load):
            raise ValueError(
                f"the checkpoint holds a criterion state ({sorted(state)}) but `criterion` "
                f"({type(self.criterion).__name__}) has no load_state_dict()"
            )
        if callable(load) and (state or self._criterion_state()):
            load(state)

    def save_checkpoint(self, path: str | os.PathLike[str]) -> Path | None:
        """Write :meth:`state_dict` atomically (rank 0 only; other ranks return ``None``)."""
        if self.rank != 0:
            return None
        return save_checkpoint(self.state_dict(), path)

    def resume(self, path: str | os.PathLike[str]) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint` (``weights_only=True``) and continue from it.

        The per-step files of the run directory (``metrics.csv``, ``metrics.jsonl``) are cut back to the rows they
        had when the checkpoint was written, so the steps the interrupted run logged after it are not repeated.
        """
        state = load_checkpoint(path, map_location=self.device)
        self.load_state_dict(state)
        removed = self.run.truncate_rows(state.get("logs") or None, after_step=self.global_step)
        cut = "".join(f", removed {n} later row(s) of {name}" for name, n in removed.items())
        self.run.log(f"resumed from {path} at epoch {self.epoch} (step {self.global_step}){cut}")

    # ------------------------------------------------------------------------------------------ loop

    def _set_lr(self, epoch: int) -> float:
        factor = 1.0 if self.schedule is None else float(self.schedule(epoch))
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
        batch = to_device(batch, self.device, self.config.channels_last)
        with self._autocast():
            output = self.forward_fn(self.model, batch)
        if self.world_size > 1:
            output, batch = self.gather_fn(output, batch)
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
        if self.config.grad_clip is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.config.grad_clip))
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

    def start_epoch(self, epoch: int) -> float:
        """Prepare epoch ``epoch``: set the learning rates, then call ``set_epoch(epoch)`` on every collaborator.

        The sampler, the criterion and the (unwrapped) model are told the epoch when they define ``set_epoch``
        (:mod:`~vireid_layers.engine.interfaces`). It runs at the start of every epoch, including the epoch a
        resumed run continues (mid-epoch too), so ``set_epoch`` must be idempotent for a given epoch.

        Returns:
            The learning-rate factor of the schedule.
        """
        factor = self._set_lr(epoch)
        for part in (self.sampler, self.criterion, self.module):
            set_epoch = getattr(part, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
        return factor

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch (after :meth:`start_epoch`) and return the mean of every logged quantity."""
        factor = self.start_epoch(epoch)
        self.model.train()
        sums, count = dict(self._epoch_sums), self._step_in_epoch  # non-empty when resumed mid-epoch
        start = time.perf_counter()
        bar = progress_bar(self.train_loader, epoch) if self.config.progress and self.rank == 0 else None
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
            if self.global_step % self.config.log_every == 0:
                row = {"kind": "train", "epoch": epoch, "step": self.global_step, "lr": self._max_lr(), **values}
                self.run.log_metrics(row)
            every = self.config.checkpoint_every_steps
            if every is not None and count % every == 0 and self.run_dir is not None:
                self.save_checkpoint(self.run_dir / "last.pt")
        if bar is not None:
            bar.close()
        self._step_in_epoch, self._epoch_sums = 0, {}
        if count == 0:
            raise ValueError("`train_loader` yielded no batch: the dataset is smaller than one batch")
        means = {k: v / count for k, v in sums.items()}
        means.update(lr=self._max_lr(), lr_factor=factor, steps=count, time_s=time.perf_counter() - start)
        return means

    def _max_lr(self) -> float:
        """The largest group learning rate (the one logged as ``lr``)."""
        return max(g["lr"] for g in self.optimizer.param_groups)

    def _evaluate(self, fn: Evaluator) -> Any:
        self.model.eval()
        try:
            return fn(self.module)
        finally:
            self.model.train()

    def _write_run_files(self) -> None:
        self.run.write_json("config.json", self.hparams)
        env = environment_info(self.device)
        env.update(amp=self.amp, world_size=self.world_size, trainer=self.config.as_dict())
        self.run.write_json("env.json", env)

    def _log_config_changes(self) -> None:
        """On resume, log every setting that differs from the run's ``config.json`` (which is kept as it was)."""
        changed = self.run.json_differences("config.json", self.hparams)
        if changed:
            shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            self.run.log(f"warning: resuming with a configuration that differs from config.json: {shown}")

    def _remove_stale_temporaries(self) -> None:
        if self.run_dir is None or self.rank != 0:
            return
        for path in remove_stale_temporaries(self.run_dir):
            self.run.log(f"removed {path.name}, the temporary file of a checkpoint write that was interrupted")

    def fit(self, resume: str | os.PathLike[str] | None = None) -> TrainingResult:
        """Run the remaining epochs (all of them, or those after the checkpoint ``resume``), then the final test.

        Temporary files of interrupted checkpoint writes in the run directory are deleted first.

        Returns:
            :class:`TrainingResult`.
        """
        self._remove_stale_temporaries()
        if resume is not None:
            self.resume(resume)
            self._log_config_changes()
        else:
            self._write_run_files()
        cfg = self.config
        if cfg.select_on == "test" and self.evaluate_fn is not None:
            self.run.log("model selection: selected_on=test (the checkpoint is chosen on the test set)")
        self.run.log(
            f"training {cfg.epochs} epochs on {self.device} (amp={self.amp}, channels_last={cfg.channels_last}, "
            f"world_size={self.world_size}), starting at epoch {self.epoch}"
        )
        last_eval = None
        while self.epoch < cfg.epochs:
            epoch = self.epoch
            means = self.train_one_epoch(epoch)
            record = {"kind": "epoch", "epoch": epoch, "step": self.global_step, **means}
            terms = " ".join(f"{k}={means[k]:.4f}" for k in [*self._loss_terms, "total"])
            self.run.log(
                f"epoch {epoch}: {terms} lr={means['lr']:.2e} steps={means['steps']} time={means['time_s']:.1f}s"
            )
            last = epoch + 1 == cfg.epochs
            due = cfg.eval_every > 0 and (epoch + 1) % cfg.eval_every == 0
            self.epoch = epoch + 1
            if self.evaluate_fn is not None and (due or last):
                last_eval = self._evaluate(self.evaluate_fn)
                record.update({f"eval_{k}": v for k, v in self._select(epoch, last_eval).items()})
            self.history.append(record)
            if self.run_dir is not None and (self.epoch % cfg.checkpoint_every == 0 or last):
                self.save_checkpoint(self.run_dir / "last.pt")
        return self._finish(last_eval)

    def _select(self, epoch: int, result: Any) -> dict[str, float]:
        """Log an evaluation after ``epoch`` and keep ``best.pt`` when its selection metric improved."""
        metrics = metrics_of(result)
        cfg = self.config
        self.run.log_metrics({"kind": "eval", "epoch": epoch, "step": self.global_step, **metrics})
        self.run.log(f"evaluation after epoch {epoch} ({cfg.select_on}): {summary_of(result, metrics)}")
        if cfg.select_on == "last":
            return metrics
        key = cfg.select_metric if cfg.select_metric is not None else next(iter(metrics), None)
        if key not in metrics:
            raise KeyError(f"`select_metric` {key!r} is not an evaluation metric: {list(metrics)}")
        value = metrics[key]
        if self.best_metric is None or value > self.best_metric:
            self.best_metric, self.best_epoch = value, epoch
            if self.run_dir is not None:
                self.save_checkpoint(self.run_dir / "best.pt")
            self.run.log(f"new best {key}={value:.6g} at epoch {epoch} (selected_on={cfg.select_on})")
        return metrics

    def _finish(self, last_eval: Any) -> TrainingResult:
        selected = self.config.select_on if self.best_epoch is not None else "last"
        if selected != "last" and self.run_dir is not None and (self.run_dir / "best.pt").is_file():
            state = load_checkpoint(self.run_dir / "best.pt", map_location=self.device)
            self.module.load_state_dict(strip_prefixes(state["model"]))
            self.run.log(f"loaded the best checkpoint (epoch {self.best_epoch}, selected_on={selected})")
        final = self._evaluate(self.test_fn) if self.test_fn is not None else None
        if final is not None:
            summary = {"selected_on": selected, "best_epoch": self.best_epoch, "epochs": self.epoch}
            table = self.run.write_results(final, summary)
            self.run.log(f"final results (selected_on={selected}):\n{table}")
        written = self.run.write_plots(
            self._loss_terms, getattr(self.criterion, "weights", None), final if final is not None else last_eval
        )
        if written:
            self.run.log(f"plots written: {', '.join(str(p) for p in written)}")
        self.run.close()
        return TrainingResult(self.epoch, self.best_epoch, self.best_metric, selected, self.history, final)


def _check_collaborators(config: object, criterion: object, optimizer: object, *callables: object) -> None:
    if not isinstance(config, TrainerConfig):
        raise TypeError(f"`config` must be a TrainerConfig, got {type(config).__name__}")
    if not callable(criterion):
        raise TypeError(f"`criterion` must be callable (output, batch) -> dict, got {type(criterion).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"`optimizer` must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    for name, value in zip(("schedule", "forward", "gather", "evaluate", "test"), callables, strict=True):
        if value is not None and not callable(value):
            raise TypeError(f"`{name}` must be callable or None, got {value!r}")
