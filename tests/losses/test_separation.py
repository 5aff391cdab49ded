"""Tests for the MPANet separation loss against loops over part pairs (Eq. 7) and the official formula."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vireid_layers.losses.separation import SeparationLoss, separation_loss

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws from a freshly seeded global generator: reproducible values, no flaky tolerances."""
    torch.manual_seed(0)


def reference_per_image(masks: torch.Tensor) -> torch.Tensor:
    """Eq. 7 per image: 2 / (l (l - 1)) * sum_{i<j} sum_u M_ui M_uj, with loops over images and part pairs."""
    n, parts = masks.shape[:2]
    out = torch.zeros(n, dtype=masks.dtype)
    for s in range(n):
        flat = masks[s].reshape(parts, -1)
        total = torch.zeros((), dtype=masks.dtype)
        for i in range(parts):
            for j in range(i + 1, parts):
                total = total + (flat[i] * flat[j]).sum()
        out[s] = total * 2 / (parts * (parts - 1))
    return out


def reference_official(masks: torch.Tensor) -> torch.Tensor:
    """Official: strict upper triangles of the b Gram matrices summed, divided by b * l (l - 1) / 2."""
    b, parts = masks.shape[:2]
    flat = masks.reshape(b, parts, -1)
    gram = torch.bmm(flat, flat.permute(0, 2, 1))
    return torch.triu(gram, diagonal=1).sum() / (b * parts * (parts - 1) / 2)


# --------------------------------------------------------------------------------------------- smoke / shape


def test_shape_mpanet() -> None:
    masks = torch.rand(4, 6, 24, 8)
    assert separation_loss(masks).shape == ()
    assert separation_loss(masks, reduction="none").shape == (4,)
    assert separation_loss(masks, reduction="sum").shape == ()


def test_scale_grows_with_positions() -> None:
    """Unnormalised maps: two maps at 0.5 overlap by 0.25 per position, about 48 on a 24x8 map."""
    for h, w in ((24, 8), (16, 8), (48, 16)):
        value = separation_loss(torch.full((2, 6, h, w), 0.5))
        torch.testing.assert_close(value, torch.tensor(0.25 * h * w))


def test_disjoint_maps_give_zero() -> None:
    masks = torch.zeros(2, 3, 3, 1)
    for k in range(3):
        masks[:, k, k, 0] = 1.0
    assert separation_loss(masks).item() == 0.0


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize(("n", "parts", "h", "w"), [(3, 6, 6, 4), (2, 2, 5, 3), (1, 4, 1, 1), (5, 3, 2, 7)])
def test_reference(n: int, parts: int, h: int, w: int) -> None:
    torch.manual_seed(parts * 10 + h)
    masks = torch.rand(n, parts, h, w, dtype=F64)
    per_image = reference_per_image(masks)
    torch.testing.assert_close(separation_loss(masks, reduction="none"), per_image)
    torch.testing.assert_close(separation_loss(masks, reduction="sum"), per_image.sum())
    torch.testing.assert_close(separation_loss(masks), per_image.mean())
    torch.testing.assert_close(separation_loss(masks), reference_official(masks))  # official == batch mean


def test_module_matches_functional() -> None:
    masks = torch.rand(3, 6, 4, 2)
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(
            SeparationLoss(reduction=reduction)(masks), separation_loss(masks, reduction=reduction)
        )


# ------------------------------------------------------------------------------------------ degenerate


def test_single_part_is_connected_zero() -> None:
    masks = torch.rand(3, 1, 4, 2, requires_grad=True)
    loss = separation_loss(masks)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(masks.grad, torch.zeros_like(masks))


def test_empty_batch_is_connected_zero() -> None:
    masks = torch.rand(0, 6, 4, 2, requires_grad=True)
    loss = separation_loss(masks)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert separation_loss(masks, reduction="none").shape == (0,)


def test_single_image() -> None:
    masks = torch.rand(1, 6, 4, 2, dtype=F64)
    torch.testing.assert_close(separation_loss(masks), reference_per_image(masks)[0])


# --------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck(reduction: str) -> None:
    torch.manual_seed(0)
    masks = torch.rand(2, 3, 2, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: separation_loss(m, reduction=reduction), (masks,))


def test_gradient_is_sum_of_other_maps() -> None:
    """d/dM_k of the per-image loss is 2/(l(l-1)) * sum_{j != k} M_j."""
    masks = torch.rand(1, 4, 3, 2, dtype=F64, requires_grad=True)
    separation_loss(masks).backward()
    expected = (masks.detach().sum(1, keepdim=True) - masks.detach()) * 2 / (4 * 3)
    torch.testing.assert_close(masks.grad, expected)


# ---------------------------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=25)
@given(
    n=st.integers(1, 5),
    parts=st.integers(1, 6),
    h=st.integers(1, 5),
    w=st.integers(1, 4),
    data=st.data(),
)
def test_properties(n: int, parts: int, h: int, w: int, data: st.DataObject) -> None:
    batch_perm = torch.tensor(data.draw(st.permutations(range(n))))
    part_perm = torch.tensor(data.draw(st.permutations(range(parts))))
    torch.manual_seed(n * 100 + parts * 10 + h)
    masks = torch.rand(n, parts, h, w, dtype=F64)
    loss = separation_loss(masks)
    assert torch.isfinite(loss) and loss >= 0
    assert loss <= h * w + 1e-9  # maps in [0, 1]: each pair overlaps by at most h*w
    torch.testing.assert_close(separation_loss(masks[batch_perm]), loss)
    torch.testing.assert_close(separation_loss(masks[:, part_perm]), loss)
    torch.testing.assert_close(
        separation_loss(masks, reduction="none")[batch_perm], separation_loss(masks[batch_perm], reduction="none")
    )


# ----------------------------------------------------------------------------------------------- errors


def test_exception() -> None:
    with pytest.raises(ValueError, match=r"`masks`.*\(N, L, H, W\).*\(2, 6, 4\)"):
        separation_loss(torch.rand(2, 6, 4))
    with pytest.raises(TypeError, match=r"`masks`.*floating"):
        separation_loss(torch.ones(2, 6, 4, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="`masks`"):
        separation_loss([[0.5]])
    with pytest.raises(ValueError, match="reduction"):
        separation_loss(torch.rand(2, 6, 4, 2), reduction="batchmean")
    with pytest.raises(ValueError, match="reduction"):
        SeparationLoss(reduction="max")


# --------------------------------------------------------------------------------------- compile / dtype


def test_compile() -> None:
    torch._dynamo.reset()  # fresh guards: no recompile budget shared with other tests
    masks = torch.rand(3, 6, 4, 2)
    compiled = torch.compile(separation_loss, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(masks), separation_loss(masks))
    module = torch.compile(SeparationLoss(reduction="none"), backend="eager", fullgraph=True)
    torch.testing.assert_close(module(masks), separation_loss(masks, reduction="none"))


def test_bf16_autocast_finite_fp32() -> None:
    masks = torch.rand(4, 6, 24, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = separation_loss(masks)
        loss_bf16_input = separation_loss(masks.bfloat16())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, separation_loss(masks))  # the Gram matrices stay in float32
    assert loss_bf16_input.dtype == torch.float32
    torch.testing.assert_close(loss_bf16_input, loss, rtol=0.01, atol=0.0)
    loss.backward()
    assert torch.isfinite(masks.grad).all()


def test_extra_repr() -> None:
    assert SeparationLoss().extra_repr() == "reduction='mean'"
    assert repr(SeparationLoss(reduction="none")) == "SeparationLoss(reduction='none')"
