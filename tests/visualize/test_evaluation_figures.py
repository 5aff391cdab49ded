"""The run-directory writer of the evaluation figures, the image conversion shared by the figures, the public API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vireid_layers.visualize as viz
from vireid_layers.data import build_test_transform
from vireid_layers.evaluation import ProtocolEvaluator, protocol_for_dataset
from vireid_layers.models import DEEN
from vireid_layers.visualize import FIGURES, save_evaluation_figures
from vireid_layers.visualize._drawing import as_display_image


def test_all_is_sorted_and_importable() -> None:
    assert list(viz.__all__) == sorted(viz.__all__)
    for name in viz.__all__:
        assert hasattr(viz, name)


@pytest.fixture(scope="module")
def deen() -> DEEN:
    torch.manual_seed(0)
    return DEEN(2, backbone="resnet18")


def _evaluator(dataset) -> ProtocolEvaluator:
    return ProtocolEvaluator(
        protocol_for_dataset("synthetic", num_trials=1), dataset, build_test_transform(32, 16), batch_size=64
    )


def test_save_evaluation_figures_writes_every_figure(tmp_path: Path, tiny_synthetic, deen, monkeypatch) -> None:
    evaluator = _evaluator(tiny_synthetic)
    drawn: dict[str, object] = {}
    original = viz.evaluation_figures.plot_embedding_map

    def spy(features, identities, modalities, **kwargs):
        drawn.update(features=features, identities=identities, modalities=modalities)
        return original(features, identities, modalities, **kwargs)

    monkeypatch.setattr(viz.evaluation_figures, "plot_embedding_map", spy)
    written = save_evaluation_figures(
        evaluator, deen, tmp_path, label="random init", prefix="before_", projection="pca", k=3, queries=2
    )
    assert list(written) == list(FIGURES)
    for name, path in written.items():
        assert path == tmp_path / "figures" / f"before_{name}.png"
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
    # The embedding map shows the trial's queries (infrared) and gallery (visible) with their identities.
    protocol = evaluator.protocol
    selection = protocol.select(tiny_synthetic, 0)
    queries = [protocol.query_candidates(tiny_synthetic)[i] for i in selection.query]
    gallery = [protocol.gallery_candidates(tiny_synthetic)[i] for i in selection.gallery]
    assert drawn["identities"].tolist() == [r.identity for r in queries + gallery]
    assert drawn["modalities"].tolist() == [1] * len(queries) + [0] * len(gallery)
    expected = torch.cat(
        [evaluator.extract(deen, queries, protocol.query_modality), evaluator.extract(deen, gallery, 0)]
    )
    torch.testing.assert_close(drawn["features"], expected)


def test_save_evaluation_figures_selection_and_bad_names(tmp_path: Path, tiny_synthetic, deen) -> None:
    evaluator = _evaluator(tiny_synthetic)
    written = save_evaluation_figures(
        evaluator, deen, tmp_path, figures=["activation_maps"], activation_method="activation", subdir="viz"
    )
    assert list(written) == ["activation_maps"] and sorted(p.name for p in (tmp_path / "viz").iterdir()) == [
        "activation_maps.png"
    ]
    with pytest.raises(ValueError, match="figures"):
        save_evaluation_figures(evaluator, deen, tmp_path, figures=["cmc"])
    with pytest.raises(TypeError, match="evaluator"):
        save_evaluation_figures(object(), deen, tmp_path)  # type: ignore[arg-type]


def test_as_display_image_conversions(tmp_path: Path) -> None:
    rgb = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    expected = rgb.astype(np.float32) / 255
    np.testing.assert_allclose(as_display_image(rgb), expected)
    np.testing.assert_allclose(as_display_image(torch.from_numpy(rgb).permute(2, 0, 1)), expected)
    np.testing.assert_allclose(as_display_image(Image.fromarray(rgb)), expected)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    np.testing.assert_allclose(as_display_image(tmp_path / "x.png"), expected)
    grey = torch.rand(2, 4)
    np.testing.assert_allclose(as_display_image(grey), grey[..., None].expand(2, 4, 3).numpy())
    np.testing.assert_allclose(as_display_image(grey[None]), grey[..., None].expand(2, 4, 3).numpy())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_display_image(torch.full((3, 2, 2), 2.0))
    with pytest.raises(ValueError, match="non-finite"):
        as_display_image(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        as_display_image(torch.zeros(2, 2, 2, 2))
    with pytest.raises(TypeError, match="image"):
        as_display_image(3)  # type: ignore[arg-type]


def test_matplotlib_is_imported_only_to_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    code = (
        "import sys, torch; import vireid_layers.visualize as v; "
        "v.pair_distances(torch.randn(4, 3), torch.arange(4), torch.zeros(4, dtype=torch.long)); "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    with pytest.raises(ImportError, match=r"vireid-layers\[viz\]"):
        viz.plot_distance_histograms(torch.randn(4, 3), torch.arange(4), torch.zeros(4, dtype=torch.long))
