"""The :class:`Recipe` interface and the recipe registry.

A recipe is everything that makes "method X trained the official way": its model factory, its criterion and
loss weights, its parameter groups and optimiser, its learning-rate schedule, its training transform and
sampler layout, its evaluation feature, the official values per dataset and the quick synthetic settings. One
module per method (:mod:`~vireid_layers.recipes.deen`, :mod:`~vireid_layers.recipes.agw`,
:mod:`~vireid_layers.recipes.ddag`, :mod:`~vireid_layers.recipes.mpanet`, :mod:`~vireid_layers.recipes.mso`) subclasses
:class:`Recipe` and :class:`~vireid_layers.recipes.RecipeConfig` and registers itself by name
(:func:`register_recipe`); :func:`build_recipe` builds one by name and :func:`~vireid_layers.recipes.train` runs
it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..data import VIReIDDataset, build_test_transform, build_train_loader
from ..engine import TrainerConfig, WarmupStepSchedule
from ..evaluation import ProtocolEvaluator, negative_cosine_similarity, protocol_for_dataset
from .config import QUICK_RUN, RecipeConfig, fail
from .parts import build_pipeline, gather_outputs_and_labels, head_param_groups, image_forward

__all__ = ["Recipe", "build_recipe", "list_recipes", "recipe_class", "register_recipe"]


class Recipe(abc.ABC):
    """How one method is trained and evaluated: every piece a training run needs, built from one configuration.

    A subclass sets :attr:`name`, :attr:`config_class`, :attr:`quick_run` and :attr:`pipelines`, and implements
    :meth:`build_model`, :meth:`build_criterion` and :meth:`build_schedule`; the rest (optimiser, loader,
    evaluator, trainer options) is shared and may be overridden.

    Args:
        config: the configuration; default the official SYSU-MM01 one (:meth:`official_config`).
        **overrides: fields to change (``Recipe(lr=0.01)``).

    Raises:
        ConfigurationError: an unknown field or a bad value.
    """

    #: The registry name (``--method``).
    name: ClassVar[str]
    #: The configuration class, a :class:`RecipeConfig` subclass with the method's fields and official defaults.
    config_class: ClassVar[type[RecipeConfig]]
    #: Overrides of :data:`QUICK_RUN` for this method's quick synthetic run.
    quick_run: ClassVar[Mapping[str, Any]] = {}
    #: The official training pipeline per dataset (``--pipeline auto``).
    pipelines: ClassVar[Mapping[str, str]] = {"synthetic": "light"}
    #: Official values that differ by dataset (e.g. MPANet's RegDB configuration file), applied by
    #: :meth:`official_config` over the configuration class's defaults (the SYSU-MM01 values).
    official_per_dataset: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(self, config: RecipeConfig | None = None, **overrides: Any) -> None:
        if config is None:  # the official values of the dataset asked for (SYSU-MM01's without one)
            config = self.official_config(overrides.get("dataset", "sysu"), overrides.get("root"))
        if not isinstance(config, self.config_class):
            raise TypeError(f"`config` must be a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config.replace(**overrides).validate() if overrides else config.validate()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dataset={self.config.dataset!r}, backbone={self.config.backbone!r})"

    # -------------------------------------------------------------------------------------------- configurations

    @classmethod
    def official_config(cls, dataset: str = "sysu", root: str | None = None) -> RecipeConfig:
        """The official values for ``dataset``: the defaults with :attr:`official_per_dataset` of the dataset.

        Per-dataset choices stated as ``"auto"`` (the pipeline, DEEN's variant) resolve when the pieces are built.
        """
        return cls.config_class(dataset=dataset, root=root, **cls.official_per_dataset.get(dataset, {}))

    @classmethod
    def quick_config(cls, root: str | None = None) -> RecipeConfig:
        """The quick synthetic CPU run: :data:`QUICK_RUN` with :attr:`quick_run` over the official values."""
        return cls.config_class().replace(**{**QUICK_RUN, **cls.quick_run, "root": root})

    @classmethod
    def default_config(cls, dataset: str = "synthetic", root: str | None = None) -> RecipeConfig:
        """:meth:`quick_config` for the synthetic dataset, :meth:`official_config` for a real one."""
        return cls.quick_config(root) if dataset == "synthetic" else cls.official_config(dataset, root)

    # -------------------------------------------------------------------------------------------- the method

    @abc.abstractmethod
    def build_model(self, num_classes: int, *, pretrained: bool | None = None) -> nn.Module:
        """The network for ``num_classes`` training identities (``pretrained`` overrides the configuration)."""

    @abc.abstractmethod
    def build_criterion(self) -> nn.Module:
        """The criterion: ``criterion(output, batch) -> {term: loss}`` with ``total`` and ``weights``."""

    @abc.abstractmethod
    def build_schedule(self) -> WarmupStepSchedule:
        """The per-epoch learning-rate factor."""

    def check_model(self, model: nn.Module) -> None:
        """Run the model once on two blank images of the configured size, so it rejects a size it cannot take.

        The model's own checks speak (e.g. DEEN's official MFA needs an even number of positions at every block);
        the probe changes no weight, statistic or random state (eval mode, no gradient).

        Raises:
            ConfigurationError: the model refused the size; the message is its own.
        """
        c = self.config
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                self.embed(model, torch.zeros(2, 3, c.height, c.width), torch.tensor([0, 1]))
        except ValueError as error:
            fail(f"--height {c.height} --width {c.width}: {error}")
        finally:
            model.train(was_training)

    def param_groups(self, model: nn.Module) -> list[dict]:
        """:func:`head_param_groups` with the configured rate, weight decay and backbone scale."""
        c = self.config
        return head_param_groups(model, c.lr, weight_decay=c.weight_decay, backbone_scale=c.backbone_lr_scale)

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """SGD with momentum and Nesterov (official) or Adam over :meth:`param_groups`."""
        c = self.config
        groups = self.param_groups(model)
        if c.optimizer == "adam":
            return torch.optim.Adam(groups, lr=c.lr)
        return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov)

    def pipeline_name(self) -> str:
        """The training pipeline: ``--pipeline``, or (``auto``) :attr:`pipelines` of the dataset."""
        c = self.config
        return self.pipelines.get(c.dataset, "light") if c.pipeline == "auto" else c.pipeline

    def train_transform(self) -> Callable[[Any], Tensor]:
        """The training transform of :meth:`pipeline_name` at the configured size."""
        return build_pipeline(self.pipeline_name(), self.config.height, self.config.width)

    def test_transform(self) -> Callable[[Any], Tensor]:
        """The test transform at the configured size (:func:`~vireid_layers.data.build_test_transform`, Lanczos)."""
        return build_test_transform(self.config.height, self.config.width)

    def train_loader(
        self,
        dataset: VIReIDDataset,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        pin_memory: bool = False,
    ) -> torch.utils.data.DataLoader:
        """The identity-balanced loader (:func:`~vireid_layers.data.build_train_loader`) of P x K x 2 images."""
        c = self.config
        return build_train_loader(
            dataset.train,
            self.train_transform(),
            num_identities=c.batch_identities,
            num_instances=c.num_instances,
            epoch_length=self.epoch_length(),
            seed=c.seed,
            num_workers=c.workers,
            num_replicas=world_size,
            rank=rank,
            pin_memory=pin_memory,
        )

    def epoch_length(self) -> int | str:
        """``--epoch-length`` for the samplers: a number of batches as an ``int``, else its name."""
        value = self.config.epoch_length
        return int(value) if value.isdigit() else value

    def embed(self, model: nn.Module, images: Tensor, modalities: Tensor) -> Tensor:
        """The test feature: ``model.embed(images, modalities, mode=config.feature)``."""
        return model.embed(images, modalities, mode=self.config.feature)

    def ranking(self) -> tuple[bool, Callable[[Tensor, Tensor], Tensor]]:
        """``(normalize, distance)`` of the evaluation: unit features compared by cosine similarity."""
        return True, negative_cosine_similarity

    def evaluator(
        self, dataset: VIReIDDataset, *, device: torch.device | None = None, num_trials: int = 1
    ) -> ProtocolEvaluator:
        """``model -> ProtocolResult`` on ``dataset``'s test split with the configured protocol, feature and flip."""
        c = self.config
        normalize, distance = self.ranking()
        return ProtocolEvaluator(
            protocol_for_dataset(c.dataset, direction=c.direction, mode=c.mode, num_trials=num_trials),
            dataset,
            self.test_transform(),
            embed=self.embed,
            batch_size=c.eval_batch_size,
            num_workers=c.workers,
            device=device,
            flip="sum" if c.flip else False,
            normalize=normalize,
            distance=distance,
        )

    def forward(self, model: nn.Module, batch: Any) -> Any:
        """The training forward: :func:`image_forward`."""
        return image_forward(model, batch)

    def gather(self, output: Any, batch: Any) -> tuple[Any, Any]:
        """The DDP gather: :func:`gather_outputs_and_labels`."""
        return gather_outputs_and_labels(output, batch)

    def run_dir(self) -> str:
        """``--run-dir``, or ``runs/<recipe>-<dataset>-seed<seed>``."""
        c = self.config
        return c.run_dir or f"runs/{self.name}-{c.dataset}-seed{c.seed}"

    def trainer_config(self, *, device: torch.device | str | None = None) -> TrainerConfig:
        """The engine's options of this configuration (:class:`~vireid_layers.engine.TrainerConfig`)."""
        c = self.config
        return TrainerConfig(
            epochs=c.epochs,
            device=device if device is not None else c.device,
            amp=None if c.amp == "none" else c.amp,  # type: ignore[arg-type]
            channels_last=c.channels_last,
            compile=c.compile,
            grad_clip=c.grad_clip,
            sync_bn=c.sync_bn,
            deterministic=c.deterministic,
            run_dir=self.run_dir(),
            log_every=c.log_every,
            checkpoint_every_steps=c.checkpoint_every_steps,
            eval_every=c.eval_every,
            select_on=c.select_on,  # type: ignore[arg-type]
            select_metric="rank1",
        )

    def hparams(self, *, num_classes: int, world_size: int = 1) -> dict[str, Any]:
        """The run's ``config.json``: every configuration value, the recipe's name, the classes and world size."""
        return {**self.config.as_dict(), "model": self.name, "num_classes": num_classes, "world_size": world_size}


# ------------------------------------------------------------------------------------------------ the registry

_RECIPES: dict[str, type[Recipe]] = {}


def register_recipe(name: str, recipe: type[Recipe]) -> type[Recipe]:
    """Register a :class:`Recipe` subclass under ``name`` (``--method name``); returns the class.

    Raises:
        ValueError: ``name`` is taken.
        TypeError: ``recipe`` is not a :class:`Recipe` subclass.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a non-empty str, got {name!r}")
    if not (isinstance(recipe, type) and issubclass(recipe, Recipe)):
        raise TypeError(f"`recipe` must be a Recipe subclass, got {recipe!r}")
    if name in _RECIPES:
        raise ValueError(f"recipe {name!r} is already registered")
    _RECIPES[name] = recipe
    return recipe


def list_recipes() -> list[str]:
    """The registered recipe names, sorted.

    Examples:
        >>> list_recipes()
        ['agw', 'ddag', 'deen', 'mpanet', 'mso']
    """
    return sorted(_RECIPES)


def recipe_class(name: str) -> type[Recipe]:
    """The registered class of ``name``.

    Raises:
        ValueError: unknown ``name``; the message lists the registered ones.
    """
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe {name!r}; registered recipes: {list_recipes()}")
    return _RECIPES[name]


def build_recipe(name: str, config: RecipeConfig | None = None, **overrides: Any) -> Recipe:
    """Build a registered recipe from ``config``, then ``overrides``.

    Without ``config`` the recipe starts from its quick synthetic run, or, with ``dataset=`` a real dataset, from
    its official values for that dataset.

    Raises:
        ValueError: unknown ``name`` (the message lists the registered ones), an unknown option or a bad value.

    Examples:
        >>> recipe = build_recipe("agw", epochs=2)
        >>> type(recipe).__name__, recipe.config.dataset, recipe.config.epochs
        ('AGWRecipe', 'synthetic', 2)
        >>> build_recipe("xyz")
        Traceback (most recent call last):
        ...
        ValueError: unknown recipe 'xyz'; registered recipes: ['agw', 'ddag', 'deen', 'mpanet', 'mso']
    """
    cls = recipe_class(name)
    if config is None:
        dataset = overrides.get("dataset", "synthetic")
        config = cls.default_config(dataset, overrides.get("root"))
    return cls(config, **overrides)
