"""The official SYSU-MM01 gallery permutation (``exp/rand_perm_cam.mat``): its reader and its structure.

Reading the MATLAB file needs scipy, an optional dependency: ``pip install "vireid-layers[sysu]"``. The
seeded galleries of DEEN/AGW/DDAG (``SYSUProtocol(gallery_sampling="seeded")``, the default) need nothing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SYSUPermutation", "load_sysu_permutation", "parse_sysu_permutation"]

SYSUPermutation = Mapping[int, Sequence[Sequence[Sequence[int]]]]
"""The official SYSU-MM01 gallery permutation: ``perm[camera][identity - 1][trial]`` is a sequence of 1-based
instance numbers; the first ``shots`` of them name the gallery files ``cam{camera}/{identity:04d}/{instance:04d}.*``.
"""

#: The install command named by the error raised without scipy.
SCIPY_INSTALL_HINT = 'pip install "vireid-layers[sysu]"'


def parse_sysu_permutation(cells: Any) -> dict[int, tuple[tuple[tuple[int, ...], ...], ...]]:
    """Convert the ``rand_perm_cam`` variable of ``scipy.io.loadmat`` into plain tuples.

    The MATLAB file holds a 6-element cell (one per camera) of per-identity cells (identity ``1..533``), each a
    ``trials × n`` matrix of 1-based instance numbers (empty when the camera never saw the identity). scipy
    returns nested ``object`` arrays; singleton wrappers are unwrapped.

    Args:
        cells: ``loadmat(path)["rand_perm_cam"]``.

    Returns:
        ``{camera: per_identity}`` with ``per_identity[identity - 1][trial]`` a tuple of instance numbers; see
        :data:`SYSUPermutation`.

    Raises:
        ValueError: ``cells`` is not a MATLAB cell array (numpy object array).

    Examples:
        >>> import numpy as np
        >>> from vireid_layers.evaluation import parse_sysu_permutation
        >>> inner = np.empty((2, 1), dtype=object)
        >>> inner[0, 0] = np.array([[2.0, 1.0], [1.0, 2.0]])
        >>> inner[1, 0] = np.zeros((0, 0))
        >>> outer = np.empty((1, 1), dtype=object)
        >>> outer[0, 0] = inner
        >>> parse_sysu_permutation(outer)
        {1: (((2, 1), (1, 2)), ())}
    """
    import numpy as np

    def is_cell(x: Any) -> bool:
        return isinstance(x, np.ndarray) and x.dtype == object and x.size > 0

    def is_camera_cell(x: Any) -> bool:  # a cell whose entries are numeric matrices (or empty)
        return is_cell(x) and not any(is_cell(e) for e in x.reshape(-1))

    def camera_cells(x: Any) -> list[Any]:  # descend through wrappers down to the per-camera cells
        if is_camera_cell(x):
            return [x]
        if not is_cell(x):
            raise ValueError(f"expected a MATLAB cell array (numpy object array), got {type(x).__name__}")
        return [cell for e in x.reshape(-1) for cell in camera_cells(e)]

    out: dict[int, tuple[tuple[tuple[int, ...], ...], ...]] = {}
    for camera, cell in enumerate(
        camera_cells(np.asarray(cells, dtype=object) if not isinstance(cells, np.ndarray) else cells), start=1
    ):
        per_identity = []
        for entry in cell.reshape(-1):
            matrix = np.asarray(entry, dtype=float)
            if matrix.size == 0:
                per_identity.append(())
                continue
            per_identity.append(tuple(tuple(int(v) for v in np.rint(row)) for row in np.atleast_2d(matrix)))
        out[camera] = tuple(per_identity)
    return out


@functools.lru_cache(maxsize=4)
def _load_permutation_cached(path: str) -> dict[int, tuple[tuple[tuple[int, ...], ...], ...]]:
    try:
        import scipy.io
    except ImportError as err:
        raise ImportError(
            "reading the official SYSU-MM01 permutation file (exp/rand_perm_cam.mat) needs scipy, which is not "
            f"installed: install the `sysu` extra with `{SCIPY_INSTALL_HINT}` (or `pip install scipy`), or use "
            "SYSUProtocol(gallery_sampling='seeded') (the DEEN/AGW galleries, no file needed)"
        ) from err
    mat = scipy.io.loadmat(path)
    if "rand_perm_cam" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path} has no variable 'rand_perm_cam' (variables: {keys})")
    return parse_sysu_permutation(mat["rand_perm_cam"])


def load_sysu_permutation(path: str | os.PathLike[str]) -> dict[int, tuple[tuple[tuple[int, ...], ...], ...]]:
    """Read the official SYSU-MM01 ``exp/rand_perm_cam.mat``; needs scipy (the ``sysu`` extra), results cached.

    scipy is imported only here, so the rest of the evaluation runs without it. Install it with
    ``pip install "vireid-layers[sysu]"``.

    Args:
        path: the ``.mat`` file.

    Returns:
        The permutation as :func:`parse_sysu_permutation` returns it.

    Raises:
        ImportError: scipy is not installed; the message names the ``sysu`` extra and the seeded alternative.
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file has no ``rand_perm_cam`` variable.

    Examples:
        >>> import tempfile, os
        >>> import numpy as np
        >>> import scipy.io
        >>> from vireid_layers.evaluation import load_sysu_permutation
        >>> inner = np.empty((1, 1), dtype=object)
        >>> inner[0, 0] = np.array([[2.0, 1.0]])
        >>> outer = np.empty((1, 1), dtype=object)
        >>> outer[0, 0] = inner
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = os.path.join(tmp, "rand_perm_cam.mat")
        ...     scipy.io.savemat(path, {"rand_perm_cam": outer})
        ...     load_sysu_permutation(path)
        {1: (((2, 1),),)}
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`permutation_file` {path} does not exist (expected SYSU-MM01/exp/rand_perm_cam.mat)")
    return _load_permutation_cached(path)
