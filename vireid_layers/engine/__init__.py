"""The training engine: a plain PyTorch loop with AMP, compile, DDP, atomic checkpoints and exact resume.

Around it, the pieces every cross-modality training script needs: the identity-balanced training loader
(:func:`build_train_loader`), the official schedules and parameter groups, and the evaluation callable
(:class:`ProtocolEvaluator`).
"""

from .checkpoint import (
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    strip_prefixes,
    unwrap_model,
)
from .distributed import all_gather_cat, distributed_info, gather_nested, init_distributed, is_main_process
from .evaluator import ProtocolEvaluator, default_embed
from .loader import build_train_loader
from .run_directory import RunDirectory, environment_info
from .schedule import (
    AGWSchedule,
    DEENSchedule,
    WarmupStepSchedule,
    deen_lr_factor,
    deen_param_groups,
    head_param_groups,
    warmup_step_factor,
)
from .trainer import AmpMode, Trainer, TrainingResult, default_forward, format_results_table

__all__ = [
    "AGWSchedule",
    "AmpMode",
    "DEENSchedule",
    "ProtocolEvaluator",
    "RunDirectory",
    "Trainer",
    "TrainingResult",
    "WarmupStepSchedule",
    "all_gather_cat",
    "build_train_loader",
    "deen_lr_factor",
    "deen_param_groups",
    "default_embed",
    "default_forward",
    "distributed_info",
    "environment_info",
    "format_results_table",
    "gather_nested",
    "head_param_groups",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
    "strip_prefixes",
    "unwrap_model",
    "warmup_step_factor",
]
