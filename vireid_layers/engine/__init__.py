"""The training engine: a method-agnostic PyTorch loop with AMP, compile, DDP, atomic checkpoints, exact resume.

It imports nothing of the rest of the package: models, criteria and evaluations talk to it through the small
interfaces of :mod:`~vireid_layers.engine.interfaces`. What trains a particular method the official way (model,
criterion, optimiser, schedule, loader, evaluation) is its recipe, :mod:`vireid_layers.recipes`.
"""

from .batches import default_forward, default_gather
from .checkpoint import (
    load_checkpoint,
    remove_stale_temporaries,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    strip_prefixes,
    unwrap_model,
)
from .config import AmpMode, SelectOn, TrainerConfig
from .distributed import all_gather_cat, distributed_info, gather_nested, init_distributed, is_main_process
from .interfaces import Criterion, EvaluationResult, GatherableOutput, format_metrics_table, metrics_of
from .run_directory import RunDirectory, environment_info, jsonable
from .schedule import WarmupStepSchedule, warmup_step_factor
from .trainer import Trainer, TrainingResult

__all__ = [
    "AmpMode",
    "Criterion",
    "EvaluationResult",
    "GatherableOutput",
    "RunDirectory",
    "SelectOn",
    "Trainer",
    "TrainerConfig",
    "TrainingResult",
    "WarmupStepSchedule",
    "all_gather_cat",
    "default_forward",
    "default_gather",
    "distributed_info",
    "environment_info",
    "format_metrics_table",
    "gather_nested",
    "init_distributed",
    "is_main_process",
    "jsonable",
    "load_checkpoint",
    "metrics_of",
    "remove_stale_temporaries",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
    "strip_prefixes",
    "unwrap_model",
    "warmup_step_factor",
]
