"""Tests for MFA (DEEN multistage feature aggregation) against plain official and paper references.

``OfficialCNL`` / ``OfficialPNL`` / ``OfficialMFABlock`` are written from the description of the official
code (reference notes §1.3): no softmax, energy divided by its last dimension, the literal
``view(B, low_dim, -1)`` folding of the C'/2-channel maps in PNL and the explicit (N_h/2 x N_l/2) energy.
``paper_reference`` follows Eq. 7-9 with an explicit softmax. ``folded_reference`` re-derives the PNL
quirk with explicit index loops (row r*k + s of the folded map is part s of channel k's flattened map).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vireid_layers.layers._matmul import matmul_chain
from vireid_layers.layers.mfa import MFA

F64 = torch.float64


# ----------------------------------------------------------------------------------------------- references


def _zero_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    return bn


class OfficialCNL(nn.Module):
    """Channel non-local of the official code: a low x low channel affinity divided by low_dim."""

    def __init__(self, high_dim: int, low_dim: int, flag: int = 0) -> None:
        super().__init__()
        self.high_dim, self.low_dim = high_dim, low_dim
        stride = 1 if flag == 0 else 2
        self.g = nn.Conv2d(low_dim, low_dim, kernel_size=1, stride=1, padding=0)
        self.theta = nn.Conv2d(high_dim, low_dim, kernel_size=1, stride=1, padding=0)
        self.phi = nn.Conv2d(low_dim, low_dim, kernel_size=1, stride=stride, padding=0)
        self.W = nn.Sequential(
            nn.Conv2d(low_dim, high_dim, kernel_size=1, stride=stride, padding=0), _zero_bn(high_dim)
        )

    def forward(self, x_h: torch.Tensor, x_l: torch.Tensor) -> torch.Tensor:
        b = x_h.size(0)
        g_x = self.g(x_l).view(b, self.low_dim, -1)  # (B, C', N_l)
        theta_x = self.theta(x_h).view(b, self.low_dim, -1)  # (B, C', N_h)
        phi_x = self.phi(x_l).view(b, self.low_dim, -1).permute(0, 2, 1)  # (B, N_h, C')
        energy = torch.matmul(theta_x, phi_x)  # (B, C', C')
        attention = energy / energy.size(-1)
        y = torch.matmul(attention, g_x)  # (B, C', N_l)
        y = y.view(b, self.low_dim, *x_l.size()[2:])
        return self.W(y) + x_h


class OfficialPNL(nn.Module):
    """Position non-local of the official code, with the literal ``view(B, low_dim, -1)`` fold."""

    def __init__(self, high_dim: int, low_dim: int, reduc_ratio: int = 2) -> None:
        super().__init__()
        self.high_dim, self.low_dim, self.reduc_ratio = high_dim, low_dim, reduc_ratio
        inner = low_dim // reduc_ratio
        self.g = nn.Conv2d(low_dim, inner, kernel_size=1, stride=1, padding=0)
        self.theta = nn.Conv2d(high_dim, inner, kernel_size=1, stride=1, padding=0)
        self.phi = nn.Conv2d(low_dim, inner, kernel_size=1, stride=1, padding=0)
        self.W = nn.Sequential(nn.Conv2d(inner, high_dim, kernel_size=1, stride=1, padding=0), _zero_bn(high_dim))

    def forward(self, x_h: torch.Tensor, x_l: torch.Tensor) -> torch.Tensor:
        b = x_h.size(0)
        g_x = self.g(x_l).view(b, self.low_dim, -1).permute(0, 2, 1)  # (B, N_l/r, C')
        theta_x = self.theta(x_h).view(b, self.low_dim, -1).permute(0, 2, 1)  # (B, N_h/r, C')
        phi_x = self.phi(x_l).view(b, self.low_dim, -1)  # (B, C', N_l/r)
        energy = torch.matmul(theta_x, phi_x)  # (B, N_h/r, N_l/r): built explicitly
        attention = energy / energy.size(-1)
        y = torch.matmul(attention, g_x)  # (B, N_h/r, C')
        y = y.permute(0, 2, 1).contiguous()
        y = y.view(b, self.low_dim // self.reduc_ratio, *x_h.size()[2:])
        return self.W(y) + x_h


class OfficialMFABlock(nn.Module):
    def __init__(self, high_dim: int, low_dim: int, flag: int, reduc_ratio: int = 2) -> None:
        super().__init__()
        self.CNL = OfficialCNL(high_dim, low_dim, flag)
        self.PNL = OfficialPNL(high_dim, low_dim, reduc_ratio)

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        z = self.CNL(x, x0)
        return self.PNL(z, x0)


def randomised_official(high: int, low: int, stride: int, seed: int = 0, reduction: int = 2) -> OfficialMFABlock:
    """Official block in float64 with random convs, non-zero BN affine and non-trivial running stats."""
    g = torch.Generator().manual_seed(seed)
    ref = OfficialMFABlock(high, low, 0 if stride == 1 else 1, reduction).to(F64)

    def rand(shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=F64)

    with torch.no_grad():
        for module in ref.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(rand(module.weight.shape) / math.sqrt(module.in_channels))
                module.bias.copy_(0.1 * rand(module.bias.shape))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(1 + 0.3 * rand(module.weight.shape))
                module.bias.copy_(0.2 * rand(module.bias.shape))
                module.running_mean.copy_(0.3 * rand(module.running_mean.shape))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=g, dtype=F64))
                module.num_batches_tracked.fill_(17)
    return ref


def loaded_mfa(ref: OfficialMFABlock, high: int, low: int, stride: int, form: str = "official", **kw: object) -> MFA:
    mfa = MFA(high, low, stride=stride, form=form, dtype=F64, **kw)
    result = mfa.load_state_dict(ref.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return mfa


def _softmax_last(e: torch.Tensor) -> torch.Tensor:
    e = e - e.max(dim=-1, keepdim=True).values
    return e.exp() / e.exp().sum(dim=-1, keepdim=True)


def paper_reference(ref: OfficialMFABlock, x_h: torch.Tensor, x_l: torch.Tensor) -> torch.Tensor:
    """Eq. 7-9: softmax channel affinity, then a softmax spatial non-local with C'/2 channels, unfolded."""
    b, low = x_h.shape[0], ref.CNL.low_dim
    cnl, pnl = ref.CNL, ref.PNL
    q = cnl.theta(x_h).flatten(2)  # (B, C', N_h)
    k = cnl.phi(x_l).flatten(2)  # (B, C', N_h)
    v = cnl.g(x_l).flatten(2)  # (B, C', N_l)
    m_c = _softmax_last(q @ k.transpose(1, 2))  # (B, C', C')
    y = (m_c @ v).view(b, low, *x_l.shape[2:])
    z = cnl.W(y) + x_h
    q = pnl.theta(z).flatten(2).transpose(1, 2)  # (B, N_h, c)
    k = pnl.phi(x_l).flatten(2).transpose(1, 2)  # (B, N_l, c)
    v = pnl.g(x_l).flatten(2).transpose(1, 2)  # (B, N_l, c)
    m_s = _softmax_last(q @ k.transpose(1, 2))  # (B, N_h, N_l)
    y = (m_s @ v).transpose(1, 2).reshape(b, -1, *z.shape[2:])
    return pnl.W(y) + z


def textbook_reference(ref: OfficialMFABlock, x_h: torch.Tensor, x_l: torch.Tensor) -> torch.Tensor:
    """Official CNL followed by an UNFOLDED spatial non-local (c channels, N positions, / N_l, no softmax)."""
    z = ref.CNL(x_h, x_l)
    pnl = ref.PNL
    q = pnl.theta(z).flatten(2).transpose(1, 2)
    k = pnl.phi(x_l).flatten(2)
    v = pnl.g(x_l).flatten(2).transpose(1, 2)
    y = (q @ k / k.shape[-1]) @ v
    return pnl.W(y.transpose(1, 2).reshape(z.shape[0], -1, *z.shape[2:])) + z


def _fold(t: torch.Tensor, r: int) -> torch.Tensor:
    """(B, c, H, W) -> (B, r c, N / r) with row r k + s = positions [s N / r, (s + 1) N / r) of channel k."""
    b, c = t.shape[:2]
    flat = t.flatten(2)
    n = flat.shape[-1] // r
    out = torch.zeros(b, r * c, n, dtype=t.dtype)
    for k in range(c):
        for s in range(r):
            out[:, r * k + s, :] = flat[:, k, s * n : (s + 1) * n]
    return out


def _unfold(folded: torch.Tensor, c: int, r: int, hw: tuple[int, int]) -> torch.Tensor:
    b, _, n = folded.shape
    flat = torch.zeros(b, c, r * n, dtype=folded.dtype)
    for k in range(c):
        for s in range(r):
            flat[:, k, s * n : (s + 1) * n] = folded[:, r * k + s, :]
    return flat.view(b, c, *hw)


def folded_reference(ref: OfficialMFABlock, x_h: torch.Tensor, x_l: torch.Tensor) -> torch.Tensor:
    """The PNL quirk spelled out: pseudo-positions stack part s of every channel, attention between them."""
    z = ref.CNL(x_h, x_l)
    pnl = ref.PNL
    r, c = pnl.reduc_ratio, pnl.low_dim // pnl.reduc_ratio
    q = _fold(pnl.theta(z), r).transpose(1, 2)  # (B, N_h/r, C')
    k = _fold(pnl.phi(x_l), r)  # (B, C', N_l/r)
    v = _fold(pnl.g(x_l), r).transpose(1, 2)  # (B, N_l/r, C')
    out = torch.zeros(q.shape, dtype=q.dtype)
    for i in range(q.shape[1]):  # one query pseudo-position at a time
        weights = q[:, i : i + 1, :] @ k / k.shape[-1]  # (B, 1, N_l/r)
        out[:, i, :] = (weights @ v)[:, 0]
    y = _unfold(out.transpose(1, 2), c, r, tuple(z.shape[2:]))
    return pnl.W(y) + z


# (stride, x_high spatial, x_low spatial): every position count even
SMALL_CASES = [
    (1, (6, 4), (6, 4)),
    (1, (5, 4), (5, 4)),
    (2, (4, 3), (8, 6)),
    (2, (3, 2), (5, 4)),
]


# --------------------------------------------------------------------------------------------- smoke / shape

OFFICIAL_INSTANCES = [
    # (high, low, stride, x_high spatial, x_low spatial) at 384x144
    (256, 64, 1, (96, 36), (96, 36)),
    (512, 256, 2, (48, 18), (96, 36)),
    (1024, 512, 2, (24, 9), (48, 18)),
]
INSTANCES_288 = [
    (256, 64, 1, (72, 36), (72, 36)),
    (512, 256, 2, (36, 18), (72, 36)),
    (1024, 512, 2, (18, 9), (36, 18)),
]


@pytest.mark.parametrize("form", ["official", "paper"])
@pytest.mark.parametrize(("high", "low", "stride", "hw_h", "hw_l"), OFFICIAL_INSTANCES)
def test_shape_official_instances(
    form: str, high: int, low: int, stride: int, hw_h: tuple[int, int], hw_l: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    mfa = MFA(high, low, stride=stride, form=form).eval()
    with torch.no_grad():
        for part in (mfa.channel, mfa.spatial):  # non-zero BN so the attention path is exercised
            part.W[1].weight.fill_(0.1)
        x_h, x_l = torch.randn(1, high, *hw_h), torch.randn(1, low, *hw_l)
        out = mfa(x_h, x_l)
    assert out.shape == (1, high, *hw_h)
    assert torch.isfinite(out).all()
    assert not torch.equal(out, x_h)
    meta = MFA(high, low, stride=stride, form=form, device="meta")
    big = meta(torch.empty(48, high, *hw_h, device="meta"), torch.empty(48, low, *hw_l, device="meta"))
    assert big.shape == (48, high, *hw_h)


@pytest.mark.parametrize(("high", "low", "stride", "hw_h", "hw_l"), INSTANCES_288)
def test_shape_288x144(high: int, low: int, stride: int, hw_h: tuple[int, int], hw_l: tuple[int, int]) -> None:
    for form in ("official", "paper"):
        meta = MFA(high, low, stride=stride, form=form, device="meta")
        out = meta(torch.empty(2, high, *hw_h, device="meta"), torch.empty(2, low, *hw_l, device="meta"))
        assert out.shape == (2, high, *hw_h)
    # the official form at RegDB size on real data (cheap: no N x N matrix)
    mfa = MFA(high, low, stride=stride).eval()
    with torch.no_grad():
        mfa.spatial.W[1].weight.fill_(0.1)
        out = mfa(torch.randn(1, high, *hw_h), torch.randn(1, low, *hw_l))
    assert out.shape == (1, high, *hw_h) and torch.isfinite(out).all()


@pytest.mark.parametrize("form", ["official", "paper"])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(("stride", "hw_h", "hw_l"), SMALL_CASES)
def test_identity_at_init(form: str, training: bool, stride: int, hw_h: tuple[int, int], hw_l: tuple[int, int]) -> None:
    torch.manual_seed(0)
    mfa = MFA(16, 8, stride=stride, form=form).train(training)
    x_h, x_l = torch.randn(3, 16, *hw_h), torch.randn(3, 8, *hw_l)
    assert torch.equal(mfa(x_h, x_l), x_h)


def test_init_and_reset_parameters() -> None:
    torch.manual_seed(0)
    mfa = MFA(16, 8, stride=2)
    for part in (mfa.channel, mfa.spatial):
        bn = part.W[1]
        assert torch.equal(bn.weight, torch.zeros(16)) and torch.equal(bn.bias, torch.zeros(16))
        assert torch.equal(bn.running_mean, torch.zeros(16)) and torch.equal(bn.running_var, torch.ones(16))
    # PyTorch's default conv init: |w| <= 1/sqrt(fan_in)
    for name, conv in mfa.named_modules():
        if isinstance(conv, nn.Conv2d):
            assert conv.bias is not None, name
            assert float(conv.weight.detach().abs().max()) <= 1 / math.sqrt(conv.in_channels) + 1e-7, name
    assert mfa.channel.phi.stride == (2, 2) and mfa.channel.W[0].stride == (2, 2)
    assert mfa.channel.g.stride == (1, 1) and mfa.spatial.phi.stride == (1, 1) and mfa.spatial.W[0].stride == (1, 1)
    assert mfa.spatial.g.out_channels == 4 and mfa.channel.g.out_channels == 8
    before = mfa.channel.g.weight.detach().clone()
    with torch.no_grad():
        mfa.spatial.W[1].weight.fill_(3.0)
        mfa.spatial.W[1].running_mean.fill_(2.0)
    mfa.reset_parameters()
    assert not torch.equal(mfa.channel.g.weight, before)
    assert torch.equal(mfa.spatial.W[1].weight, torch.zeros(16))
    assert torch.equal(mfa.spatial.W[1].running_mean, torch.zeros(16))


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize(("stride", "hw_h", "hw_l"), SMALL_CASES)
def test_reference_official(stride: int, hw_h: tuple[int, int], hw_l: tuple[int, int]) -> None:
    ref = randomised_official(16, 8, stride, seed=hw_l[0]).eval()
    mfa = loaded_mfa(ref, 16, 8, stride).eval()
    x_h, x_l = torch.randn(3, 16, *hw_h, dtype=F64), torch.randn(3, 8, *hw_l, dtype=F64)
    xr_h, xr_l = x_h.clone().requires_grad_(True), x_l.clone().requires_grad_(True)
    xo_h, xo_l = x_h.clone().requires_grad_(True), x_l.clone().requires_grad_(True)
    expected, got = ref(xr_h, xr_l), mfa(xo_h, xo_l)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(got, x_h)  # the attention path contributes
    weight = torch.randn_like(expected)
    (expected * weight).sum().backward()
    (got * weight).sum().backward()
    torch.testing.assert_close(xo_h.grad, xr_h.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(xo_l.grad, xr_l.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("stride", "hw_h", "hw_l"), [SMALL_CASES[0], SMALL_CASES[2]])
def test_reference_official_train_mode(stride: int, hw_h: tuple[int, int], hw_l: tuple[int, int]) -> None:
    """Train mode: batch statistics in both output BatchNorms, and identical running-stat updates."""
    ref = randomised_official(16, 8, stride, seed=4).train()
    mfa = loaded_mfa(ref, 16, 8, stride).train()
    x_h, x_l = torch.randn(3, 16, *hw_h, dtype=F64), torch.randn(3, 8, *hw_l, dtype=F64)
    torch.testing.assert_close(mfa(x_h, x_l), ref(x_h, x_l), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(mfa.channel.W[1].running_mean, ref.CNL.W[1].running_mean)
    torch.testing.assert_close(mfa.spatial.W[1].running_var, ref.PNL.W[1].running_var)


@pytest.mark.parametrize("reduction", [2, 4])
def test_reference_official_reduction(reduction: int) -> None:
    ref = randomised_official(12, 8, 1, seed=9, reduction=reduction).eval()
    mfa = loaded_mfa(ref, 12, 8, 1, reduction=reduction).eval()
    x_h, x_l = torch.randn(2, 12, 4, 3, dtype=F64), torch.randn(2, 8, 4, 3, dtype=F64)
    torch.testing.assert_close(mfa(x_h, x_l), ref(x_h, x_l), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(folded_reference(ref, x_h, x_l), ref(x_h, x_l), rtol=1e-10, atol=1e-10)


def test_reference_under_prefix() -> None:
    class OfficialNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.MFA2 = randomised_official(16, 8, 2, seed=1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.MFA2 = MFA(16, 8, stride=2, dtype=F64)

    official, ours = OfficialNet().eval(), Net().eval()
    sd = official.state_dict()
    assert "MFA2.CNL.W.1.running_var" in sd and "MFA2.PNL.theta.weight" in sd
    result = ours.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert "MFA2.CNL.g.weight" in sd  # the caller's dict is not modified
    x_h, x_l = torch.randn(2, 16, 4, 3, dtype=F64), torch.randn(2, 8, 8, 6, dtype=F64)
    torch.testing.assert_close(ours.MFA2(x_h, x_l), official.MFA2(x_h, x_l), rtol=1e-10, atol=1e-10)


def test_own_state_dict_round_trip() -> None:
    a = loaded_mfa(randomised_official(16, 8, 2, seed=3), 16, 8, 2)
    b = MFA(16, 8, stride=2, dtype=F64)
    b.load_state_dict(a.state_dict(), strict=True)
    x_h, x_l = torch.randn(2, 16, 4, 3, dtype=F64), torch.randn(2, 8, 8, 6, dtype=F64)
    torch.testing.assert_close(a.eval()(x_h, x_l), b.eval()(x_h, x_l))


@pytest.mark.parametrize(("stride", "hw_h", "hw_l"), SMALL_CASES)
def test_reference_paper(stride: int, hw_h: tuple[int, int], hw_l: tuple[int, int]) -> None:
    ref = randomised_official(16, 8, stride, seed=hw_h[1]).eval()
    mfa = loaded_mfa(ref, 16, 8, stride, form="paper").eval()
    x_h, x_l = torch.randn(3, 16, *hw_h, dtype=F64), torch.randn(3, 8, *hw_l, dtype=F64)
    expected = paper_reference(ref, x_h, x_l)
    torch.testing.assert_close(mfa(x_h, x_l), expected, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(expected, ref(x_h, x_l), atol=1e-3)  # a different operator


def test_paper_form_accepts_odd_positions() -> None:
    ref = randomised_official(8, 4, 1, seed=2).eval()
    mfa = loaded_mfa(ref, 8, 4, 1, form="paper").eval()
    x_h, x_l = torch.randn(2, 8, 5, 3, dtype=F64), torch.randn(2, 4, 5, 3, dtype=F64)
    torch.testing.assert_close(mfa(x_h, x_l), paper_reference(ref, x_h, x_l), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------- folded reshape quirk


@pytest.mark.parametrize(("stride", "hw_h", "hw_l"), [(1, (5, 4), (5, 4)), (1, (3, 6), (3, 6)), (2, (3, 2), (5, 4))])
def test_folded_quirk(stride: int, hw_h: tuple[int, int], hw_l: tuple[int, int]) -> None:
    """Odd heights: the fold pairs positions across the flattened halves, not a textbook non-local."""
    ref = randomised_official(8, 6, stride, seed=11).eval()
    official = loaded_mfa(ref, 8, 6, stride).eval()
    paper = loaded_mfa(ref, 8, 6, stride, form="paper").eval()
    x_h, x_l = torch.randn(2, 8, *hw_h, dtype=F64), torch.randn(2, 6, *hw_l, dtype=F64)
    out = official(x_h, x_l)
    # the index-loop derivation of the quirk agrees with the literal .view() reference ...
    torch.testing.assert_close(folded_reference(ref, x_h, x_l), ref(x_h, x_l), rtol=1e-10, atol=1e-10)
    # ... and with the module
    torch.testing.assert_close(out, ref(x_h, x_l), rtol=1e-10, atol=1e-10)
    # the fold is not the unfolded non-local with the same normalisation, nor the paper form
    assert not torch.allclose(out, textbook_reference(ref, x_h, x_l), atol=1e-4)
    assert not torch.allclose(out, paper(x_h, x_l), atol=1e-4)


def test_fold_helper_matches_view() -> None:
    """Sanity of the test helper itself: the loop fold is the literal view of a contiguous map."""
    t = torch.arange(2 * 3 * 5 * 4, dtype=F64).view(2, 3, 5, 4)
    assert torch.equal(_fold(t, 2), t.view(2, 6, -1))
    assert torch.equal(_unfold(_fold(t, 2), 3, 2, (5, 4)), t)
    # row 2k+1 of the fold is the SECOND half of channel k: position p pairs with p + N/2
    assert _fold(t, 2)[0, 1, 0] == t[0, 0].flatten()[10]


# ----------------------------------------------------------------------------------- no N x N attention matrix


class ShapeRecorder(TorchDispatchMode):
    """Record the shape of every tensor produced by an aten op."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.shapes.append((str(func), tuple(leaf.shape)))
        return out


def test_official_never_builds_position_matrix() -> None:
    b, n_h2, n_l2 = 2, 144, 144  # x_high 24x12 and x_low 24x12: 288 positions each, folded to 144
    ref = randomised_official(16, 8, 1, seed=0).eval()  # float64: the comparison below is exact to rounding
    mfa = loaded_mfa(ref, 16, 8, 1).eval()
    x_h, x_l = torch.randn(b, 16, 24, 12, dtype=F64), torch.randn(b, 8, 24, 12, dtype=F64)
    limit = b * n_h2 * n_l2

    with ShapeRecorder() as rec_ref:
        expected = ref(x_h, x_l)
    assert any(shape[-2:] == (n_h2, n_l2) for _, shape in rec_ref.shapes)  # the recorder can see it
    assert max(math.prod(shape) for _, shape in rec_ref.shapes) >= limit

    with ShapeRecorder() as rec:
        out = mfa(x_h, x_l)
    assert rec.shapes
    assert not any(shape[-2:] == (n_h2, n_l2) for _, shape in rec.shapes), rec.shapes
    big = [(op, shape) for op, shape in rec.shapes if math.prod(shape) >= limit]
    assert not big, big
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_official_never_builds_position_matrix_backward() -> None:
    mfa = loaded_mfa(randomised_official(16, 8, 1), 16, 8, 1).eval()
    x_h = torch.randn(2, 16, 24, 12, dtype=F64, requires_grad=True)
    x_l = torch.randn(2, 8, 24, 12, dtype=F64, requires_grad=True)
    with ShapeRecorder() as rec:
        mfa(x_h, x_l).sum().backward()
    assert max(math.prod(shape) for _, shape in rec.shapes) < 2 * 144 * 144


@pytest.mark.parametrize(
    ("a", "b", "c", "first"),
    [
        ((3, 9, 64), (3, 64, 36), (3, 36, 64), "ab"),  # MFA3-like spatial: few positions, many channels
        ((3, 144, 8), (3, 8, 144), (3, 144, 8), "bc"),  # MFA1-like spatial: many positions, few channels
        ((2, 64, 18), (2, 18, 64), (2, 64, 72), "bc"),  # MFA3-like channel part: Q (K^T V)
        ((2, 8, 96), (2, 96, 8), (2, 8, 96), "ab"),  # MFA1-like channel part: the C' x C' affinity
    ],
)
def test_matmul_chain_takes_the_cheaper_order_with_the_same_value(
    a: tuple[int, ...], b: tuple[int, ...], c: tuple[int, ...], first: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both associations agree in float64 (values and gradients); the intermediate shows which one ran."""
    g = torch.Generator().manual_seed(0)
    ta, tb, tc = (torch.randn(s, generator=g, dtype=F64, requires_grad=True) for s in (a, b, c))
    ab_first = torch.matmul(torch.matmul(ta, tb), tc)
    bc_first = torch.matmul(ta, torch.matmul(tb, tc))
    torch.testing.assert_close(ab_first, bc_first, rtol=1e-12, atol=1e-12)
    shapes: list[tuple[int, ...]] = []
    matmul = torch.matmul

    def recording(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = matmul(x, y)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "matmul", recording)
    got = matmul_chain(ta, tb, tc)
    monkeypatch.undo()
    expected_intermediate = (a[0], a[1], b[2]) if first == "ab" else (b[0], b[1], c[2])
    assert shapes[0] == expected_intermediate, shapes
    torch.testing.assert_close(got, ab_first, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn(got.shape, generator=g, dtype=F64)
    for reference in (ab_first, bc_first):
        want = torch.autograd.grad(reference, (ta, tb, tc), grad_out, retain_graph=True)
        have = torch.autograd.grad(got, (ta, tb, tc), grad_out, retain_graph=True)
        for x, y in zip(have, want, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_official_stage3_shapes_build_the_position_matrix_and_match_official() -> None:
    """At MFA3-like proportions (few positions, C' large) the spatial part takes (Q K^T) V, as the official
    code does, and the channel part Q (K^T V); values and gradients equal the official block in float64."""
    high, low = 128, 64  # C' = 64, spatial inner 32; x_high 6x3 (9 folded), x_low 12x6 (36 folded)
    ref = randomised_official(high, low, 2, seed=21).eval()
    mfa = loaded_mfa(ref, high, low, 2).eval()
    x_h = torch.randn(2, high, 6, 3, dtype=F64, requires_grad=True)
    x_l = torch.randn(2, low, 12, 6, dtype=F64, requires_grad=True)
    with ShapeRecorder() as rec:
        out = mfa(x_h, x_l)
    produced = {shape for _, shape in rec.shapes}
    assert (2, 9, 36) in produced  # spatial: the (N_h/r) x (N_l/r) energy, cheaper here
    assert (2, 18, 72) in produced  # channel: K^T V (N_h x N_l), cheaper than the 64 x 64 affinity here
    assert (2, 64, 64) not in produced
    expected = ref(x_h, x_l)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(out)
    have = torch.autograd.grad(out, (x_h, x_l, *mfa.parameters()), grad_out)
    want = torch.autograd.grad(expected, (x_h, x_l, *ref.parameters()), grad_out)
    names = ["x_high", "x_low", *[n for n, _ in mfa.named_parameters()]]
    ref_names = ["x_high", "x_low", *[n for n, _ in ref.named_parameters()]]
    lookup = dict(zip(ref_names, want, strict=True))
    for name, grad in zip(names, have, strict=True):
        official = name.replace("channel.", "CNL.", 1).replace("spatial.", "PNL.", 1)
        torch.testing.assert_close(grad, lookup[official], rtol=1e-9, atol=1e-10, msg=name)


def test_paper_spatial_sdpa_operands_fit_the_fused_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The spatial SDPA call gets contiguous 4-D (B, 1, N, C'/r) operands, the layout that the fused kernels of
    the CPU and CUDA accept; transposed views (last-dimension stride != 1) fall back to the math kernel."""
    calls: list[tuple[torch.Tensor, ...]] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append((q, k, v))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    mfa = MFA(16, 8, stride=2, form="paper")
    mfa(torch.randn(2, 16, 6, 4), torch.randn(2, 8, 12, 8))
    assert len(calls) == 2  # the channel part, then the spatial part
    for t, positions in zip(calls[1], (24, 96, 96), strict=True):
        assert t.shape == (2, 1, positions, 4) and t.is_contiguous() and t.stride(-1) == 1


@pytest.mark.parametrize("backward", [False, True])
def test_paper_never_builds_position_matrix_on_cpu(backward: bool) -> None:
    """The paper form's spatial softmax attention runs in a fused kernel on the CPU: no (N_h x N_l) matrix in
    the forward or the backward pass. The math kernel, forced here for contrast, builds it."""
    n = 24 * 12
    mfa = MFA(16, 8, form="paper")
    with torch.no_grad():
        mfa.spatial.W[1].weight.fill_(1.0)

    def run() -> list[tuple[str, tuple[int, ...]]]:
        x_h = torch.randn(2, 16, 24, 12, requires_grad=backward)
        x_l = torch.randn(2, 8, 24, 12, requires_grad=backward)
        with ShapeRecorder() as rec:
            out = mfa(x_h, x_l)
            if backward:
                out.sum().backward()
        return rec.shapes

    with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
        assert any(shape[-2:] == (n, n) for _, shape in run())  # the recorder can see it
    shapes = run()
    assert shapes and not any(shape[-2:] == (n, n) for _, shape in shapes), shapes


# ------------------------------------------------------------------------------------------ size conditions


@pytest.mark.parametrize(
    ("stride", "hw_h", "hw_l", "name"),
    [
        (1, (5, 3), (5, 3), "x_high"),
        (2, (3, 2), (5, 3), "x_low"),
        (2, (3, 3), (6, 6), "x_high"),
    ],
)
def test_official_requires_even_positions(stride: int, hw_h: tuple[int, int], hw_l: tuple[int, int], name: str) -> None:
    mfa = MFA(8, 4, stride=stride)
    x_h, x_l = torch.randn(2, 8, *hw_h), torch.randn(2, 4, *hw_l)
    bad = hw_h if name == "x_high" else hw_l
    with pytest.raises(ValueError, match=f"`{name}`") as info:
        mfa(x_h, x_l)
    message = str(info.value)
    assert "divisible" in message or "even" in message
    assert str(bad) in message and str(bad[0] * bad[1]) in message
    # the paper form has no such condition
    paper = MFA(8, 4, stride=stride, form="paper")
    assert paper(x_h, x_l).shape == x_h.shape


@pytest.mark.parametrize("form", ["official", "paper"])
@pytest.mark.parametrize(
    ("stride", "hw_h", "hw_l"),
    [
        (2, (3, 3), (8, 6)),  # wrong number of positions
        (2, (8, 6), (8, 6)),  # stride-1 sizes for a stride-2 block
        (2, (3, 4), (8, 6)),  # same number of positions (12) as the expected 4x3, wrong layout
        (2, (2, 6), (8, 6)),  # same number of positions, wrong layout
        (1, (4, 3), (8, 6)),  # stride-2 sizes for a stride-1 block
        (1, (4, 6), (6, 4)),  # stride 1, same number of positions, transposed layout
    ],
)
def test_spatial_mismatch_raises_value_error(
    form: str, stride: int, hw_h: tuple[int, int], hw_l: tuple[int, int]
) -> None:
    mfa = MFA(8, 4, stride=stride, form=form)
    with pytest.raises(ValueError, match="x_high"):
        mfa(torch.randn(2, 8, *hw_h), torch.randn(2, 4, *hw_l))


def test_stride2_odd_low_size_uses_ceil() -> None:
    """A stride-2 1x1 conv maps 7x5 to 4x3 (ceil), like a ResNet stage: that x_high size is accepted."""
    mfa = MFA(8, 4, stride=2, form="paper")
    assert mfa(torch.randn(2, 8, 4, 3), torch.randn(2, 4, 7, 5)).shape == (2, 8, 4, 3)


# --------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("form", ["official", "paper"])
@pytest.mark.parametrize(("stride", "hw_h", "hw_l"), [(1, (2, 2), (2, 2)), (2, (2, 1), (4, 2))])
def test_gradcheck(form: str, stride: int, hw_h: tuple[int, int], hw_l: tuple[int, int]) -> None:
    ref = randomised_official(4, 4, stride, seed=5)
    mfa = loaded_mfa(ref, 4, 4, stride, form=form).eval()  # eval: BN uses the (non-trivial) running stats
    assert (mfa.spatial.W[1].weight != 0).all() and (mfa.channel.W[1].weight != 0).all()
    x_h = torch.randn(2, 4, *hw_h, dtype=F64, requires_grad=True)
    x_l = torch.randn(2, 4, *hw_l, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(mfa, (x_h, x_l))


@pytest.mark.parametrize("form", ["official", "paper"])
def test_gradcheck_parameters(form: str) -> None:
    mfa = loaded_mfa(randomised_official(4, 4, 2, seed=6), 4, 4, 2, form=form).eval()
    x_h = torch.randn(1, 4, 2, 1, dtype=F64, requires_grad=True)
    x_l = torch.randn(1, 4, 4, 2, dtype=F64, requires_grad=True)
    names = [name for name, _ in mfa.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in mfa.named_parameters())

    def fn(x_h: torch.Tensor, x_l: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(mfa, dict(zip(names, ps, strict=True)), (x_h, x_l))

    assert torch.autograd.gradcheck(fn, (x_h, x_l, *params), fast_mode=True)


# ---------------------------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=25)
@given(
    form=st.sampled_from(["official", "paper"]),
    stride=st.sampled_from([1, 2]),
    high=st.sampled_from([2, 3, 8]),
    low=st.sampled_from([2, 4, 6]),
    h_l=st.integers(1, 6),
    w_l=st.integers(1, 6),
    n=st.integers(1, 3),
    data=st.data(),
)
def test_batch_permutation_equivariance(
    form: str, stride: int, high: int, low: int, h_l: int, w_l: int, n: int, data: st.DataObject
) -> None:
    h_h, w_h = -(-h_l // stride), -(-w_l // stride)
    if form == "official":
        assume((h_l * w_l) % 2 == 0 and (h_h * w_h) % 2 == 0)
    perm = torch.tensor(data.draw(st.permutations(range(n))), dtype=torch.long)
    ref = randomised_official(high, low, stride, seed=h_l * 7 + w_l)
    mfa = loaded_mfa(ref, high, low, stride, form=form).eval()
    torch.manual_seed(h_l * 7 + w_l)
    x_h, x_l = torch.randn(n, high, h_h, w_h, dtype=F64), torch.randn(n, low, h_l, w_l, dtype=F64)
    out = mfa(x_h, x_l)
    assert out.shape == x_h.shape
    assert torch.isfinite(out).all()
    torch.testing.assert_close(mfa(x_h[perm], x_l[perm]), out[perm])
    if form == "official":
        torch.testing.assert_close(out, ref.eval()(x_h, x_l))


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((0, 8), {}, "high_channels"),
        ((16, 0), {}, "low_channels"),
        ((16.0, 8), {}, "high_channels"),
        ((True, 8), {}, "high_channels"),
        ((16, 8), {"form": "both"}, "form"),
        ((16, 8), {"form": "Official"}, "form"),
        ((16, 8), {"stride": 3}, "stride"),
        ((16, 8), {"stride": 0}, "stride"),
        ((16, 7), {}, "low_channels"),
        ((16, 8), {"reduction": 3}, "low_channels"),
        ((16, 8), {"reduction": 0}, "reduction"),
    ],
)
def test_exception_constructor(args: tuple, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        MFA(*args, **kwargs)


def test_exception_forward() -> None:
    mfa = MFA(16, 8, stride=2)
    x_h, x_l = torch.randn(2, 16, 4, 3), torch.randn(2, 8, 8, 6)
    with pytest.raises(ValueError, match=r"`x_high`.*\(2, 16, 4\)"):
        mfa(x_h[..., 0], x_l)
    with pytest.raises(ValueError, match="`x_low`"):
        mfa(x_h, x_l[None])
    with pytest.raises(ValueError, match=r"`x_high`.*16.*\(2, 12, 4, 3\)"):
        mfa(torch.randn(2, 12, 4, 3), x_l)
    with pytest.raises(ValueError, match=r"`x_low`.*8.*\(2, 16, 8, 6\)"):
        mfa(x_h, torch.randn(2, 16, 8, 6))
    with pytest.raises(ValueError, match=r"batch.*2.*3|`x_high`.*`x_low`"):
        mfa(x_h, torch.randn(3, 8, 8, 6))
    with pytest.raises(TypeError, match="`x_high`"):
        mfa(x_h.numpy(), x_l)
    with pytest.raises(TypeError, match="`x_low`"):
        mfa(x_h, None)


# ------------------------------------------------------------------------------------ compile / dtype / misc


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("form", ["official", "paper"])
def test_compile(form: str) -> None:
    ref = randomised_official(16, 8, 2, seed=8).float()
    mfa = MFA(16, 8, stride=2, form=form)
    mfa.load_state_dict(ref.state_dict(), strict=True)
    mfa.eval()
    compiled = torch.compile(mfa, backend="eager", fullgraph=True)
    x_h, x_l = torch.randn(2, 16, 4, 3), torch.randn(2, 8, 8, 6)
    torch.testing.assert_close(compiled(x_h, x_l), mfa(x_h, x_l))


@pytest.mark.parametrize("form", ["official", "paper"])
def test_bf16_autocast(form: str) -> None:
    ref = randomised_official(16, 8, 2, seed=8).float()
    mfa = MFA(16, 8, stride=2, form=form)
    mfa.load_state_dict(ref.state_dict(), strict=True)
    x_h, x_l = torch.randn(2, 16, 4, 3), torch.randn(2, 8, 8, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mfa(x_h, x_l)
    assert out.shape == x_h.shape
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    assert torch.isfinite(mfa.spatial.theta.weight.grad).all()


@pytest.mark.parametrize("form", ["official", "paper"])
@pytest.mark.parametrize(("stride", "hw_h", "hw_l"), [SMALL_CASES[1], SMALL_CASES[3]])
def test_channels_last(form: str, stride: int, hw_h: tuple[int, int], hw_l: tuple[int, int]) -> None:
    ref = randomised_official(16, 8, stride, seed=12).eval()
    mfa = loaded_mfa(ref, 16, 8, stride, form=form).eval()
    x_h, x_l = torch.randn(2, 16, *hw_h, dtype=F64), torch.randn(2, 8, *hw_l, dtype=F64)
    cl = torch.channels_last
    out = mfa(x_h.to(memory_format=cl), x_l.to(memory_format=cl))
    torch.testing.assert_close(out, mfa(x_h, x_l), rtol=1e-10, atol=1e-10)
    if form == "official":
        torch.testing.assert_close(out, ref(x_h, x_l), rtol=1e-10, atol=1e-10)


def test_extra_repr() -> None:
    text = repr(MFA(16, 8, stride=2, form="paper", reduction=4))
    for part in ("16, 8", "stride=2", "form='paper'", "reduction=4"):
        assert part in text, text
    assert MFA(256, 64).extra_repr() == "256, 64, stride=1, form='official', reduction=2"


def test_dtype_and_device_arguments() -> None:
    mfa = MFA(8, 4, stride=2, dtype=F64, device="cpu")
    assert all(t.dtype == F64 for t in mfa.parameters())
    assert all(t.dtype == F64 for name, t in mfa.named_buffers() if not name.endswith("num_batches_tracked"))
    assert mfa(torch.randn(2, 8, 2, 2, dtype=F64), torch.randn(2, 4, 4, 4, dtype=F64)).dtype == F64
    meta = MFA(8, 4, device="meta")
    assert all(t.device.type == "meta" for t in meta.state_dict().values())
