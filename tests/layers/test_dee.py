"""Tests for DEE (DEEN diverse embedding expansion) against a plain per-branch reference.

The reference ``OfficialDEE`` is written from the description of the official ``DEE_module`` (reference
notes §1.2): two branches of three dilated 3x3 convolutions (C -> C/4, no bias) averaged, a ReLU and a
1x1 convolution (C/4 -> C, with bias), concatenated with the input along the batch, then Dropout(0.01).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vireid_layers.layers.dee import DEE

F64 = torch.float64


class OfficialDEE(nn.Module):
    """Plain per-branch DEE with the official submodule names (``FC11``..``FC13``, ``FC1``, ``FC21``..)."""

    def __init__(self, channel: int, dropout: float = 0.01) -> None:
        super().__init__()
        c, r = channel, channel // 4
        self.FC11 = nn.Conv2d(c, r, 3, padding=1, dilation=1, bias=False)
        self.FC12 = nn.Conv2d(c, r, 3, padding=2, dilation=2, bias=False)
        self.FC13 = nn.Conv2d(c, r, 3, padding=3, dilation=3, bias=False)
        self.FC1 = nn.Conv2d(r, c, 1, bias=True)
        self.FC21 = nn.Conv2d(c, r, 3, padding=1, dilation=1, bias=False)
        self.FC22 = nn.Conv2d(c, r, 3, padding=2, dilation=2, bias=False)
        self.FC23 = nn.Conv2d(c, r, 3, padding=3, dilation=3, bias=False)
        self.FC2 = nn.Conv2d(r, c, 1, bias=True)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = (self.FC11(x) + self.FC12(x) + self.FC13(x)) / 3
        x1 = self.FC1(torch.relu(x1))
        x2 = (self.FC21(x) + self.FC22(x) + self.FC23(x)) / 3
        x2 = self.FC2(torch.relu(x2))
        return self.dropout(torch.cat((x, x1, x2), 0))


def randomised_official(channels: int, seed: int = 0, dtype: torch.dtype = F64) -> OfficialDEE:
    """An OfficialDEE whose every weight (and the 1x1 biases) is drawn at random."""
    g = torch.Generator().manual_seed(seed)
    ref = OfficialDEE(channels).to(dtype)
    with torch.no_grad():
        for p in ref.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 4.0
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) / math.sqrt(fan_in))
    return ref


def loaded_dee(ref: OfficialDEE, channels: int, **kwargs: object) -> DEE:
    dee = DEE(channels, dtype=F64, **kwargs)
    result = dee.load_state_dict(ref.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return dee


def zscore_binomial(successes: int, trials: int, p: float) -> float:
    """Normal approximation of the binomial test (scipy is not a dependency)."""
    return (successes - trials * p) / math.sqrt(trials * p * (1 - p))


# --------------------------------------------------------------------------------------------- smoke / shape


@pytest.mark.parametrize("num_branches", [1, 2, 3])
def test_shape(num_branches: int) -> None:
    dee = DEE(8, num_branches=num_branches)
    x = torch.randn(3, 8, 5, 4)
    out = dee(x)
    assert out.shape == ((1 + num_branches) * 3, 8, 5, 4)
    assert torch.isfinite(out).all()
    assert dee.generate(x).shape == (num_branches, 3, 8, 5, 4)


def test_shape_deen_real() -> None:
    """Stage-3 map of a 384x144 input: (N, 1024, 24, 9) -> (3N, 1024, 24, 9). Batch 48 on the meta device."""
    dee = DEE(1024).eval()
    x = torch.randn(2, 1024, 24, 9)
    with torch.no_grad():
        out = dee(x)
    assert out.shape == (6, 1024, 24, 9)
    assert torch.equal(out[:2], x)
    meta = DEE(1024, device="meta")
    assert meta(torch.empty(48, 1024, 24, 9, device="meta")).shape == (144, 1024, 24, 9)
    # RegDB: DEE(512) after stage 2 of a 384x144 input
    regdb = DEE(512, device="meta")
    assert regdb(torch.empty(48, 512, 48, 18, device="meta")).shape == (144, 512, 48, 18)


def test_generate_and_original_rows() -> None:
    torch.manual_seed(0)
    dee = DEE(8, num_branches=3).eval()
    x = torch.randn(4, 8, 3, 5)
    out = dee(x)
    generated = dee.generate(x)
    assert generated.shape == (3, 4, 8, 3, 5)
    assert torch.equal(out[:4], x)
    torch.testing.assert_close(out[4:].view(3, 4, 8, 3, 5), generated)
    # the generated embeddings are not copies of the input nor of each other
    assert not torch.allclose(generated[0], x)
    assert not torch.allclose(generated[0], generated[1])


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize(("n", "h", "w"), [(3, 6, 5), (1, 1, 1), (2, 7, 2)])
def test_reference(n: int, h: int, w: int) -> None:
    ref = randomised_official(12, seed=n + h).eval()
    dee = loaded_dee(ref, 12).eval()
    x = torch.randn(n, 12, h, w, dtype=F64)
    torch.testing.assert_close(dee(x), ref(x), rtol=1e-12, atol=1e-12)


def test_reference_fp32() -> None:
    ref = randomised_official(16, seed=3, dtype=torch.float32).eval()
    dee = DEE(16)
    dee.load_state_dict(ref.state_dict(), strict=True)
    dee.eval()
    x = torch.randn(2, 16, 6, 4)
    torch.testing.assert_close(dee(x), ref(x), rtol=1e-5, atol=1e-5)
    # Against the exact (float64) value, with a tolerance derived from the dtype and the depth: the longest
    # reduction of the path is the three 3x3 dilated convs over C = 16 channels (3 * 16 * 9 = 432 products)
    # followed by the C/4 = 4-term 1x1 conv; float32 rounding of a K-term sum grows like sqrt(K) * eps
    # relative to the magnitude of the terms (about 1 here: unit-variance inputs, fan-in-scaled weights).
    exact = copy.deepcopy(ref).double()(x.double())  # the same weights, evaluated in float64
    tolerance = 8 * math.sqrt(3 * 16 * 9 + 4) * torch.finfo(torch.float32).eps
    torch.testing.assert_close(dee(x).double(), exact, rtol=tolerance, atol=tolerance)


def test_reference_input_gradients() -> None:
    ref = randomised_official(8, seed=1).eval()
    dee = loaded_dee(ref, 8).eval()
    x = torch.randn(2, 8, 5, 3, dtype=F64)
    weight = torch.randn(6, 8, 5, 3, dtype=F64)
    x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (ref(x_ref) * weight).sum().backward()
    (dee(x_ours) * weight).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-12, atol=1e-12)


def test_reference_train_mode_same_dropout_mask() -> None:
    """Dropout covers the whole concatenation, as nn.Dropout after torch.cat in the official code."""
    ref = randomised_official(8, seed=2).train()
    dee = loaded_dee(ref, 8).train()
    x = torch.randn(4, 8, 6, 6, dtype=F64)
    torch.manual_seed(123)
    expected = ref(x)
    torch.manual_seed(123)
    torch.testing.assert_close(dee(x), expected, rtol=1e-12, atol=1e-12)


def test_reference_under_prefix() -> None:
    class OfficialParent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 1)
            self.DEE = randomised_official(8, seed=5)

    class Parent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 1, dtype=F64)
            self.DEE = DEE(8, dtype=F64)

    official = OfficialParent().to(F64).eval()
    ours = Parent().eval()
    sd = official.state_dict()
    assert "DEE.FC11.weight" in sd and "DEE.FC2.bias" in sd
    result = ours.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert "DEE.FC11.weight" in sd  # the caller's dict is not modified
    x = torch.randn(2, 8, 4, 4, dtype=F64)
    torch.testing.assert_close(ours.DEE(x), official.DEE(x), rtol=1e-12, atol=1e-12)


def test_incomplete_official_state_dict_fails_strict() -> None:
    sd = randomised_official(8).state_dict()
    del sd["FC23.weight"]
    with pytest.raises(RuntimeError, match=r"FC|dilated"):
        DEE(8, dtype=F64).load_state_dict(sd, strict=True)


def test_official_state_dict_needs_two_branches() -> None:
    """The official checkpoint has K = 2; a K = 3 module must refuse it under strict loading."""
    with pytest.raises(RuntimeError):
        DEE(8, num_branches=3, dtype=F64).load_state_dict(randomised_official(8).state_dict(), strict=True)


def test_own_state_dict_round_trip() -> None:
    a, b = DEE(8, num_branches=3), DEE(8, num_branches=3)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(2, 8, 4, 3)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_fused_weights_are_stacked_branch_weights() -> None:
    c, k = 12, 2
    ref = randomised_official(c, seed=7)
    dee = loaded_dee(ref, c)
    for j, dilation in enumerate((1, 2, 3)):
        conv = dee.dilated[j]
        assert conv.weight.shape == (k * c // 4, c, 3, 3)
        assert conv.dilation == (dilation, dilation) and conv.padding == (dilation, dilation)
        assert conv.bias is None
        branch1, branch2 = getattr(ref, f"FC1{j + 1}").weight, getattr(ref, f"FC2{j + 1}").weight
        assert torch.equal(conv.weight, torch.cat([branch1, branch2], 0))
    assert dee.project.groups == k
    assert dee.project.weight.shape == (k * c, c // 4, 1, 1)
    assert torch.equal(dee.project.weight, torch.cat([ref.FC1.weight, ref.FC2.weight], 0))
    assert torch.equal(dee.project.bias, torch.cat([ref.FC1.bias, ref.FC2.bias], 0))


# --------------------------------------------------------------------------------------------- initialisation


def _check_kaiming_normal(weight: torch.Tensor, fan_in: int) -> None:
    std = math.sqrt(2.0 / fan_in)
    w = weight.detach().flatten().double()
    assert abs(float(w.mean())) < 0.05 * std
    assert float(w.std()) == pytest.approx(std, rel=0.1)
    # normal, not a uniform of the same variance: ~68.3 % within one std (uniform: 57.7 %)
    assert float((w.abs() < std).double().mean()) == pytest.approx(0.6827, abs=0.03)
    assert float(w.abs().max()) > math.sqrt(3) * std  # a uniform of that std is bounded by sqrt(3) std


def test_init_statistics() -> None:
    torch.manual_seed(0)
    c = 256
    dee = DEE(c)
    for conv in dee.dilated:
        _check_kaiming_normal(conv.weight, c * 9)
    _check_kaiming_normal(dee.project.weight, c // 4)
    bound = 1 / math.sqrt(c // 4)
    bias = dee.project.bias.detach()
    assert float(bias.abs().max()) <= bound
    assert float(bias.std()) == pytest.approx(bound / math.sqrt(3), rel=0.15)  # uniform(-b, b)


def test_reset_parameters_resamples_with_same_statistics() -> None:
    torch.manual_seed(0)
    c = 256
    dee = DEE(c)
    before = {k: v.clone() for k, v in dee.state_dict().items()}
    dee.reset_parameters()
    for key, value in dee.state_dict().items():
        assert not torch.equal(value, before[key]), key
    for conv in dee.dilated:
        _check_kaiming_normal(conv.weight, c * 9)
    _check_kaiming_normal(dee.project.weight, c // 4)
    assert float(dee.project.bias.detach().abs().max()) <= 1 / math.sqrt(c // 4)


def test_no_dead_parameters() -> None:
    dee = DEE(8)
    names = sorted(n for n, _ in dee.named_parameters())
    assert names == ["dilated.0.weight", "dilated.1.weight", "dilated.2.weight", "project.bias", "project.weight"]
    dee(torch.randn(2, 8, 3, 3)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dee.parameters())


# ------------------------------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p", [0.01, 0.2])
def test_dropout_statistics(seed: int, p: float) -> None:
    torch.manual_seed(seed)
    dee = DEE(16, dropout=p)
    x = torch.ones(8, 16, 16, 16)
    with torch.no_grad():
        clean = dee.eval()(x)
        out = dee.train()(x)
    assert (clean != 0).all()  # any zero in `out` is a dropped element
    dropped = out == 0
    z = zscore_binomial(int(dropped.sum()), dropped.numel(), p)
    assert abs(z) < 4, z
    # the original rows are dropped too (official: dropout after the concatenation)
    original = dropped[:8]
    z_orig = zscore_binomial(int(original.sum()), original.numel(), p)
    assert abs(z_orig) < 4, z_orig
    # the kept elements are rescaled by 1 / (1 - p)
    torch.testing.assert_close(out[~dropped], clean[~dropped] / (1 - p))


def test_dropout_zero_and_one() -> None:
    torch.manual_seed(0)
    x = torch.ones(4, 8, 8, 8)
    dee = DEE(8, dropout=0.0)
    with torch.no_grad():
        clean = dee.eval()(x)
        out = dee.train()(x)
    assert (out != 0).all()
    torch.testing.assert_close(out, clean)
    with torch.no_grad():
        out_one = DEE(8, dropout=1.0).train()(x)
    assert torch.equal(out_one, torch.zeros_like(out_one))


def test_eval_mode_is_deterministic() -> None:
    dee = DEE(8).eval()  # default dropout 0.01
    x = torch.ones(4, 8, 16, 16)
    torch.manual_seed(0)
    a = dee(x)
    torch.manual_seed(1)
    assert torch.equal(a, dee(x))
    assert (a != 0).all()


# --------------------------------------------------------------------------------------------- gradients


def test_gradcheck() -> None:
    torch.manual_seed(0)
    dee = DEE(8, dtype=F64).eval()
    x = torch.randn(2, 8, 3, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(dee, (x,))


def test_gradcheck_parameters() -> None:
    torch.manual_seed(0)
    dee = DEE(4, dtype=F64).eval()
    x = torch.randn(1, 4, 2, 3, dtype=F64, requires_grad=True)
    names = [name for name, _ in dee.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in dee.named_parameters())

    def fn(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(dee, dict(zip(names, ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=True)


def test_gradcheck_train_no_dropout() -> None:
    dee = DEE(4, num_branches=3, dropout=0.0, dtype=F64).train()
    x = torch.randn(2, 4, 3, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(dee, (x,), fast_mode=True)


# ---------------------------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=20)
@given(
    channels=st.sampled_from([4, 8, 12]),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    n=st.integers(1, 3),
    k=st.integers(1, 3),
    data=st.data(),
)
def test_batch_permutation_equivariance(channels: int, h: int, w: int, n: int, k: int, data: st.DataObject) -> None:
    perm = torch.tensor(data.draw(st.permutations(range(n))), dtype=torch.long)
    torch.manual_seed(channels * 100 + h * 10 + w)
    dee = DEE(channels, num_branches=k, dtype=F64).eval()
    x = torch.randn(n, channels, h, w, dtype=F64)
    out = dee(x)
    assert out.shape == ((1 + k) * n, channels, h, w)
    assert torch.isfinite(out).all()
    blocks = out.view(1 + k, n, channels, h, w)
    torch.testing.assert_close(dee(x[perm]).view(1 + k, n, channels, h, w), blocks[:, perm])


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((6,), {}, ValueError, "channels"),
        ((0,), {}, ValueError, "channels"),
        ((-4,), {}, ValueError, "channels"),
        ((8.0,), {}, ValueError, "channels"),
        ((True,), {}, ValueError, "channels"),
        ((8,), {"num_branches": 0}, ValueError, "num_branches"),
        ((8,), {"num_branches": -1}, ValueError, "num_branches"),
        ((8,), {"dropout": -0.1}, ValueError, "dropout"),
        ((8,), {"dropout": 1.5}, ValueError, "dropout"),
        ((8,), {"dropout": "0.1"}, TypeError, "dropout"),
    ],
)
def test_exception_constructor(args: tuple, kwargs: dict, error: type, name: str) -> None:
    with pytest.raises(error, match=f"`{name}`"):
        DEE(*args, **kwargs)


def test_exception_forward() -> None:
    dee = DEE(8)
    with pytest.raises(ValueError, match=r"`x`.*\(4, 8, 3\)"):
        dee(torch.randn(4, 8, 3))
    with pytest.raises(ValueError, match="`x`"):
        dee(torch.randn(2, 4, 8, 3, 3))
    with pytest.raises(ValueError, match=r"`x`.*8.*\(2, 12, 3, 3\)"):
        dee(torch.randn(2, 12, 3, 3))
    with pytest.raises(ValueError, match="`x`"):
        dee.generate(torch.randn(2, 4, 3, 3))
    with pytest.raises(TypeError, match="`x`"):
        dee(torch.randn(2, 8, 3, 3).numpy())


# ------------------------------------------------------------------------------------ compile / dtype / misc


@pytest.mark.usefixtures("fresh_dynamo")
def test_compile() -> None:
    torch.manual_seed(0)
    dee = DEE(8).eval()
    compiled = torch.compile(dee, backend="eager", fullgraph=True)
    x = torch.randn(2, 8, 5, 3)
    torch.testing.assert_close(compiled(x), dee(x))


def test_bf16_autocast() -> None:
    dee = DEE(16)
    x = torch.randn(2, 16, 6, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dee(x)
    assert out.shape == (6, 16, 6, 3)
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    assert torch.isfinite(dee.dilated[0].weight.grad).all()


def test_channels_last() -> None:
    torch.manual_seed(0)
    dee = DEE(8, num_branches=3, dtype=F64).eval()  # float64: the layouts' conv kernels round differently
    x = torch.randn(2, 8, 5, 4, dtype=F64)
    torch.testing.assert_close(dee(x.to(memory_format=torch.channels_last)), dee(x), rtol=1e-10, atol=1e-10)


def test_extra_repr() -> None:
    text = repr(DEE(16, num_branches=3, dropout=0.25))
    assert "16" in text and "num_branches=3" in text and "dropout=0.25" in text
    assert DEE(8).extra_repr() == "8, num_branches=2, dropout=0.01"


def test_dtype_and_device_arguments() -> None:
    dee = DEE(8, dtype=F64, device="cpu")
    assert all(p.dtype == F64 and p.device.type == "cpu" for p in dee.parameters())
    out = dee(torch.randn(2, 8, 3, 3, dtype=F64))
    assert out.dtype == F64
    meta = DEE(8, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
