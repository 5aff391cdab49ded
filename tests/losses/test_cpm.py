"""Tests for the CPM loss (DEEN) against the official chunked computation and the paper's Eq. 3-5."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    F64,
    assert_close_at,
    bijections,
    grid_randn,
    pkm_batches,
    relabel,
    sampler_layout,
)

from vireid_layers.distances import first_occurrence
from vireid_layers.losses import cpm as cpm_module
from vireid_layers.losses.cpm import CPMLoss, cpm_loss

DTYPES = [torch.float32, F64]


# ------------------------------------------------------------------------------------------------- references


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Official centre distance matrix: ``sqrt(clamp(|a|^2 + |b|^2 - 2 a b^T, min=1e-12))``."""
    squared = (a * a).sum(1, keepdim=True) + (b * b).sum(1, keepdim=True).t() - 2.0 * a @ b.t()
    return squared.clamp(min=1e-12).sqrt()


def official_cpm(feats: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """The official ``CPMLoss.forward`` as reference §1.6 describes it, literally (one DEE branch).

    ``feats`` is ``[orig-VIS; orig-IR; gen-VIS; gen-IR]`` in the sampler layout; only the number of distinct
    labels of the first chunk is used, every chunk is cut into that many equal consecutive pieces.
    """
    ft1, ft2, ft3, ft4 = torch.chunk(feats.to(F64), 4, 0)
    lb1 = torch.chunk(labels, 4, 0)[0]
    n = torch.unique(lb1).numel()
    c1, c2, c3, c4 = (torch.stack([piece.mean(0) for piece in torch.chunk(ft, n, 0)]) for ft in (ft1, ft2, ft3, ft4))

    def side(own: torch.Tensor, other: torch.Tensor, gen: torch.Tensor) -> torch.Tensor:
        d_ap, d_an, d_gen, d_own = _distance(other, gen), _distance(own, gen), _distance(gen, gen), _distance(own, own)
        push, inter_gen, inter_orig = [], [], []
        for j in range(n):
            ap = d_ap[j, j]
            an = d_an[j, j].detach()
            hardest_gen = torch.stack([d_gen[j, k] for k in range(n) if k != j]).min()
            hardest_orig = torch.stack([d_own[j, k] for k in range(n) if k != j]).min()
            push.append(torch.relu(ap - an + margin))
            inter_gen.append(torch.relu(ap - hardest_gen + margin))
            inter_orig.append(torch.relu(ap - hardest_orig + margin))
        mean = lambda terms: torch.stack(terms).mean()  # noqa: E731
        return mean(push) + 0.5 * (mean(inter_gen) + mean(inter_orig))

    loss_vis = side(c1, c2, c3)
    loss_ir = side(c2, c1, c4)
    return (loss_vis + loss_ir) / 2


def loop_cpm(
    original: torch.Tensor,
    generated: torch.Tensor,
    labels: torch.Tensor,
    modalities: torch.Tensor,
    *,
    margin: float = 0.2,
    form: str = "official",
    hinge_args: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """CPM by label lookup, one identity at a time, over the identities present in both modalities only.

    ``form="paper"`` is Eq. 3-5 (one hinge per side, sides summed); ``form="official"`` is the released code
    (three hinges, the push distance detached, inter terms weighted 1/2, sides averaged). Both are summed over
    the branches. A minimum over an empty set of other identities is ``+inf`` (the hinge vanishes).
    """
    original, generated = original.to(F64), generated.to(F64)
    lab, mod = labels.tolist(), modalities.tolist()
    seen = set(zip(lab, mod, strict=True))
    ids = sorted(v for v in set(lab) if (v, 0) in seen and (v, 1) in seen)

    def centre(x: torch.Tensor, v: int, m: int) -> torch.Tensor:
        return x[[i for i in range(len(lab)) if lab[i] == v and mod[i] == m]].mean(0)

    def dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a * a).sum() + (b * b).sum() - 2.0 * (a * b).sum()).clamp(min=1e-12).sqrt()

    def hardest(c: dict, j: int) -> torch.Tensor | float:
        others = [dist(c[j], c[k]) for k in ids if k != j]
        return torch.stack(others).min() if others else math.inf

    # Weights of the hinges: official 1/2 (sides averaged) x (1, 1/2, 1/2); paper one hinge per side, summed.
    weights = torch.tensor([0.5, 0.25, 0.25] if form == "official" else [1.0], dtype=F64)
    total = original.new_zeros(())
    for gen in generated:  # DEE branches
        for m in (0, 1):  # the modality the generated rows come from
            own = {v: centre(original, v, m) for v in ids}
            other = {v: centre(original, v, 1 - m) for v in ids}
            gen_c = {v: centre(gen, v, m) for v in ids}
            rows = []
            for j in ids:
                ap, an = dist(other[j], gen_c[j]), dist(own[j], gen_c[j])
                if form == "official":
                    rows.append(
                        [ap - an.detach() + margin, ap - hardest(gen_c, j) + margin, ap - hardest(own, j) + margin]
                    )
                else:
                    rows.append([ap - an - hardest(own, j) + margin])
            if not rows:
                continue
            args = torch.stack([torch.stack(row) for row in rows])  # (identities j, hinges)
            if hinge_args is not None:
                hinge_args.extend(args.detach().flatten())
            total = total + (args.relu().mean(0) * weights).sum()  # mean over the identities j
    return total


def sampler_batch(
    label_values: list[int], instances: int, dim: int, branches: int, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(original, generated, labels, modalities)`` in the official sampler layout."""
    g = torch.Generator().manual_seed(seed)
    labels, modalities = sampler_layout(label_values, instances)
    original = grid_randn(len(labels), dim, generator=g, dtype=dtype)
    generated = grid_randn(branches, len(labels), dim, generator=g, dtype=dtype)
    return original, generated, labels, modalities


def _leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _grads(loss: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, inputs)


# --------------------------------------------------------------------------------------------- smoke / shape


def test_smoke() -> None:
    original, generated, labels, modalities = sampler_batch([5, 1, 9], 2, 8, 2, torch.float32)
    original.requires_grad_(True)
    loss = CPMLoss()(original, generated, labels, modalities)
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert original.grad is not None and torch.isfinite(original.grad).all() and original.grad.abs().sum() > 0


@pytest.mark.parametrize("form", ["official", "paper"])
@pytest.mark.parametrize("branches", [1, 2, 3])
def test_shape(form: str, branches: int) -> None:
    original, generated, labels, modalities = sampler_batch([0, 1], 3, 4, branches, torch.float32)
    assert cpm_loss(original, generated, labels, modalities, form=form).shape == ()


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_follows_input(dtype: torch.dtype) -> None:
    original, generated, labels, modalities = sampler_batch([0, 1], 2, 4, 2, dtype)
    assert cpm_loss(original, generated, labels, modalities).dtype == dtype


# ----------------------------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("dtype", "branches", "margin"),
    [(torch.float32, 1, 0.2), (torch.float32, 2, 0.2), (torch.float32, 3, 0.5), (F64, 2, 0.2)],
)
def test_reference_official(dtype: torch.dtype, branches: int, margin: float) -> None:
    """Summed over branches, the official chunked loss equals ``cpm_loss`` in value and gradient."""
    original, generated, labels, modalities = sampler_batch([17, 3, 42, 8], 2, 5, branches, dtype, seed=1)
    official_labels = torch.cat([labels, labels])  # (l_vis, l_ir, l_vis, l_ir)

    o_ref, g_ref = _leaves(original, generated)
    expected = sum(official_cpm(torch.cat([o_ref, g_ref[b]]), official_labels, margin) for b in range(branches))
    o, g = _leaves(original, generated)
    actual = cpm_loss(o, g, labels, modalities, margin=margin)

    assert expected > 0
    assert_close_at(actual, expected, dtype)
    for a, e in zip(_grads(actual, [o, g]), _grads(expected, [o_ref, g_ref]), strict=True):
        assert_close_at(a, e, dtype)


def test_loop_reference_matches_official() -> None:
    """The label-lookup reference used below agrees with the literal chunked one on the sampler layout."""
    original, generated, labels, modalities = sampler_batch([4, 0, 2], 3, 4, 2, F64, seed=2)
    official = sum(official_cpm(torch.cat([original, g]), torch.cat([labels, labels])) for g in generated)
    torch.testing.assert_close(loop_cpm(original, generated, labels, modalities), official)


def test_layout_free() -> None:
    """Shuffling the rows or relabelling changes nothing, whereas the official chunked loss silently changes."""
    original, generated, labels, modalities = sampler_batch([0, 1, 2], 2, 6, 2, F64, seed=3)
    expected = cpm_loss(original, generated, labels, modalities)
    official = sum(official_cpm(torch.cat([original, g]), torch.cat([labels, labels])) for g in generated)

    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    permuted = cpm_loss(original[perm], generated[:, perm], labels[perm], modalities[perm])
    torch.testing.assert_close(permuted, expected)  # float64: the default float64 tolerance (was 1e-6)
    official_permuted = sum(
        official_cpm(torch.cat([original[perm], g[perm]]), torch.cat([labels[perm], labels[perm]])) for g in generated
    )
    assert abs(float(official_permuted) - float(official)) > 1e-3  # the official code depends on the row order

    relabelled = relabel(labels, [-(2**40), 7_777_777_777, -3])
    torch.testing.assert_close(cpm_loss(original, generated, relabelled, modalities), expected)


# The paper's single hinge subtracts the inter-identity distance, so it needs a wide margin to be active on
# random embeddings.
MARGINS = {"official": 0.3, "paper": 3.0}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["official", "paper"])
def test_reference_shuffled(dtype: torch.dtype, form: str) -> None:
    """Arbitrary order, labels and unequal counts: ``cpm_loss`` equals the label-lookup loop reference."""
    g = torch.Generator().manual_seed(4)
    labels = torch.tensor([90, -4, 90, 13, -4, 13, 90, 13, -4, 13, 90])
    modalities = torch.tensor([1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 1])
    original = grid_randn(11, 5, generator=g, dtype=dtype)
    generated = grid_randn(2, 11, 5, generator=g, dtype=dtype)

    o_ref, g_ref = _leaves(original, generated)
    expected = loop_cpm(o_ref, g_ref, labels, modalities, margin=MARGINS[form], form=form)
    o, g_ = _leaves(original, generated)
    actual = cpm_loss(o, g_, labels, modalities, margin=MARGINS[form], form=form)
    assert expected > 0
    assert_close_at(actual, expected, dtype)
    for a, e in zip(_grads(actual, [o, g_]), _grads(expected, [o_ref, g_ref]), strict=True):
        assert_close_at(a, e, dtype)


@pytest.mark.parametrize("form", ["official", "paper"])
def test_reference_missing_modality(form: str) -> None:
    """Identities seen in one modality only take no part, neither as anchors nor as "other" identities."""
    g = torch.Generator().manual_seed(5)
    labels = torch.tensor([3, 3, 1, 1, 3, 1, 6, 6, 8, 3, 1, 8])
    modalities = torch.tensor([0, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1])  # 6: visible only, 8: infrared only
    original = grid_randn(12, 4, generator=g, dtype=torch.float32)
    generated = grid_randn(2, 12, 4, generator=g, dtype=torch.float32)
    # Make the one-modality identities the nearest "other" identity of everyone: included, they would matter.
    keep = (labels != 6) & (labels != 8)
    original[~keep] = original[keep][:4].mean(0)
    generated[:, ~keep] = generated[:, keep][:, :4].mean(1, keepdim=True)

    o, gen = _leaves(original, generated)
    margin = MARGINS[form]
    loss = cpm_loss(o, gen, labels, modalities, margin=margin, form=form)
    assert_close_at(loss, loop_cpm(original, generated, labels, modalities, margin=margin, form=form), torch.float32)
    restricted = cpm_loss(original[keep], generated[:, keep], labels[keep], modalities[keep], margin=margin, form=form)
    torch.testing.assert_close(loss, restricted)
    grad_o, grad_g = _grads(loss, [o, gen])
    assert grad_o[~keep].abs().max() == 0 and grad_g[:, ~keep].abs().max() == 0
    assert grad_o[keep].abs().sum() > 0


# ------------------------------------------------------------------------------------------------- gradcheck


def test_gradcheck_paper() -> None:
    original, generated, labels, modalities = sampler_batch([0, 1, 2], 1, 3, 2, F64, seed=6)
    args: list[torch.Tensor] = []
    loop_cpm(original, generated, labels, modalities, margin=1.0, form="paper", hinge_args=args)
    assert min(abs(float(a)) for a in args) > 1e-3, "an input sits at a hinge kink: pick another seed"
    assert max(float(a) for a in args) > 1e-3, "no active hinge: the check would be vacuous"
    fn = functools.partial(cpm_loss, labels=labels, modalities=modalities, margin=1.0, form="paper")
    o, g = _leaves(original, generated)
    assert torch.autograd.gradcheck(fn, (o, g), eps=1e-6, atol=1e-4)


def test_gradcheck_official() -> None:
    """The push distance is detached, so gradcheck only applies where that hinge is inactive: here every
    generated embedding sits near the *other* modality's original rows, far from its own modality."""
    g = torch.Generator().manual_seed(7)
    labels, modalities = sampler_layout([0, 1, 2], 2)
    offset = torch.tensor([3.0, 0.0, 0.0], dtype=F64)
    base = (torch.randn(3, 3, generator=g, dtype=F64) * 0.3).repeat_interleave(2, 0)
    vis = base + 0.05 * torch.randn(6, 3, generator=g, dtype=F64)
    ir = base + offset + 0.05 * torch.randn(6, 3, generator=g, dtype=F64)
    original = torch.cat([vis, ir])
    generated = torch.stack([torch.cat([ir, vis]) + 0.05 * torch.randn(12, 3, generator=g, dtype=F64) for _ in "ab"])
    args: list[torch.Tensor] = []
    loop_cpm(original, generated, labels, modalities, hinge_args=args)
    push_args = [float(a) for a in args[0::3]]
    assert max(push_args) < -1e-3, "the detached hinge must be inactive"
    assert min(abs(float(a)) for a in args) > 1e-3 and max(float(a) for a in args) > 1e-3
    fn = functools.partial(cpm_loss, labels=labels, modalities=modalities)
    o, gen = _leaves(original, generated)
    assert torch.autograd.gradcheck(fn, (o, gen), eps=1e-6, atol=1e-4)


# ------------------------------------------------------------------------------------------------ properties


def _split(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    embeddings, labels, modalities = batch
    return embeddings[0], embeddings[1:], labels, modalities


FORMS = st.sampled_from(["official", "paper"])
BRANCHES = st.integers(1, 3)


@given(data=st.data(), form=FORMS, branches=BRANCHES)
def test_finite_nonnegative(data: st.DataObject, form: str, branches: int) -> None:
    original, generated, labels, modalities = _split(
        data.draw(pkm_batches(modalities="mixed", leading=(1 + branches,), coincide="any"))
    )
    original, generated = _leaves(original, generated)
    loss = cpm_loss(original, generated, labels, modalities, form=form)
    assert torch.isfinite(loss) and loss >= 0
    grads = _grads(loss, [original, generated])
    assert all(torch.isfinite(gr).all() for gr in grads)


@given(data=st.data(), form=FORMS, branches=BRANCHES)
def test_matches_reference_property(data: st.DataObject, form: str, branches: int) -> None:
    original, generated, labels, modalities = _split(
        data.draw(pkm_batches(modalities="mixed", leading=(1 + branches,), num_instances=(1, 2)))
    )
    expected = loop_cpm(original, generated, labels, modalities, form=form)
    assert_close_at(cpm_loss(original, generated, labels, modalities, form=form), expected, torch.float32)


@given(data=st.data(), form=FORMS)
def test_permutation_invariance(data: st.DataObject, form: str) -> None:
    # float64: a float32 loss summed in another order differs by rounding; float64 leaves no room for that.
    original, generated, labels, modalities = _split(data.draw(pkm_batches(modalities="mixed", leading=(3,))))
    original, generated = original.double(), generated.double()
    perm = torch.tensor(data.draw(st.permutations(range(len(labels)))))
    expected = cpm_loss(original, generated, labels, modalities, form=form)
    actual = cpm_loss(original[perm], generated[:, perm], labels[perm], modalities[perm], form=form)
    torch.testing.assert_close(actual, expected)


@given(data=st.data(), form=FORMS)
def test_relabel_invariance(data: st.DataObject, form: str) -> None:
    original, generated, labels, modalities = _split(data.draw(pkm_batches(modalities="mixed", leading=(3,))))
    new_labels = relabel(labels, data.draw(bijections(len(torch.unique(labels)))))
    torch.testing.assert_close(
        cpm_loss(original, generated, new_labels, modalities, form=form),
        cpm_loss(original, generated, labels, modalities, form=form),
    )


@given(data=st.data(), form=FORMS)
def test_modality_swap_symmetry(data: st.DataObject, form: str) -> None:
    """Both forms treat the visible and the infrared side alike (compared in float64)."""
    original, generated, labels, modalities = _split(data.draw(pkm_batches(modalities="mixed", leading=(3,))))
    original, generated = original.double(), generated.double()
    torch.testing.assert_close(
        cpm_loss(original, generated, labels, 1 - modalities, form=form),
        cpm_loss(original, generated, labels, modalities, form=form),
    )


# ------------------------------------------------------------------------------------ the two slot layouts


def test_identity_slots_eager_and_static(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eager mode numbers the P identities present; the static layout (compile) uses N first-occurrence slots."""
    labels = torch.tensor([40, -7, 40, 9, -7, 9, 40])
    slot, slots = cpm_module._identity_slots(labels)
    assert slots == 3
    assert torch.equal(slot, torch.tensor([2, 0, 2, 1, 0, 1, 2]))  # sorted identities -7, 9, 40
    monkeypatch.setattr(cpm_module, "_use_static_slots", lambda: True)
    slot, slots = cpm_module._identity_slots(labels)
    assert slots == 7 and torch.equal(slot, first_occurrence(labels))


@given(data=st.data(), form=FORMS, branches=BRANCHES)
def test_static_slots_match_compact(data: st.DataObject, form: str, branches: int) -> None:
    """The static N-slot layout that ``torch.compile`` traces gives the eager (compact) value and gradients."""
    original, generated, labels, modalities = _split(
        data.draw(pkm_batches(modalities="mixed", leading=(1 + branches,)))
    )
    original, generated = original.double(), generated.double()  # float64: no float32 summation-order slack
    o, g = _leaves(original, generated)
    compact = cpm_loss(o, g, labels, modalities, form=form)
    o_s, g_s = _leaves(original, generated)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpm_module, "_use_static_slots", lambda: True)
        static = cpm_loss(o_s, g_s, labels, modalities, form=form)
    torch.testing.assert_close(static, compact)
    for a, e in zip(_grads(static, [o_s, g_s]), _grads(compact, [o, g]), strict=True):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("form", ["official", "paper"])
def test_static_slots_reference(monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """The static layout on its own against the label-lookup reference (unequal counts, a one-modality id)."""
    monkeypatch.setattr(cpm_module, "_use_static_slots", lambda: True)
    g = torch.Generator().manual_seed(12)
    labels = torch.tensor([90, -4, 90, 13, -4, 13, 90, 13, -4, 13, 90, 5])
    modalities = torch.tensor([1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0])
    original, generated = grid_randn(12, 5, generator=g), grid_randn(2, 12, 5, generator=g)
    o, gen = _leaves(original, generated)
    expected = loop_cpm(o, gen, labels, modalities, margin=MARGINS[form], form=form)
    o_lib, gen_lib = _leaves(original, generated)
    actual = cpm_loss(o_lib, gen_lib, labels, modalities, margin=MARGINS[form], form=form)
    assert expected > 0
    assert_close_at(actual, expected, F64)
    for a, e in zip(_grads(actual, [o_lib, gen_lib]), _grads(expected, [o, gen]), strict=True):
        assert_close_at(a, e, F64)


# ------------------------------------------------------------------------------------------ degenerate batches


def test_one_identity() -> None:
    """Official: the inter-identity hinges vanish, the push hinge stays. Paper: the single hinge vanishes."""
    original, generated, labels, modalities = sampler_batch([11], 3, 4, 2, torch.float32, seed=8)
    o, g = _leaves(original, generated)
    official = cpm_loss(o, g, labels, modalities)
    expected = loop_cpm(original, generated, labels, modalities)
    assert torch.isfinite(official) and expected > 0
    assert_close_at(official, expected, torch.float32)
    assert all(torch.isfinite(gr).all() for gr in _grads(official, [o, g]))

    o, g = _leaves(original, generated)
    paper = cpm_loss(o, g, labels, modalities, form="paper")
    assert paper.item() == 0 and paper.requires_grad
    assert all(gr.abs().max() == 0 for gr in _grads(paper, [o, g]))


@pytest.mark.parametrize("form", ["official", "paper"])
@pytest.mark.parametrize("modality", [0, 1])
def test_one_modality(form: str, modality: int) -> None:
    g = torch.Generator().manual_seed(9)
    labels = torch.tensor([2, 2, 5, 5, 7, 7])
    modalities = torch.full((6,), modality)
    o, gen = _leaves(torch.randn(6, 4, generator=g), torch.randn(2, 6, 4, generator=g))
    loss = cpm_loss(o, gen, labels, modalities, form=form)
    assert loss.item() == 0 and loss.requires_grad
    grads = _grads(loss, [o, gen])
    assert all(gr.abs().max() == 0 for gr in grads)


@pytest.mark.parametrize("form", ["official", "paper"])
def test_single_row(form: str) -> None:
    o, g = _leaves(torch.randn(1, 4), torch.randn(2, 1, 4))
    loss = cpm_loss(o, g, torch.tensor([3]), torch.tensor([1]), form=form)
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()


@pytest.mark.parametrize("form", ["official", "paper"])
def test_empty_batch(form: str) -> None:
    """STYLE rule 10: an empty batch gives a zero that stays connected to the graph."""
    o, g = _leaves(torch.zeros(0, 4), torch.zeros(2, 0, 4))
    empty = torch.zeros(0, dtype=torch.long)
    loss = cpm_loss(o, g, empty, empty, form=form)
    assert loss.shape == () and loss.item() == 0 and loss.requires_grad
    loss.backward()


# ------------------------------------------------------------------------------------------------ bad input


def _good() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return sampler_batch([0, 1], 2, 4, 2, torch.float32)


@pytest.mark.parametrize(
    ("change", "error", "name"),
    [
        ({"original": torch.randn(8)}, ValueError, "original"),
        ({"original": torch.randn(1, 8, 4)}, ValueError, "original"),
        ({"original": torch.ones(8, 4, dtype=torch.long)}, TypeError, "original"),
        ({"original": [[0.0] * 4] * 8}, TypeError, "original"),
        ({"generated": torch.randn(8, 4)}, ValueError, "generated"),
        ({"generated": torch.randn(2, 7, 4)}, ValueError, "generated"),
        ({"generated": torch.randn(2, 8, 5)}, ValueError, "generated"),
        ({"generated": torch.randn(2, 2, 8, 4)}, ValueError, "generated"),
        ({"labels": torch.zeros(7, dtype=torch.long)}, ValueError, "labels"),
        ({"labels": torch.zeros(8, 1, dtype=torch.long)}, ValueError, "labels"),
        ({"labels": torch.zeros(8)}, TypeError, "labels"),
        ({"modalities": torch.zeros(9, dtype=torch.long)}, ValueError, "modalities"),
        ({"modalities": torch.tensor([0, 1, 2, 0, 1, 0, 1, 0])}, ValueError, "modalities"),
        ({"modalities": torch.tensor([0, 1, -1, 0, 1, 0, 1, 0])}, ValueError, "modalities"),
        ({"modalities": torch.zeros(8)}, TypeError, "modalities"),
        ({"margin": -0.1}, ValueError, "margin"),
        ({"margin": "0.2"}, TypeError, "margin"),
        ({"form": "Official"}, ValueError, "form"),
    ],
)
def test_exception(change: dict, error: type[Exception], name: str) -> None:
    original, generated, labels, modalities = _good()
    kwargs = {"original": original, "generated": generated, "labels": labels, "modalities": modalities}
    kwargs.update(change)
    with pytest.raises(error, match=name):
        cpm_loss(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"margin": -1.0}, ValueError, "margin"),
        ({"margin": None}, TypeError, "margin"),
        ({"form": "eq5"}, ValueError, "form"),
    ],
)
def test_module_exception(kwargs: dict, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        CPMLoss(**kwargs)


# ------------------------------------------------------------------------------------ compile / amp / module


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("form", ["official", "paper"])
def test_compile(form: str) -> None:
    original, generated, labels, modalities = sampler_batch([0, 1, 2], 2, 4, 2, torch.float32)
    module = CPMLoss(margin=0.3, form=form)
    expected = module(original, generated, labels, modalities)
    compiled = torch.compile(module, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(original, generated, labels, modalities), expected)
    functional = torch.compile(functools.partial(cpm_loss, margin=0.3, form=form), backend="eager", fullgraph=True)
    torch.testing.assert_close(functional(original, generated, labels, modalities), expected)


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("form", ["official", "paper"])
def test_compile_backward(form: str) -> None:
    """The hand-written backward traced by AOTAutograd (static slots) gives the eager gradients."""
    original, generated, labels, modalities = sampler_batch([4, 0, 2], 2, 6, 2, torch.float32, seed=13)
    fn = functools.partial(cpm_loss, margin=MARGINS[form], form=form)
    o, g = _leaves(original, generated)
    expected = fn(o, g, labels, modalities)
    o_c, g_c = _leaves(original, generated)
    actual = torch.compile(fn, backend="aot_eager", fullgraph=True)(o_c, g_c, labels, modalities)
    assert expected > 0
    torch.testing.assert_close(actual, expected)
    for a, e in zip(_grads(actual, [o_c, g_c]), _grads(expected, [o, g]), strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, e)


def test_no_second_derivative() -> None:
    """The backward pass is written out and differentiable once: with ``create_graph=True`` the gradient carries
    no graph, so a second derivative is refused rather than silently wrong."""
    original, generated, labels, modalities = sampler_batch([0, 1], 2, 4, 2, F64, seed=14)
    o, g = _leaves(original, generated)
    (grad_o,) = torch.autograd.grad(cpm_loss(o, g, labels, modalities), [o], create_graph=True)
    assert grad_o.abs().sum() > 0 and not grad_o.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        torch.autograd.grad(grad_o.sum(), [o])


@pytest.mark.parametrize("form", ["official", "paper"])
def test_bf16_autocast(form: str) -> None:
    original, generated, labels, modalities = sampler_batch([0, 1, 2], 2, 8, 2, torch.float32, seed=10)
    o, g = _leaves(original.bfloat16(), generated.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = cpm_loss(o, g, labels, modalities, form=form)
    expected = cpm_loss(o.detach().float(), g.detach().float(), labels, modalities, form=form)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, expected, rtol=2e-2, atol=1e-3)
    grads = _grads(loss, [o, g])
    assert all(gr.dtype == torch.bfloat16 and torch.isfinite(gr).all() for gr in grads)


@pytest.mark.parametrize(("margin", "form"), [(0.2, "official"), (0.0, "official"), (0.7, "paper")])
def test_module_matches_functional(margin: float, form: str) -> None:
    original, generated, labels, modalities = sampler_batch([0, 1, 2], 2, 4, 2, torch.float32, seed=11)
    torch.testing.assert_close(
        CPMLoss(margin=margin, form=form)(original, generated, labels, modalities),
        cpm_loss(original, generated, labels, modalities, margin=margin, form=form),
        rtol=0,
        atol=0,
    )


def test_extra_repr() -> None:
    assert repr(CPMLoss(margin=0.35, form="paper")) == "CPMLoss(margin=0.35, form='paper')"
    assert "margin=0.2" in repr(CPMLoss()) and "form='official'" in repr(CPMLoss())
