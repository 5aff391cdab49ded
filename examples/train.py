"""Train and evaluate a method with its recipe: ``python examples/train.py --method NAME [options]``.

``NAME`` is one of the registered recipes: ``deen`` (the default), ``agw``, ``ddag``, ``mpanet``, ``mso``.

Without ``--dataset`` this is the quick synthetic CPU run (the README's main job for DEEN); with
``--dataset sysu|regdb|llcm --root PATH`` it is the official recipe. ``--help`` lists every option with its
default. The script is the body of :func:`vireid_layers.recipes.train` written out, so that each piece of a
run is in view: the installed command ``vireid-train`` (and ``train(build_recipe("deen"))`` in Python) does
exactly the same.

Examples::

    python examples/train.py                                        # DEEN, synthetic data, CPU, a few minutes
    python examples/train.py --method agw                           # the AGW baseline
    python examples/train.py --method ddag                          # DDAG (also mpanet, mso)
    python examples/train.py --dataset sysu --root /data/SYSU-MM01 --amp bf16 --channels-last
    torchrun --nproc-per-node 2 examples/train.py --dataset llcm --root /data/LLCM --sync-bn
"""

from __future__ import annotations

import sys
import time

import torch

from vireid_layers.data import ImageReadError
from vireid_layers.engine import Trainer
from vireid_layers.recipes import ConfigurationError, run_evaluators, setup
from vireid_layers.recipes.cli import parse_args


def main(argv: list[str] | None = None) -> int:
    try:
        recipe, resume = parse_args(argv)  # the recipe of --method, its defaults for --dataset, then the options
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    config = recipe.config
    try:
        env = setup(recipe)  # distributed init, device, --threads, seed, then the dataset (written if synthetic)
        model = recipe.build_model(env.dataset.num_train_identities)
        recipe.check_model(model)  # the model refuses an image size it cannot take, before any training
        criterion = recipe.build_criterion()  # named loss terms, their weights and total
        loader = recipe.train_loader(
            env.dataset, rank=env.rank, world_size=env.world_size, pin_memory=env.device.type == "cuda"
        )
        optimizer = recipe.build_optimizer(model)  # the official parameter groups
        main_rank = env.rank == 0
        # One gallery for model selection; the final test states the feature and the checkpoint selection.
        validate, test = run_evaluators(recipe, env)
        trainer = Trainer(
            model,
            criterion,
            optimizer,
            loader,
            recipe.trainer_config(device=env.device),  # AMP, compile, run directory, checkpoints, selection
            schedule=recipe.build_schedule(),
            forward=recipe.forward,
            gather=recipe.gather,
            evaluate=validate.report if config.eval_every > 0 and main_rank else None,
            test=test.report if main_rank else None,
            hparams=recipe.hparams(num_classes=env.dataset.num_train_identities, world_size=env.world_size),
        )
        result = trainer.fit(resume=resume)
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ImageReadError as error:  # a corrupt image file: its one-line message, no traceback
        print(f"error: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    if main_rank:
        print(f"total wall time {time.perf_counter() - start:.1f}s")
        reported = result.final.result.reported()
        print(
            f"Rank-1 {100 * reported['rank1'][0]:.2f}  mAP {100 * reported['mAP'][0]:.2f}  "
            f"mINP {100 * reported['mINP'][0]:.2f} (%, mean over {config.eval_trials} trials)"
        )
    if env.world_size > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
