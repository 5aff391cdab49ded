"""extract_features: the stem is the argument's, flip averaging, modes restored, batch formats, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vireid_layers import Modality
from vireid_layers.evaluation import extract_features


class Recorder(nn.Module):
    """A two-stem toy model: a different linear map per modality; records every modality tensor it gets."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stems = nn.ModuleList([nn.Linear(12, 5), nn.Linear(12, 5)])
        for stem in self.stems:
            nn.init.normal_(stem.weight, generator=g)
        self.norm = nn.BatchNorm1d(5)
        self.seen = []
        self.training_when_called = []

    def forward(self, x, modalities):
        self.seen.append(modalities.clone())
        self.training_when_called.append(self.training)
        flat = x.flatten(1)
        out = torch.where(modalities.unsqueeze(1).bool(), self.stems[1](flat), self.stems[0](flat))
        return self.norm(out)


def make_batches(n_batches=3, size=4, modality=1, as_tuple=False):
    g = torch.Generator().manual_seed(1)
    batches = []
    for b in range(n_batches):
        images = torch.randn(size, 3, 2, 2, generator=g)
        ids = torch.arange(size) + 10 * b
        cams = torch.full((size,), 3)
        mods = torch.full((size,), modality)
        batches.append(
            (images, ids, cams, mods)
            if as_tuple
            else {"image": images, "identity": ids, "camera": cams, "modality": mods}
        )
    return batches


def images_of(batches):
    return torch.cat([b[0] if isinstance(b, tuple) else b["image"] for b in batches])


@pytest.mark.parametrize("as_tuple", [False, True])
@pytest.mark.parametrize("modality", [Modality.VISIBLE, Modality.INFRARED])
def test_modality_argument_drives_the_stem(as_tuple, modality):
    model = Recorder()
    batches = make_batches(modality=int(modality), as_tuple=as_tuple)
    feats, ids, cams = extract_features(model, batches, modality)
    assert feats.shape == (12, 5) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert ids.tolist() == [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23] and set(cams.tolist()) == {3}
    assert all(m.dtype == torch.long and m.shape == (4,) and bool((m == int(modality)).all()) for m in model.seen)
    model.eval()
    with torch.no_grad():
        expected = nn.functional.normalize(model(images_of(batches), torch.full((12,), int(modality))), dim=1)
    torch.testing.assert_close(feats, expected)


def test_flip_sum_and_mean():
    model = Recorder()
    batches = make_batches(modality=0)
    x = images_of(batches)
    mods = torch.zeros(12, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        a = nn.functional.normalize(model(x, mods), dim=1)
        b = nn.functional.normalize(model(torch.flip(x, dims=(-1,)), mods), dim=1)
    model.train()
    summed, _, _ = extract_features(model, batches, "visible", flip="sum")
    torch.testing.assert_close(summed, a + b)  # DEEN: normalised features added, not re-normalised
    mean, _, _ = extract_features(model, batches, "visible", flip="mean")
    torch.testing.assert_close(mean, nn.functional.normalize((a + b) / 2, dim=1))  # CAJ
    raw, _, _ = extract_features(model, batches, "visible", flip="mean", normalize=False)
    with torch.no_grad():
        model.eval()
        expected = (model(x, mods) + model(torch.flip(x, dims=(-1,)), mods)) / 2
    torch.testing.assert_close(raw, expected)


def test_training_modes_restored():
    model = Recorder()
    model.train()
    model.norm.eval()  # a frozen BN inside a training model must stay frozen
    extract_features(model, make_batches(), 1)
    assert model.training and model.stems[0].training and not model.norm.training
    assert model.training_when_called and not any(model.training_when_called)
    model.eval()
    extract_features(model, make_batches(), 1)
    assert not model.training


def test_modes_restored_on_error():
    model = Recorder().train()
    with pytest.raises(ValueError, match="modality values"):
        extract_features(model, make_batches(modality=0), "infrared")
    assert model.training and model.norm.training


def test_modality_mismatch_can_be_allowed():
    model = Recorder()
    feats, _, _ = extract_features(model, make_batches(modality=0), "infrared", check_modality=False)
    assert feats.shape == (12, 5) and all(bool((m == 1).all()) for m in model.seen)


def test_forward_selects_an_output():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(12, 4)

        def forward(self, x, modalities):
            pool = self.lin(x.flatten(1))
            return pool, 2 * pool

    model = Pair()
    with pytest.raises(TypeError, match="pass `forward`"):
        extract_features(model, make_batches(), 1)
    feats, _, _ = extract_features(model, make_batches(), 1, normalize=False, forward=lambda m, x, mod: m(x, mod)[1])
    with torch.no_grad():
        torch.testing.assert_close(feats, 2 * model.lin(images_of(make_batches()).flatten(1)))


def test_inference_mode_and_no_grad_outputs():
    model = Recorder()
    feats, _, _ = extract_features(model, make_batches(), 1)
    assert not feats.requires_grad and not feats.is_inference()  # usable in later autograd code
    assert all(p.grad is None for p in model.parameters())


def test_empty_loader():
    feats, ids, cams = extract_features(Recorder(), [], 0)
    assert feats.shape == (0, 0) and ids.shape == (0,) and cams.shape == (0,)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m: extract_features(m, make_batches(), 1, flip=True), ValueError, "`flip`"),
        (lambda m: extract_features(m, make_batches(), "uv"), ValueError, "`modality`"),
        (lambda m: extract_features(lambda x, y: x, make_batches(), 1), TypeError, "`model`"),
        (lambda m: extract_features(m, [[1, 2]], 1), TypeError, "batch 0 of `loader`"),
        (lambda m: extract_features(m, [{"image": torch.zeros(2, 12)}], 1), KeyError, "lacks the keys"),
        (lambda m: extract_features(m, [([0.0], [1], [1], [1])], 1), TypeError, "`image` must be a Tensor"),
        (
            lambda m: extract_features(m, [(torch.zeros(2, 12), [1], [1, 1], [1, 1])], 1),
            ValueError,
            "`identity` has 1 values for 2 images",
        ),
        (lambda m: extract_features(m, make_batches(), 1, forward=lambda m, x, mod: x), ValueError, r"\(4, D\)"),
    ],
)
def test_exception(call, error, match):
    with pytest.raises(error, match=match):
        call(Recorder())
