"""Tests for IWPA (DDAG intra-modality weighted-part aggregation) against a plain loop reference."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vireid_layers.layers.iwpa import IWPA

F64 = torch.float64


def stripe_rows(height: int, parts: int) -> list[tuple[int, int]]:
    """Rows of each stripe, written from the reference: [floor(i H / p), ceil((i + 1) H / p))."""
    return [(math.floor(i * height / parts), math.ceil((i + 1) * height / parts)) for i in range(parts)]


def reference_iwpa(
    x: torch.Tensor,
    global_feature: torch.Tensor | None,
    params: dict[str, torch.Tensor],
    form: str,
    training: bool,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Plain loops over samples, stripes and parts; explicit softmax; explicit BatchNorm."""
    n, c, h, _ = x.shape
    p = params["gate"].numel()
    # Our keys (fc1.weight) or the official ones (fc1.0.weight: u is a one-element nn.Sequential there).
    params = {k.replace("fc1.0.", "fc1."): v for k, v in params.items()}
    wu, wv, wz = (params[f"fc{i}.weight"].reshape(c, c) for i in (1, 2, 3))
    bu, bv, bz = (params[f"fc{i}.bias"] for i in (1, 2, 3))
    gate_exp = [math.exp(float(g)) for g in params["gate"]]
    part_weights = [g / sum(gate_exp) for g in gate_exp]
    aggregated = []
    for s in range(n):
        parts = [x[s, :, lo:hi, :].mean(dim=(1, 2)) for lo, hi in stripe_rows(h, p)]
        u = [wu @ part + bu for part in parts]
        v = [wv @ part + bv for part in parts]
        z = [wz @ part + bz for part in parts]
        total = torch.zeros(c, dtype=x.dtype)
        for i in range(p):
            logits = [float(torch.dot(u[i], v[j])) for j in range(p)]
            top = max(logits)
            exps = [math.exp(value - top) for value in logits]
            refined = sum(exps[j] / sum(exps) * z[j] for j in range(p))
            total = total + part_weights[i] * refined
        aggregated.append(total)
    agg = torch.stack(aggregated)

    def batch_norm(t: torch.Tensor) -> torch.Tensor:
        if training:
            mean, var = t.mean(0), t.var(0, unbiased=False)
        else:
            mean, var = params["bottleneck.running_mean"], params["bottleneck.running_var"]
        return (t - mean) / torch.sqrt(var + eps) * params["bottleneck.weight"] + params["bottleneck.bias"]

    if form == "official":
        return batch_norm(agg + global_feature)
    if global_feature is None:
        global_feature = x.mean(dim=(2, 3))
    return batch_norm(global_feature) + agg


def official_state_dict(channels: int, parts: int, seed: int = 0, dtype: torch.dtype = F64) -> dict[str, torch.Tensor]:
    """The ``wpa.*`` group of an official DDAG checkpoint, prefix stripped (official_checkpoints.md §4.4).

    Every key in the official state_dict order: ``gate`` [p]; ``fc1.0.weight`` / ``fc1.0.bias`` (u wrapped in
    a one-element ``nn.Sequential``) [C, C, 1, 1] / [C]; ``fc2.*`` and ``fc3.*`` (plain convs) with the same
    shapes; the dead ``W.0.weight`` / ``W.0.bias`` and ``W.1.*`` (a BatchNorm2d); ``bottleneck.*`` (a
    BatchNorm1d). Floating entries in ``dtype`` (float32 in the real files), ``num_batches_tracked`` int64 of
    shape [].
    """
    g = torch.Generator().manual_seed(seed)
    c = channels

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=F64) * scale).to(dtype)

    def batch_norm(
        prefix: str, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, n: int
    ) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.weight": weight,
            f"{prefix}.bias": bias,
            f"{prefix}.running_mean": mean,
            f"{prefix}.running_var": var,
            f"{prefix}.num_batches_tracked": torch.tensor(n, dtype=torch.int64),
        }

    sd = {"gate": rand(parts)}
    sd["fc1.0.weight"] = rand(c, c, 1, 1, scale=c**-0.5)
    sd["fc1.0.bias"] = rand(c, scale=0.1)
    for i in (2, 3):
        sd[f"fc{i}.weight"] = rand(c, c, 1, 1, scale=c**-0.5)
        sd[f"fc{i}.bias"] = rand(c, scale=0.1)
    sd["W.0.weight"] = rand(c, c, 1, 1)
    sd["W.0.bias"] = rand(c)
    zeros, ones = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)
    sd.update(batch_norm("W.1", zeros, zeros.clone(), zeros.clone(), ones, 7))
    sd.update(
        batch_norm(
            "bottleneck", 1 + rand(c, scale=0.1), rand(c, scale=0.1), rand(c, scale=0.5), rand(c).abs() + 0.5, 11
        )
    )
    return sd


def module_params(module: IWPA) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------------- smoke / shape


@pytest.mark.parametrize("form", ["official", "paper"])
@pytest.mark.parametrize(("parts", "height"), [(3, 18), (4, 18), (1, 5), (3, 3)])
def test_shape(form: str, parts: int, height: int) -> None:
    m = IWPA(8, parts=parts, form=form)
    x = torch.randn(3, 8, height, 4)
    out = m(x, torch.randn(3, 8))
    assert out.shape == (3, 8)
    assert m.part_features(x).shape == (3, parts, 8)
    assert m.part_attention(x).shape == (3, parts, parts)
    assert torch.isfinite(out).all()


def test_init() -> None:
    torch.manual_seed(0)
    m = IWPA(256, parts=3)
    assert torch.equal(m.gate, torch.full((3,), 1 / 3))
    assert torch.allclose(torch.softmax(m.gate, 0), torch.full((3,), 1 / 3))
    bn = m.bottleneck
    assert not bn.bias.requires_grad and torch.equal(bn.bias, torch.zeros(256))
    assert bn.weight.requires_grad
    weight = bn.weight.detach()
    assert abs(float(weight.mean()) - 1) < 0.005 and 0.005 < float(weight.std()) < 0.015
    for conv in (m.fc1, m.fc2, m.fc3):  # PyTorch's default conv init: U(-1/sqrt(C), 1/sqrt(C))
        assert conv.weight.shape == (256, 256, 1, 1) and conv.bias is not None
        assert float(conv.weight.detach().abs().max()) <= 256**-0.5
    # no dead parameters: only u, v, z, gate and the bottleneck
    assert sorted(n for n, _ in m.named_parameters()) == [
        "bottleneck.bias",
        "bottleneck.weight",
        "fc1.bias",
        "fc1.weight",
        "fc2.bias",
        "fc2.weight",
        "fc3.bias",
        "fc3.weight",
        "gate",
    ]


def test_reset_parameters_restores_init() -> None:
    m = IWPA(8, parts=4)
    with torch.no_grad():
        m.gate.fill_(5.0)
        m.bottleneck.bias.fill_(3.0)
        m.bottleneck.running_mean.fill_(2.0)
    m.reset_parameters()
    assert torch.equal(m.gate, torch.full((4,), 0.25))
    assert torch.equal(m.bottleneck.bias, torch.zeros(8))
    assert torch.equal(m.bottleneck.running_mean, torch.zeros(8))


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("form", ["official", "paper"])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(("parts", "height"), [(3, 18), (4, 18), (3, 7), (4, 4), (4, 5)])
def test_reference(form: str, training: bool, parts: int, height: int) -> None:
    torch.manual_seed(1)
    m = IWPA(6, parts=parts, form=form, dtype=F64)
    m.load_state_dict(official_state_dict(6, parts, seed=parts + height))
    m.train(training)
    params = module_params(m)
    x = torch.randn(4, 6, height, 3, dtype=F64)
    g = torch.randn(4, 6, dtype=F64)
    torch.testing.assert_close(m(x, g), reference_iwpa(x, g, params, form, training))
    if form == "paper":
        torch.testing.assert_close(m(x), reference_iwpa(x, None, params, form, training))


def test_official_state_dict_loads_strict() -> None:
    sd = official_state_dict(6, 3)
    m = IWPA(6, parts=3, dtype=F64)
    result = m.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert not any(k.startswith("W.") for k in m.state_dict())
    assert int(m.bottleneck.num_batches_tracked) == 11
    assert "W.0.weight" in sd and "fc1.0.weight" in sd  # the caller's dict is not modified
    torch.testing.assert_close(m.fc1.weight, sd["fc1.0.weight"])
    m.eval()
    x, g = torch.randn(3, 6, 18, 9, dtype=F64), torch.randn(3, 6, dtype=F64)
    torch.testing.assert_close(m(x, g), reference_iwpa(x, g, sd, "official", training=False))


def test_official_state_dict_loads_nested() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wpa = IWPA(6, parts=3, dtype=F64)

    sd = {f"wpa.{k}": v for k, v in official_state_dict(6, 3).items()}
    net = Net()
    net.load_state_dict(sd, strict=True)
    torch.testing.assert_close(net.wpa.gate, sd["wpa.gate"])


def test_state_dict_wrong_gate_length_fails() -> None:
    with pytest.raises(RuntimeError, match="gate"):
        IWPA(6, parts=4, dtype=F64).load_state_dict(official_state_dict(6, 3))


def test_own_state_dict_round_trip() -> None:
    a, b = IWPA(8, parts=3), IWPA(8, parts=3)
    b.load_state_dict(a.state_dict(), strict=True)
    x, g = torch.randn(2, 8, 6, 2), torch.randn(2, 8)
    torch.testing.assert_close(a.eval()(x, g), b.eval()(x, g))


@pytest.mark.parametrize(
    ("parts", "height", "expected"),
    [
        (4, 18, [(0, 5), (4, 9), (9, 14), (13, 18)]),
        (3, 18, [(0, 6), (6, 12), (12, 18)]),
        (3, 2, [(0, 1), (0, 2), (1, 2)]),
    ],
)
def test_stripes(parts: int, height: int, expected: list[tuple[int, int]]) -> None:
    assert stripe_rows(height, parts) == expected
    m = IWPA(2, parts=parts)
    if height < parts:  # the official code would give several stripes the same row; refused here
        with pytest.raises(ValueError, match=rf"`x`.*H >= {parts}.*\(1, 2, {height}, 3\)"):
            m.part_features(torch.zeros(1, 2, height, 3))
        return
    for row in range(height):
        x = torch.zeros(1, 2, height, 3)
        x[:, :, row] = 1.0
        pooled = m.part_features(x)[0, :, 0]
        want = torch.tensor([1.0 / (hi - lo) if lo <= row < hi else 0.0 for lo, hi in expected])
        torch.testing.assert_close(pooled, want)


def test_overlap_p4_h18_shared_rows() -> None:
    """Rows 4 and 13 belong to two stripes each when p = 4 does not divide H = 18."""
    m = IWPA(2, parts=4)
    x = torch.zeros(1, 2, 18, 9)
    x[:, :, 4] = 1.0
    x[:, :, 13] = 1.0
    pooled = m.part_features(x)[0, :, 0]
    torch.testing.assert_close(pooled, torch.full((4,), 0.2))


def test_attention_rows_sum_to_one_and_match_softmax() -> None:
    torch.manual_seed(0)
    m = IWPA(8, parts=4, dtype=F64)
    x = torch.randn(5, 8, 18, 9, dtype=F64)
    att = m.part_attention(x)
    torch.testing.assert_close(att.sum(-1), torch.ones(5, 4, dtype=F64))
    assert (att >= 0).all()
    parts = m.part_features(x)
    q = parts @ m.fc1.weight.reshape(8, 8).T + m.fc1.bias
    k = parts @ m.fc2.weight.reshape(8, 8).T + m.fc2.bias
    logits = q @ k.transpose(1, 2)
    torch.testing.assert_close(att, logits.exp() / logits.exp().sum(-1, keepdim=True))


def test_paper_default_global_feature_is_gap() -> None:
    m = IWPA(8, form="paper", dtype=F64).eval()
    x = torch.randn(3, 8, 6, 3, dtype=F64)
    torch.testing.assert_close(m(x), m(x, x.mean(dim=(2, 3))))
    torch.testing.assert_close(m(x), m(x, nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)))


def test_forms_differ() -> None:
    torch.manual_seed(0)
    official, paper = IWPA(8), IWPA(8, form="paper")
    paper.load_state_dict(official.state_dict())
    x, g = torch.randn(3, 8, 6, 3), torch.randn(3, 8)
    assert not torch.allclose(official(x, g), paper(x, g))


def test_channels_last_matches_contiguous() -> None:
    m = IWPA(8, dtype=F64).eval()  # float64: the layouts' pooling and matmul kernels round differently
    x, g = torch.randn(2, 8, 7, 3, dtype=F64), torch.randn(2, 8, dtype=F64)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last), g), m(x, g))


# --------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("form", ["official", "paper"])
def test_gradcheck(form: str) -> None:
    torch.manual_seed(0)
    m = IWPA(3, parts=3, form=form, dtype=F64)
    x = torch.randn(2, 3, 5, 1, dtype=F64, requires_grad=True)
    g = torch.randn(2, 3, dtype=F64, requires_grad=True)
    names = [name for name, p in m.named_parameters() if p.requires_grad]
    params = tuple(dict(m.named_parameters())[name].detach().clone().requires_grad_(True) for name in names)

    def fn(x: torch.Tensor, g: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (x, g))

    assert torch.autograd.gradcheck(fn, (x, g, *params), fast_mode=True)


def test_bottleneck_bias_gets_no_gradient() -> None:
    m = IWPA(8)
    m(torch.randn(3, 8, 6, 3), torch.randn(3, 8)).square().sum().backward()
    assert m.bottleneck.bias.grad is None
    assert m.gate.grad is not None and m.fc1.weight.grad is not None and m.fc3.bias.grad is not None


# ---------------------------------------------------------------------------------------------- properties


@functools.cache
def shared_module(parts: int, form: str) -> IWPA:
    torch.manual_seed(parts)
    return IWPA(4, parts=parts, form=form, dtype=F64)


@settings(deadline=None, max_examples=25)
@given(
    n=st.integers(2, 6),
    height=st.integers(1, 9),
    width=st.integers(1, 4),
    parts=st.integers(1, 5),
    form=st.sampled_from(["official", "paper"]),
    training=st.booleans(),
    data=st.data(),
)
def test_batch_permutation_equivariance(
    n: int, height: int, width: int, parts: int, form: str, training: bool, data: st.DataObject
) -> None:
    height = max(height, parts)  # a map with fewer rows than parts is refused (test_height_below_parts_refused)
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    torch.manual_seed(n * 100 + height)
    m = shared_module(parts, form).train(training)
    x, g = torch.randn(n, 4, height, width, dtype=F64), torch.randn(n, 4, dtype=F64)
    out = m(x, g)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(m(x[perm], g[perm]), out[perm])


def test_large_inputs_finite() -> None:
    """Unscaled 2048-d-like dot products saturate the softmax but stay finite."""
    m = IWPA(32).eval()
    x = 100 * torch.randn(2, 32, 18, 9)
    out = m(x, torch.randn(2, 32))
    att = m.part_attention(x)
    assert torch.isfinite(out).all() and torch.isfinite(att).all()


def test_single_sample_eval() -> None:
    m = IWPA(8).eval()
    assert m(torch.randn(1, 8, 6, 3), torch.randn(1, 8)).shape == (1, 8)


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"channels": 0}, ValueError, "channels"),
        ({"channels": True}, ValueError, "channels"),
        ({"channels": 8, "parts": 0}, ValueError, "parts"),
        ({"channels": 8, "parts": 2.0}, ValueError, "parts"),
        ({"channels": 8, "form": "both"}, ValueError, "form"),
    ],
)
def test_exception_constructor(kwargs: dict, error: type, name: str) -> None:
    channels = kwargs.pop("channels")
    with pytest.raises(error, match=name):
        IWPA(channels, **kwargs)


@pytest.mark.parametrize(("parts", "height"), [(3, 2), (3, 1), (4, 3), (2, 0)])
def test_height_below_parts_refused(parts: int, height: int) -> None:
    m = IWPA(8, parts=parts)
    x = torch.randn(2, 8, height, 3)
    for call in (lambda: m(x, torch.randn(2, 8)), lambda: m.part_features(x), lambda: m.part_attention(x)):
        with pytest.raises(ValueError, match=rf"`x`.*H >= {parts}.*parts={parts}.*\(2, 8, {height}, 3\)"):
            call()


def test_zero_width_refused() -> None:
    with pytest.raises(ValueError, match=r"`x`.*W >= 1.*\(2, 8, 6, 0\)"):
        IWPA(8)(torch.randn(2, 8, 6, 0), torch.randn(2, 8))


def test_exception_forward() -> None:
    m = IWPA(8)
    x, g = torch.randn(2, 8, 6, 3), torch.randn(2, 8)
    with pytest.raises(ValueError, match=r"`x`.*\(N, 8, H, W\).*\(2, 8, 6\)"):
        m(x[..., 0], g)
    with pytest.raises(ValueError, match=r"`x`.*\(2, 4, 6, 3\)"):
        m(torch.randn(2, 4, 6, 3), g)
    with pytest.raises(TypeError, match="`x`"):
        m(x.numpy(), g)
    with pytest.raises(ValueError, match=r"`global_feature`.*required"):
        m(x)
    with pytest.raises(ValueError, match=r"`global_feature`.*\(2, 8\).*\(3, 8\)"):
        m(x, torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"`global_feature`.*\(2, 8\).*\(2, 4\)"):
        m(x, torch.randn(2, 4))
    with pytest.raises(ValueError, match="`global_feature`"):
        m(x, torch.randn(2, 8, 1))
    with pytest.raises(ValueError, match="`x`"):
        m.part_attention(torch.randn(2, 8, 6))


# --------------------------------------------------------------------------------------- compile / dtype


@pytest.mark.parametrize("form", ["official", "paper"])
def test_compile(form: str) -> None:
    torch.manual_seed(0)
    m = IWPA(8, parts=3, form=form).eval()
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    x, g = torch.randn(2, 8, 6, 3), torch.randn(2, 8)
    torch.testing.assert_close(compiled(x, g), m(x, g))


def test_bf16_autocast_finite() -> None:
    m = IWPA(16, parts=4)
    x, g = torch.randn(4, 16, 18, 9), torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, g)
    assert out.shape == (4, 16) and torch.isfinite(out).all()
    out.float().sum().backward()
    assert torch.isfinite(m.fc1.weight.grad).all()


def test_dtype_and_device_follow_arguments() -> None:
    m = IWPA(4, dtype=F64, device="cpu")
    assert all(p.dtype == F64 for p in m.parameters())
    assert m(torch.randn(2, 4, 3, 1, dtype=F64), torch.randn(2, 4, dtype=F64)).dtype == F64


def test_extra_repr() -> None:
    assert repr(IWPA(16, parts=4, form="paper")).startswith("IWPA(\n  16, parts=4, form='paper'\n")
    assert IWPA(8).extra_repr() == "8, parts=3, form='official'"
