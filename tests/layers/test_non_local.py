"""Tests for the AGW non-local block against the official dense formulation (which builds the N x N matrix)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from vireid_layers.layers.non_local import NonLocal

F64 = torch.float64

OFFICIAL_KEYS = {
    "g.0.weight",
    "g.0.bias",
    "theta.weight",
    "theta.bias",
    "phi.weight",
    "phi.bias",
    "W.0.weight",
    "W.0.bias",
    "W.1.weight",
    "W.1.bias",
    "W.1.running_mean",
    "W.1.running_var",
    "W.1.num_batches_tracked",
}


# ----------------------------------------------------------------------------- the official dense reference


def dense_non_local(x: torch.Tensor, sd: dict[str, torch.Tensor], training: bool) -> torch.Tensor:
    """The official forward: theta (B,N,C') @ phi (B,C',N) = f (B,N,N), f / N, f @ g (B,N,C'), W, BN, + x."""
    b, _, h, w = x.shape
    inter = sd["theta.weight"].shape[0]
    g_x = F.conv2d(x, sd["g.0.weight"], sd["g.0.bias"]).view(b, inter, -1).permute(0, 2, 1)
    theta_x = F.conv2d(x, sd["theta.weight"], sd["theta.bias"]).view(b, inter, -1).permute(0, 2, 1)
    phi_x = F.conv2d(x, sd["phi.weight"], sd["phi.bias"]).view(b, inter, -1)
    f = torch.matmul(theta_x, phi_x)
    f_div_c = f / f.size(-1)
    y = torch.matmul(f_div_c, g_x).permute(0, 2, 1).contiguous().view(b, inter, h, w)
    w_y = F.conv2d(y, sd["W.0.weight"], sd["W.0.bias"])
    w_y = F.batch_norm(
        w_y,
        sd["W.1.running_mean"].clone(),
        sd["W.1.running_var"].clone(),
        sd["W.1.weight"],
        sd["W.1.bias"],
        training=training,
    )
    return w_y + x


def official_state_dict(channels: int, inter: int, seed: int = 0, dtype: torch.dtype = F64) -> dict:
    """Random official-layout weights, with a non-zero BatchNorm so that the block is not the identity."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=F64) * scale).to(dtype)

    sd = {}
    for name in ("g.0", "theta", "phi"):
        sd[f"{name}.weight"] = rnd(inter, channels, 1, 1, scale=channels**-0.5)
        sd[f"{name}.bias"] = rnd(inter, scale=0.1)
    sd["W.0.weight"] = rnd(channels, inter, 1, 1, scale=inter**-0.5)
    sd["W.0.bias"] = rnd(channels, scale=0.1)
    sd["W.1.weight"] = rnd(channels)
    sd["W.1.bias"] = rnd(channels)
    sd["W.1.running_mean"] = rnd(channels, scale=0.1)
    sd["W.1.running_var"] = rnd(channels).abs() + 0.5
    sd["W.1.num_batches_tracked"] = torch.tensor(10)
    return sd


def loaded(channels: int, inter: int, *, seed: int = 0, **kwargs) -> tuple[NonLocal, dict]:
    sd = official_state_dict(channels, inter, seed)
    block = NonLocal(channels, dtype=F64, **kwargs)
    block.load_state_dict(sd, strict=True)
    return block, sd


# --------------------------------------------------------------------------------------------- smoke / shape


def test_shape_agw_placements() -> None:
    """Layer 2 (C = 512, 36 x 18) and layer 3 (C = 1024, 18 x 9) at 288 x 144, small batch."""
    for channels, h, w in ((512, 36, 18), (1024, 18, 9)):
        x = torch.randn(2, channels, h, w)
        for form in ("official", "corrected"):
            out = NonLocal(channels, form=form)(x)
            assert out.shape == x.shape and out.dtype == x.dtype


def test_inter_channels() -> None:
    assert NonLocal(512).inter_channels == 1  # reduc_ratio // reduc_ratio
    assert NonLocal(512, reduction=4).inter_channels == 1
    assert NonLocal(512, form="corrected").inter_channels == 256
    assert NonLocal(512, form="corrected", reduction=4).inter_channels == 128
    assert NonLocal(512, inter_channels=32).inter_channels == 32
    assert NonLocal(512, form="corrected", inter_channels=7).theta.out_channels == 7


def test_state_dict_keys_and_init() -> None:
    block = NonLocal(16, form="corrected")
    assert set(block.state_dict()) == OFFICIAL_KEYS
    assert block.W[1].weight.abs().sum() == 0 and block.W[1].bias.abs().sum() == 0
    assert all(m.bias is not None for m in (block.g[0], block.theta, block.phi, block.W[0]))
    with torch.no_grad():
        block.W[1].weight.fill_(1.0)
        block.W[1].running_mean.fill_(3.0)
    block.reset_parameters()
    assert block.W[1].weight.abs().sum() == 0 and block.W[1].running_mean.abs().sum() == 0


@pytest.mark.parametrize("form", ["official", "corrected"])
@pytest.mark.parametrize("training", [False, True])
def test_identity_at_init(form: str, training: bool) -> None:
    x = torch.randn(3, 8, 5, 4)
    assert torch.equal(NonLocal(8, form=form).train(training)(x), x)


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize(
    ("channels", "kwargs", "inter", "hw"),
    [
        (8, {}, 1, (5, 4)),  # official, associative order
        (8, {"form": "corrected"}, 4, (5, 4)),  # C' = 4 < N = 20: associative order
        (16, {"form": "corrected"}, 8, (2, 3)),  # C' = 8 > N = 6: the N x N order is the smaller one
        (6, {"inter_channels": 6}, 6, (2, 3)),  # C' = N: tie, associative order
    ],
)
@pytest.mark.parametrize("training", [False, True])
def test_reference_official_state_dict(
    channels: int, kwargs: dict, inter: int, hw: tuple[int, int], training: bool
) -> None:
    block, sd = loaded(channels, inter, **kwargs)
    block.train(training)
    x = torch.randn(3, channels, *hw, generator=torch.Generator().manual_seed(1), dtype=F64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, expected = block(x), dense_non_local(x_ref, sd, training)
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_rank_one_structure_of_official_form() -> None:
    """With C' = 1: y_i = theta_i * mean_j(phi_j g_j), a position-scaled global scalar."""
    block = NonLocal(6, dtype=F64)
    x = torch.randn(2, 6, 4, 3, dtype=F64)
    theta, phi, g = (m(x).flatten(2) for m in (block.theta, block.phi, block.g))
    y = theta * (phi * g).mean(-1, keepdim=True)
    with torch.no_grad():
        block.W[1].weight.fill_(1.0)
    block.eval()
    expected = block.W(y.view(2, 1, 4, 3)) + x
    torch.testing.assert_close(block(x), expected)


def test_channels_last_input() -> None:
    block, _ = loaded(8, 4, form="corrected")
    block.eval()
    x = torch.randn(2, 8, 5, 3, dtype=F64)
    torch.testing.assert_close(block(x.to(memory_format=torch.channels_last)), block(x))


def test_own_state_dict_round_trip() -> None:
    a, b = NonLocal(8, form="corrected"), NonLocal(8, form="corrected")
    with torch.no_grad():
        a.W[1].weight.normal_()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_all_parameters_receive_gradients() -> None:
    block = NonLocal(8, form="corrected")
    with torch.no_grad():
        block.W[1].weight.fill_(1.0)  # at init the zero BN weight blocks the gradient of g, theta, phi, W.0
    block(torch.randn(2, 8, 4, 3)).pow(2).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------- memory


class ShapeRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: set[tuple[int, ...]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.add(tuple(t.shape))
        return out


def has_nxn(shapes: set[tuple[int, ...]], n: int) -> bool:
    return any(len(s) >= 2 and s[-2:] == (n, n) for s in shapes) or any(n * n in s for s in shapes)


@pytest.mark.parametrize("kwargs", [{}, {"form": "corrected"}])
def test_never_builds_the_position_affinity(kwargs: dict) -> None:
    channels, h, w = 16, 6, 5  # N = 30 positions > C' (1 or 8)
    n = h * w
    block, sd = loaded(channels, 1 if not kwargs else 8, **kwargs)
    block.train()
    x = torch.randn(2, channels, h, w, dtype=F64, requires_grad=True)
    with ShapeRecorder() as recorder:
        block(x).sum().backward()
    assert recorder.shapes, "the recorder saw no op"
    assert not has_nxn(recorder.shapes, n)
    # the recorder does catch the official dense formulation
    with ShapeRecorder() as dense_recorder:
        dense_non_local(x, sd, True).sum().backward()
    assert has_nxn(dense_recorder.shapes, n)


# --------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    ("kwargs", "hw"), [({}, (3, 2)), ({"form": "corrected"}, (3, 2)), ({"inter_channels": 3}, (1, 2))]
)
def test_gradcheck(kwargs: dict, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    block = NonLocal(4, dtype=F64, **kwargs).train()
    with torch.no_grad():
        block.W[1].weight.normal_()
        block.W[1].bias.normal_()
    x = torch.randn(2, 4, *hw, dtype=F64, requires_grad=True)
    names = [name for name, _ in block.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in block.parameters())

    def fn(t: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(block, dict(zip(names, ps, strict=True)), (t,))

    assert torch.autograd.gradcheck(fn, (x, *params))


# ---------------------------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=20, derandomize=True)
@given(
    form=st.sampled_from(["official", "corrected"]),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_matches_dense_and_is_batch_equivariant_in_eval(form: str, h: int, w: int, batch: int, seed: int) -> None:
    block, sd = loaded(8, 1 if form == "official" else 4, seed=seed, form=form)
    block.eval()
    x = torch.randn(batch, 8, h, w, generator=torch.Generator().manual_seed(seed), dtype=F64)
    out = block(x)
    torch.testing.assert_close(out, dense_non_local(x, sd, False))
    perm = torch.randperm(batch, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(block(x[perm]), out[perm])


# --------------------------------------------------------------------------------------- compile / autocast


@pytest.mark.parametrize(
    ("kwargs", "hw"), [({}, (6, 3)), ({"form": "corrected"}, (6, 3)), ({"form": "corrected"}, (2, 2))]
)
def test_compile(kwargs: dict, hw: tuple[int, int]) -> None:
    torch._dynamo.reset()
    block = NonLocal(8, **kwargs)
    with torch.no_grad():
        block.W[1].weight.normal_()
    block.eval()
    compiled = torch.compile(block, backend="eager", fullgraph=True)
    x = torch.randn(2, 8, *hw)
    torch.testing.assert_close(compiled(x), block(x))


def test_bf16_autocast() -> None:
    block = NonLocal(32, form="corrected")
    with torch.no_grad():
        block.W[1].weight.fill_(1.0)
    x = torch.randn(4, 32, 12, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((0,), {}, ValueError, "`channels`"),
        ((8.0,), {}, ValueError, "`channels`"),
        ((8,), {"reduction": 0}, ValueError, "`reduction`"),
        ((8,), {"inter_channels": 0}, ValueError, "`inter_channels`"),
        ((8,), {"form": "paper"}, ValueError, "`form`"),
        ((2,), {"form": "corrected", "reduction": 4}, ValueError, "`channels`"),
    ],
)
def test_exception_constructor(args: tuple, kwargs: dict, error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        NonLocal(*args, **kwargs)


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (torch.randn(2, 8, 4), ValueError, r"`x` must have shape \(N, 8, H, W\), got shape \(2, 8, 4\)"),
        (torch.randn(2, 6, 4, 4), ValueError, r"`x` must have shape \(N, 8, H, W\), got shape \(2, 6, 4, 4\)"),
        ("x", TypeError, "`x` must be a torch.Tensor"),
    ],
)
def test_exception_forward(x: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        NonLocal(8)(x)


def test_extra_repr() -> None:
    assert NonLocal(512).extra_repr() == "512, inter_channels=1, form='official', reduction=2"
    assert "1024, inter_channels=512, form='corrected', reduction=2" in repr(NonLocal(1024, form="corrected"))
