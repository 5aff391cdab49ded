"""The model card (``README.md``) of a saved model: what it is, how it was trained, evaluated and is used."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["model_card", "results_list"]

_NOT_STATED = "Not stated."


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(mapping: Mapping[str, Any], header: tuple[str, str] = ("Setting", "Value")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|:--|:--|"]
    lines += [f"| {key} | {_value(value)} |" for key, value in mapping.items()]
    return "\n".join(lines)


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    """A mapping, a dataclass instance or an object with ``as_dict()`` as a mapping; ``None`` otherwise."""
    if isinstance(value, Mapping):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict):
        out = as_dict()
        if isinstance(out, Mapping):
            return out
    return None


def _section(value: Any, name: str) -> str:
    """Text, a mapping (a table of its entries) or an object describing itself, else a TypeError naming ``name``."""
    if value is None:
        return _NOT_STATED
    if isinstance(value, str):
        return value.strip() or _NOT_STATED
    mapping = _as_mapping(value)
    if mapping is not None:
        return _table(mapping)
    settings = getattr(value, "settings", None)  # an EvaluationProtocol: its name and settings
    if callable(settings) and isinstance(getattr(value, "name", None), str):
        return f"`{value.name}`\n\n" + _table(settings())
    if isinstance(getattr(value, "name", None), str):  # a dataset object
        return f"`{value.name}`"
    raise TypeError(
        f"`{name}` must be a str, a mapping, a dataclass or an object with as_dict(), got {type(value).__name__}"
    )


def results_list(results: Any) -> list[Any]:
    """``results`` as a list of results objects (each with ``format_table()`` and ``as_dict()``).

    Raises:
        TypeError: an element lacks either method.
    """
    if results is None:
        return []
    items = list(results) if isinstance(results, Sequence) and not isinstance(results, str) else [results]
    for i, item in enumerate(items):
        if not (callable(getattr(item, "format_table", None)) and callable(getattr(item, "as_dict", None))):
            raise TypeError(
                f"`results[{i}]` must be a vireid_layers.evaluation.ProtocolResult (format_table() and as_dict()), "
                f"got {type(item).__name__}"
            )
    return items


def _stated(results: list[Any], key: str) -> str | None:
    values = {str(r.settings.get(key)) for r in results if r.settings.get(key) is not None}
    return ", ".join(sorted(values)) if values else None


def model_card(
    config: Mapping[str, Any],
    *,
    recipe: Any = None,
    dataset: Any = None,
    protocol: Any = None,
    results: Any = None,
    description: str | None = None,
    license: str | None = None,
    source: str = "path/to/model",
) -> str:
    """The ``README.md`` of a saved model: a Hugging Face model card with YAML front matter.

    Sections: the model and its constructor arguments, usage (three lines from files to embeddings), the
    preprocessing, the training recipe, the dataset, the evaluation protocol, the results tables (each with
    the settings that produced it, :meth:`~vireid_layers.evaluation.ProtocolResult.format_table`) and the
    export limits. A section that was not given says "Not stated." rather than nothing; with ``results`` and
    no ``dataset`` / ``protocol``, those are read from the results' settings.

    Args:
        config: the ``config.json`` content (``model``, ``init``, ``preprocess``, ``embed_dim``).
        recipe: the training recipe: text, a mapping (a table), a dataclass (e.g. a recipe config) or an object
            with ``as_dict()``.
        dataset: the training dataset: text, a mapping, or an object with a ``name``.
        protocol: the evaluation protocol: text, a mapping, or an
            :class:`~vireid_layers.evaluation.EvaluationProtocol` (its name and settings).
        results: a :class:`~vireid_layers.evaluation.ProtocolResult` or a sequence of them.
        description: a paragraph of one's own under the title.
        license: the ``license`` field of the front matter (e.g. ``"mit"``).
        source: the directory or hub id shown in the usage example.

    Returns:
        The markdown text.

    Examples:
        >>> from vireid_layers.hub import model_card
        >>> config = {"model": "AGW", "init": {"num_classes": 4}, "embed_dim": 512, "preprocess": {}}
        >>> card = model_card(config, dataset="synthetic", recipe={"epochs": 2})
        >>> card.splitlines()[0], "## Training recipe" in card, "| epochs | 2 |" in card
        ('---', True, True)
    """
    results = results_list(results)
    if dataset is None and results:
        dataset = _stated(results, "dataset")
    if protocol is None and results:
        protocol = _stated(results, "protocol")
        mode = _stated(results, "mode")
        protocol = f"{protocol} (mode {mode})" if protocol and mode else protocol
    name, init = str(config.get("model")), dict(config.get("init", {}))
    front = ["---", "library_name: vireid-layers", "pipeline_tag: image-feature-extraction", "tags:"]
    front += [f"- {tag}" for tag in ("person-re-identification", "visible-infrared", "cross-modality", name.lower())]
    if license:
        front.append(f"license: {license}")
    front.append("---")
    lines = [*front, "", f"# {name} ({init.get('backbone', 'custom backbone')})", ""]
    if description:
        lines += [description.strip(), ""]
    lines += [
        f"A visible-infrared person re-identification model of [vireid-layers](https://vireid-layers.readthedocs.io): "
        f"`vireid_layers.models.{name}`, {config.get('embed_dim')}-dimensional retrieval embeddings "
        "(`model.embed(images, modalities)`). `config.json` rebuilds it without code, `model.safetensors` holds "
        "its weights.",
        "",
        "## Model",
        "",
        _table(init, ("Argument", "Value")),
        "",
        "## Usage",
        "",
        "```python",
        "import torch",
        "from vireid_layers import Modality",
        "from vireid_layers.data import ImagePreprocessor",
        "from vireid_layers.hub import from_pretrained",
        "",
        f'model, preprocess = from_pretrained("{source}"), ImagePreprocessor.from_pretrained("{source}")',
        "with torch.inference_mode():  # files, PIL images or uint8 camera frames in; one embedding per image",
        '    embeddings = model.embed(preprocess(["person.jpg"]), Modality.INFRARED)  # or Modality.VISIBLE',
        "```",
        "",
        "## Preprocessing",
        "",
        _section(config.get("preprocess"), "preprocess"),
        "",
        "## Training recipe",
        "",
        _section(recipe, "recipe"),
        "",
        "## Dataset",
        "",
        _section(dataset, "dataset"),
        "",
        "## Evaluation protocol",
        "",
        _section(protocol, "protocol"),
        "",
        "## Results",
        "",
    ]
    lines += [part for r in results for part in (r.format_table(), "")] or [_NOT_STATED, ""]
    lines += [
        "## Export",
        "",
        "`vireid-export` writes the embedding of one modality to ONNX (opset 18, dynamic batch); see the "
        "deployment guide of the documentation for the supported operators and the parity tolerance.",
        "",
    ]
    return "\n".join(lines)
