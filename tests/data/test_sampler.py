"""Tests for the cross-modality identity sampler: batch composition, honest length, seeding, DDP split, resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from vireid_layers.data import ImageRecord
from vireid_layers.data.sampler import CrossModalityIdentitySampler
from vireid_layers.modality import Modality


def make_records(counts: dict[int, tuple[int, int]]) -> list[ImageRecord]:
    """Records with ``counts[identity] = (#visible, #infrared)``, modalities interleaved in dataset order."""
    records = []
    for pid, (nv, ni) in counts.items():
        for m, n in ((Modality.VISIBLE, nv), (Modality.INFRARED, ni)):
            records += [ImageRecord(Path(f"/d/{pid}/{m.name}_{j}.jpg"), pid, 1 + 2 * m, m) for j in range(n)]
    # shuffle deterministically so that the dataset order is neither identity- nor modality-sorted
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(123)).tolist()
    return [records[i] for i in order]


def check_batch(batch: list[int], records: list[ImageRecord], p: int, k: int) -> list[int]:
    """Assert the documented composition of one batch and return its identity sequence (length P)."""
    assert isinstance(batch, list) and all(isinstance(i, int) for i in batch)
    assert len(batch) == 2 * p * k
    assert all(0 <= i < len(records) for i in batch)
    vis, ir = batch[: p * k], batch[p * k :]
    assert all(records[i].modality == Modality.VISIBLE for i in vis)
    assert all(records[i].modality == Modality.INFRARED for i in ir)
    vis_ids = [records[i].identity for i in vis]
    ir_ids = [records[i].identity for i in ir]
    groups = [vis_ids[j * k : (j + 1) * k] for j in range(p)]
    assert all(len(set(g)) == 1 for g in groups)  # identity-major: K consecutive indices per identity
    identities = [g[0] for g in groups]
    assert len(set(identities)) == p  # P distinct identities
    assert ir_ids == vis_ids  # the same identity order in the infrared block
    return identities


COUNTS = {pid: (3 + pid % 4, 1 + pid % 3) for pid in range(10)}  # 10 identities, both modalities, uneven


# ------------------------------------------------------------------------------------------- composition


@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize(("p", "k"), [(1, 1), (3, 2), (4, 4), (10, 3)])
def test_batch_composition(p: int, k: int, replacement: bool) -> None:
    records = make_records(COUNTS)
    sampler = CrossModalityIdentitySampler(records, p, k, replacement=replacement, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        check_batch(batch, records, p, k)


def test_without_replacement_is_distinct_when_possible() -> None:
    # identity 0 has 6 visible / 2 infrared images, K = 4: visible draws distinct, infrared uses both images
    counts = {0: (6, 2), 1: (4, 5), 2: (9, 4)}
    records = make_records(counts)
    sampler = CrossModalityIdentitySampler(records, 2, 4, replacement=False, epoch_length=60, seed=0)
    for batch in sampler:
        check_batch(batch, records, 2, 4)
        for block in (batch[:8], batch[8:]):
            for j in range(2):
                group = block[4 * j : 4 * j + 4]
                record = records[group[0]]
                available = counts[record.identity][int(record.modality)]
                assert len(set(group)) == min(4, available)


def test_with_replacement_repeats_indices() -> None:
    # the official draw is with replacement: with 2 images and K = 4 repeats are certain, and with 5 images
    # and K = 4 some batch repeats an index (probability of no repeat per draw 5*4*3*2 / 5**4 = 0.19)
    records = make_records({0: (5, 2), 1: (5, 2)})
    sampler = CrossModalityIdentitySampler(records, 1, 4, epoch_length=50, seed=0)
    vis_blocks = [batch[:4] for batch in sampler]
    assert any(len(set(block)) < 4 for block in vis_blocks)


def test_single_modality_identities_never_drawn() -> None:
    counts = {0: (3, 3), 1: (4, 0), 2: (0, 5), 3: (2, 2), 4: (3, 1)}
    records = make_records(counts)
    sampler = CrossModalityIdentitySampler(records, 3, 2, epoch_length=40, seed=1)
    assert sampler.identities == (0, 3, 4)
    drawn = {records[i].identity for batch in sampler for i in batch}
    assert drawn == {0, 3, 4}


def test_arbitrary_identity_values() -> None:
    # identities need not be contiguous labels (the official sampler indexes lists by label value)
    counts = {-5: (2, 2), 10**12: (3, 1), 7: (1, 4)}
    records = make_records(counts)
    sampler = CrossModalityIdentitySampler(records, 3, 2, epoch_length=5)
    for batch in sampler:
        assert set(check_batch(batch, records, 3, 2)) == {-5, 7, 10**12}


def test_identity_draw_frequencies() -> None:
    # identities are drawn uniformly without replacement: each appears in a batch with probability P / C
    records = make_records(COUNTS)
    sampler = CrossModalityIdentitySampler(records, 3, 1, epoch_length=2000, seed=11)
    counts = torch.zeros(10)
    for batch in sampler:
        counts[[records[i].identity for i in batch[:3]]] += 1
    p = 3 / 10
    z = (counts - 2000 * p) / math.sqrt(2000 * p * (1 - p))
    assert z.abs().max() < 4, z


def test_instance_draw_frequencies() -> None:
    # with replacement, each of an identity's n images is drawn with probability 1 / n per slot
    records = make_records({0: (5, 3), 1: (5, 3)})
    sampler = CrossModalityIdentitySampler(records, 2, 4, epoch_length=1500, seed=5)
    hits: dict[int, int] = {}
    for batch in sampler:
        for i in batch:
            hits[i] = hits.get(i, 0) + 1
    for i, record in enumerate(records):
        n = 5 if record.modality == Modality.VISIBLE else 3
        trials = 1500 * 4
        z = (hits.get(i, 0) - trials / n) / math.sqrt(trials * (1 / n) * (1 - 1 / n))
        assert abs(z) < 4, (i, z)


def test_dataloader_batches() -> None:
    records = make_records(COUNTS)
    ids = torch.tensor([r.identity for r in records])
    mods = torch.tensor([int(r.modality) for r in records])
    dataset = TensorDataset(torch.arange(len(records)), ids, mods)
    sampler = CrossModalityIdentitySampler(records, 2, 3, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler)
    seen = list(loader)
    assert len(loader) == len(sampler) == len(seen)
    for (index, identity, modality), batch in zip(seen, sampler, strict=True):
        assert index.tolist() == batch
        assert modality.tolist() == [0] * 6 + [1] * 6
        assert identity[:6].tolist() == identity[6:].tolist()


def test_from_labels_matches_records() -> None:
    records = make_records(COUNTS)
    a = CrossModalityIdentitySampler(records, 3, 2, seed=9)
    b = CrossModalityIdentitySampler.from_labels(
        [r.identity for r in records], torch.tensor([int(r.modality) for r in records]), 3, 2, seed=9
    )
    assert list(a) == list(b)


# ------------------------------------------------------------------------------------------------ length


def test_official_length_formula() -> None:
    # SYSU-MM01 (22,258 visible, 11,909 infrared, P = 8, K = 4): 696 batches; RegDB (2,060 each): 65
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.arange(395), torch.arange(395), torch.randint(0, 395, (22258 + 11909 - 790,), generator=g)])
    mods = torch.cat([torch.zeros(395), torch.ones(395), torch.zeros(22258 - 395), torch.ones(11909 - 395)]).long()
    sysu = CrossModalityIdentitySampler.from_labels(ids, mods, 8, 4)
    assert (sysu.num_visible, sysu.num_infrared) == (22258, 11909)
    assert sysu.num_batches == len(sysu) == 22258 // 32 + 1 == 696
    regdb = CrossModalityIdentitySampler.from_labels(
        torch.arange(206).repeat(20), torch.tensor([0, 1]).repeat_interleave(2060), 8, 4
    )
    assert len(regdb) == 65
    # N = max(#visible, #infrared), also when the infrared set is the larger one
    small = CrossModalityIdentitySampler(make_records({0: (2, 30), 1: (3, 2)}), 2, 4)
    assert len(small) == 32 // 8 + 1 == 5
    # divisible N still gets the official extra batch
    exact = CrossModalityIdentitySampler(make_records({0: (8, 1), 1: (8, 1)}), 2, 4)
    assert len(exact) == 16 // 8 + 1 == 3


@pytest.mark.parametrize("epoch_length", ["official", "all_images", 1, 7])
@pytest.mark.parametrize("replicas", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_len_is_honest(epoch_length: str | int, replicas: int, drop_last: bool) -> None:
    records = make_records(COUNTS)  # 45 visible, 19 infrared
    expected_global = {"official": 45 // 6 + 1, "all_images": math.ceil(64 / 12), 1: 1, 7: 7}[epoch_length]
    if drop_last and expected_global < replicas:
        with pytest.raises(ValueError, match="drop_last"):
            CrossModalityIdentitySampler(
                records, 2, 3, epoch_length=epoch_length, num_replicas=replicas, rank=0, drop_last=True
            )
        return
    for rank in range(replicas):
        sampler = CrossModalityIdentitySampler(
            records, 2, 3, epoch_length=epoch_length, num_replicas=replicas, rank=rank, drop_last=drop_last
        )
        assert sampler.num_batches == expected_global
        per_rank = expected_global // replicas if drop_last else math.ceil(expected_global / replicas)
        assert len(sampler) == per_rank == len(list(sampler))
        sampler.set_epoch(4)
        assert len(list(sampler)) == per_rank


# ------------------------------------------------------------------------------------------- determinism


def test_determinism_and_epochs() -> None:
    records = make_records(COUNTS)
    a = CrossModalityIdentitySampler(records, 3, 2, seed=42)
    b = CrossModalityIdentitySampler(records, 3, 2, seed=42)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again without set_epoch repeats the epoch
    epoch0 = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != epoch0
    a.set_epoch(0)
    assert list(a) == epoch0
    other_seed = CrossModalityIdentitySampler(records, 3, 2, seed=43)
    assert list(other_seed) != epoch0


def test_seed_and_epoch_do_not_alias() -> None:
    # unlike seed + epoch, (seed 0, epoch 1) and (seed 1, epoch 0) give different batches
    records = make_records(COUNTS)
    a = CrossModalityIdentitySampler(records, 3, 2, seed=0)
    a.set_epoch(1)
    b = CrossModalityIdentitySampler(records, 3, 2, seed=1)
    assert list(a) != list(b)


def test_global_rng_untouched() -> None:
    records = make_records(COUNTS)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = list(CrossModalityIdentitySampler(records, 3, 2, seed=5))
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(1234)  # the global seed has no influence
    assert list(CrossModalityIdentitySampler(records, 3, 2, seed=5)) == first


# ---------------------------------------------------------------------------------------------------- DDP


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("epoch_length", ["official", 10])
def test_ddp_split(world: int, drop_last: bool, epoch_length: str | int) -> None:
    records = make_records(COUNTS)
    ranks = [
        CrossModalityIdentitySampler(
            records, 2, 3, seed=7, num_replicas=world, rank=r, drop_last=drop_last, epoch_length=epoch_length
        )
        for r in range(world)
    ]
    for s in ranks:
        s.set_epoch(2)
    per_rank = [list(s) for s in ranks]
    lengths = {len(s) for s in ranks} | {len(b) for b in per_rank}
    assert len(lengths) == 1  # the same number of steps on every rank
    length = lengths.pop()
    g = ranks[0].num_batches
    assert length == (g // world if drop_last else math.ceil(g / world))
    # the global sequence is the same on every rank, and rank r gets positions r, r + W, ...
    global_batches = ranks[0].global_batches()
    assert global_batches.shape == (world * length, 12)
    for s in ranks[1:]:
        assert torch.equal(s.global_batches(), global_batches)
    interleaved = [per_rank[pos % world][pos // world] for pos in range(world * length)]
    assert interleaved == global_batches.tolist()
    # and the global sequence is that of a single process, extended (or truncated) to a multiple of W
    single = CrossModalityIdentitySampler(records, 2, 3, seed=7, epoch_length=epoch_length)
    single.set_epoch(2)
    single_batches = list(single)
    common = min(len(single_batches), world * length)
    assert interleaved[:common] == single_batches[:common]
    for batch in interleaved:
        check_batch(batch, records, 2, 3)


def test_ddp_defaults_from_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    records = make_records(COUNTS)
    assert CrossModalityIdentitySampler(records, 2, 3).num_replicas == 1  # no process group: 1 / 0
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 4)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 3)
    sampler = CrossModalityIdentitySampler(records, 2, 3)
    assert (sampler.num_replicas, sampler.rank) == (4, 3)
    explicit = CrossModalityIdentitySampler(records, 2, 3, num_replicas=2, rank=1)
    assert (explicit.num_replicas, explicit.rank) == (2, 1)


# ------------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("consumed", [0, 1, 3, 5])
@pytest.mark.parametrize("rank", [0, 1])
def test_resume_continues_exactly(consumed: int, rank: int) -> None:
    records = make_records(COUNTS)

    def make() -> CrossModalityIdentitySampler:
        return CrossModalityIdentitySampler(records, 2, 3, seed=1, num_replicas=2, rank=rank, epoch_length=11)

    reference = make()
    reference.set_epoch(3)
    full = list(reference)  # 6 batches on each rank
    interrupted = make()
    interrupted.set_epoch(3)
    iterator = iter(interrupted)
    taken = [next(iterator) for _ in range(consumed)]
    assert taken == full[:consumed]
    state = interrupted.state_dict()
    assert state == {"seed": 1, "epoch": 3, "num_yielded": consumed, "num_replicas": 2, "num_global_batches": 12}

    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    resumed.set_epoch(3)  # the usual loop calls set_epoch(epoch) again: it keeps the position
    assert list(resumed) == full[consumed:]
    assert list(resumed) == full  # the next iteration of the same epoch starts from its beginning
    resumed.set_epoch(4)
    reference.set_epoch(4)
    assert list(resumed) == list(reference)


def test_resume_at_epoch_end_and_new_epoch() -> None:
    records = make_records(COUNTS)
    sampler = CrossModalityIdentitySampler(records, 2, 3, seed=0)
    batches = list(sampler)
    state = sampler.state_dict()
    assert state["num_yielded"] == len(sampler) == len(batches)
    resumed = CrossModalityIdentitySampler(records, 2, 3, seed=0)
    resumed.load_state_dict(state)
    assert list(resumed) == []  # the saved epoch was complete
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # a new epoch starts from its first batch
    sampler.set_epoch(1)
    assert list(resumed) == list(sampler)


def test_resume_with_engine_count() -> None:
    # the engine may store the number of batches it consumed (the DataLoader prefetches ahead of it)
    records = make_records(COUNTS)
    sampler = CrossModalityIdentitySampler(records, 2, 3, seed=0)
    full = list(sampler)
    state = {**sampler.state_dict(), "num_yielded": 2}
    resumed = CrossModalityIdentitySampler(records, 2, 3, seed=0)
    resumed.load_state_dict(state)
    assert list(resumed) == full[2:]


def test_load_state_dict_errors() -> None:
    records = make_records(COUNTS)
    sampler = CrossModalityIdentitySampler(records, 2, 3, seed=0)
    state = sampler.state_dict()
    with pytest.raises(ValueError, match="missing"):
        sampler.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="seed"):
        CrossModalityIdentitySampler(records, 2, 3, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="num_replicas"):
        CrossModalityIdentitySampler(records, 2, 3, seed=0, num_replicas=2, rank=0).load_state_dict(state)
    with pytest.raises(ValueError, match="num_global_batches"):
        CrossModalityIdentitySampler(records, 2, 3, seed=0, epoch_length=99).load_state_dict(state)
    with pytest.raises(ValueError, match="num_yielded"):
        sampler.load_state_dict({**state, "num_yielded": len(sampler) + 1})


# ------------------------------------------------------------------------------------------------- errors


def test_too_few_identities() -> None:
    records = make_records({0: (2, 2), 1: (3, 3), 2: (4, 0)})
    with pytest.raises(ValueError, match="num_identities") as info:
        CrossModalityIdentitySampler(records, 3, 2)
    assert "2 (of 3 identities)" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_identities": 0}, ValueError, "num_identities"),
        ({"num_instances": 0}, ValueError, "num_instances"),
        ({"num_instances": 2.0}, TypeError, "num_instances"),
        ({"epoch_length": "epoch"}, ValueError, "epoch_length"),
        ({"epoch_length": 0}, ValueError, "epoch_length"),
        ({"num_replicas": 2, "rank": 2}, ValueError, "rank"),
        ({"num_replicas": 0, "rank": 0}, ValueError, "num_replicas"),
        ({"replacement": 1}, TypeError, "replacement"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_argument_errors(kwargs: dict, error: type[Exception], match: str) -> None:
    args = {"num_identities": 2, "num_instances": 2, **kwargs}
    with pytest.raises(error, match=match):
        CrossModalityIdentitySampler(make_records(COUNTS), **args)


def test_record_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        CrossModalityIdentitySampler([], 1, 1)
    with pytest.raises(TypeError, match=r"records\[1\]"):
        CrossModalityIdentitySampler([make_records({0: (1, 0)})[0], (1, 2)], 1, 1)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="modalities"):
        CrossModalityIdentitySampler.from_labels([0, 0], [0, 2], 1, 1)
    with pytest.raises(ValueError, match="same length"):
        CrossModalityIdentitySampler.from_labels([0, 0, 1], [0, 1], 1, 1)
    with pytest.raises(TypeError, match="identities"):
        CrossModalityIdentitySampler.from_labels(torch.tensor([0.0, 0.0]), [0, 1], 1, 1)


def test_repr() -> None:
    sampler = CrossModalityIdentitySampler(make_records(COUNTS), 2, 3, seed=4)
    text = repr(sampler)
    for part in ("num_identities=2", "num_instances=3", "replacement=True", "epoch_length='official'", "seed=4"):
        assert part in text
    assert f"batches_per_rank={len(sampler)}" in text
    assert sampler.batch_size == 12


# -------------------------------------------------------------------------------------------- properties


@st.composite
def datasets(draw: st.DrawFn) -> tuple[dict[int, tuple[int, int]], int, int]:
    num_ids = draw(st.integers(1, 8))
    counts = {pid: (draw(st.integers(0, 6)), draw(st.integers(0, 6))) for pid in draw(st.permutations(range(num_ids)))}
    eligible = sum(1 for nv, ni in counts.values() if nv and ni)
    if eligible == 0:  # at least one identity with both modalities
        counts[num_ids] = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
        eligible = 1
    p = draw(st.integers(1, eligible))
    k = draw(st.integers(1, 5))
    return counts, p, k


@given(
    data=datasets(),
    replacement=st.booleans(),
    epoch_length=st.sampled_from(["official", "all_images", 3]),
    world=st.integers(1, 3),
    seed=st.integers(0, 2**40),
)
def test_property_composition_and_split(
    data: tuple[dict[int, tuple[int, int]], int, int], replacement: bool, epoch_length: str | int, world: int, seed: int
) -> None:
    counts, p, k = data
    records = make_records(counts)
    eligible = {pid for pid, (nv, ni) in counts.items() if nv and ni}
    ranks = [
        CrossModalityIdentitySampler(
            records, p, k, replacement=replacement, epoch_length=epoch_length, seed=seed, num_replicas=world, rank=r
        )
        for r in range(world)
    ]
    per_rank = [list(s) for s in ranks]
    assert all(len(b) == len(ranks[0]) for b in per_rank)
    interleaved = [per_rank[pos % world][pos // world] for pos in range(world * len(ranks[0]))]
    assert interleaved == ranks[0].global_batches().tolist()
    for batch in interleaved:
        assert set(check_batch(batch, records, p, k)) <= eligible
        if not replacement:
            for j in range(2 * p):
                group = batch[j * k : (j + 1) * k]
                record = records[group[0]]
                assert len(set(group)) == min(k, counts[record.identity][int(record.modality)])
