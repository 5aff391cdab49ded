"""Recipes: how each method is trained and evaluated the official way, registered by name.

A recipe gathers everything that makes "DEEN (AGW, DDAG, MPANet, MSO) trained the official way": the model factory, the
criterion and its weights, the parameter groups and optimiser, the learning-rate schedule, the transforms and
sampler layout, the evaluation feature, the official values per dataset and the quick synthetic settings. Train
one in a few lines::

    from vireid_layers.recipes import build_recipe, train

    result = train(build_recipe("deen"))  # the quick synthetic CPU run
    result = train(build_recipe("agw", dataset="sysu", root="/data/SYSU-MM01", amp="bf16"))

``vireid-train`` (``python -m vireid_layers.recipes``) is the same from the command line.
"""

from .agw import AGWConfig, AGWRecipe, AGWSchedule
from .base import Recipe, build_recipe, list_recipes, recipe_class, register_recipe
from .config import DATASETS, QUICK_RUN, ConfigurationError, RecipeConfig, option
from .ddag import DDAGConfig, DDAGRecipe, DDAGSchedule, ddag_param_groups
from .deen import DEENConfig, DEENRecipe, DEENSchedule, deen_lr_factor, deen_param_groups
from .mpanet import MPANetConfig, MPANetRecipe, MPANetSchedule
from .mso import MSOConfig, MSORecipe, MSOSchedule
from .parts import build_pipeline, gather_outputs_and_labels, head_param_groups, image_forward
from .runner import SYNTHETIC_CACHE, RunSetup, read_dataset, run_evaluators, setup, train, validation_identities

__all__ = [
    "AGWConfig",
    "AGWRecipe",
    "AGWSchedule",
    "ConfigurationError",
    "DATASETS",
    "DDAGConfig",
    "DDAGRecipe",
    "DDAGSchedule",
    "DEENConfig",
    "DEENRecipe",
    "DEENSchedule",
    "MPANetConfig",
    "MPANetRecipe",
    "MPANetSchedule",
    "MSOConfig",
    "MSORecipe",
    "MSOSchedule",
    "QUICK_RUN",
    "Recipe",
    "RecipeConfig",
    "RunSetup",
    "SYNTHETIC_CACHE",
    "build_pipeline",
    "build_recipe",
    "ddag_param_groups",
    "deen_lr_factor",
    "deen_param_groups",
    "gather_outputs_and_labels",
    "head_param_groups",
    "image_forward",
    "list_recipes",
    "option",
    "read_dataset",
    "recipe_class",
    "register_recipe",
    "run_evaluators",
    "setup",
    "train",
    "validation_identities",
]
