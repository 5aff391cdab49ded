"""Tests of ProtocolEvaluator and ProtocolReport on a tiny synthetic dataset written to disk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from vireid_layers import Modality
from vireid_layers.data import build_dataset, build_test_transform
from vireid_layers.data.datasets.synthetic import make_synthetic_dataset
from vireid_layers.engine import EvaluationResult, metrics_of
from vireid_layers.evaluation import (
    ProtocolEvaluator,
    RegDBProtocol,
    SYSUProtocol,
    default_embed,
    k_reciprocal_rerank,
    negative_cosine_similarity,
    negative_dot_product,
    retrieval_metrics,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    root = make_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"),
        num_identities=8,
        train_identities=4,
        images_per_camera=2,
        height=32,
        width=16,
    )
    return build_dataset("synthetic", root)


TRANSFORM = build_test_transform(32, 16)


class Pooled(nn.Module):
    """A fixed random projection of 4x2-pooled images, with a different projection per stem."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.proj = nn.Parameter(torch.randn(2, 24, 6, generator=gen))

    def forward(self, images: Tensor, modalities: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(images, (4, 2)).flatten(1)
        return torch.einsum("nd,nde->ne", x, self.proj[modalities])

    def embed(self, images: Tensor, modalities: Tensor) -> Tensor:  # two "parts", as DEEN's official embedding
        out = self(images, modalities)
        return torch.stack([out, out.flip(1)], dim=1)


def plain_features(model: nn.Module, records: list, modality: Modality, flip: bool = False) -> Tensor:
    """One image at a time: transform, embed through the given stem, flatten, L2-normalise (and add the flip)."""
    rows = []
    for record in records:
        image = TRANSFORM(Image.open(record.path).convert("RGB")).unsqueeze(0)
        m = torch.tensor([int(modality)])
        with torch.no_grad():
            f = F.normalize(model.embed(image, m).flatten(1), dim=1)
            if flip:
                f = f + F.normalize(model.embed(image.flip(-1), m).flatten(1), dim=1)
        rows.append(f)
    return torch.cat(rows)


@pytest.mark.parametrize("flip", [False, True])
def test_matches_plain_extraction_and_protocol(dataset, flip: bool) -> None:
    model = Pooled()
    protocol = SYSUProtocol(num_trials=3)
    evaluator = ProtocolEvaluator(protocol, dataset, TRANSFORM, batch_size=5, flip="sum" if flip else False)
    result = evaluator(model)
    queries, gallery = protocol.query_candidates(dataset), protocol.gallery_candidates(dataset)
    qf = plain_features(model, queries, protocol.query_modality, flip)
    gf = plain_features(model, gallery, protocol.gallery_modality, flip)
    expected = protocol.evaluate(qf, gf, dataset)
    assert result.num_trials == 3
    for key, value in expected.mean.items():
        assert result.mean[key] == pytest.approx(value, abs=1e-6), key
    # The per-trial metrics from first principles: the gallery of trial 1 ranked by cosine distance.
    select = protocol.select(dataset, 1)
    q_ids = torch.tensor([queries[i].identity for i in select.query])
    g_ids = torch.tensor([gallery[i].identity for i in select.gallery])
    q_cams = torch.tensor([queries[i].camera for i in select.query])
    g_cams = torch.tensor([gallery[i].camera for i in select.gallery])
    d = negative_cosine_similarity(qf[list(select.query)], gf[list(select.gallery)])
    metrics = retrieval_metrics(d, q_ids, g_ids, q_cams, g_cams, exclude=protocol.exclude)
    assert result.trials[1].metrics.mAP == pytest.approx(metrics.mAP, abs=1e-6)


def test_deen_official_flip_ranking(dataset) -> None:
    """normalize=False + negative_dot_product is DEEN's test.py: per-part unit features of the image and its flip
    added (not normalised again), ranked by the sum over parts of their dot products."""

    class UnitParts(Pooled):
        def embed(self, images: Tensor, modalities: Tensor) -> Tensor:
            return F.normalize(super().embed(images, modalities), dim=-1)  # (N, 2, D): unit per part

    model = UnitParts()
    protocol = SYSUProtocol(num_trials=2)
    evaluator = ProtocolEvaluator(
        protocol, dataset, TRANSFORM, flip="sum", normalize=False, distance=negative_dot_product
    )
    result = evaluator(model)

    def official(records: list, modality: Modality) -> Tensor:  # (N, parts, D), the sum of image and flip
        rows = []
        for record in records:
            image = TRANSFORM(Image.open(record.path).convert("RGB")).unsqueeze(0)
            m = torch.tensor([int(modality)])
            with torch.no_grad():
                rows.append(model.embed(image, m) + model.embed(image.flip(-1), m))
        return torch.cat(rows)

    queries, gallery = protocol.query_candidates(dataset), protocol.gallery_candidates(dataset)
    qf, gf = official(queries, protocol.query_modality), official(gallery, protocol.gallery_modality)
    select = protocol.select(dataset, 1)
    q, g = qf[list(select.query)], gf[list(select.gallery)]
    similarity = sum(q[:, k] @ g[:, k].T for k in range(q.shape[1]))  # distmat7: the sum of the part matrices
    q_ids = torch.tensor([queries[i].identity for i in select.query])
    g_ids = torch.tensor([gallery[i].identity for i in select.gallery])
    q_cams = torch.tensor([queries[i].camera for i in select.query])
    g_cams = torch.tensor([gallery[i].camera for i in select.gallery])
    metrics = retrieval_metrics(-similarity, q_ids, g_ids, q_cams, g_cams, exclude=protocol.exclude)
    assert result.trials[1].metrics.mAP == pytest.approx(metrics.mAP, abs=1e-6)
    assert torch.equal(result.trials[1].metrics.cmc, metrics.cmc)


def test_distance_and_trials(dataset) -> None:
    model = Pooled()
    protocol = SYSUProtocol(num_trials=4)
    plain = ProtocolEvaluator(protocol, dataset, TRANSFORM, trials=[2])(model)
    reranked = ProtocolEvaluator(protocol, dataset, TRANSFORM, trials=[2], distance=k_reciprocal_rerank)(model)
    assert [t.trial for t in plain.trials] == [2]
    queries, gallery = protocol.query_candidates(dataset), protocol.gallery_candidates(dataset)
    qf = plain_features(model, queries, protocol.query_modality)
    gf = plain_features(model, gallery, protocol.gallery_modality)
    expected = protocol.evaluate(qf, gf, dataset, trials=[2], distance=k_reciprocal_rerank)
    assert reranked.mean["mAP"] == pytest.approx(expected.mean["mAP"], abs=1e-6)


def test_default_embed_and_custom_embed(dataset) -> None:
    class NoEmbed(nn.Module):
        def forward(self, images: Tensor, modalities: Tensor) -> Tensor:
            return images.mean(dim=(2, 3)) + modalities[:, None]

    x, m = torch.ones(2, 3, 4, 2), torch.tensor([0, 1])
    assert default_embed(Pooled(), x, m).shape == (2, 2, 6)  # Pooled has `embed`
    torch.testing.assert_close(default_embed(NoEmbed(), x, m), torch.tensor([[1.0] * 3, [2.0] * 3]))
    calls = []

    def embed(model: nn.Module, images: Tensor, modalities: Tensor) -> Tensor:
        calls.append(int(modalities[0]))
        return model(images, modalities)

    # Any protocol runs on any dataset: RegDB's takes every test image of each modality.
    result = ProtocolEvaluator(RegDBProtocol("i2v"), dataset, TRANSFORM, embed=embed)(Pooled())
    assert set(calls) == {0, 1} and result.num_trials == 1


def test_model_mode_is_restored(dataset) -> None:
    model = Pooled().train()
    ProtocolEvaluator(SYSUProtocol(num_trials=1), dataset, TRANSFORM)(model)
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"protocol": "sysu"}, TypeError, "protocol"),
        ({"dataset": []}, TypeError, "dataset"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"num_workers": -1}, ValueError, "num_workers"),
        ({"flip": True}, ValueError, "flip"),
        ({"embed": "fc"}, TypeError, "embed"),
        ({"distance": None}, TypeError, "distance"),
        ({"rerank": {"k3": 1}}, ValueError, "rerank"),
        ({"rerank": "yes"}, TypeError, "rerank"),
        ({"rerank": {"lambda_value": 2.0}}, ValueError, "lambda_value"),
        ({"feature": ""}, ValueError, "feature"),
        ({"selection": 3}, ValueError, "selection"),
        ({"plain_row": "no"}, TypeError, "plain_row"),
    ],
)
def test_exceptions(dataset, kwargs: dict, error: type, match: str) -> None:
    arguments = {"protocol": SYSUProtocol(), "dataset": dataset, "transform": TRANSFORM, **kwargs}
    with pytest.raises(error, match=match):
        ProtocolEvaluator(**arguments)


# ------------------------------------------------------------------------------------------------ settings and rows


def test_result_states_feature_flip_selection_rerank_and_distance(dataset) -> None:
    evaluator = ProtocolEvaluator(
        SYSUProtocol(num_trials=2), dataset, TRANSFORM, feature="official", selection="val", plain_row=False
    )
    result = evaluator(Pooled())
    s = result.settings
    assert (s["feature"], s["flip"], s["selection"], s["rerank"]) == ("official", False, "val", None)
    assert (s["dataset"], s["protocol"], s["distance"], s["trials"]) == (
        "synthetic",
        "sysu",
        "negative_cosine_similarity",
        [0, 1],
    )
    table = result.format_table()
    for line in (
        "- feature: official six-part (DEEN)",
        "- flip: off",
        "- re-ranking: off",
        "- checkpoint selection: validation identities",
        "- distance: negative_cosine_similarity",
    ):
        assert line in table.splitlines(), line
    assert evaluator.report(Pooled()).as_dict()["settings"] == s
    # Not stated: printed as such, never guessed.
    unstated = ProtocolEvaluator(SYSUProtocol(num_trials=1), dataset, TRANSFORM)(Pooled()).format_table()
    assert "- checkpoint selection: not stated" in unstated.splitlines()


def test_rerank_keeps_the_plain_row(dataset) -> None:
    model, protocol = Pooled(), SYSUProtocol(num_trials=2)
    plain = ProtocolEvaluator(protocol, dataset, TRANSFORM)(model)
    reranked = ProtocolEvaluator(protocol, dataset, TRANSFORM, rerank=True)(model)
    by_distance = ProtocolEvaluator(protocol, dataset, TRANSFORM, distance=k_reciprocal_rerank)(model)
    assert reranked.settings["rerank"] == {"method": "k_reciprocal", "k1": 20, "k2": 6, "lambda_value": 0.3}
    assert reranked.mean == pytest.approx(by_distance.mean, abs=1e-6)  # the official parameters
    assert len(reranked.baselines) == 1 and reranked.baselines[0].mean == plain.mean
    assert reranked.mean != plain.mean
    rows = [line.split(" | ")[0] for line in reranked.format_table().splitlines() if "(reported)" in line]
    assert rows == ["| plain", "| re-ranked"]
    assert "- re-ranked rows: k_reciprocal (k1=20, k2=6, lambda_value=0.3)" in reranked.format_table().splitlines()
    custom = ProtocolEvaluator(protocol, dataset, TRANSFORM, rerank={"k1": 3, "k2": 1, "lambda_value": 0.5})(model)
    assert "- re-ranking: varies, see the rows" in custom.format_table().splitlines()
    assert custom.settings["rerank"]["k1"] == 3 and custom.as_dict()["baselines"][0]["settings"]["rerank"] is None


@pytest.mark.parametrize("rerank", [None, True])
def test_flip_prints_the_plain_row(dataset, rerank) -> None:
    model, protocol = Pooled(), SYSUProtocol(num_trials=2)
    no_flip = ProtocolEvaluator(protocol, dataset, TRANSFORM, rerank=rerank, feature="plain")(model)
    flipped = ProtocolEvaluator(protocol, dataset, TRANSFORM, flip="sum", rerank=rerank, feature="plain")(model)
    alone = ProtocolEvaluator(protocol, dataset, TRANSFORM, flip="sum", rerank=rerank, plain_row=False)(model)
    assert flipped.mean == alone.mean and flipped.settings["flip"] == "sum"
    # The rows above it: the evaluation without flip (and its own plain ranking with re-ranking), plainest first.
    expected = [*no_flip.baselines, no_flip, *alone.baselines]
    assert [b.mean for b in flipped.baselines] == [r.mean for r in expected]
    assert [(b.settings["flip"], bool(b.settings["rerank"])) for b in flipped.baselines] == [
        (r.settings["flip"], bool(r.settings["rerank"])) for r in expected
    ]
    assert all(b.settings["feature"] == "plain" for b in flipped.baselines)
    rows = [line.split(" | ")[0] for line in flipped.format_table().splitlines() if "(reported)" in line]
    assert rows == (
        ["| plain", "| flip (sum)"]
        if rerank is None
        else ["| plain", "| re-ranked", "| flip (sum)", "| flip (sum), re-ranked"]
    )
    assert len(flipped.as_dict()["baselines"]) == len(expected)


# ------------------------------------------------------------------------------------------------ the report


def test_report_is_the_result_through_the_engine_interface(dataset, tmp_path) -> None:
    evaluator = ProtocolEvaluator(SYSUProtocol(num_trials=2), dataset, TRANSFORM)
    report = evaluator.report(Pooled())
    result = evaluator(Pooled())
    assert isinstance(report, EvaluationResult) and report.result.mean == result.mean
    assert report.to_metrics() == result.mean and metrics_of(report) == result.mean
    assert report.format_table() == result.format_table() and report.as_dict() == result.as_dict()
    reported = result.reported()
    assert report.summary() == ", ".join(f"{k}={100 * reported[k][0]:.2f}" for k in ("rank1", "mAP", "mINP"))
    # Both CMC curves, the reported (deduplicated for SYSU-MM01) one first, each the mean over the trials.
    curves = report.cmc_curves()
    assert list(curves) == ["identity-deduplicated (reported)", "standard"]
    mean_dedup = torch.stack([t.metrics.cmc_dedup.double() for t in result.trials]).mean(0)
    torch.testing.assert_close(
        torch.tensor(curves["identity-deduplicated (reported)"], dtype=torch.float64), mean_dedup
    )
    assert all(a >= b - 1e-12 for a, b in zip(*curves.values(), strict=True))
    pytest.importorskip("matplotlib")
    assert report.plot_curves(tmp_path) == [tmp_path / "cmc.png"] and (tmp_path / "cmc.png").stat().st_size > 0


def test_report_of_a_standard_cmc_protocol(dataset) -> None:
    report = ProtocolEvaluator(RegDBProtocol("v2i"), dataset, TRANSFORM).report(Pooled())
    assert list(report.cmc_curves()) == ["standard (reported)", "identity-deduplicated"]
