"""torch.export and ONNX export of one modality's embedding: parity, dynamic batch, one stem, bad input.

Each exported graph is built once per module (module-scoped fixtures): a torch.export of resnet18 DEEN takes
seconds. The models get random BatchNorm affine parameters and statistics, so that the MFA and non-local blocks,
which are the identity at initialisation (zero output BatchNorm), contribute to the embeddings being compared.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from vireid_layers.export import (
    ONNX_OPSET,
    PARITY_ATOL,
    ModalityEmbedding,
    OnnxParity,
    check_onnx_parity,
    export_embedding,
    export_onnx,
    run_onnx,
)
from vireid_layers.models import AGW, DEEN

H, W = 64, 32  # even positions at every MFA of a resnet18 (16x8, 8x4, 4x2)


def _onnx_stack() -> None:
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason=f"the ONNX export tests need `{name}` (the test extra installs it)")


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm weights, biases and running statistics: every block contributes, MFA included."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def images(n: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, H, W, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def reference(model: nn.Module, x: torch.Tensor, modality: int, **options) -> torch.Tensor:
    """The eager embedding in float64: the obviously correct side of every comparison."""
    double = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        return double.embed(x.double(), modality, **options)


@pytest.fixture(scope="module")
def deen():
    torch.manual_seed(0)
    return randomized(DEEN(5, backbone="resnet18"))


@pytest.fixture(scope="module")
def deen_program(deen):
    return export_embedding(deen, "infrared", height=H, width=W, mode="official")


@pytest.fixture(scope="module")
def deen_onnx(deen, deen_program, tmp_path_factory):
    _onnx_stack()
    path = tmp_path_factory.mktemp("onnx") / "deen-infrared.onnx"
    return export_onnx(deen, path, "infrared", height=H, width=W, mode="official", program=deen_program)


# ------------------------------------------------------------------------------------------------ torch.export


@pytest.mark.parametrize("n", [1, 3, 7])
def test_exported_program_matches_eager_at_any_batch_size(deen, deen_program, n):
    x = images(n, seed=n)
    got = deen_program.module()(x)
    expected = reference(deen, x, 1, mode="official")
    assert got.shape == (n, 6, deen.embed_dim)
    assert (got.double() - expected).abs().max() <= PARITY_ATOL


def test_exported_graph_holds_only_the_chosen_stem(deen_program):
    used = set()
    for node in deen_program.graph.nodes:
        if node.op == "placeholder" and node.users:
            used.add(node.name)
    signature = deen_program.graph_signature
    used_params = {t for p, t in signature.inputs_to_parameters.items() if p in used}
    assert any("infrared_stem" in name for name in used_params)
    assert not any("visible_stem" in name for name in used_params)
    assert not any("nonzero" in str(node.target) for node in deen_program.graph.nodes)  # no routing by modality


def test_export_restores_the_training_mode_and_runs_eval_semantics():
    torch.manual_seed(0)
    model = randomized(AGW(3, backbone="resnet18", method="base")).train()
    model.neck.eval()  # a mixed state is restored module by module
    program = export_embedding(model, 0, height=H, width=W)
    assert model.training and not model.neck.training and model.backbone.training
    x = images(2)
    expected = reference(model.eval(), x, 0)
    assert (program.module()(x).double() - expected).abs().max() <= PARITY_ATOL


def test_exported_program_saves_and_loads(deen_program, tmp_path):
    path = tmp_path / "deen.pt2"
    torch.export.save(deen_program, str(path))
    x = images(2)
    assert torch.equal(torch.export.load(str(path)).module()(x), deen_program.module()(x))


def test_modality_embedding_compiles_fullgraph(fresh_dynamo):
    torch.manual_seed(0)
    model = randomized(AGW(3, backbone="resnet18"))
    module = ModalityEmbedding(model, "visible", mode="pool")
    x = images(2)
    with torch.no_grad():
        compiled = torch.compile(module, backend="eager", fullgraph=True)  # a fixed stem: nothing data-dependent
        torch.testing.assert_close(compiled(x), module(x))


def test_modality_embedding_under_bf16_autocast_stays_close():
    torch.manual_seed(0)
    model = randomized(AGW(3, backbone="resnet18", method="base"))
    module = ModalityEmbedding(model, 1)
    x = images(2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = module(x).float()
    assert torch.isfinite(got).all()
    cosine = torch.nn.functional.cosine_similarity(got, reference(model, x, 1).float())
    assert cosine.min() > 0.98  # bf16 keeps 8 bits of mantissa through a resnet18


# ------------------------------------------------------------------------------------------------ ONNX


def test_onnx_matches_eager_within_the_documented_tolerance(deen, deen_onnx):
    parity = check_onnx_parity(deen, deen_onnx, "infrared", height=H, width=W, mode="official", batch_sizes=(1, 3, 5))
    assert parity.passed, parity
    assert parity.max_abs_diff <= PARITY_ATOL and parity.min_cosine > 1 - 1e-6
    assert parity.batch_sizes == (1, 3, 5)


def test_onnx_parity_fails_for_other_weights(deen, deen_onnx):
    other = copy.deepcopy(deen)
    with torch.no_grad():
        other.neck.weight.mul_(1.5)
        other.dee.project.weight.add_(0.1)
    parity = check_onnx_parity(other, deen_onnx, "infrared", height=H, width=W, mode="official")
    assert not parity.passed and parity.max_abs_diff > 100 * PARITY_ATOL


def test_onnx_parity_is_checked_against_the_exported_modality(deen, deen_onnx):
    other = copy.deepcopy(deen)
    with torch.no_grad():
        for p in other.backbone.visible_stem.parameters():
            p.add_(0.5)  # the visible stem is not in the graph: the infrared parity is unchanged
    assert check_onnx_parity(other, deen_onnx, 1, height=H, width=W, mode="official").passed
    assert not check_onnx_parity(deen, deen_onnx, 0, height=H, width=W, mode="official").passed


def test_onnx_file_has_a_dynamic_batch_the_opset_and_metadata(deen_onnx):
    import onnx

    proto = onnx.load(str(deen_onnx))
    (inp,) = proto.graph.input
    assert inp.name == "images"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, H, W]
    assert [o.name for o in proto.graph.output] == ["embeddings"]
    assert {op.domain: op.version for op in proto.opset_import}[""] == ONNX_OPSET
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["vireid_layers.modality"] == "infrared" and meta["vireid_layers.mode"] == "official"
    assert "preprocessing is not in the graph" in meta["vireid_layers.input"]
    assert not any("visible_stem" in t.name for t in proto.graph.initializer)


def test_onnx_of_paper_form_mfa_rewrites_its_3d_attention(tmp_path):
    _onnx_stack()
    torch.manual_seed(1)
    model = randomized(DEEN(4, backbone="resnet18", mfa_form="paper"))
    path = export_onnx(model, tmp_path / "paper.onnx", "visible", height=H, width=W)
    x = images(3)
    got = run_onnx(path, x)
    assert (got.double() - reference(model, x, 0)).abs().max() <= PARITY_ATOL


def test_onnx_of_agw_with_flip_matches_eager(tmp_path):
    _onnx_stack()
    torch.manual_seed(2)
    model = randomized(AGW(4, backbone="resnet18"))
    path = export_onnx(model, tmp_path / "agw.onnx", 1, height=H, width=W, mode="pool", flip=True)
    parity = check_onnx_parity(model, path, 1, height=H, width=W, mode="pool", flip=True, batch_sizes=(2, 4))
    assert parity.passed, parity


def test_parity_with_nan_never_passes():
    assert not OnnxParity(math.nan, math.nan, PARITY_ATOL, (1,)).passed
    assert OnnxParity(0.5 * PARITY_ATOL, 1.0, PARITY_ATOL, (1,)).passed


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_arguments_are_refused_with_their_name(deen, tmp_path):
    with pytest.raises(ValueError, match=r"`modality`.*'depth'"):
        ModalityEmbedding(deen, "depth")
    with pytest.raises(TypeError, match="`flip`"):
        ModalityEmbedding(deen, 0, flip="yes")
    with pytest.raises(TypeError, match="`model` must have an embed"):
        ModalityEmbedding(nn.Linear(2, 2), 0)
    with pytest.raises(TypeError, match="`mode`"):
        ModalityEmbedding(deen, 0, mode=1)
    with pytest.raises(ValueError, match=r"`opset`.*17"):
        export_onnx(deen, tmp_path / "a.onnx", 0, height=H, width=W, opset=17)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_onnx(deen, tmp_path / "missing" / "a.onnx", 0, height=H, width=W)
    with pytest.raises(ValueError, match="`mode`"):
        export_embedding(deen, 0, height=H, width=W, mode="fc")  # DEEN's modes are plain / official
    with pytest.raises(ValueError, match="divisible by reduction"):
        export_embedding(deen, 0, height=72, width=36)  # an odd number of positions at an official MFA
    with pytest.raises(ValueError, match="`height`"):
        export_embedding(deen, 0, height=0, width=W)
    with pytest.raises(ValueError, match="`batch_sizes`"):
        check_onnx_parity(deen, tmp_path / "a.onnx", 0, height=H, width=W, batch_sizes=(0,))
