"""Old spellings of the public API keep working for one release, with a FutureWarning at the caller's line."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import vireid_layers as vl
from vireid_layers._deprecation import keyword_only, renamed_keyword
from vireid_layers.backbones import TwoStreamBackbone
from vireid_layers.distances import safe_sqrt
from vireid_layers.losses import DynamicDualAggregation


def _warns(match: str):
    return pytest.warns(FutureWarning, match=match)


def test_future_warning_is_not_turned_into_an_error() -> None:
    """pyproject's filterwarnings makes DeprecationWarning from vireid_layers an error; the aliases use FutureWarning,
    which Python shows to users by default and which is no DeprecationWarning."""
    assert not issubclass(FutureWarning, DeprecationWarning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vl.GeM(3.0)
    assert [w.category for w in caught] == [FutureWarning]
    assert caught[0].filename == __file__  # points at the caller's line, not at the wrapper


@pytest.mark.parametrize(
    ("old", "new", "attribute"),
    [
        (lambda: vl.GeM(4.0), lambda: vl.GeM(p=4.0), "init_p"),
        (lambda: vl.HardTripletLoss(0.5), lambda: vl.HardTripletLoss(margin=0.5), "margin"),
        (lambda: vl.CPMLoss(0.1), lambda: vl.CPMLoss(margin=0.1), "margin"),
        (lambda: vl.CenterClusterLoss(0.5), lambda: vl.CenterClusterLoss(margin=0.5), "margin"),
    ],
)
def test_positional_hyperparameters(old, new, attribute: str) -> None:
    with _warns("by keyword"):
        module = old()
    assert getattr(module, attribute) == getattr(new(), attribute)
    assert repr(module) == repr(new())


def test_positional_functionals() -> None:
    x = torch.rand(2, 3, 4, 4)
    with _warns(r"gem\(\): pass `p=`, `eps=` by keyword"):
        old = vl.gem(x, 2.0, 1e-8)
    torch.testing.assert_close(old, vl.gem(x, p=2.0, eps=1e-8), rtol=0, atol=0)
    with _warns("`eps=`"):
        torch.testing.assert_close(safe_sqrt(torch.zeros(1), 0.25), torch.tensor([0.5]))
    dda = DynamicDualAggregation()
    with _warns("`weight=`"):
        dda.update(1.0, 3)
    assert dda._count == 3.0


def test_positional_and_keyword_together_or_too_many() -> None:
    with pytest.raises(TypeError, match=r"multiple values for \['p'\]"):
        vl.GeM(3.0, p=2.0)
    with pytest.raises(TypeError, match="too many"):
        vl.HardTripletLoss(0.3, "mean")
    with pytest.raises(TypeError, match="too many"):
        vl.gem(torch.rand(1, 1, 2, 2), 3.0, 1e-12, None, "extra")


def test_orthogonal_normalization_renamed_reduction() -> None:
    generated = torch.randn(3, 5, 4)
    for value in ("official", "mean", "sum"):
        with _warns("`normalization` is now spelled `reduction`"):
            old = vl.orthogonal_loss(generated, normalization=value)
        torch.testing.assert_close(old, vl.orthogonal_loss(generated, reduction=value), rtol=0, atol=0)
        with _warns("`normalization`"):
            assert repr(vl.OrthogonalLoss(normalization=value)) == f"OrthogonalLoss(reduction={value!r})"
    # the old keyword keeps its old contract: "none" (new) is refused under the old name
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="`normalization` must be one of"):
        vl.orthogonal_loss(generated, normalization="none")
    with pytest.raises(TypeError, match="both `normalization` and its new name `reduction`"):
        vl.orthogonal_loss(generated, normalization="sum", reduction="sum")


def _tiny() -> TwoStreamBackbone:
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
    return TwoStreamBackbone(
        stem, [nn.Conv2d(4, 8, 3, padding=1)], stem_channels=4, stem_reduction=2, channels=[8], reductions=[2]
    ).eval()


@pytest.mark.parametrize("method", ["forward", "forward_stem", "forward_features", "__call__"])
def test_backbone_modality_renamed_modalities(method: str) -> None:
    backbone = _tiny()
    x, modalities = torch.randn(3, 3, 8, 4), torch.tensor([1, 0, 1])
    call = getattr(backbone, method)
    with torch.no_grad():
        expected = call(x, modalities=modalities)
        with _warns("`modality` is now spelled `modalities`"):
            old = call(x, modality=modalities)
        torch.testing.assert_close(old, expected, rtol=0, atol=0)
        torch.testing.assert_close(call(x, modalities), expected, rtol=0, atol=0)  # positional: no warning
        with pytest.raises(TypeError, match="both `modality` and its new name `modalities`"):
            call(x, modality=modalities, modalities=modalities)


def test_new_spelling_emits_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vl.GeM(p=3.0)
        vl.HardTripletLoss(margin=0.3)
        vl.orthogonal_loss(torch.randn(2, 3, 4), reduction="none")
        _tiny()(torch.randn(2, 3, 8, 4), modalities=torch.tensor([0, 1]))


def test_decorators_refuse_unknown_names() -> None:
    with pytest.raises(TypeError, match="no such keyword-only parameter"):

        @keyword_only("margin")
        def f(x, margin=0.3):  # margin is not keyword-only
            return margin

    @renamed_keyword("old", "new")
    def g(*, new=1):
        return new

    with _warns("`old` is now spelled `new`"):
        assert g(old=5) == 5


def test_aliases_compile_fullgraph() -> None:
    """The wrappers only look at the call's keywords and arity: the new spelling traces with fullgraph=True."""
    x = torch.rand(2, 3, 4, 4)
    fn = torch.compile(lambda t: vl.gem(t, p=3.0), backend="eager", fullgraph=True)
    torch.testing.assert_close(fn(x), vl.gem(x, p=3.0))
    module = torch.compile(vl.OrthogonalLoss(reduction="mean"), backend="eager", fullgraph=True)
    generated = torch.randn(3, 5, 4)
    torch.testing.assert_close(module(generated), vl.orthogonal_loss(generated, reduction="mean"))
