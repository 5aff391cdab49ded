"""retrieval_metrics against a plain per-query reference written from the definitions.

The reference ranks each query's gallery with Python's ``sorted`` on ``(distance, gallery index)`` (the
library's tie rule; NaN after +inf), drops the excluded items with plain predicates, and reads the standard
CMC, the identity-deduplicated CMC, AP and INP off the kept list one position at a time.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vireid_layers.evaluation import (
    MissingMatchWarning,
    exclude_same_camera,
    exclude_same_identity_and_camera,
    exclude_sysu_indoor_camera,
    exclude_sysu_indoor_camera_reversed,
    retrieval_metrics,
)
from vireid_layers.evaluation import metrics as metrics_module

# The removal rules from their definitions, one (query, gallery) pair at a time.
RULES = {
    "none": (None, lambda qi, qc, gi, gc: False),
    "sysu": (exclude_sysu_indoor_camera, lambda qi, qc, gi, gc: qc == 3 and gc == 2),
    "sysu_reversed": (exclude_sysu_indoor_camera_reversed, lambda qi, qc, gi, gc: qc == 2 and gc == 3),
    "same_id_cam": (exclude_same_identity_and_camera, lambda qi, qc, gi, gc: qi == gi and qc == gc),
    "same_cam": (exclude_same_camera, lambda qi, qc, gi, gc: qc == gc),
}


def _order(distance):
    """Sort key of one distance: by value, -0.0 equal to 0.0, every NaN equal and after +inf (torch.sort's order)."""
    return (1, 0.0) if math.isnan(distance) else (0, distance)


def reference_metrics(dist, q_ids, g_ids, q_cams, g_cams, removed, max_rank):
    """Standard CMC, dedup CMC, per-query AP, mAP, mINP and the number of valid queries, loop by loop."""
    num_q, num_g = len(dist), len(dist[0]) if dist else 0
    length = min(max_rank, num_g)
    cmc, dedup = [0] * length, [0] * length
    aps, inps, valid = [], [], 0
    for q in range(num_q):
        order = sorted(range(num_g), key=lambda g, q=q: (_order(dist[q][g]), g))
        kept = [g for g in order if not removed(q_ids[q], q_cams[q], g_ids[g], g_cams[g])]
        matches = [g_ids[g] == q_ids[q] for g in kept]
        if not any(matches):
            aps.append(math.nan)  # not valid: skipped by every metric and by the denominator
            continue
        valid += 1
        first = matches.index(True) + 1
        distinct = []  # gallery identities in order of first appearance
        for g in kept:
            if g_ids[g] not in distinct:
                distinct.append(g_ids[g])
        dedup_rank = distinct.index(q_ids[q]) + 1
        for k in range(1, length + 1):
            cmc[k - 1] += first <= k
            dedup[k - 1] += dedup_rank <= k
        hits, precision, last = 0, [], 0
        for rank, match in enumerate(matches, start=1):
            if match:
                hits += 1
                precision.append(hits / rank)
                last = rank
        aps.append(sum(precision) / hits)
        inps.append(hits / last)
    denominator = max(valid, 1)
    return {
        "cmc": [c / denominator for c in cmc],
        "cmc_dedup": [c / denominator for c in dedup],
        "ap": aps,
        "mAP": sum(a for a in aps if not math.isnan(a)) / denominator,
        "mINP": sum(inps) / denominator,
        "num_valid": valid,
    }


def assert_matches_reference(metrics, expected):
    assert metrics.num_valid == expected["num_valid"]
    torch.testing.assert_close(metrics.cmc.double(), torch.tensor(expected["cmc"], dtype=torch.float64))
    torch.testing.assert_close(metrics.cmc_dedup.double(), torch.tensor(expected["cmc_dedup"], dtype=torch.float64))
    assert metrics.mAP == pytest.approx(expected["mAP"], abs=1e-12)
    assert metrics.mINP == pytest.approx(expected["mINP"], abs=1e-12)
    torch.testing.assert_close(
        metrics.average_precision, torch.tensor(expected["ap"], dtype=torch.float64), equal_nan=True
    )


@st.composite
def retrieval_cases(draw):
    """Small cases with many ties (distances from a few levels), absent identities and every camera."""
    num_q = draw(st.integers(1, 6))
    num_g = draw(st.integers(1, 12))
    ids = st.integers(0, 3)
    cams = st.integers(1, 6)
    levels = draw(st.sampled_from([2, 4, 1000]))
    dist = [[draw(st.integers(0, levels - 1)) / 4 for _ in range(num_g)] for _ in range(num_q)]
    return (
        dist,
        draw(st.lists(ids, min_size=num_q, max_size=num_q)),
        draw(st.lists(ids, min_size=num_g, max_size=num_g)),
        draw(st.lists(cams, min_size=num_q, max_size=num_q)),
        draw(st.lists(cams, min_size=num_g, max_size=num_g)),
        draw(st.sampled_from(sorted(RULES))),
        draw(st.integers(1, 25)),
    )


@given(
    case=retrieval_cases(),
    chunk_size=st.sampled_from([1, 2, 4096]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]),
    counted=st.booleans(),
)
def test_reference(case, chunk_size, dtype, counted):
    # `counted`: ranks by one comparison pass per match (the usual path) or, forced here, by one sort per chunk
    # (the path of queries with very many matches).
    # No valid query at all is an error; queries without a match are skipped with a MissingMatchWarning.
    dist, q_ids, g_ids, q_cams, g_cams, rule, max_rank = case
    exclude, removed = RULES[rule]
    expected = reference_metrics(dist, q_ids, g_ids, q_cams, g_cams, removed, max_rank)
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if not counted:
            patch.setattr(metrics_module, "_MAX_COUNTED_MATCHES", 0)

        def call():
            return retrieval_metrics(
                torch.tensor(dist, dtype=dtype),
                torch.tensor(q_ids),
                torch.tensor(g_ids),
                torch.tensor(q_cams),
                torch.tensor(g_cams),
                exclude=exclude,
                max_rank=max_rank,
                chunk_size=chunk_size,
            )

        if expected["num_valid"] == 0:
            with pytest.raises(ValueError, match="no query has a true match"):
                call()
            return
        metrics = call()
    missing = len(q_ids) - expected["num_valid"]
    warned = [w for w in caught if issubclass(w.category, MissingMatchWarning)]
    assert len(warned) == (1 if missing else 0)
    if missing:
        assert str(warned[0].message).startswith(f"{missing} of {len(q_ids)} queries have no true match")
    assert metrics.cmc.shape == (min(max_rank, len(g_ids)),)
    assert_matches_reference(metrics, expected)


def test_ties_broken_by_gallery_index():
    # All distances equal: the ranked list is the gallery order. Query 0 (id 1) meets id 2, id 2, id 1.
    m = retrieval_metrics(torch.zeros(1, 3), torch.tensor([1]), torch.tensor([2, 2, 1]), max_rank=3)
    assert m.cmc.tolist() == [0.0, 0.0, 1.0]
    assert m.cmc_dedup.tolist() == [0.0, 1.0, 1.0]  # the repeated wrong identity takes one rank
    assert m.mAP == pytest.approx(1 / 3) and m.mINP == pytest.approx(1 / 3)


def test_worked_example_of_the_docs():
    # Ranked gallery ids for a query of id 7: [3, 3, 7, 5, 7]; standard rank 3, deduplicated rank 2.
    d = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5]])
    m = retrieval_metrics(d, torch.tensor([7]), torch.tensor([3, 3, 7, 5, 7]), max_rank=5)
    assert m.cmc.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert m.cmc_dedup.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert m.mAP == pytest.approx((1 / 3 + 2 / 5) / 2)
    assert m.mINP == pytest.approx(2 / 5)


def test_query_without_match_is_skipped():
    d = torch.tensor([[0.1, 0.2], [0.3, 0.1]])
    with pytest.warns(MissingMatchWarning, match=r"1 of 2 queries .* \(query indices 1\)"):
        m = retrieval_metrics(d, torch.tensor([1, 9]), torch.tensor([1, 2]), max_rank=2)
    assert m.num_valid == 1
    assert m.cmc.tolist() == [1.0, 1.0] and m.cmc_dedup.tolist() == [1.0, 1.0]  # denominator: valid queries
    assert math.isnan(float(m.average_precision[1]))
    assert m.mAP == 1.0 and m.mINP == 1.0


def test_missing_matches_option():
    """``"skip"``: silent, same metrics; ``"raise"``: an error naming the count; a bad value: ValueError."""
    d = torch.tensor([[0.1, 0.2], [0.3, 0.1], [0.2, 0.4]])
    q_ids, g_ids = torch.tensor([1, 9, 8]), torch.tensor([1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        skipped = retrieval_metrics(d, q_ids, g_ids, max_rank=2, missing_matches="skip")
    with pytest.warns(MissingMatchWarning):
        warned = retrieval_metrics(d, q_ids, g_ids, max_rank=2)
    assert skipped.num_valid == warned.num_valid == 1 and skipped.mAP == warned.mAP == 1.0
    with pytest.raises(ValueError, match=r"2 of 3 queries have no true match .* indices 1, 2\)"):
        retrieval_metrics(d, q_ids, g_ids, missing_matches="raise")
    with pytest.raises(ValueError, match="`missing_matches`"):
        retrieval_metrics(d, q_ids, g_ids, missing_matches="ignore")  # type: ignore[arg-type]
    with warnings.catch_warnings():  # every query valid: no warning, also with "raise"
        warnings.simplefilter("error")
        retrieval_metrics(d[:1], q_ids[:1], g_ids, missing_matches="raise")


@pytest.mark.parametrize("missing_matches", ["warn", "raise", "skip"])
def test_no_valid_query_is_an_error(missing_matches):
    """Was ``mAP 0.0`` (a number one could publish); no query with a true match leaves nothing to score."""
    with pytest.raises(ValueError, match=r"no query has a true match .*0 valid of 2 queries"):
        retrieval_metrics(
            torch.rand(2, 3), torch.tensor([5, 6]), torch.tensor([1, 2, 3]), missing_matches=missing_matches
        )
    with pytest.raises(ValueError, match="0 valid of 0 queries"):  # no query at all
        retrieval_metrics(torch.rand(0, 3), torch.zeros(0, dtype=torch.long), torch.tensor([1, 2, 3]))


def test_empty_gallery_is_an_error():
    with pytest.raises(ValueError, match="gallery is empty"):
        retrieval_metrics(torch.rand(2, 0), torch.tensor([1, 2]), torch.zeros(0, dtype=torch.long))


def test_sysu_rule_removes_camera_2_for_camera_3_queries():
    # Query (id 1, cam 3); the only true match is in camera 2, so the query becomes invalid; a camera-6
    # query of the same identity keeps it.
    d = torch.tensor([[0.1, 0.5], [0.1, 0.5]])
    kwargs = {"exclude": exclude_sysu_indoor_camera, "max_rank": 2}
    with pytest.warns(MissingMatchWarning, match="query indices 0"):
        m = retrieval_metrics(
            d, torch.tensor([1, 1]), torch.tensor([1, 2]), torch.tensor([3, 6]), torch.tensor([2, 1]), **kwargs
        )
    assert m.num_valid == 1 and math.isnan(float(m.average_precision[0])) and m.average_precision[1] == 1.0


def test_llcm_rule_removes_same_identity_same_camera_only():
    d = torch.tensor([[0.1, 0.2, 0.3]])
    m = retrieval_metrics(
        d,
        torch.tensor([4]),
        torch.tensor([4, 8, 4]),
        torch.tensor([2]),
        torch.tensor([2, 2, 5]),
        exclude=exclude_same_identity_and_camera,
        max_rank=3,
    )
    # Kept ranked list: id 8 (cam 2, other identity), id 4 (cam 5) -> first match at rank 2.
    assert m.cmc.tolist()[:2] == [0.0, 1.0] and m.mAP == pytest.approx(0.5)


def test_max_rank_larger_than_gallery():
    m = retrieval_metrics(torch.tensor([[0.2, 0.1]]), torch.tensor([1]), torch.tensor([1, 2]), max_rank=20)
    assert m.cmc.shape == (2,) and m.cmc.tolist() == [0.0, 1.0]


def test_signed_zero_distances():
    # -0.0 ties with +0.0 (broken by gallery index).
    d = torch.tensor([[3.0, 0.0, 2.0, 4.0, -0.0, -1.0], [5.0, 6.0, 0.5, 7.0, -0.0, 0.0]])
    q_ids, g_ids = torch.tensor([1, 2]), torch.tensor([1, 2, 3, 1, 2, 4])
    m = retrieval_metrics(d, q_ids, g_ids, max_rank=6)
    expected = reference_metrics(d.tolist(), q_ids.tolist(), g_ids.tolist(), [0, 0], [0] * 6, RULES["none"][1], 6)
    assert_matches_reference(m, expected)
    # Query 0 ranks: -1.0 (id 4), 0.0 (id 2), -0.0 (id 2), 2.0 (id 3), 3.0 (id 1), 4.0 (id 1) -> matches at 5, 6.
    assert float(m.average_precision[0]) == pytest.approx((1 / 5 + 2 / 6) / 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize(
    ("fill", "count", "kind"),
    [("all_nan", 24, "24 NaN, 0 infinite"), ("all_inf", 24, "0 NaN, 24 infinite"), ("one_nan", 1, "1 NaN")],
)
def test_non_finite_distances_are_refused(dtype, fill, count, kind):
    """Used to score mAP 0.425 / Rank-1 0.25 (all NaN), 0.425 (all inf), 0.283 (one NaN): now a ValueError."""
    d = torch.rand(4, 6, generator=torch.Generator().manual_seed(0)).to(dtype)
    if fill == "all_nan":
        d.fill_(float("nan"))
    elif fill == "all_inf":
        d.fill_(float("inf"))
    else:
        d[2, 3] = float("nan")
    with pytest.raises(ValueError, match=rf"`distances` must be finite, got {count} non-finite entries \({kind}"):
        retrieval_metrics(d, torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3, 4, 5]))
    d = torch.rand(4, 6).to(dtype)
    d[0, 0] = -float("inf")
    with pytest.raises(ValueError, match="`distances` must be finite, got 1 non-finite"):
        retrieval_metrics(d, torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3, 4, 5]))


def test_float64_distances_keep_their_precision():
    # 1e-12 apart: equal in float32 (the tie would put the match first) but not in float64.
    d = torch.tensor([[0.1 + 1e-12, 0.1]], dtype=torch.float64)
    m = retrieval_metrics(d, torch.tensor([1]), torch.tensor([1, 2]), max_rank=2)
    assert m.cmc.tolist() == [0.0, 1.0] and m.mAP == 0.5


def test_integer_distances():
    d = torch.tensor([[3, 1, 2, 1], [0, 0, 5, -2]])
    q_ids, g_ids = torch.tensor([1, 2]), torch.tensor([2, 1, 1, 2])
    m = retrieval_metrics(d, q_ids, g_ids, max_rank=4)
    expected = reference_metrics(d.tolist(), q_ids.tolist(), g_ids.tolist(), [0, 0], [0] * 4, RULES["none"][1], 4)
    assert_matches_reference(m, expected)


def test_many_matches_per_query():
    # More matches per query than the comparison path counts: the ranks come from one sort of the chunk.
    g = torch.Generator().manual_seed(2)
    num_g = 5 * metrics_module._MAX_COUNTED_MATCHES
    d = torch.randint(0, 9, (12, num_g), generator=g).float()
    q_ids, g_ids = torch.randint(0, 2, (12,), generator=g), torch.randint(0, 2, (num_g,), generator=g)
    q_cams, g_cams = torch.randint(1, 4, (12,), generator=g), torch.randint(1, 4, (num_g,), generator=g)
    kept_matches = (q_ids[:, None] == g_ids) & (q_cams[:, None] != g_cams)
    assert kept_matches.sum(1).min() > metrics_module._MAX_COUNTED_MATCHES  # every chunk takes the sort path
    m = retrieval_metrics(d, q_ids, g_ids, q_cams, g_cams, exclude=exclude_same_camera, chunk_size=5)
    expected = reference_metrics(
        d.tolist(), q_ids.tolist(), g_ids.tolist(), q_cams.tolist(), g_cams.tolist(), RULES["same_cam"][1], 20
    )
    assert_matches_reference(m, expected)


def test_chunk_sizes_agree_on_a_larger_case():
    g = torch.Generator().manual_seed(0)
    d = torch.randint(0, 5, (300, 80), generator=g).float()  # many ties
    q_ids, g_ids = torch.randint(0, 20, (300,), generator=g), torch.randint(0, 20, (80,), generator=g)
    q_cams, g_cams = torch.randint(1, 7, (300,), generator=g), torch.randint(1, 7, (80,), generator=g)
    kw = {"exclude": exclude_same_identity_and_camera, "missing_matches": "skip"}  # 10 queries lose every match
    a = retrieval_metrics(d, q_ids, g_ids, q_cams, g_cams, chunk_size=1, **kw)
    b = retrieval_metrics(d, q_ids, g_ids, q_cams, g_cams, chunk_size=10_000, **kw)
    with pytest.MonkeyPatch.context() as patch:  # on CPU, chunks also hold at most this many pairs (here: 3 rows)
        patch.setattr(metrics_module, "_CPU_CHUNK_PAIRS", 3 * 80)
        c = retrieval_metrics(d, q_ids, g_ids, q_cams, g_cams, chunk_size=10_000, **kw)
    assert torch.equal(b.cmc, c.cmc) and torch.equal(b.cmc_dedup, c.cmc_dedup)
    torch.testing.assert_close(b.average_precision, c.average_precision, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(a.cmc, b.cmc) and torch.equal(a.cmc_dedup, b.cmc_dedup)
    assert a.num_valid == b.num_valid
    torch.testing.assert_close(a.average_precision, b.average_precision, equal_nan=True, rtol=0, atol=0)
    # mINP is a running float sum over chunks: equal up to the last bits.
    assert a.mAP == pytest.approx(b.mAP, abs=1e-14) and a.mINP == pytest.approx(b.mINP, abs=1e-14)
    expected = reference_metrics(
        d.tolist(), q_ids.tolist(), g_ids.tolist(), q_cams.tolist(), g_cams.tolist(), RULES["same_id_cam"][1], 20
    )
    assert_matches_reference(a, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(1)
    d = torch.randint(0, 6, (64, 40), generator=g).float()
    q_ids, g_ids = torch.randint(0, 8, (64,), generator=g), torch.randint(0, 8, (40,), generator=g)
    q_cams, g_cams = torch.randint(1, 7, (64,), generator=g), torch.randint(1, 7, (40,), generator=g)
    cpu = retrieval_metrics(d, q_ids, g_ids, q_cams, g_cams, exclude=exclude_sysu_indoor_camera)
    gpu = retrieval_metrics(
        d.cuda(), q_ids.cuda(), g_ids.cuda(), q_cams.cuda(), g_cams.cuda(), exclude=exclude_sysu_indoor_camera
    )
    assert gpu.cmc.device.type == "cuda"
    assert torch.equal(cpu.cmc, gpu.cmc.cpu()) and torch.equal(cpu.cmc_dedup, gpu.cmc_dedup.cpu())
    assert cpu.mAP == pytest.approx(gpu.mAP, abs=1e-12) and cpu.mINP == pytest.approx(gpu.mINP, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"distances": [[0.1]]}, TypeError, "`distances`"),
        ({"distances": torch.zeros(3)}, ValueError, "`distances`"),
        ({"query_ids": torch.tensor([1, 2, 3])}, ValueError, "`query_ids`"),
        ({"gallery_ids": torch.tensor([[1, 2]])}, ValueError, "`gallery_ids`"),
        ({"exclude": exclude_same_camera, "query_cams": None}, ValueError, "`query_cams`"),
        ({"exclude": exclude_same_camera, "gallery_cams": torch.tensor([1])}, ValueError, "`gallery_cams`"),
        ({"exclude": exclude_same_camera, "query_cams": [1, 2]}, TypeError, "`query_cams`"),
        ({"max_rank": 0}, ValueError, "`max_rank`"),
        ({"chunk_size": 0}, ValueError, "`chunk_size`"),
    ],
)
def test_exception(kwargs, error, match):
    args = {
        "distances": torch.rand(2, 2),
        "query_ids": torch.tensor([1, 2]),
        "gallery_ids": torch.tensor([1, 2]),
        "query_cams": torch.tensor([1, 1]),
        "gallery_cams": torch.tensor([2, 2]),
    } | kwargs
    positional = [args.pop(k) for k in ("distances", "query_ids", "gallery_ids", "query_cams", "gallery_cams")]
    with pytest.raises(error, match=match):
        retrieval_metrics(*positional, **args)
