"""The criteria promote their inputs to at least float32 and never cast down: float64 outputs give float64 terms.

``DEENCriterion`` and ``AGWCriterion`` used ``.float()``, which turned a float64 model's loss terms into float32
(the cross-entropy off by about 1.6e-7). Each term is compared here with a float64 reference computed from the
same float64 tensors by the library's functionals (the references of those are tested in ``tests/losses``).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from vireid_layers import cpm_loss, hard_triplet_loss, orthogonal_loss, wrt_loss
from vireid_layers.models import AGWCriterion, DEENCriterion
from vireid_layers.models.agw import AGWOutput
from vireid_layers.models.deen import DEENOutput

F64 = torch.float64


def _deen_output(dtype: torch.dtype, n: int = 8, k: int = 2, d: int = 16, classes: int = 4) -> tuple:
    g = torch.Generator().manual_seed(0)
    pooled = torch.randn((1 + k) * n, d, generator=g, dtype=F64).to(dtype)
    logits = torch.randn((1 + k) * n, classes, generator=g, dtype=F64).to(dtype)
    out = DEENOutput(pooled, pooled, logits, pooled[:n], pooled[n:].view(k, n, d))
    labels, modalities = torch.arange(4).repeat(2), torch.tensor([0] * 4 + [1] * 4)
    return out, SimpleNamespace(identity=labels, modality=modalities)


def _agw_output(dtype: torch.dtype, n: int = 8, d: int = 16, classes: int = 4) -> tuple:
    g = torch.Generator().manual_seed(1)
    pooled = torch.randn(n, d, generator=g, dtype=F64).to(dtype)
    logits = torch.randn(n, classes, generator=g, dtype=F64).to(dtype)
    return AGWOutput(pooled, pooled, logits), SimpleNamespace(identity=torch.arange(4).repeat(2))


def test_deen_criterion_keeps_float64() -> None:
    out, batch = _deen_output(F64)
    terms = DEENCriterion()(out, batch)
    assert {k: v.dtype for k, v in terms.items()} == dict.fromkeys(terms, F64)
    rows = out.per_row(batch.identity)
    expected = {
        "ce": F.cross_entropy(out.logits, rows),
        "triplet": hard_triplet_loss(out.pooled, rows, margin=0.3),
        "cpm": cpm_loss(out.original, out.generated, batch.identity, batch.modality, margin=0.2),
        "ort": orthogonal_loss(out.generated),
    }
    for name, value in expected.items():
        assert value.dtype == F64
        torch.testing.assert_close(terms[name], value, rtol=1e-12, atol=1e-12)
    # The float32 cross-entropy differs from the float64 one by far more than float64 rounding: the test can fail.
    ce32 = F.cross_entropy(out.logits.float(), rows).double()
    assert abs(ce32 - expected["ce"]) > 1e-12
    total = DEENCriterion().total(terms)
    assert total.dtype == F64


@pytest.mark.parametrize("method", ["agw", "base"])
@pytest.mark.parametrize("wrt_form", ["stable", "official"])
def test_agw_criterion_keeps_float64(method: str, wrt_form: str) -> None:
    out, batch = _agw_output(F64)
    criterion = AGWCriterion(method=method, wrt_form=wrt_form)
    terms = criterion(out, batch)
    assert {k: v.dtype for k, v in terms.items()} == dict.fromkeys(terms, F64)
    torch.testing.assert_close(terms["ce"], F.cross_entropy(out.logits, batch.identity), rtol=1e-12, atol=1e-12)
    if method == "agw":
        expected = wrt_loss(out.pooled, batch.identity, form=wrt_form)
        torch.testing.assert_close(terms["wrt"], expected, rtol=1e-12, atol=1e-12)
    else:
        expected = hard_triplet_loss(out.pooled, batch.identity, margin=0.3)
        torch.testing.assert_close(terms["triplet"], expected, rtol=1e-12, atol=1e-12)
    assert criterion.total(terms).dtype == F64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_lower_precision_is_promoted_to_float32(dtype: torch.dtype) -> None:
    deen_out, deen_batch = _deen_output(dtype)
    assert all(v.dtype == torch.float32 for v in DEENCriterion()(deen_out, deen_batch).values())
    agw_out, agw_batch = _agw_output(dtype)
    assert all(v.dtype == torch.float32 for v in AGWCriterion()(agw_out, agw_batch).values())


def test_agw_criterion_wrt_form() -> None:
    """``wrt_form`` reaches the WRT loss; the official form differs from the stable one at large distances."""
    out, batch = _agw_output(F64)
    far = AGWOutput(out.pooled * 40, out.features, out.logits)
    official = AGWCriterion(wrt_form="official")(far, batch)["wrt"]
    stable = AGWCriterion()(far, batch)["wrt"]
    assert official > stable + 10
    assert AGWCriterion(wrt_form="official").metric.form == "official"
    with pytest.raises(ValueError, match="`form`"):
        AGWCriterion(wrt_form="paper")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="`lambda_cpm`"):
        DEENCriterion(lambda_cpm=value)
    with pytest.raises(ValueError, match="`lambda_triplet`"):
        AGWCriterion(lambda_triplet=value)
