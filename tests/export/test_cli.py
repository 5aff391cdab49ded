"""vireid-export: a saved model to ONNX (parity checked) or .pt2, and its errors."""

from __future__ import annotations

import pytest
import torch

from vireid_layers.data import ImagePreprocessor
from vireid_layers.export import run_onnx
from vireid_layers.export.cli import main
from vireid_layers.hub import from_pretrained, save_pretrained
from vireid_layers.models import AGW

H, W = 64, 32


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = AGW(3, backbone="resnet18", method="base")
    return save_pretrained(model, tmp_path_factory.mktemp("agw"), preprocess=ImagePreprocessor(H, W))


def test_onnx_export_with_parity_check(saved, tmp_path, capsys):
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason=f"the ONNX export needs `{name}` (the test extra installs it)")
    out = tmp_path / "agw-infrared.onnx"
    assert main([str(saved), "--modality", "infrared", "-o", str(out), "--mode", "pool"]) == 0
    printed = capsys.readouterr().out
    assert f"AGW embedding of infrared images ({H}x{W}, mode pool) written to {out}" in printed
    assert "ONNX Runtime vs eager float64, batches [1, 3]" in printed and printed.rstrip().endswith("PASS")
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        expected = from_pretrained(saved).embed(x, 1, mode="pool")
    torch.testing.assert_close(run_onnx(out, x), expected, atol=1e-4, rtol=0)


def test_pt2_export(saved, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([str(saved), "--modality", "visible", "--format", "pt2", "--height", "32", "--width", "16"]) == 0
    program = torch.export.load("agw-visible.pt2")  # the default name
    assert program.module()(torch.randn(3, 3, 32, 16)).shape == (3, 512)
    assert "(32x16, mode default)" in capsys.readouterr().out


def test_errors_exit_with_status_2(saved, tmp_path, capsys):
    assert main([str(tmp_path / "nothing"), "--modality", "visible"]) == 2
    assert "neither a directory" in capsys.readouterr().err
    assert main([str(saved), "--modality", "visible", "--mode", "official", "-o", str(tmp_path / "a.onnx")]) == 2
    assert "`mode`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(saved), "--modality", "thermal"])  # argparse refuses it
