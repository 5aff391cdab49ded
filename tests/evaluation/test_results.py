"""Transparent results: settings every result states, tables checked line by line, baselines, JSON round trip."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_protocols import llcm_dataset, onehot_extractor, regdb_dataset, sysu_dataset

from vireid_layers import Modality
from vireid_layers.evaluation import (
    LLCMProtocol,
    ProtocolResult,
    RegDBProtocol,
    SYSUProtocol,
    TrialResult,
    evaluate_protocol,
    exclude_sysu_indoor_camera,
    format_comparison,
    k_reciprocal_rerank,
    negative_dot_product,
    retrieval_metrics,
)
from vireid_layers.evaluation.protocols.settings import SETTING_KEYS, rerank_parameters, variant_labels

VIS, IR = Modality.VISIBLE, Modality.INFRARED


def _trial(trial: int, distances: list[float]) -> TrialResult:
    """One query of identity 1 against a gallery of identities 1 and 2."""
    m = retrieval_metrics(torch.tensor([distances]), torch.tensor([1]), torch.tensor([1, 2]))
    return TrialResult(trial, 1, 2, m)


TOY_SETTINGS = {
    "dataset": "toy",
    "protocol": "sysu",
    "mode": "indoor",
    "direction": "infrared_to_visible",
    "trials": [0, 1],
    "gallery_sampling": "seeded",
    "gallery_seeds": [0, 1],
    "shots": 10,
    "feature": "official",
    "flip": "mean",
    "rerank": None,
    "distance": "negative_cosine_similarity",
    "selection": "test",
    "exclude": "exclude_sysu_indoor_camera",
    "checkpoint": "best.pt",
}


def toy_result(**settings) -> ProtocolResult:
    trials = (_trial(0, [0.1, 0.9]), _trial(1, [0.9, 0.1]))  # Rank-1 hit, then miss (match at rank 2)
    return ProtocolResult("toy protocol", {**TOY_SETTINGS, **settings}, "dedup", trials)


# --------------------------------------------------------------------------------------------------------------
# Tables, line by line
# --------------------------------------------------------------------------------------------------------------


def test_single_table_line_by_line():
    row = "50.00 ± 70.71 | 100.00 ± 0.00 | 100.00 ± 0.00 | 100.00 ± 0.00 | 75.00 ± 35.36 | 75.00 ± 35.36 |"
    expected = [
        "**toy protocol**: 2 trials, mean ± std (%)",
        "",
        "| CMC | Rank-1 | Rank-5 | Rank-10 | Rank-20 | mAP | mINP |",
        "|:--|--:|--:|--:|--:|--:|--:|",
        f"| identity-deduplicated (reported) | {row}",
        f"| standard | {row}",
        "",
        "Settings:",
        "- dataset: toy",
        "- protocol: sysu, mode indoor",
        "- direction: infrared→visible",
        "- trials: 2 (0-1); gallery: seeded, random.Random(t) for trial t (seeds 0-1)",
        "- shot: multi-shot (10 per identity and camera)",
        "- feature: official six-part (DEEN)",
        "- flip: on (features of the image and of its horizontal flip averaged)",
        "- re-ranking: off",
        "- distance: negative_cosine_similarity",
        "- checkpoint selection: test set (the checkpoint was chosen on the test split)",
        "- removal rule: exclude_sysu_indoor_camera",
        "- checkpoint: best.pt",
        "- plain row (no flip, no re-ranking): not evaluated",
    ]
    assert toy_result().format_table().splitlines() == expected


def test_table_states_what_is_not_stated():
    m = retrieval_metrics(torch.tensor([[0.1, 0.9]]), torch.tensor([1]), torch.tensor([1, 2]))
    lines = ProtocolResult("bare", {}, "standard", (TrialResult(0, 1, 2, m),)).format_table().splitlines()
    assert lines[7:] == [
        "Settings:",
        "- dataset: not stated",
        "- protocol: not stated, mode not stated",
        "- direction: not stated",
        "- trials: not stated; gallery sampling not stated",
        "- shot: not stated",
        "- feature: not stated",
        "- flip: not stated",
        "- re-ranking: off",
        "- distance: not stated",
        "- checkpoint selection: not stated",
    ]


@pytest.mark.parametrize(
    ("protocol", "dataset", "lines"),
    [
        (
            SYSUProtocol(num_trials=2),
            sysu_dataset,
            [
                "- dataset: synthetic",
                "- protocol: sysu, mode all",
                "- direction: infrared→visible",
                "- trials: 2 (0-1); gallery: seeded, random.Random(t) for trial t (seeds 0-1)",
                "- shot: single-shot",
            ],
        ),
        (
            RegDBProtocol("v2i"),
            regdb_dataset,
            [
                "- dataset: synthetic",
                "- protocol: regdb, mode all",
                "- direction: visible→infrared",
                "- trials: 1 (0); gallery: every test image (no sampling)",
                "- shot: every image of each identity and camera",
            ],
        ),
        (
            LLCMProtocol.official_sampled_infrared_queries(num_trials=3),
            llcm_dataset,
            [
                "- dataset: synthetic",
                "- protocol: llcm, mode all",
                "- direction: visible→infrared",
                "- trials: 3 (0-2); queries: seeded, random.Random(t) for trial t (seeds 0-2); "
                "gallery: every test image",
                "- shot: every image of each identity and camera",
            ],
        ),
    ],
)
def test_every_protocol_states_its_settings(protocol, dataset, lines):
    result = evaluate_protocol(protocol, dataset(), onehot_extractor(), settings={"feature": "plain", "flip": False})
    table = result.format_table().splitlines()
    start = table.index("Settings:")
    assert table[start + 1 : start + 6] == lines
    assert table[start + 6 : start + 11] == [
        "- feature: plain (one embedding)",
        "- flip: off",
        "- re-ranking: off",
        "- distance: negative_cosine_similarity",
        "- checkpoint selection: not stated",
    ]
    data = json.loads(json.dumps(result.as_dict(), allow_nan=False))
    assert list(data["settings"])[: len(SETTING_KEYS)] == list(SETTING_KEYS)
    assert data["settings"]["trials"] == list(range(protocol.num_trials))
    assert data["settings"]["gallery_seeds"] == (
        None if isinstance(protocol, RegDBProtocol) else data["settings"]["trials"]
    )


def test_official_permutation_gallery_is_stated():
    from test_protocols import _permutation

    ds = sysu_dataset()
    p = SYSUProtocol(shots=10, gallery_sampling="official", permutation=_permutation(ds), num_trials=2)
    result = evaluate_protocol(p, ds, onehot_extractor())
    assert result.settings["gallery_sampling"] == "official" and result.settings["gallery_seeds"] is None
    assert (
        "- trials: 2 (0-1); gallery from the official permutation (exp/rand_perm_cam.mat), column t for trial t"
        in result.format_table().splitlines()
    )


# --------------------------------------------------------------------------------------------------------------
# Settings from the caller and the runner
# --------------------------------------------------------------------------------------------------------------


def test_runner_fills_distance_trials_and_caller_settings():
    ds = sysu_dataset()
    caller = {"feature": "official", "flip": "sum", "selection": "val", "checkpoint": "runs/x/best.pt"}
    result = evaluate_protocol(
        SYSUProtocol(mode="indoor"),
        ds,
        onehot_extractor(),
        trials=[3, 1],
        distance=negative_dot_product,
        settings=caller,
    )
    s = result.settings
    assert (s["dataset"], s["protocol"], s["mode"], s["direction"]) == (
        "synthetic",
        "sysu",
        "indoor",
        "infrared_to_visible",
    )
    assert (s["trials"], s["gallery_seeds"], s["shots"], s["distance"], s["rerank"]) == (
        [3, 1],
        [3, 1],
        1,
        "negative_dot_product",
        None,
    )
    assert {k: s[k] for k in caller} == caller
    assert s["exclude"] == "exclude_sysu_indoor_camera" and s["num_trials"] == 10
    later = result.with_settings(selection="last", split=2)
    assert (
        later.settings["selection"] == "last" and later.settings["split"] == 2 and result.settings["selection"] == "val"
    )
    assert later.mean == result.mean


@pytest.mark.parametrize(
    ("settings", "error", "match"),
    [
        ({"direction": "v2i"}, ValueError, r"may not set \['direction'\]"),
        ({"trials": [0]}, ValueError, r"may not set \['trials'\]"),
        ({"flip": "max"}, ValueError, r"`settings\['flip'\]`"),
        ({"feature": 3}, ValueError, r"`settings\['feature'\]`"),
        ({"selection": ""}, ValueError, r"`settings\['selection'\]`"),
        ({"checkpoint": object()}, TypeError, "JSON-serialisable"),
        ({"ratio": math.nan}, TypeError, "JSON-serialisable"),
        ({1: "x"}, TypeError, "keys must be strings"),
        (["feature"], TypeError, "`settings` must be a mapping"),
    ],
)
def test_bad_caller_settings(settings, error, match):
    with pytest.raises(error, match=match):
        evaluate_protocol(RegDBProtocol("v2i"), regdb_dataset(), onehot_extractor(), settings=settings)
    if isinstance(settings, dict) and all(isinstance(k, str) for k in settings):
        with pytest.raises(error, match=match):
            toy_result().with_settings(**settings)


@pytest.mark.parametrize(
    ("rerank", "error", "match"),
    [
        ({"k3": 1}, ValueError, r"unknown \['k3'\]"),
        ({"k1": 0}, ValueError, "`k1`"),
        ({"k2": 1.5}, TypeError, "`k2`"),
        ({"lambda_value": 2.0}, ValueError, "`lambda_value`"),
        ("yes", TypeError, "`rerank`"),
    ],
)
def test_bad_rerank(rerank, error, match):
    with pytest.raises(error, match=match):
        evaluate_protocol(RegDBProtocol("v2i"), regdb_dataset(), onehot_extractor(), rerank=rerank)


def test_result_refuses_settings_it_cannot_write():
    with pytest.raises(TypeError, match="`settings` must be JSON-serialisable"):
        toy_result(checkpoint=object())
    with pytest.raises(TypeError, match="`settings` must be a mapping"):
        ProtocolResult("x", [], "dedup", toy_result().trials)


# --------------------------------------------------------------------------------------------------------------
# Re-ranking: the plain row is computed too
# --------------------------------------------------------------------------------------------------------------


def test_rerank_keeps_the_plain_ranking_as_baseline():
    ds = sysu_dataset()
    p = SYSUProtocol(num_trials=3)
    plain = evaluate_protocol(p, ds, onehot_extractor(0.5))
    reranked = evaluate_protocol(p, ds, onehot_extractor(0.5), rerank={"k1": 5, "k2": 2})
    assert len(reranked.baselines) == 1 and reranked.baselines[0].as_dict() == plain.as_dict()
    assert reranked.settings["rerank"] == {"method": "k_reciprocal", "k1": 5, "k2": 2, "lambda_value": 0.3}
    assert {k: v for k, v in reranked.settings.items() if k != "rerank"} == {
        k: v for k, v in plain.settings.items() if k != "rerank"
    }
    # Each re-ranked trial is retrieval_metrics of k_reciprocal_rerank of the trial's features. The runner
    # extracts every query candidate and the union of the three galleries once; rebuild those for trial 2.
    extract = onehot_extractor(0.5)
    plan = p.plan(ds, range(3))
    qf = extract(list(plan.queries), IR)
    union = plan.used_gallery()
    gf_union = extract([plan.gallery[i] for i in union], VIS)
    sel = plan.selections[2]
    gf = gf_union[[union.index(i) for i in sel.gallery]]
    gallery = plan.gallery_records(2)
    expected = retrieval_metrics(
        k_reciprocal_rerank(qf, gf, k1=5, k2=2),
        torch.tensor([r.identity for r in plan.queries]),
        torch.tensor([r.identity for r in gallery]),
        torch.tensor([r.camera for r in plan.queries]),
        torch.tensor([r.camera for r in gallery]),
        exclude=exclude_sysu_indoor_camera,
    )
    got = reranked.trials[2].metrics
    assert torch.equal(got.cmc, expected.cmc) and torch.equal(got.cmc_dedup, expected.cmc_dedup)
    assert got.mAP == expected.mAP and got.mINP == expected.mINP
    # The table prints the plain rows first, then the re-ranked ones.
    lines = reranked.format_table().splitlines()
    assert lines[2] == "| Setting | CMC | Rank-1 | Rank-5 | Rank-10 | Rank-20 | mAP | mINP |"
    assert [line.split(" | ")[:2] for line in lines[4:8]] == [
        ["| plain", "identity-deduplicated (reported)"],
        ["| plain", "standard"],
        ["| re-ranked", "identity-deduplicated (reported)"],
        ["| re-ranked", "standard"],
    ]
    assert lines[4] == plain.format_table().splitlines()[4].replace("| identity", "| plain | identity")
    assert "- re-ranking: varies, see the rows" in lines
    assert not any(line.startswith("- plain row") for line in lines)


def test_evaluate_and_evaluate_protocol_share_one_path():
    ds = llcm_dataset()
    p = LLCMProtocol("v2i", num_trials=3)
    qc, gc = p.query_candidates(ds), p.gallery_candidates(ds)
    table = {str(r.path): torch.randn(8, generator=torch.Generator().manual_seed(i)) for i, r in enumerate(ds.test)}

    def extract(records, modality):
        return torch.stack([table[str(r.path)] for r in records])

    kwargs = {"rerank": True, "settings": {"feature": "plain", "flip": False, "selection": "val"}, "trials": [2, 0]}
    direct = p.evaluate(extract(qc, VIS), extract(gc, IR), ds, **kwargs)
    end_to_end = evaluate_protocol(p, ds, extract, **kwargs)
    assert direct.as_dict() == end_to_end.as_dict()
    assert direct.format_table() == end_to_end.format_table()


# --------------------------------------------------------------------------------------------------------------
# Flip: the plain run attached as a baseline; comparisons
# --------------------------------------------------------------------------------------------------------------


def test_flip_baseline_and_comparison():
    ds = sysu_dataset()
    p = SYSUProtocol(num_trials=2)
    plain = evaluate_protocol(p, ds, onehot_extractor(0.6), rerank=True, settings={"flip": False, "feature": "plain"})
    flipped = evaluate_protocol(p, ds, onehot_extractor(0.2), rerank=True, settings={"flip": "sum", "feature": "plain"})
    both = flipped.with_baseline(plain).with_settings(selection="val")
    assert [b.settings["flip"] for b in both.baselines] == [False, False, "sum"]
    assert [bool(b.settings["rerank"]) for b in both.baselines] == [False, True, False]
    assert all(b.settings["selection"] == "val" for b in (*both.baselines, both))
    assert both.mean == flipped.mean
    lines = both.format_table().splitlines()
    labels = [line.split(" | ")[0][2:] for line in lines[4:12]]
    assert labels == [x for x in ("plain", "re-ranked", "flip (sum)", "flip (sum), re-ranked") for _ in (0, 1)]
    assert "- flip: varies, see the rows" in lines and "- re-ranking: varies, see the rows" in lines
    assert "- feature: plain (one embedding)" in lines
    # format_comparison of the two runs gives the same rows.
    assert format_comparison([plain, flipped]).splitlines()[:12] == lines[:12]
    custom = format_comparison([plain, flipped], ["a", "b", "c", "d"]).splitlines()
    assert [line.split(" | ")[0] for line in custom[4:12:2]] == ["| a", "| b", "| c", "| d"]


def test_baseline_and_comparison_errors():
    ds = sysu_dataset()
    two = evaluate_protocol(SYSUProtocol(num_trials=2), ds, onehot_extractor())
    three = evaluate_protocol(SYSUProtocol(num_trials=3), ds, onehot_extractor())
    indoor = evaluate_protocol(SYSUProtocol(mode="indoor", num_trials=2), ds, onehot_extractor())
    with pytest.raises(ValueError, match="same trials"):
        two.with_baseline(three)
    with pytest.raises(ValueError, match="same protocol"):
        two.with_baseline(indoor)
    with pytest.raises(TypeError, match="ProtocolResult"):
        two.with_baseline({"mean": {}})
    with pytest.raises(ValueError, match="mixes protocols"):
        format_comparison([two, indoor])
    with pytest.raises(ValueError, match="one label per result"):
        format_comparison([two, three], ["only one"])
    with pytest.raises(ValueError, match="at least one"):
        format_comparison([])
    title = format_comparison([two, three]).splitlines()[0]
    assert title == f"**{two.protocol}**: mean ± std over each row's trials (%)"
    assert "- trials: varies, see the rows" in format_comparison([two, three]).splitlines()


def test_variant_labels():
    assert variant_labels([{"flip": False}, {"flip": "mean"}]) == ["plain", "flip (mean)"]
    assert variant_labels([{"rerank": None}, {"rerank": {"k1": 3}}]) == ["plain", "re-ranked"]
    assert variant_labels([{"feature": "plain", "flip": False}, {"feature": "official", "flip": "sum"}]) == [
        "feature plain",
        "feature official, flip (sum)",
    ]
    assert variant_labels([{"a": 1}, {"a": 1}]) == ["result 1", "result 2"]
    assert variant_labels([{"trials": [0]}, {"trials": [1]}]) == ["result 1", "result 2"]


def test_rerank_parameters():
    assert rerank_parameters(None) is None and rerank_parameters(False) is None
    assert rerank_parameters(True) == {"method": "k_reciprocal", "k1": 20, "k2": 6, "lambda_value": 0.3}
    assert rerank_parameters({"lambda_value": 0})["lambda_value"] == 0.0


# --------------------------------------------------------------------------------------------------------------
# JSON round trip, combine
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_query", [False, True])
def test_json_round_trip(per_query):
    ds = sysu_dataset()
    # Identity 99 has only camera-2 gallery images: its camera-3 queries are invalid (AP NaN).
    result = evaluate_protocol(
        SYSUProtocol(num_trials=3), ds, onehot_extractor(0.5), rerank=True, settings={"feature": "official"}
    ).with_settings(selection="val")
    text = json.dumps(result.as_dict(per_query=per_query), allow_nan=False)
    back = ProtocolResult.from_dict(json.loads(text))
    assert back.as_dict(per_query=per_query) == result.as_dict(per_query=per_query)
    assert back.format_table() == result.format_table()
    assert back.mean == result.mean and back.std == result.std and back.settings == result.settings
    for got, want in zip(back.trials, result.trials, strict=True):
        assert torch.equal(got.metrics.cmc, want.metrics.cmc.double())
        assert torch.equal(got.metrics.cmc_dedup, want.metrics.cmc_dedup.double())
        if per_query:
            torch.testing.assert_close(got.metrics.average_precision, want.metrics.average_precision, equal_nan=True)
        else:
            assert got.metrics.average_precision.numel() == 0


def test_json_with_invalid_queries_is_strict_json():
    from pathlib import Path

    from vireid_layers.data import ImageRecord, VIReIDDataset

    records = [ImageRecord(Path(f"/s/cam2/0099/{k:04d}.jpg"), 99, 2, VIS) for k in range(1, 3)]
    records += [ImageRecord(Path(f"/s/cam{c}/0099/0001.jpg"), 99, c, IR) for c in (3, 6)]
    records += [ImageRecord(Path(f"/s/cam{c}/0042/0001.jpg"), 42, c, m) for c, m in ((1, VIS), (2, VIS), (3, IR))]
    ds = VIReIDDataset("synthetic", Path("/s"), (), tuple(records))
    result = evaluate_protocol(SYSUProtocol(num_trials=1), ds, onehot_extractor(noise=0.0))
    data = json.loads(json.dumps(result.as_dict(per_query=True), allow_nan=False))
    assert None in data["trials"][0]["average_precision"]
    back = ProtocolResult.from_dict(data)
    assert torch.isnan(back.trials[0].metrics.average_precision).sum() == 1


def test_from_dict_refuses_bad_data():
    data = toy_result().as_dict()
    with pytest.raises(ValueError, match="lacks the key 'trials'"):
        ProtocolResult.from_dict({k: v for k, v in data.items() if k != "trials"})
    edited = json.loads(json.dumps(data))
    edited["mean"]["mAP"] = 0.99
    with pytest.raises(ValueError, match=r"inconsistent: mean\['mAP'\]"):
        ProtocolResult.from_dict(edited)


@given(
    st.lists(st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=4, max_size=4), min_size=1, max_size=5),
    st.sampled_from(["dedup", "standard"]),
)
def test_round_trip_property(rows, reported):
    ids = torch.tensor([0, 1, 0])
    gallery_ids = torch.tensor([0, 1, 1, 2])
    trials = []
    for t, row in enumerate(rows):
        d = torch.tensor([row, row[::-1], [x / 2 for x in row]])
        trials.append(TrialResult(t, 3, 4, retrieval_metrics(d, ids, gallery_ids)))
    result = ProtocolResult("p", {"trials": list(range(len(rows)))}, reported, tuple(trials))
    back = ProtocolResult.from_dict(json.loads(json.dumps(result.as_dict(), allow_nan=False)))
    assert back.as_dict() == result.as_dict() and back.format_table() == result.format_table()
    for key in result.mean:
        assert 0.0 <= result.mean[key] <= 1.0 and result.std[key] >= 0.0


def test_combine_keeps_settings_and_baselines():
    splits = [
        evaluate_protocol(
            RegDBProtocol("v2i"), regdb_dataset(), onehot_extractor(0.3 * s), rerank=True, settings={"split": s + 1}
        )
        for s in range(3)
    ]
    pooled = ProtocolResult.combine(splits)
    assert pooled.settings["split"] == [1, 2, 3] and pooled.settings["trials"] == [0, 1, 2]
    assert pooled.settings["direction"] == "visible_to_infrared"
    assert len(pooled.baselines) == 1 and pooled.baselines[0].num_trials == 3
    assert pooled.baselines[0].mean["mAP"] == pytest.approx(sum(s.baselines[0].mean["mAP"] for s in splits) / 3)
    assert "- split: varies, see the rows" not in pooled.format_table()
    assert "- split: [1, 2, 3]" in pooled.format_table().splitlines()
    plain = evaluate_protocol(RegDBProtocol("v2i"), regdb_dataset(), onehot_extractor())
    with pytest.raises(ValueError, match="same number of baselines"):
        ProtocolResult.combine([splits[0], plain])
