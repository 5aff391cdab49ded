"""Fixtures of the visualisation tests: the Agg backend, a rendering helper and a tiny synthetic dataset on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vireid_layers.data import VIReIDDataset  # noqa: E402
from vireid_layers.data.datasets.synthetic import make_synthetic_dataset, read_synthetic  # noqa: E402


@pytest.fixture
def render() -> Callable[[Figure], Figure]:
    """Draw a figure with the Agg canvas (every artist is laid out and rasterised) and return it."""

    def draw(fig: Figure) -> Figure:
        assert isinstance(fig, Figure)
        FigureCanvasAgg(fig).draw()
        return fig

    return draw


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> VIReIDDataset:
    """A synthetic dataset of 6 identities (4 test identities), 2 images per camera, 32x16 pixels."""
    root: Path = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, num_identities=6, train_identities=2, images_per_camera=2, height=32, width=16)
    return read_synthetic(root)
