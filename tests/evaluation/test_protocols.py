"""Protocols on synthetic in-memory datasets: selections equal the official procedures, directions, results."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest
import torch

from vireid_layers import Modality
from vireid_layers.data import ImageRecord, VIReIDDataset
from vireid_layers.evaluation import (
    PROTOCOLS,
    Direction,
    LLCMProtocol,
    ProtocolResult,
    RegDBProtocol,
    SYSUProtocol,
    build_protocol,
    evaluate_protocol,
    exclude_same_identity_and_camera,
    exclude_sysu_indoor_camera,
    exclude_sysu_indoor_camera_reversed,
    parse_sysu_permutation,
    register_protocol,
    retrieval_metrics,
)
from vireid_layers.evaluation.protocols import sysu_permutation as permutation_module

VIS, IR = Modality.VISIBLE, Modality.INFRARED
SYSU_IDS = (1, 2, 5, 7, 11, 12)


def _shuffled(records, seed):
    records = list(records)
    random.Random(seed).shuffle(records)  # the protocols must not depend on the reader's order
    return tuple(records)


def sysu_dataset(seed: int = 0) -> VIReIDDataset:
    """SYSU-MM01 layout: cam1..6, 4-digit identity folders and files; some (identity, camera) pairs empty."""
    rng = random.Random(seed)
    records = []
    for pid in SYSU_IDS:
        for cam in range(1, 7):
            count = rng.choice([0, 1, 3, 12, 20])
            modality = IR if cam in (3, 6) else VIS
            records += [
                ImageRecord(Path(f"/d/SYSU-MM01/cam{cam}/{pid:04d}/{k:04d}.jpg"), pid, cam, modality)
                for k in range(1, count + 1)
            ]
    return VIReIDDataset("synthetic", Path("/d/SYSU-MM01"), (), _shuffled(records, seed))


def llcm_dataset(seed: int = 0) -> VIReIDDataset:
    """LLCM layout: test_vis/cam1..9, test_nir/cam1,2,4..9; unpadded file names (string order != numeric)."""
    rng = random.Random(seed)
    records = []
    for pid in (3, 4, 8, 20):
        for folder, modality, cams in (("test_vis", VIS, range(1, 10)), ("test_nir", IR, (1, 2, 4, 5, 6, 7, 8, 9))):
            for cam in cams:
                count = rng.choice([0, 1, 2, 11])
                records += [
                    ImageRecord(Path(f"/d/LLCM/{folder}/cam{cam}/{pid:04d}/{k}.jpg"), pid, cam, modality)
                    for k in range(1, count + 1)
                ]
    return VIReIDDataset("synthetic", Path("/d/LLCM"), (), _shuffled(records, seed))


def regdb_dataset() -> VIReIDDataset:
    records = []
    for pid in range(5):
        for k in range(3):
            records.append(ImageRecord(Path(f"/d/RegDB/Visible/{pid}/v{k}.bmp"), pid, 1, VIS))
            records.append(ImageRecord(Path(f"/d/RegDB/Thermal/{pid}/t{k}.bmp"), pid, 2, IR))
    return VIReIDDataset("synthetic", Path("/d/RegDB"), (), _shuffled(records, 1))


def official_sample(dataset, modality, cameras, trial):
    """The official process_gallery_*: GLOBAL random.seed(trial); random.choice(sorted(files)) per (id, cam)."""
    state = random.getstate()
    try:
        random.seed(trial)
        chosen = []
        for pid in sorted({r.identity for r in dataset.test}):
            for cam in cameras:
                files = sorted(
                    str(r.path)
                    for r in dataset.test
                    if r.identity == pid and r.camera == cam and r.modality == modality
                )
                if files:
                    chosen.append(random.choice(files))
        return chosen
    finally:
        random.setstate(state)


def official_query(dataset, modality, cameras):
    """The official process_query_*: for id sorted, for cam in order, the sorted files."""
    out = []
    for pid in sorted({r.identity for r in dataset.test}):
        for cam in cameras:
            out += sorted(
                str(r.path) for r in dataset.test if r.identity == pid and r.camera == cam and r.modality == modality
            )
    return out


def paths(records):
    return [str(r.path) for r in records]


def onehot_extractor(noise=0.05, calls=None):
    """Features = one-hot of the identity + small noise; records every (modalities of records, modality) call."""

    def extract(records, modality):
        if calls is not None:
            calls.append(({r.modality for r in records}, modality, len(records)))
        g = torch.Generator().manual_seed(len(records) + 7 * int(modality))
        x = torch.zeros(len(records), 32)
        x[torch.arange(len(records)), torch.tensor([r.identity % 32 for r in records], dtype=torch.long)] = 1
        return x + noise * torch.randn(x.shape, generator=g)

    return extract


# --------------------------------------------------------------------------------------------------------------
# Direction
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("v2i", Direction.VISIBLE_TO_INFRARED),
        ("I2V", Direction.INFRARED_TO_VISIBLE),
        ("visible_to_infrared", Direction.VISIBLE_TO_INFRARED),
        ("t2v", Direction.INFRARED_TO_VISIBLE),
        (Direction.INFRARED_TO_VISIBLE, Direction.INFRARED_TO_VISIBLE),
    ],
)
def test_direction_parse(name, expected):
    assert Direction.parse(name) is expected
    assert expected.reversed.reversed is expected
    assert expected.query_modality == expected.reversed.gallery_modality


def test_direction_parse_error_lists_options():
    with pytest.raises(ValueError, match=r"`direction` must be one of \[.*'i2v'.*'v2i'"):
        Direction.parse("sideways")


# --------------------------------------------------------------------------------------------------------------
# SYSU-MM01
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["all", "indoor"])
@pytest.mark.parametrize("trial", [0, 1, 7])
def test_sysu_seeded_gallery_is_the_official_one(mode, trial):
    ds = sysu_dataset()
    cams = (1, 2, 4, 5) if mode == "all" else (1, 2)
    p = SYSUProtocol(mode=mode)
    assert paths(p.gallery(ds, trial)) == official_sample(ds, VIS, cams, trial)
    assert {r.camera for r in p.gallery(ds, trial)} <= set(cams)


@pytest.mark.parametrize("mode", ["all", "indoor"])
def test_sysu_queries_are_all_infrared_of_cameras_3_and_6(mode):
    ds = sysu_dataset()
    p = SYSUProtocol(mode=mode)
    assert paths(p.query(ds)) == official_query(ds, IR, (3, 6))
    assert p.query_modality is IR and p.gallery_modality is VIS


def test_sysu_leaves_the_global_random_state_alone():
    ds = sysu_dataset()
    random.seed(12345)
    state = random.getstate()
    SYSUProtocol().gallery(ds, 3)
    SYSUProtocol(shots=10).gallery(ds, 4)
    LLCMProtocol("i2v").gallery(llcm_dataset(), 2)
    evaluate_protocol(SYSUProtocol(num_trials=2), ds, onehot_extractor())
    assert random.getstate() == state


def test_sysu_multishot():
    ds = sysu_dataset()
    p = SYSUProtocol(shots=10)
    galleries = [p.gallery(ds, t) for t in range(3)]
    for gallery in galleries:
        for pid in SYSU_IDS:
            for cam in (1, 2, 4, 5):
                available = {str(r.path) for r in ds.test if r.identity == pid and r.camera == cam}
                picked = [str(r.path) for r in gallery if r.identity == pid and r.camera == cam]
                assert len(picked) == len(set(picked)) == min(10, len(available))
                assert set(picked) <= available
    assert paths(galleries[0]) == paths(p.gallery(ds, 0))  # deterministic
    assert paths(galleries[0]) != paths(galleries[1])  # another trial, another gallery


def test_sysu_camera_3_queries_never_see_camera_2():
    # Identity 99 has gallery images in camera 2 only: its camera-3 queries have no match left (invalid),
    # its camera-6 queries keep camera 2.
    records = [ImageRecord(Path(f"/s/cam2/0099/{k:04d}.jpg"), 99, 2, VIS) for k in range(1, 3)]
    records += [ImageRecord(Path(f"/s/cam{c}/0099/0001.jpg"), 99, c, IR) for c in (3, 6)]
    records += [ImageRecord(Path(f"/s/cam{c}/0042/0001.jpg"), 42, c, m) for c, m in ((1, VIS), (2, VIS), (3, IR))]
    ds = VIReIDDataset("synthetic", Path("/s"), (), tuple(records))
    p = SYSUProtocol(num_trials=1)
    assert p.exclude is exclude_sysu_indoor_camera
    result = evaluate_protocol(p, ds, onehot_extractor(noise=0.0))
    metrics = result.trials[0].metrics
    queries = p.query(ds)
    valid = ~torch.isnan(metrics.average_precision)
    assert [(q.identity, q.camera) for q, v in zip(queries, valid.tolist(), strict=True) if not v] == [(99, 3)]
    # The reversed (visible-query) direction removes camera-3 gallery items for camera-2 queries.
    assert p.with_direction("v2i").exclude is exclude_sysu_indoor_camera_reversed


def test_sysu_visible_to_infrared_direction():
    ds = sysu_dataset()
    p = SYSUProtocol(direction="v2i")
    assert p.query_modality is VIS and p.gallery_modality is IR
    assert paths(p.query(ds)) == official_query(ds, VIS, (1, 2, 4, 5))
    assert paths(p.gallery(ds, 2)) == official_sample(ds, IR, (3, 6), 2)
    assert SYSUProtocol(mode="indoor", direction="v2i").gallery_cameras == (3,)


def _permutation(ds, trials=10, seed=0):
    """A rand_perm_cam-like mapping: per camera, per identity - 1, per trial, a shuffle of instance numbers."""
    rng = random.Random(seed)
    perm = {}
    for cam in range(1, 7):
        per_id = []
        for pid in range(1, max(SYSU_IDS) + 1):
            instances = sorted(int(r.path.stem) for r in ds.test if r.identity == pid and r.camera == cam)
            rows = []
            for _ in range(trials if instances else 0):
                row = instances[:]
                rng.shuffle(row)
                rows.append(tuple(row))
            per_id.append(tuple(rows))
        perm[cam] = tuple(per_id)
    return perm


@pytest.mark.parametrize(("mode", "shots"), [("all", 1), ("all", 10), ("indoor", 1), ("indoor", 10)])
def test_sysu_official_permutation_gallery(mode, shots):
    ds = sysu_dataset()
    perm = _permutation(ds)
    p = SYSUProtocol(mode=mode, shots=shots, gallery_sampling="official", permutation=perm)
    for trial in (0, 9):
        expected = []
        for pid in SYSU_IDS:
            for cam in p.gallery_cameras:
                rows = perm[cam][pid - 1]
                if rows:
                    names = sorted(f"/d/SYSU-MM01/cam{cam}/{pid:04d}/{i:04d}.jpg" for i in rows[trial][:shots])
                    expected += names
        assert paths(p.gallery(ds, trial)) == expected
    with pytest.raises(ValueError, match="out of range"):
        p.gallery(ds, 10)


def test_sysu_official_permutation_must_match_the_files():
    ds = sysu_dataset()
    perm = _permutation(ds)
    pid = next(r.identity for r in ds.test if r.camera == 1)
    broken = dict(perm)
    broken[1] = tuple(((999,),) * 10 if i == pid - 1 else rows for i, rows in enumerate(perm[1]))
    with pytest.raises(ValueError, match=f"cam1/{pid:04d}/0999"):
        SYSUProtocol(gallery_sampling="official", permutation=broken).gallery(ds, 0)


def _loadmat_like(perm):
    """The nested object arrays scipy.io.loadmat returns for a 6x1 cell of (ids x 1) cells of trials x n."""
    np = pytest.importorskip("numpy")
    outer = np.empty((len(perm), 1), dtype=object)
    for c, cam in enumerate(sorted(perm)):
        inner = np.empty((len(perm[cam]), 1), dtype=object)
        for i, rows in enumerate(perm[cam]):
            inner[i, 0] = np.array(rows, dtype=float) if rows else np.zeros((0, 0))
        outer[c, 0] = inner
    return outer


def test_parse_sysu_permutation_from_loadmat_structure():
    perm = _permutation(sysu_dataset(), trials=3)
    assert parse_sysu_permutation(_loadmat_like(perm)) == perm


def test_sysu_permutation_file(tmp_path):
    scipy_io = pytest.importorskip("scipy.io", reason="scipy is not installed: the .mat reader is skipped")
    ds = sysu_dataset()
    perm = _permutation(ds)
    path = tmp_path / "rand_perm_cam.mat"
    scipy_io.savemat(path, {"rand_perm_cam": _loadmat_like(perm)})
    from_file = SYSUProtocol(shots=10, gallery_sampling="official", permutation_file=path)
    in_memory = SYSUProtocol(shots=10, gallery_sampling="official", permutation=perm)
    assert paths(from_file.gallery(ds, 4)) == paths(in_memory.gallery(ds, 4))


def test_sysu_permutation_file_without_scipy(tmp_path, monkeypatch):
    path = tmp_path / "rand_perm_cam.mat"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    permutation_module._load_permutation_cached.cache_clear()
    p = SYSUProtocol(gallery_sampling="official", permutation_file=path)
    with pytest.raises(ImportError, match=r"needs scipy.*gallery_sampling='seeded'"):
        p.gallery(sysu_dataset(), 0)
    # The message names the optional extra that brings scipy, and pyproject.toml defines that extra.
    with pytest.raises(ImportError, match=r"the `sysu` extra with `pip install \"vireid-layers\[sysu\]\"`"):
        p.gallery(sysu_dataset(), 0)
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert re.search(r'(?ms)^sysu = \[\s*"scipy[^"]*",?[^\]]*\]', pyproject)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "outdoor"}, ValueError, "`mode`"),
        ({"shots": 0}, ValueError, "`shots`"),
        ({"shots": 1.0}, TypeError, "`shots`"),
        ({"gallery_sampling": "random"}, ValueError, "`gallery_sampling`"),
        ({"gallery_sampling": "official"}, ValueError, "`permutation_file`"),
        ({"permutation_file": "x.mat"}, ValueError, "only used with gallery_sampling='official'"),
        ({"direction": "up"}, ValueError, "`direction`"),
        ({"num_trials": 0}, ValueError, "`num_trials`"),
        ({"reported_cmc": "both"}, ValueError, "`reported_cmc`"),
    ],
)
def test_sysu_exception(kwargs, error, match):
    with pytest.raises(error, match=match):
        SYSUProtocol(**kwargs)


def test_missing_modality_and_bad_dataset():
    ds = sysu_dataset()
    visible_only = VIReIDDataset("synthetic", ds.root, (), tuple(r for r in ds.test if r.modality is VIS))
    with pytest.raises(ValueError, match="no infrared test records for the query side"):
        SYSUProtocol().query(visible_only)
    with pytest.raises(TypeError, match="`dataset`"):
        SYSUProtocol().query(list(ds.test))
    with pytest.raises(ValueError, match="`trial`"):
        SYSUProtocol().gallery(ds, -1)


# --------------------------------------------------------------------------------------------------------------
# RegDB
# --------------------------------------------------------------------------------------------------------------


def test_regdb_directions_swap_sets_and_modalities():
    ds = regdb_dataset()
    v2i, i2v = RegDBProtocol("v2i"), RegDBProtocol("i2v")
    visible = sorted(paths(r for r in ds.test if r.modality is VIS))
    thermal = sorted(paths(r for r in ds.test if r.modality is IR))
    assert sorted(paths(v2i.query(ds))) == visible == sorted(paths(i2v.gallery(ds)))
    assert sorted(paths(v2i.gallery(ds))) == thermal == sorted(paths(i2v.query(ds)))
    assert (v2i.query_modality, v2i.gallery_modality) == (VIS, IR)
    assert (i2v.query_modality, i2v.gallery_modality) == (IR, VIS)
    assert v2i.exclude is None and v2i.num_trials == 1 and v2i.reported_cmc == "standard"
    with pytest.raises(ValueError, match="`trial` must be 0 for RegDB"):
        v2i.gallery(ds, 1)


def test_regdb_combine_splits():
    results = [evaluate_protocol(RegDBProtocol("v2i"), regdb_dataset(), onehot_extractor(0.3 * s)) for s in range(3)]
    pooled = ProtocolResult.combine(results)
    assert pooled.num_trials == 3 and [t.trial for t in pooled.trials] == [0, 1, 2]
    values = torch.tensor([r.mean["mAP"] for r in results], dtype=torch.float64)
    assert pooled.mean["mAP"] == pytest.approx(float(values.mean()))
    assert pooled.std["mAP"] == pytest.approx(float(values.std()))  # sample standard deviation
    with pytest.raises(ValueError, match="mixes protocols"):
        ProtocolResult.combine(
            [results[0], evaluate_protocol(RegDBProtocol("i2v"), regdb_dataset(), onehot_extractor())]
        )


# --------------------------------------------------------------------------------------------------------------
# LLCM
# --------------------------------------------------------------------------------------------------------------

LLCM_VIS_CAMS, LLCM_NIR_CAMS = tuple(range(1, 10)), (1, 2, 4, 5, 6, 7, 8, 9)


@pytest.mark.parametrize("trial", [0, 5])
def test_llcm_infrared_to_visible_is_the_official_default(trial):
    ds = llcm_dataset()
    p = LLCMProtocol("i2v")
    assert paths(p.query(ds)) == official_query(ds, IR, LLCM_NIR_CAMS)
    assert paths(p.gallery(ds, trial)) == official_sample(ds, VIS, LLCM_VIS_CAMS, trial)
    assert p.exclude is exclude_same_identity_and_camera and p.reported_cmc == "dedup"


@pytest.mark.parametrize("trial", [0, 3])
def test_llcm_true_visible_to_infrared(trial):
    ds = llcm_dataset()
    p = LLCMProtocol("v2i")
    assert p.query_modality is VIS and p.gallery_modality is IR
    assert paths(p.query(ds, trial)) == official_query(ds, VIS, LLCM_VIS_CAMS)
    assert paths(p.gallery(ds, trial)) == official_sample(ds, IR, LLCM_NIR_CAMS, trial)


@pytest.mark.parametrize("trial", [0, 3])
def test_llcm_official_compat_mode_uses_sampled_infrared_queries(trial):
    ds = llcm_dataset()
    p = LLCMProtocol.official_sampled_infrared_queries()
    assert p == LLCMProtocol("v2i", official_vis_to_ir_compat=True)
    assert p.query_modality is IR and p.gallery_modality is VIS and p.sampled_side == "query"
    assert paths(p.query(ds, trial)) == official_sample(ds, IR, LLCM_NIR_CAMS, trial)
    assert paths(p.gallery(ds, trial)) == official_query(ds, VIS, LLCM_VIS_CAMS)
    assert "compat" in p.name
    with pytest.raises(ValueError, match="needs direction='visible_to_infrared'"):
        LLCMProtocol("i2v", official_vis_to_ir_compat=True)


def test_llcm_compat_extracts_each_image_once_through_its_stem():
    calls = []
    ds = llcm_dataset()
    result = evaluate_protocol(
        LLCMProtocol.official_sampled_infrared_queries(num_trials=3), ds, onehot_extractor(calls=calls)
    )
    assert [(mods, m) for mods, m, _ in calls] == [({IR}, IR), ({VIS}, VIS)]
    union = {str(r.path) for t in range(3) for r in LLCMProtocol.official_sampled_infrared_queries().query(ds, t)}
    assert calls[0][2] == len(union)
    assert [t.num_query for t in result.trials] == [len(LLCMProtocol("v2i", True).query(ds, t)) for t in range(3)]


# --------------------------------------------------------------------------------------------------------------
# Direction switch, evaluation, results
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "dataset"),
    [(SYSUProtocol(), sysu_dataset), (RegDBProtocol("v2i"), regdb_dataset), (LLCMProtocol("i2v"), llcm_dataset)],
)
def test_direction_switch_moves_sets_and_stems_together(protocol, dataset):
    ds = dataset()
    flipped = protocol.with_direction(protocol.direction.reversed)
    assert (flipped.query_modality, flipped.gallery_modality) == (protocol.gallery_modality, protocol.query_modality)
    for p in (protocol, flipped):
        assert {r.modality for r in p.query(ds)} == {p.query_modality}
        assert {r.modality for r in p.gallery(ds, 0)} == {p.gallery_modality}
        calls = []
        evaluate_protocol(p, ds, onehot_extractor(calls=calls), trials=[0])
        assert [(mods, m) for mods, m, _ in calls] == [
            ({p.query_modality}, p.query_modality),
            ({p.gallery_modality}, p.gallery_modality),
        ]


def test_evaluate_protocol_mean_and_std_over_trials():
    ds = sysu_dataset()
    calls = []
    result = evaluate_protocol(SYSUProtocol(), ds, onehot_extractor(calls=calls))
    assert result.num_trials == 10 and [t.trial for t in result.trials] == list(range(10))
    assert result.mean["rank1"] > 0.9 and result.mean["mAP"] > 0.8
    # Galleries are subsets of the candidates: every image is extracted once.
    union = {str(r.path) for t in range(10) for r in SYSUProtocol().gallery(ds, t)}
    assert calls[1][2] == len(union) and calls[0][2] == len(SYSUProtocol().query(ds))
    for key in ("rank1", "rank5_dedup", "mAP", "mINP"):
        values = torch.tensor([t.values()[key] for t in result.trials], dtype=torch.float64)
        assert result.mean[key] == pytest.approx(float(values.mean()))
        assert result.std[key] == pytest.approx(float(values.std()))
    # A trial is retrieval_metrics of the negated cosine similarity, with the SYSU rule.
    p, trial = SYSUProtocol(), 4
    q, g = p.query(ds), p.gallery(ds, trial)
    extract = onehot_extractor()
    qf, gf = extract(q, IR), extract(g, VIS)
    direct = p.evaluate(qf, lambda t: gf, ds, trials=[trial])
    expected = retrieval_metrics(
        -(torch.nn.functional.normalize(qf, dim=1) @ torch.nn.functional.normalize(gf, dim=1).T),
        torch.tensor([r.identity for r in q]),
        torch.tensor([r.identity for r in g]),
        torch.tensor([r.camera for r in q]),
        torch.tensor([r.camera for r in g]),
        exclude=exclude_sysu_indoor_camera,
    )
    assert torch.equal(direct.trials[0].metrics.cmc_dedup, expected.cmc_dedup)
    assert torch.equal(direct.trials[0].metrics.cmc, expected.cmc)
    assert direct.trials[0].metrics.mAP == expected.mAP


def test_evaluate_with_candidate_features_equals_evaluate_protocol():
    ds = llcm_dataset()
    p = LLCMProtocol("v2i", num_trials=3)
    qc, gc = p.query_candidates(ds), p.gallery_candidates(ds)
    table = {str(r.path): torch.randn(8, generator=torch.Generator().manual_seed(i)) for i, r in enumerate(ds.test)}

    def extract(records, modality):
        return torch.stack([table[str(r.path)] for r in records])

    direct = p.evaluate(extract(qc, VIS), extract(gc, IR), ds)
    end_to_end = evaluate_protocol(p, ds, extract)
    assert direct.as_dict() == end_to_end.as_dict()


def test_result_table_and_dict():
    result = evaluate_protocol(SYSUProtocol(num_trials=2), sysu_dataset(), onehot_extractor())
    table = result.format_table()
    lines = table.splitlines()
    assert lines[0].startswith("**SYSU-MM01 all-search single-shot, seeded gallery, infrared→visible**: 2 trials")
    assert lines[4].startswith("| identity-deduplicated (reported) |") and lines[5].startswith("| standard |")
    assert "±" in lines[4]
    data = json.loads(json.dumps(result.as_dict()))
    assert data["reported_cmc"] == "dedup" and data["settings"]["exclude"] == "exclude_sysu_indoor_camera"
    assert data["reported"]["rank1"]["mean"] == pytest.approx(result.mean["rank1_dedup"])
    assert len(data["trials"]) == 2 and {"rank20", "rank20_dedup", "mAP", "mINP"} <= set(data["trials"][0])


def test_evaluate_protocol_checks_the_extractor():
    ds = regdb_dataset()
    with pytest.raises(ValueError, match="one row per record"):
        evaluate_protocol(RegDBProtocol("v2i"), ds, lambda records, modality: torch.zeros(1, 4))
    with pytest.raises(TypeError, match="`extract`"):
        evaluate_protocol(RegDBProtocol("v2i"), ds, "extractor")
    with pytest.raises(TypeError, match="`protocol`"):
        evaluate_protocol("regdb", ds, onehot_extractor())
    with pytest.raises(ValueError, match="`query_features`"):
        RegDBProtocol("v2i").evaluate(torch.zeros(2, 4), torch.zeros(15, 4), ds)


# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------


def test_build_protocol():
    assert build_protocol("sysu-indoor-multi") == SYSUProtocol(mode="indoor", shots=10)
    assert build_protocol("sysu", mode="indoor", direction="v2i").gallery_cameras == (3,)
    assert build_protocol("regdb-i2v") == RegDBProtocol("i2v")
    assert build_protocol("llcm-official-vis-to-ir") == LLCMProtocol.official_sampled_infrared_queries()
    assert build_protocol("llcm-v2i", num_trials=2).num_trials == 2
    with pytest.raises(ValueError, match=r"`name` must be one of \[.*'llcm-i2v'.*'sysu-all-single'"):
        build_protocol("market1501")
    with pytest.raises(ValueError, match="fixes"):
        build_protocol("sysu-all-single", shots=10)


def test_register_protocol():
    with pytest.raises(ValueError, match="already registered"):
        register_protocol("sysu", SYSUProtocol)
    with pytest.raises(TypeError, match="`factory`"):
        register_protocol("new-protocol", 3)
    register_protocol("test-only-protocol", lambda: RegDBProtocol("v2i"))
    try:
        assert build_protocol("test-only-protocol") == RegDBProtocol("v2i")
    finally:
        del PROTOCOLS["test-only-protocol"]


# ------------------------------------------------------------------------------------------------ distances


def test_distances_against_plain_formulas() -> None:
    from vireid_layers.evaluation import negative_cosine_similarity, negative_dot_product

    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(5, 7, generator=gen, dtype=torch.float64), torch.randn(4, 7, generator=gen, dtype=torch.float64)
    dot = torch.tensor([[-sum(a * b for a, b in zip(qi.tolist(), gi.tolist(), strict=True)) for gi in g] for qi in q])
    torch.testing.assert_close(negative_dot_product(q, g), dot.double())
    norms = q.norm(dim=1, keepdim=True) * g.norm(dim=1)
    torch.testing.assert_close(negative_cosine_similarity(q, g), dot.double() / norms)
    # Unit-norm features: both rankings are the same distance.
    qn, gn = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)
    torch.testing.assert_close(negative_dot_product(qn, gn), negative_cosine_similarity(qn, gn))
    assert negative_dot_product(q.float(), g.half()).dtype == torch.float32


@pytest.mark.parametrize("shapes", [((3,), (2, 3)), ((2, 3), (2, 4))])
def test_dot_product_rejects_bad_shapes(shapes: tuple) -> None:
    from vireid_layers.evaluation import negative_dot_product

    with pytest.raises(ValueError, match=r"`(query|gallery)`"):
        negative_dot_product(torch.zeros(shapes[0]), torch.zeros(shapes[1]))
