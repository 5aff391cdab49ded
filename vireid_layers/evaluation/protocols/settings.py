"""What a result states about how it was obtained: the keys of ``ProtocolResult.settings`` and their text.

Every results table and its JSON form state the same settings, in this order (:data:`SETTING_KEYS`):

* ``dataset``: the evaluated dataset's ``name`` (``"sysu"``, ``"synthetic"``, ...; filled by the runner);
* ``protocol``: ``"sysu"``, ``"regdb"`` or ``"llcm"``, and ``mode``: ``"all"`` or ``"indoor"`` (SYSU-MM01),
  ``"all"`` otherwise (the protocol);
* ``direction``: ``"infrared_to_visible"`` or ``"visible_to_infrared"`` (the protocol);
* ``trials``: the trial numbers evaluated; ``gallery_sampling``: ``"seeded"``, ``"official"`` (the SYSU-MM01
  permutation file) or ``"none"`` (every test image); ``gallery_seeds``: the seed of each trial's
  ``random.Random`` draw, ``None`` without one (the runner and the protocol);
* ``shots``: images per (identity, camera) in a gallery, or ``"all"`` (the protocol);
* ``feature``: e.g. ``"plain"`` or ``"official"`` (DEEN's six-part feature) (the caller);
* ``flip``: ``False``, ``"sum"`` or ``"mean"`` (the caller);
* ``rerank``: ``None`` or ``{"method": "k_reciprocal", "k1": ..., "k2": ..., "lambda_value": ...}`` (the runner);
* ``distance``: the name of the ranking distance (the runner);
* ``selection``: how the checkpoint was chosen: ``"val"`` (validation identities), ``"test"`` (the test set),
  ``"last"`` (no selection) or another text (the caller).

Protocols add ``num_trials``, ``reported_cmc``, ``exclude`` (the removal rule's name) and their own
parameters (``permutation_file``, ``sampled_side``, ``official_vis_to_ir_compat``).

The caller's keys (:data:`CALLER_SETTING_KEYS`) reach a result through the ``settings`` argument of
:func:`~vireid_layers.evaluation.evaluate_protocol` or :meth:`ProtocolResult.with_settings
<vireid_layers.evaluation.ProtocolResult.with_settings>`; a key that is not stated prints as "not stated".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..._validation import check_int, check_probability
from .direction import Direction

__all__ = [
    "CALLER_SETTING_KEYS",
    "RERANK_DEFAULTS",
    "RESERVED_SETTING_KEYS",
    "SETTING_KEYS",
    "callable_name",
    "check_caller_settings",
    "describe_settings",
    "rerank_parameters",
    "variant_labels",
]

#: The settings every result states, in table order.
SETTING_KEYS: tuple[str, ...] = (
    "dataset",
    "protocol",
    "mode",
    "direction",
    "trials",
    "gallery_sampling",
    "gallery_seeds",
    "shots",
    "feature",
    "flip",
    "rerank",
    "distance",
    "selection",
)
#: The settings only the caller knows (how features were made, how the checkpoint was chosen).
CALLER_SETTING_KEYS: tuple[str, ...] = ("feature", "flip", "selection")
#: The settings a caller may not set: the protocol and its runner fill them.
RESERVED_SETTING_KEYS: tuple[str, ...] = (
    *(k for k in SETTING_KEYS if k not in CALLER_SETTING_KEYS),
    "num_trials",
    "reported_cmc",
    "exclude",
    "sampled_side",
    "permutation_file",
    "official_vis_to_ir_compat",
)
#: The official k-reciprocal parameters (:func:`~vireid_layers.evaluation.k_reciprocal_rerank`).
RERANK_DEFAULTS: dict[str, float] = {"k1": 20, "k2": 6, "lambda_value": 0.3}

_FEATURES = {"plain": "plain (one embedding)", "official": "official six-part (DEEN)"}
_FLIPS = {
    False: "off",
    "sum": "on (features of the image and of its horizontal flip added)",
    "mean": "on (features of the image and of its horizontal flip averaged)",
}
_SELECTIONS = {
    "val": "validation identities",
    "test": "test set (the checkpoint was chosen on the test split)",
    "last": "last epoch (no selection)",
}


def callable_name(fn: Callable[..., Any]) -> str:
    """The name a settings mapping records for a function: ``__name__``, or the class name of an object.

    Examples:
        >>> from vireid_layers.evaluation.protocols.settings import callable_name
        >>> from vireid_layers.evaluation import negative_cosine_similarity
        >>> callable_name(negative_cosine_similarity), callable_name(lambda q, g: q)
        ('negative_cosine_similarity', '<lambda>')
    """
    func = getattr(fn, "func", None)  # functools.partial
    if func is not None and hasattr(fn, "keywords"):
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(fn.keywords.items()))
        return f"{callable_name(func)}({args})"
    return str(getattr(fn, "__name__", type(fn).__name__))


def rerank_parameters(rerank: bool | Mapping[str, float] | None) -> dict[str, Any] | None:
    """Validate the ``rerank`` argument of the protocol runners; ``None`` when re-ranking is off.

    Args:
        rerank: ``None`` or ``False`` (off), ``True`` (:data:`RERANK_DEFAULTS`), or a mapping overriding some of
            ``k1``, ``k2`` and ``lambda_value``.

    Returns:
        ``{"method": "k_reciprocal", "k1": ..., "k2": ..., "lambda_value": ...}`` or ``None``.

    Raises:
        TypeError: ``rerank`` is of another type, or a parameter has the wrong type.
        ValueError: an unknown parameter or a value out of range.

    Examples:
        >>> from vireid_layers.evaluation.protocols.settings import rerank_parameters
        >>> rerank_parameters(True)
        {'method': 'k_reciprocal', 'k1': 20, 'k2': 6, 'lambda_value': 0.3}
        >>> rerank_parameters({"k1": 10})["k1"], rerank_parameters(None)
        (10, None)
    """
    if rerank is None or rerank is False:
        return None
    if rerank is True:
        params: dict[str, Any] = dict(RERANK_DEFAULTS)
    elif isinstance(rerank, Mapping):
        unknown = sorted(set(rerank) - set(RERANK_DEFAULTS))
        if unknown:
            raise ValueError(f"`rerank` takes the parameters {sorted(RERANK_DEFAULTS)}, got unknown {unknown}")
        params = {**RERANK_DEFAULTS, **rerank}
    else:
        raise TypeError(f"`rerank` must be None, a bool or a mapping of parameters, got {type(rerank).__name__}")
    params["k1"] = check_int(params["k1"], "k1")
    params["k2"] = check_int(params["k2"], "k2")
    params["lambda_value"] = check_probability(params["lambda_value"], "lambda_value")
    return {"method": "k_reciprocal", **params}


def check_caller_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate what a caller adds to a result's settings.

    Args:
        settings: ``None`` or a mapping of string keys to JSON-serialisable values; the standard keys are
            ``feature`` (a string), ``flip`` (``False``, ``"sum"`` or ``"mean"``) and ``selection`` (a string),
            any other key is kept and printed too (for example ``"checkpoint"`` or RegDB's ``"split"``).

    Returns:
        A copy as a plain ``dict``.

    Raises:
        TypeError: ``settings`` is not a mapping, a key is not a string, or a value is not JSON-serialisable.
        ValueError: a key of :data:`RESERVED_SETTING_KEYS`, or a bad ``feature`` / ``flip`` / ``selection`` value.
    """
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise TypeError(f"`settings` must be a mapping, got {type(settings).__name__}")
    out = dict(settings)
    for key in out:
        if not isinstance(key, str):
            raise TypeError(f"`settings` keys must be strings, got {key!r}")
    clash = sorted(set(out) & set(RESERVED_SETTING_KEYS))
    if clash:
        raise ValueError(f"`settings` may not set {clash}: the protocol and its runner fill them")
    if "flip" in out and out["flip"] not in (None, False, "sum", "mean"):
        raise ValueError(f"`settings['flip']` must be False, 'sum', 'mean' or None, got {out['flip']!r}")
    for key in ("feature", "selection"):
        if key in out and out[key] is not None and (not isinstance(out[key], str) or not out[key]):
            raise ValueError(f"`settings[{key!r}]` must be a non-empty str or None, got {out[key]!r}")
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`settings` must be JSON-serialisable, got {out!r}: {err}") from err
    return out


def _ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts: list[str] = []
    start = prev = None
    for v in [*values, None]:
        if start is not None and (v is None or v != prev + 1):  # type: ignore[operator]
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if v is not None and start is None:
            start = v
        prev = v
    return ", ".join(parts)


def _direction(value: Any) -> str:
    try:
        return Direction.parse(value).label
    except ValueError:
        return str(value)


def _sampling(s: Mapping[str, Any]) -> str:
    sampling, side = s.get("gallery_sampling"), s.get("sampled_side", "gallery")
    if sampling == "seeded":
        seeds = s.get("gallery_seeds")
        seeded = "seeded, random.Random(t) for trial t" + (f" (seeds {_ranges(seeds)})" if seeds else "")
        return f"queries: {seeded}; gallery: every test image" if side == "query" else f"gallery: {seeded}"
    if sampling == "official":
        return "gallery from the official permutation (exp/rand_perm_cam.mat), column t for trial t"
    if sampling == "none":
        return "gallery: every test image (no sampling)"
    return "gallery sampling not stated" if sampling is None else f"gallery sampling {sampling}"


def _shot(shots: Any) -> str:
    if shots is None:
        return "not stated"
    if shots == "all":
        return "every image of each identity and camera"
    if shots == 1:
        return "single-shot"
    return f"multi-shot ({shots} per identity and camera)"


def _rerank(rerank: Any) -> str:
    if not rerank:
        return "off"
    if isinstance(rerank, Mapping):
        params = ", ".join(f"{k}={v}" for k, v in rerank.items() if k != "method")
        return f"{rerank.get('method', 'k_reciprocal')} ({params})"
    return str(rerank)


def _known(table: Mapping[Any, str], value: Any) -> str:
    if value is None:
        return "not stated"
    return table.get(value, str(value)) if isinstance(value, (str, bool)) else str(value)


def describe_settings(settings: Mapping[str, Any], *, varying: Sequence[str] = ()) -> list[str]:
    """The settings block of a results table: one markdown list line per setting.

    Args:
        settings: a result's settings.
        varying: keys that differ between the rows of a comparison; printed as "see the rows".

    Returns:
        ``["Settings:", "- dataset: ...", ...]``: every key of :data:`SETTING_KEYS` (as "not stated" when
        missing), then the removal rule, then any other key the caller added.
    """
    s = dict(settings)
    trials = s.get("trials")
    trial_text = "not stated" if not trials else f"{len(trials)} ({_ranges(trials)})"
    text = {
        "dataset": str(s.get("dataset") or "not stated"),
        "protocol": f"{s.get('protocol') or 'not stated'}, mode {s.get('mode') or 'not stated'}",
        "direction": _direction(s["direction"]) if s.get("direction") else "not stated",
        "trials": f"{trial_text}; {_sampling(s)}",
        "shots": _shot(s.get("shots")),
        "feature": _known(_FEATURES, s.get("feature")),
        "flip": _known(_FLIPS, s.get("flip")),
        "rerank": _rerank(s.get("rerank")),
        "distance": str(s.get("distance") or "not stated"),
        "selection": _known(_SELECTIONS, s.get("selection")),
    }
    labels = {"shots": "shot", "rerank": "re-ranking", "selection": "checkpoint selection"}
    lines = ["Settings:"]
    for key, value in text.items():
        shown = "varies, see the rows" if key in varying else value
        lines.append(f"- {labels.get(key, key)}: {shown}")
    if "exclude" in s:
        lines.append(f"- removal rule: {s.get('exclude') or 'none'}")
    for key, value in s.items():
        if key not in RESERVED_SETTING_KEYS and key not in CALLER_SETTING_KEYS:
            lines.append(f"- {key}: {'varies, see the rows' if key in varying else value}")
    return lines


def variant_labels(settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """Short row labels of a comparison, from the settings that differ between its results.

    ``"plain"`` for a result without flip and re-ranking whose other settings are those of every row;
    otherwise "flip (sum)", "re-ranked" and ``key value`` for each other differing key, joined by commas.

    Examples:
        >>> from vireid_layers.evaluation.protocols.settings import variant_labels
        >>> variant_labels([{"flip": False, "rerank": None}, {"flip": "sum", "rerank": {"k1": 20}}])
        ['plain', 'flip (sum), re-ranked']
        >>> variant_labels([{"feature": "plain"}, {"feature": "official"}])
        ['feature plain', 'feature official']
    """
    keys: list[str] = []
    for s in settings:
        keys += [k for k in s if k not in keys]
    differing = [k for k in keys if k != "trials" and len({json.dumps(s.get(k), sort_keys=True) for s in settings}) > 1]
    labels = []
    for i, s in enumerate(settings):
        parts = []
        for key in differing:
            value = s.get(key)
            if key == "flip":
                parts.append(f"flip ({value})" if value else "")
            elif key == "rerank":
                parts.append("re-ranked" if value else "")
            else:
                parts.append(f"{key} {value}")
        parts = [p for p in parts if p]
        labels.append(", ".join(parts) if parts else ("plain" if differing else f"result {i + 1}"))
    return labels
