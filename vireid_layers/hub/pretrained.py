"""``save_pretrained`` / ``from_pretrained``: a model as a directory or Hub repository that rebuilds it without code."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._version import __version__
from ..data.preprocess import OFFICIAL_TEST_INPUTS, ImagePreprocessor
from ..engine.checkpoint import unwrap_model
from .card import model_card, results_list
from .registry import CONFIG_FORMAT, CONFIG_VERSION, build_from_config, compare_state_dicts, model_config

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "from_pretrained", "load_config", "push_to_hub", "save_pretrained"]

#: File names of a saved model.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
RESULTS_NAME = "results.json"

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError as error:  # pragma: no cover - safetensors is in the test and hub extras
        raise ImportError(
            "saving and loading pretrained models needs the `safetensors` package: pip install 'vireid-layers[hub]'"
        ) from error
    return safetensors.torch


def _huggingface_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as error:
        raise ImportError(
            "the Hugging Face Hub needs the `huggingface_hub` package: pip install 'vireid-layers[hub]' (a local "
            "directory needs nothing more)"
        ) from error
    return huggingface_hub


def _resolve(source: str | os.PathLike[str], filename: str, revision: str | None, cache_dir: str | None) -> Path:
    """The local path of ``filename`` in a directory, or downloaded from the Hub repository ``source``."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"`source` must be a directory or a Hub repository id, got {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        if not (path / filename).is_file():
            raise FileNotFoundError(f"{str(path)!r} holds no {filename} (a directory of save_pretrained has one)")
        return path / filename
    text = os.fspath(source)
    if path.exists() or not _HUB_ID.fullmatch(text):
        raise FileNotFoundError(
            f"`source` {text!r} is neither a directory written by save_pretrained nor a Hub repository id (owner/name)"
        )
    hub = _huggingface_hub()
    return Path(hub.hf_hub_download(repo_id=text, filename=filename, revision=revision, cache_dir=cache_dir))


def load_config(
    source: str | os.PathLike[str], *, revision: str | None = None, cache_dir: str | None = None
) -> dict[str, Any]:
    """The parsed ``config.json`` of a saved model (a directory or a Hub repository id), checked.

    Args:
        source: a directory written by :func:`save_pretrained`, or a Hub repository id ``"owner/name"``.
        revision: the Hub revision (branch, tag or commit); only for a repository id.
        cache_dir: the Hub cache directory; only for a repository id.

    Raises:
        FileNotFoundError: ``source`` is neither.
        ValueError: the file is not JSON, or not a vireid-layers configuration (``format`` / ``format_version``).
    """
    path = _resolve(source, CONFIG_NAME, revision, cache_dir)
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
    if config.get("format") != CONFIG_FORMAT:
        raise ValueError(f"{path}: the key 'format' must be {CONFIG_FORMAT!r}, got {config.get('format')!r}")
    version = config.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= CONFIG_VERSION:
        raise ValueError(
            f"{path}: the key 'format_version' must be an int in 1..{CONFIG_VERSION} (this vireid-layers "
            f"{__version__} reads those), got {version!r}"
        )
    return config


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    preprocess: ImagePreprocessor | None = None,
    recipe: Any = None,
    dataset: Any = None,
    protocol: Any = None,
    results: Any = None,
    description: str | None = None,
    license: str | None = None,
    source: str | None = None,
) -> Path:
    """Write a model as a shareable directory: ``config.json``, ``model.safetensors``, ``README.md``.

    * ``config.json``: the model's registered name and constructor arguments (``init``), its embedding
      dimension, its preprocessing (``preprocess``) and the format version; :func:`from_pretrained` rebuilds
      the model from it without code. It is checked here by rebuilding the model on the ``meta`` device.
    * ``model.safetensors``: every state-dict tensor (parameters and buffers), on the CPU, in its dtype.
    * ``README.md``: the model card (:func:`~vireid_layers.hub.model_card`) with the training recipe, the
      dataset, the protocol and the results tables with their evaluation settings.
    * ``results.json`` (with ``results``): every result's ``as_dict()``, every trial included.

    Existing files of those names are replaced; other files are left alone.

    Args:
        model: a model of :mod:`vireid_layers.models` (or a registered one), built by calling its class; a
            ``torch.compile`` or ``DistributedDataParallel`` wrapper is unwrapped.
        directory: the output directory (created with its parents).
        preprocess: the test transform; default the official one of the model class
            (:meth:`ImagePreprocessor.official <vireid_layers.data.ImagePreprocessor.official>`).
        recipe: the training recipe (text, a mapping, a dataclass or an object with ``as_dict()``).
        dataset: the training dataset (text, a mapping, or an object with a ``name``).
        protocol: the evaluation protocol (text, a mapping or an
            :class:`~vireid_layers.evaluation.EvaluationProtocol`).
        results: a :class:`~vireid_layers.evaluation.ProtocolResult` or a sequence of them.
        description: a paragraph of one's own for the card.
        license: the card's ``license`` field.
        source: the path or hub id shown in the card's usage example (default: the directory name).

    Returns:
        The directory.

    Raises:
        ValueError: the model cannot be described by a ``config.json`` (see
            :func:`~vireid_layers.hub.model_config`).

    Examples:
        >>> import tempfile
        >>> from vireid_layers.hub import from_pretrained, save_pretrained
        >>> from vireid_layers.models import AGW
        >>> directory = save_pretrained(AGW(4, backbone="resnet18"), tempfile.mkdtemp(), dataset="synthetic")
        >>> sorted(p.name for p in directory.iterdir())
        ['README.md', 'config.json', 'model.safetensors']
        >>> from_pretrained(directory).num_classes
        4
    """
    model = unwrap_model(model)  # the module inside torch.compile / DDP wrappers, with its own state-dict keys
    config = model_config(model)
    name = config["model"]
    if preprocess is None:
        preprocess = ImagePreprocessor.official(name if name in OFFICIAL_TEST_INPUTS else "AGW")
    if not isinstance(preprocess, ImagePreprocessor):
        raise TypeError(f"`preprocess` must be an ImagePreprocessor, got {type(preprocess).__name__}")
    results = results_list(results)
    config = {
        "format": CONFIG_FORMAT,
        "format_version": CONFIG_VERSION,
        "library_version": __version__,
        **config,
        "embed_dim": getattr(model, "embed_dim", None),
        "preprocess": preprocess.as_dict(),
    }
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().to("cpu").clone().contiguous() for key, value in model.state_dict().items()}
    _safetensors().save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt", "model": name})
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    card = model_card(
        config,
        recipe=recipe,
        dataset=dataset,
        protocol=protocol,
        results=results,
        description=description,
        license=license,
        source=source or out.name,
    )
    (out / CARD_NAME).write_text(card)
    if results:
        (out / RESULTS_NAME).write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    return out


def _check_weights(model: nn.Module, state: Mapping[str, Tensor], metadata: Mapping[str, str], config: dict) -> None:
    name = config["model"]
    if metadata.get("model", name) != name:
        raise ValueError(
            f"{WEIGHTS_NAME} holds the weights of a {metadata['model']}, but config.json's 'model' is {name}"
        )
    compare_state_dicts(model.state_dict(), state, f"the {name} of config.json", WEIGHTS_NAME)


def from_pretrained(
    source: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> nn.Module:
    """Rebuild a model saved by :func:`save_pretrained`, from a directory or a Hugging Face Hub repository.

    ``config.json`` rebuilds the model (no code of the run needed), ``model.safetensors`` fills every
    parameter and buffer; a file that does not fit the configuration is refused with a message naming the
    key (missing, unexpected, or of another shape). The model comes back in eval mode.

    Args:
        source: a directory, or a Hub repository id ``"owner/name"`` (needs the ``hub`` extra; the files are
            downloaded with ``huggingface_hub.hf_hub_download`` into its cache).
        device: where to put the model (default CPU).
        revision: the Hub revision; only for a repository id.
        cache_dir: the Hub cache directory; only for a repository id.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: ``source`` is neither a saved directory nor a repository id, or lacks a file.
        ValueError: ``config.json`` or ``model.safetensors`` does not fit; the message names the key.
        ImportError: a repository id without ``huggingface_hub`` installed.

    Examples:
        >>> import tempfile
        >>> import torch
        >>> from vireid_layers.hub import from_pretrained
        >>> from vireid_layers.models import DEEN
        >>> model = DEEN(4, backbone="resnet18").eval()
        >>> directory = model.save_pretrained(tempfile.mkdtemp())
        >>> images = torch.randn(2, 3, 64, 32)
        >>> with torch.no_grad():
        ...     torch.equal(from_pretrained(directory).embed(images, 1), model.embed(images, 1))
        True
    """
    config = load_config(source, revision=revision, cache_dir=cache_dir)
    model = build_from_config(config)
    if config.get("embed_dim") is not None and getattr(model, "embed_dim", None) != config["embed_dim"]:
        raise ValueError(
            f"config.json: the key 'embed_dim' is {config['embed_dim']}, but its 'init' builds a "
            f"{config['model']} of embed_dim {getattr(model, 'embed_dim', None)}"
        )
    path = _resolve(source, WEIGHTS_NAME, revision, cache_dir)
    safetensors = _safetensors()
    try:
        state = safetensors.load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own SafetensorError on a damaged file
        raise ValueError(f"cannot read {path} as safetensors: {error}") from error
    _check_weights(model, state, metadata, config)
    model.load_state_dict(state, strict=True)
    return model.to(device or "cpu").eval()


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    private: bool = True,
    commit_message: str = "Upload vireid-layers model",
    token: str | None = None,
    **save_kwargs: Any,
) -> str:
    """:func:`save_pretrained` into a temporary directory, then upload it to a Hugging Face Hub repository.

    The repository is created when it does not exist (``HfApi.create_repo(exist_ok=True)``) and the files are
    uploaded in one commit (``HfApi.upload_folder``). Needs the ``hub`` extra and a Hub token (``token`` or
    ``huggingface-cli login``).

    Args:
        model: the model.
        repo_id: ``"owner/name"``.
        private: create the repository as private.
        commit_message: the commit message.
        token: a Hub token; default the logged-in one.
        save_kwargs: keyword arguments of :func:`save_pretrained` (``results``, ``recipe``, ...).

    Returns:
        The URL of the commit, as ``huggingface_hub`` reports it.
    """
    if not isinstance(repo_id, str) or not _HUB_ID.fullmatch(repo_id):
        raise ValueError(f"`repo_id` must be a Hub repository id 'owner/name', got {repo_id!r}")
    hub = _huggingface_hub()
    api = hub.HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, source=repo_id, **save_kwargs)
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
    return str(commit)
