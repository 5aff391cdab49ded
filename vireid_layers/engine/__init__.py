"""The training engine: a plain PyTorch loop with AMP, compile, DDP, atomic checkpoints and exact resume."""

from .checkpoint import (
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    strip_prefixes,
    unwrap_model,
)
from .distributed import all_gather_cat, distributed_info, gather_nested, init_distributed, is_main_process
from .run_directory import RunDirectory, environment_info
from .schedule import DEENSchedule, deen_lr_factor, deen_param_groups
from .trainer import AmpMode, Trainer, TrainingResult, default_forward, format_results_table

__all__ = [
    "AmpMode",
    "DEENSchedule",
    "RunDirectory",
    "Trainer",
    "TrainingResult",
    "all_gather_cat",
    "deen_lr_factor",
    "deen_param_groups",
    "default_forward",
    "distributed_info",
    "environment_info",
    "format_results_table",
    "gather_nested",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
    "strip_prefixes",
    "unwrap_model",
]
