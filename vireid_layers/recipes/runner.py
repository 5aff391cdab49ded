"""Run a recipe: set up the process, read the data, build every piece, train, evaluate, report.

:func:`train` is the whole run in one call (what ``vireid-train`` and ``examples/train.py`` do)::

    from vireid_layers.recipes import build_recipe, train

    result = train(build_recipe("deen"))  # the quick synthetic run
    print(result.final.format_table())
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import VIReIDDataset, build_dataset
from ..engine import Trainer, TrainingResult, init_distributed
from ..evaluation import ProtocolEvaluator
from .base import Recipe
from .config import fail

__all__ = ["SYNTHETIC_CACHE", "RunSetup", "read_dataset", "run_evaluators", "setup", "train", "validation_identities"]

#: Where the synthetic dataset is written without ``--root`` (a folder per image size, ``synthetic-{H}x{W}``).
SYNTHETIC_CACHE = Path.home() / ".cache" / "vireid_layers"


def read_dataset(
    name: str, root: str | os.PathLike[str] | None, *, height: int, width: int, trial: int = 1
) -> VIReIDDataset:
    """Read a dataset by name; the synthetic one is written first if absent (into the cache without a root).

    A ``root`` that already holds a synthetic dataset (its manifest) is read as it is, whatever parameters it was
    generated with; otherwise the default synthetic dataset at ``height`` x ``width`` is written there. The cache
    folder (no ``root``) belongs to the recipes: a dataset of an older generator version there is replaced.
    """
    if name == "synthetic":
        from ..data.datasets.synthetic import SYNTHETIC_MANIFEST, make_synthetic_dataset

        folder = Path(root) if root else SYNTHETIC_CACHE / f"synthetic-{height}x{width}"
        if root and (folder / SYNTHETIC_MANIFEST).is_file():
            return build_dataset("synthetic", folder)
        start = time.perf_counter()
        make_synthetic_dataset(folder, height=height, width=width, seed=0, overwrite=not root)
        print(f"synthetic dataset ready in {folder} ({time.perf_counter() - start:.1f}s)")
        return build_dataset("synthetic", folder)
    kwargs = {"trial": trial} if name == "regdb" else {}
    return build_dataset(name, root, **kwargs)


@dataclass(frozen=True)
class RunSetup:
    """The process and the data of a run: ``val`` holds the held-out identities of ``select_on="val"``."""

    rank: int
    world_size: int
    device: torch.device
    dataset: VIReIDDataset
    val: VIReIDDataset | None = None


def validation_identities(recipe: Recipe, dataset: VIReIDDataset) -> list[int]:
    """The training identities held out for model selection.

    ``val_identities=N`` draws N of them with the run's seed; ``0`` takes SYSU-MM01's ``exp/val_id.txt`` (the
    synthetic dataset writes one too), which the official code trains on.
    """
    from ..data.datasets.sysu import read_id_file

    c = recipe.config
    if c.val_identities == 0:
        return list(read_id_file(dataset.root / "exp" / "val_id.txt"))
    if c.val_identities >= len(dataset.train_identities):
        fail(
            f"--val-identities must be below the number of training identities "
            f"({len(dataset.train_identities)}), got {c.val_identities}"
        )
    order = torch.randperm(len(dataset.train_identities), generator=torch.Generator().manual_seed(c.seed))
    return sorted(dataset.train_identities[i] for i in order[: c.val_identities].tolist())


def setup(recipe: Recipe) -> RunSetup:
    """Distributed init, device, CPU threads, seed, then the dataset (rank 0 first: it may write the synthetic one)."""
    c = recipe.config
    rank, world_size, device = init_distributed()
    if c.device is not None and world_size == 1:
        device = torch.device(c.device)
    if device.type == "cpu" and c.threads > 0:
        torch.set_num_threads(c.threads)
    torch.manual_seed(c.seed)

    def read() -> VIReIDDataset:
        return read_dataset(c.dataset, c.root, height=c.height, width=c.width, trial=c.trial)

    dataset = read() if rank == 0 else None
    if world_size > 1:
        torch.distributed.barrier()
        dataset = dataset or read()
    assert dataset is not None
    if c.select_on != "val":
        return RunSetup(rank, world_size, device, dataset)
    train_part, val = dataset.hold_out(validation_identities(recipe, dataset))
    return RunSetup(rank, world_size, device, train_part, val)


def run_evaluators(recipe: Recipe, env: RunSetup) -> tuple[ProtocolEvaluator, ProtocolEvaluator]:
    """The two evaluations of a run: ``(validate, test)``, each stating the test feature.

    ``validate`` selects the checkpoint during training: one gallery of the held-out identities (``select_on="val"``)
    or of the test split, without the plain row of flip (its numbers are only compared, never reported). ``test``
    is the final evaluation: ``eval_trials`` galleries, the plain row beside the flipped one with ``flip``, and the
    checkpoint selection it tests: ``select_on`` when an evaluation during training chose one (``eval_every > 0``),
    else ``"last"``, as :class:`~vireid_layers.engine.Trainer` reports it (``selected_on``). The engine knows
    nothing of these settings: they reach ``results.json`` and ``results.md`` through the evaluation result.

    Args:
        recipe: the run's recipe.
        env: its :func:`setup` (device and datasets).

    Returns:
        ``(validate, test)``, two :class:`~vireid_layers.evaluation.ProtocolEvaluator`.

    Examples:
        >>> from pathlib import Path
        >>> import torch
        >>> from vireid_layers.data import VIReIDDataset
        >>> from vireid_layers.recipes import RunSetup, build_recipe, run_evaluators
        >>> recipe = build_recipe("agw", flip=True, eval_every=1, select_on="test")
        >>> env = RunSetup(0, 1, torch.device("cpu"), VIReIDDataset("synthetic", Path("."), (), ()))
        >>> validate, test = run_evaluators(recipe, env)
        >>> (test.feature, test.flip, test.selection, test.plain_row), validate.plain_row
        (('fc', 'sum', 'test', True), False)
    """
    c = recipe.config
    selection = c.select_on if c.eval_every > 0 else "last"
    validate = recipe.evaluator(env.val or env.dataset, device=env.device)
    test = recipe.evaluator(env.dataset, device=env.device, num_trials=c.eval_trials)
    return (
        dataclasses.replace(validate, feature=c.feature, plain_row=False),
        dataclasses.replace(test, feature=c.feature, selection=selection),
    )


def train(recipe: Recipe, *, resume: str | os.PathLike[str] | None = None) -> TrainingResult:
    """Train ``recipe`` and evaluate it: the whole run, top to bottom.

    The steps, each a method of the recipe: :func:`setup` (threads, seed, dataset), the model (checked once at
    the configured image size), the criterion, the loader, the optimiser, the schedule, the evaluators, then
    :class:`~vireid_layers.engine.Trainer`. On rank 0 it prints the wall time and the reported Rank-1, mAP and
    mINP. The final results (``results.json``, ``results.md``, the printed table) state the test feature and
    how the tested checkpoint was selected (:func:`run_evaluators`).

    Args:
        recipe: the recipe, e.g. ``build_recipe("deen")``.
        resume: a ``last.pt`` of the same run to continue from (its run directory is the configured one).

    Returns:
        The :class:`~vireid_layers.engine.TrainingResult`; ``result.final`` is a
        :class:`~vireid_layers.evaluation.ProtocolReport` on rank 0.

    Raises:
        ConfigurationError: a bad value (including an image size the model cannot take) or a missing ``resume``.
    """
    start = time.perf_counter()
    if resume is not None and not Path(resume).is_file():
        fail(f"--resume {os.fspath(resume)!r} does not exist")
    env = setup(recipe)
    c, dataset, device = recipe.config, env.dataset, env.device
    num_classes = dataset.num_train_identities
    model = recipe.build_model(num_classes)
    recipe.check_model(model)
    criterion = recipe.build_criterion()
    loader = recipe.train_loader(dataset, rank=env.rank, world_size=env.world_size, pin_memory=device.type == "cuda")
    optimizer = recipe.build_optimizer(model)
    main = env.rank == 0
    validate, test = run_evaluators(recipe, env)
    trainer = Trainer(
        model,
        criterion,
        optimizer,
        loader,
        recipe.trainer_config(device=device),
        schedule=recipe.build_schedule(),
        forward=recipe.forward,
        gather=recipe.gather,
        evaluate=validate.report if c.eval_every > 0 and main else None,
        test=test.report if main else None,
        hparams=recipe.hparams(num_classes=num_classes, world_size=env.world_size),
    )
    trainer.run.log(
        f"{type(model).__name__} on {c.dataset}: {len(dataset.train)} training images, {num_classes} identities, "
        f"{c.backbone} at {c.height}x{c.width}, batch {c.batch_identities}x{c.num_instances}x2, "
        f"{len(loader)} batches per epoch, {torch.get_num_threads()} CPU threads, run directory {recipe.run_dir()}"
    )
    result = trainer.fit(resume=resume)
    if main:
        print(f"total wall time {time.perf_counter() - start:.1f}s")
        if result.final is not None:
            reported = result.final.result.reported()
            print(
                "Rank-1 {:.2f}  mAP {:.2f}  mINP {:.2f} (%, mean over {} trials)".format(
                    100 * reported["rank1"][0], 100 * reported["mAP"][0], 100 * reported["mINP"][0], c.eval_trials
                )
            )
    if env.world_size > 1:
        torch.distributed.destroy_process_group()
    return result
