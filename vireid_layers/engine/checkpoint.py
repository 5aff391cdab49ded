"""Atomic checkpoint files and the capture / restore of every random number generator.

A checkpoint holds only tensors and primitive containers, so :func:`load_checkpoint` opens it with
``torch.load(weights_only=True)``. :func:`save_checkpoint` writes a temporary file in the target's directory,
flushes and fsyncs it, then renames it over the target with :func:`os.replace`: a crash at any moment leaves
either the previous complete file or the new complete file, never a truncated one. A process killed during the
write (``SIGKILL``, power loss) cannot delete its temporary file, ``.last.pt.<random>.tmp``; the trainer removes
such files when it starts (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "load_checkpoint",
    "remove_stale_temporaries",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
    "strip_prefixes",
    "unwrap_model",
]

_PREFIXES = ("module.", "_orig_mod.")
#: The temporary files of :func:`save_checkpoint`: ``.{target name}.{random part}.tmp``.
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]+\.tmp$")


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same directory, fsync, ``os.replace``).

    Args:
        state: tensors and primitive containers only (checked by the reload with ``weights_only=True``).
        path: destination; its directory is created if missing.

    Returns:
        The destination path.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     p = save_checkpoint({"epoch": 3, "w": torch.ones(2)}, Path(tmp) / "last.pt")
        ...     load_checkpoint(p)["epoch"], sorted(q.name for q in p.parent.iterdir())
        (3, ['last.pt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX); not possible on every platform
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that interrupted :func:`save_checkpoint` calls left in ``directory``.

    Only files named as :func:`save_checkpoint` names them (``.{name}.{random}.tmp``, directly in ``directory``)
    are removed; call it when no other process writes checkpoints there (the trainer does, at the start of
    :meth:`~vireid_layers.engine.Trainer.fit`).

    Returns:
        The removed files.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (Path(tmp) / ".last.pt.k3j_x9q2.tmp").write_bytes(b"partial")
        ...     _ = (Path(tmp) / "notes.tmp").write_text("kept")
        ...     [p.name for p in remove_stale_temporaries(tmp)], sorted(p.name for p in Path(tmp).iterdir())
        (['.last.pt.k3j_x9q2.tmp'], ['notes.tmp'])
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in sorted(directory.iterdir()):
        if _TEMPORARY.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` (no arbitrary unpickling).

    Raises:
        FileNotFoundError: ``path`` does not exist; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    return torch.load(path, map_location=map_location, weights_only=True)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module inside ``DistributedDataParallel`` / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        else:
            return model


def strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the ``module.`` (DDP) and ``_orig_mod.`` (``torch.compile``) prefixes from state-dict keys.

    Examples:
        >>> list(strip_prefixes({"module._orig_mod.fc.weight": 1}))
        ['fc.weight']
    """
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def rng_state() -> dict[str, Any]:
    """The state of the torch (CPU and every CUDA device), NumPy and Python ``random`` generators.

    Everything is a tensor, an int, a float, a string or ``None``, so it survives ``weights_only=True``.
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["cached"])
    )
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda[: torch.cuda.device_count()]])
