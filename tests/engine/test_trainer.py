"""Tests of the training engine: learning, exact resume, atomic checkpoints, validation, DDP on gloo, the run
directory after an interruption (stale temporaries, metric rows), the evaluation interface and the plots.

The recipes are tested in tests/recipes/, the example scripts in tests/examples/test_examples.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vireid_layers import HardTripletLoss
from vireid_layers.data import CrossModalityIdentitySampler, ImageSample
from vireid_layers.engine import (
    Trainer,
    TrainerConfig,
    WarmupStepSchedule,
    default_forward,
    default_gather,
    load_checkpoint,
    save_checkpoint,
)
from vireid_layers.engine import checkpoint as checkpoint_module
from vireid_layers.recipes import DEENSchedule, deen_lr_factor, deen_param_groups

NUM_IDS, PER_ID = 6, 4  # identities, images per identity and modality
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_determinism() -> object:
    """``Trainer(deterministic=True)`` switches a process-wide flag; give the rest of the session its old value."""
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


class NoisyImages(Dataset):
    """Fixed random "images" per identity plus fresh noise from the global torch RNG at every access."""

    def __init__(self, noise: float = 0.1) -> None:
        g = torch.Generator().manual_seed(123)
        self.ids = torch.arange(NUM_IDS).repeat_interleave(2 * PER_ID)
        self.mods = torch.tensor([0] * PER_ID + [1] * PER_ID).repeat(NUM_IDS)
        centres = torch.randn(NUM_IDS, 3, 8, 4, generator=g)
        self.images = centres[self.ids] + 0.5 * torch.randn(len(self.ids), 3, 8, 4, generator=g)
        self.noise = noise

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> ImageSample:
        image = self.images[i] + self.noise * torch.randn(3, 8, 4)  # consumes the global RNG (augmentation)
        return ImageSample(image, int(self.ids[i]), 1 + int(self.mods[i]), int(self.mods[i]))


class TinyNet(nn.Module):
    """A two-stem embedding network small enough for millisecond steps."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.stems = nn.ModuleList(nn.Linear(96, 32) for _ in range(2))
        self.body = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 16))
        self.classifier = nn.Linear(16, NUM_IDS)

    def forward(self, images: Tensor, modalities: Tensor) -> tuple[Tensor, Tensor]:
        x = images.flatten(1)
        x = torch.where(modalities[:, None] == 0, self.stems[0](x), self.stems[1](x))
        emb = self.body(x)
        return emb, self.classifier(emb)


class TinyCriterion(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.triplet = HardTripletLoss(margin=0.3)

    def forward(self, output: tuple[Tensor, Tensor], batch: ImageSample) -> dict[str, Tensor]:
        emb, logits = output
        return {"ce": F.cross_entropy(logits, batch.identity), "triplet": self.triplet(emb, batch.identity)}


def make_loader(seed: int = 0, num_replicas: int = 1, rank: int = 0) -> DataLoader:
    data = NoisyImages()
    sampler = CrossModalityIdentitySampler.from_labels(
        data.ids, data.mods, 2, 2, epoch_length=3, seed=seed, num_replicas=num_replicas, rank=rank
    )
    return DataLoader(data, batch_sampler=sampler)


def image_forward(model: nn.Module, batch: ImageSample) -> tuple[Tensor, Tensor]:
    return model(batch.image, batch.modality)


#: The Trainer's own keyword arguments; every other keyword of `make_trainer` is a TrainerConfig option.
COLLABORATORS = ("schedule", "forward", "gather", "evaluate", "test", "hparams")


def make_trainer(run_dir: Path | None, epochs: int, *, model_seed: int = 0, **kwargs) -> Trainer:
    torch.manual_seed(model_seed)
    model = TinyNet(**kwargs.pop("model_kwargs", {}))
    optimizer = torch.optim.SGD(deen_param_groups(model, 0.1), lr=0.1, momentum=0.9, nesterov=True)
    own = {k: kwargs.pop(k) for k in COLLABORATORS if k in kwargs}
    own.setdefault("schedule", DEENSchedule(warmup_epochs=2, milestones=(3,)))
    own.setdefault("forward", image_forward)
    criterion = kwargs.pop("criterion", None) or TinyCriterion()
    config = TrainerConfig(
        device="cpu", run_dir=run_dir, epochs=epochs, log_every=1, progress=False, deterministic=True, **kwargs
    )
    return Trainer(model, criterion, optimizer, make_loader(), config, **own)


def test_schedule_official_values() -> None:
    assert [deen_lr_factor(e) for e in (0, 4, 9, 10, 19)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    assert deen_lr_factor(20) == pytest.approx(0.1) and deen_lr_factor(79) == pytest.approx(0.1)
    assert deen_lr_factor(80) == pytest.approx(0.01) and deen_lr_factor(150) == pytest.approx(0.01)
    groups = deen_param_groups(TinyNet(), 0.1)
    assert [g["base_lr"] for g in groups] == [pytest.approx(0.01), 0.1]


def test_short_run_lowers_loss_and_writes_run_dir(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, epochs=4, model_kwargs={"dropout": 0.0})
    result = trainer.fit()
    first, last = result.history[0]["total"], result.history[-1]["total"]
    assert last < first
    for name in ("config.json", "env.json", "train.log", "metrics.csv", "metrics.jsonl", "last.pt"):
        assert (tmp_path / name).is_file(), name
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"ce", "triplet", "total", "lr", "epoch", "step"} <= set(header)
    assert "plots skipped" in (tmp_path / "train.log").read_text() or (tmp_path / "plots").is_dir()
    # Strict JSON: no NaN/Infinity tokens (the gradient norm is not measured without clipping: null).
    rows = [json.loads(line, parse_constant=_reject) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert train_rows and all(r["grad_norm"] is None for r in train_rows)


def _reject(token: str) -> None:
    raise ValueError(f"non-standard JSON constant {token}")


def test_resume_is_bit_exact(tmp_path: Path) -> None:
    full = make_trainer(tmp_path / "full", epochs=4)
    full.fit()
    reference = {k: v.clone() for k, v in full.module.state_dict().items()}

    first = make_trainer(tmp_path / "cut", epochs=2)
    first.fit()
    # A fresh process would rebuild everything: different initial weights and RNG prove the state is restored.
    torch.manual_seed(999)
    second = make_trainer(tmp_path / "cut", epochs=4, model_seed=7)
    result = second.fit(resume=tmp_path / "cut" / "last.pt")
    assert result.epochs == 4
    resumed = second.module.state_dict()
    for key, value in reference.items():
        assert torch.equal(value, resumed[key]), key
    assert [h["total"] for h in result.history] == [h["total"] for h in full.history]


def test_resume_mid_epoch_is_bit_exact(tmp_path: Path) -> None:
    """A checkpoint written inside an epoch continues that epoch at the next batch, with the same result."""
    full = make_trainer(tmp_path / "full", epochs=2)
    full.fit()

    cut = make_trainer(tmp_path / "cut", epochs=2, checkpoint_every_steps=1)
    real_step = cut.train_step

    def crash_after_four_steps(batch: object) -> dict[str, float]:
        if cut.global_step == 4:  # epoch 1 (of 3 steps each), after its first step
            raise KeyboardInterrupt
        return real_step(batch)

    cut.train_step = crash_after_four_steps  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 1, 4)
    assert state["sampler"]["epoch"] == 1 and state["sampler"]["num_yielded"] == 1

    torch.manual_seed(999)  # a fresh process: other weights and RNG, all restored from the checkpoint
    resumed = make_trainer(tmp_path / "cut", epochs=2, model_seed=7)
    result = resumed.fit(resume=tmp_path / "cut" / "last.pt")
    assert result.epochs == 2 and resumed.global_step == full.global_step == 6
    for key, value in full.module.state_dict().items():
        assert torch.equal(value, resumed.module.state_dict()[key]), key
    assert [h["total"] for h in result.history] == [h["total"] for h in full.history]
    assert [h["steps"] for h in result.history] == [3, 3]


@pytest.mark.parametrize("value", [0, 1.5, True])
def test_checkpoint_every_steps_is_checked(value: object) -> None:
    with pytest.raises(ValueError, match="`checkpoint_every_steps` must be an int >= 1 or None"):
        TrainerConfig(device="cpu", checkpoint_every_steps=value)


def test_resume_logs_configuration_changes(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=1, hparams={"epochs": 1, "lr": 0.1}).fit()
    make_trainer(tmp_path, epochs=2, hparams={"epochs": 2, "lr": 0.1}).fit(resume=tmp_path / "last.pt")
    log = (tmp_path / "train.log").read_text()
    assert "differs from config.json: epochs: 1 -> 2" in log and "lr:" not in log.split("differs")[1].splitlines()[0]
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 1  # the run's record is kept


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=1).fit()
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scaler", "sampler", "rng", "epoch", "scheduler"} <= set(state)
    assert state["epoch"] == 1 and state["sampler"]["epoch"] == 0
    assert {"torch", "numpy", "python", "cuda"} <= set(state["rng"])


def test_failed_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def broken_save(obj: object, f: object) -> None:
        f.write(b"PK\x03\x04 partial bytes")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind


def test_sigkill_during_write_keeps_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    script = textwrap.dedent(
        f"""
        import time, torch
        from vireid_layers.engine import checkpoint
        real_save = torch.save
        def slow_save(obj, f):
            f.write(b"partial")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
            real_save(obj, f)
        checkpoint.torch.save = slow_save
        checkpoint.save_checkpoint({{"epoch": 2, "w": torch.zeros(3)}}, {str(path)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    # The killed writer could not delete its temporary file; the next run in the directory does, on start.
    orphans = list(tmp_path.glob(".last.pt.*.tmp"))
    assert len(orphans) == 1 and orphans[0].read_bytes() == b"partial"
    (tmp_path / "notes.tmp").write_text("not a checkpoint temporary: kept")
    make_trainer(tmp_path, epochs=1).fit()
    assert not list(tmp_path.glob(".*.tmp")) and (tmp_path / "notes.tmp").is_file()
    assert f"removed {orphans[0].name}" in (tmp_path / "train.log").read_text()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"amp": "fp8"}, "`amp` must be one of"),
        ({"epochs": 0}, "`epochs` must be an int >= 1"),
        ({"grad_clip": -1.0}, "`grad_clip` must be a positive number"),
        ({"select_on": "train"}, "`select_on` must be one of"),
    ],
)
def test_bad_trainer_configuration_fails_early(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainerConfig(device="cpu", **kwargs)


# ------------------------------------------------------------------------------------------------ DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        model = TinyNet(dropout=0.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = Trainer(
            model,
            TinyCriterion(),
            optimizer,
            make_loader(num_replicas=world_size, rank=rank),
            TrainerConfig(device="cpu"),
            forward=image_forward,
        )
        batch = next(iter(trainer.train_loader))
        values = trainer.train_step(batch)
        torch.save(
            {"values": values, "batch": tuple(batch), "state": trainer.module.state_dict()},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_gloo_matches_single_process(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["values"]["total"] == pytest.approx(ranks[1]["values"]["total"], abs=0, rel=1e-6)
    # The same global batch in one process.
    images = torch.cat([r["batch"][0] for r in ranks])
    labels = torch.cat([r["batch"][1] for r in ranks])
    modalities = torch.cat([r["batch"][3] for r in ranks])
    torch.manual_seed(0)
    model = TinyNet(dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    terms = TinyCriterion()(model(images, modalities), ImageSample(images, labels, labels, modalities))
    total = sum(terms.values())
    assert float(total.detach()) == pytest.approx(ranks[0]["values"]["total"], rel=1e-5)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ranks[1]["state"][key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"amp": "bf16"},
        {"amp": "fp16"},
        {"channels_last": True, "grad_clip": 1.0},
        {"compile": {"backend": "eager"}},
    ],
    ids=["bf16", "fp16-scaler", "channels_last-clip", "compile-eager"],
)
def test_precision_and_layout_flags(tmp_path: Path, kwargs: dict) -> None:
    trainer = make_trainer(tmp_path, epochs=1, **kwargs)
    result = trainer.fit()
    assert all(torch.isfinite(torch.tensor(h["total"])) for h in result.history)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])
    if kwargs.get("amp") == "fp16":
        assert state["scaler"] and "scale" in state["scaler"]
    if "grad_clip" in kwargs:
        assert result.history[0]["grad_norm"] > 0


# ------------------------------------------------------------------------------------------------ resumed run dir


def _crash_at(trainer: Trainer, step: int) -> None:
    real_step = trainer.train_step

    def crash(batch: object) -> dict[str, float]:
        if trainer.global_step == step:
            raise KeyboardInterrupt
        return real_step(batch)

    trainer.train_step = crash  # type: ignore[method-assign]


@pytest.mark.parametrize("row_counts", [True, False], ids=["row-counts", "old-checkpoint-by-step"])
def test_resume_cuts_the_rows_logged_after_the_checkpoint(tmp_path: Path, row_counts: bool) -> None:
    """Steps logged after the checkpoint by the interrupted run appear once: the files equal an uninterrupted run's."""
    full = make_trainer(tmp_path / "full", epochs=2, eval_every=1, evaluate=lambda m: {"score": 0.5})
    full.fit()
    cut = make_trainer(tmp_path / "cut", epochs=2, eval_every=1, evaluate=lambda m: {"score": 0.5})
    _crash_at(cut, 5)  # epochs of 3 steps: last.pt at step 3, rows of steps 4 and 5 logged after it
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    steps = [int(r.split(",")[2]) for r in (tmp_path / "cut" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4, 5]
    if not row_counts:  # a checkpoint written before the row counts were recorded: cut by step
        state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
        assert state["logs"] == {"metrics.csv": 3, "metrics.jsonl": 4}
        del state["logs"]
        save_checkpoint(state, tmp_path / "cut" / "last.pt")
    resumed = make_trainer(tmp_path / "cut", epochs=2, eval_every=1, evaluate=lambda m: {"score": 0.5})
    resumed.fit(resume=tmp_path / "cut" / "last.pt")
    for name in ("metrics.csv", "metrics.jsonl"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "full" / name).read_text(), name
    log = (tmp_path / "cut" / "train.log").read_text()
    assert "removed 2 later row(s) of metrics.csv, removed 2 later row(s) of metrics.jsonl" in log


def test_resume_with_the_same_configuration_warns_of_nothing(tmp_path: Path) -> None:
    hparams = {"epochs": 2, "lr": 0.1, "run_dir": str(tmp_path)}
    make_trainer(tmp_path, epochs=1, hparams=hparams).fit()
    make_trainer(tmp_path, epochs=1, hparams=hparams).fit(resume=tmp_path / "last.pt")
    assert "differs from config.json" not in (tmp_path / "train.log").read_text()


# ------------------------------------------------------------------------------------------------ interfaces


class Report:
    """An evaluation result with every optional method of the engine's interface."""

    def __init__(self, value: float) -> None:
        self.value = value

    def to_metrics(self) -> dict[str, float]:
        return {"hits": self.value, "misses": 1 - self.value}

    def summary(self) -> str:
        return f"hits {self.value:.2f}"

    def format_table(self) -> str:
        return f"| hits |\n|--:|\n| {self.value} |"

    def as_dict(self) -> dict[str, float]:
        return {"hits": self.value, "detail": "all"}

    def plot_curves(self, directory: Path) -> list[Path]:
        path = Path(directory) / "curve.txt"
        path.write_text("a figure")
        return [path]


def test_evaluation_interface(tmp_path: Path) -> None:
    scores = iter([0.2, 0.6, 0.4])
    trainer = make_trainer(
        tmp_path,
        epochs=3,
        eval_every=1,
        evaluate=lambda model: Report(next(scores)),
        test=lambda model: Report(0.9),
    )
    result = trainer.fit()
    # select_metric=None selects on the first metric the evaluation returns: "hits", best at epoch 1.
    assert (result.best_epoch, result.best_metric, result.selected_on) == (1, 0.6, "val")
    assert [h["eval_hits"] for h in result.history] == [0.2, 0.6, 0.4]
    log = (tmp_path / "train.log").read_text()
    assert "evaluation after epoch 1 (val): hits 0.60" in log and "new best hits=0.6 at epoch 1" in log
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["results"] == {"hits": 0.9, "detail": "all"} and results["best_epoch"] == 1
    assert "| 0.9 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "plots" / "curve.txt").read_text() == "a figure"


def test_evaluation_mapping_and_bad_results(tmp_path: Path) -> None:
    trainer = make_trainer(
        tmp_path, epochs=1, evaluate=lambda m: {"a": 0.5, "note": "x"}, test=lambda m: {"a": 0.25}, select_metric="a"
    )
    assert trainer.fit().best_metric == 0.5
    assert "| a | 0.25 |" in (tmp_path / "results.md").read_text()
    bad = make_trainer(None, epochs=1, evaluate=lambda m: [0.5])
    with pytest.raises(TypeError, match="to_metrics"):
        bad.fit()
    missing = make_trainer(None, epochs=1, evaluate=lambda m: {"a": 0.5}, select_metric="rank1")
    with pytest.raises(KeyError, match="`select_metric` 'rank1' is not an evaluation metric"):
        missing.fit()


def test_default_forward_and_gather() -> None:
    def add(x: Tensor, y: Tensor = 0) -> Tensor:  # type: ignore[assignment]
        return x + y

    one = torch.ones(2)
    assert torch.equal(default_forward(add, one), one)
    assert torch.equal(default_forward(add, (one, one)), 2 * one)
    assert torch.equal(default_forward(add, {"x": one, "y": one}), 2 * one)

    class Output:
        def gather(self) -> str:
            return "merged by itself"

    output, batch = default_gather(Output(), (one,))
    assert output == "merged by itself" and torch.equal(batch[0], one)
    tensor, _ = default_gather(one, one)  # Tensor.gather is not the collective: gathered tensor by tensor
    assert tensor is one


def test_trainer_rejects_bad_collaborators() -> None:
    model = TinyNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="`config` must be a TrainerConfig"):
        Trainer(model, TinyCriterion(), optimizer, make_loader(), {"epochs": 2})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`schedule` must be callable"):
        Trainer(model, TinyCriterion(), optimizer, make_loader(), schedule=0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`optimizer`"):
        Trainer(model, TinyCriterion(), None, make_loader())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`compile`"):
        TrainerConfig(compile="max-autotune")  # type: ignore[arg-type]
    assert TrainerConfig().as_dict()["select_on"] == "val"
    assert WarmupStepSchedule(2)(0) == 0.5


def test_loss_plot_panels(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")

    class Weighted(TinyCriterion):
        def __init__(self) -> None:
            super().__init__()
            self.weights = {"ce": 1.0, "triplet": 0.1}

        def total(self, terms: dict[str, Tensor]) -> Tensor:
            return sum(self.weights[k] * v for k, v in terms.items())  # type: ignore[return-value]

    torch.manual_seed(0)
    model = TinyNet()
    trainer = Trainer(
        model,
        Weighted(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        make_loader(),
        TrainerConfig(device="cpu", epochs=2, log_every=1, run_dir=tmp_path, progress=False),
        forward=image_forward,
    )
    trainer.fit()
    assert (tmp_path / "plots" / "loss.png").stat().st_size > 0 and (tmp_path / "plots" / "lr.png").is_file()
    assert "plots written" in (tmp_path / "train.log").read_text()


class EpochNet(TinyNet):
    """TinyNet that records every ``set_epoch`` call (the model's epoch hook)."""

    def __init__(self) -> None:
        super().__init__(dropout=0.0)
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs_seen.append(epoch)


class StatefulCriterion(TinyCriterion):
    """A criterion with state in buffers: the triplet weight is 1 / (1 + mean CE of the previous epoch).

    ``set_epoch`` closes the epoch (idempotent for the current one) and records every call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("running_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("running_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("weight", torch.zeros((), dtype=torch.float64))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.int64))
        self.calls: list[int] = []

    def forward(self, output: tuple[Tensor, Tensor], batch: ImageSample) -> dict[str, Tensor]:
        terms = super().forward(output, batch)
        self.running_sum.add_(terms["ce"].detach().double())
        self.running_count.add_(1.0)
        return terms

    def total(self, terms: dict[str, Tensor]) -> Tensor:
        return terms["ce"] + self.weight.float() * terms["triplet"]

    def set_epoch(self, epoch: int) -> None:
        self.calls.append(epoch)
        if epoch == int(self.epoch):
            return
        if self.running_count > 0:
            self.weight.fill_(1.0 / (1.0 + float(self.running_sum / self.running_count)))
            self.running_sum.zero_()
            self.running_count.zero_()
        self.epoch.fill_(epoch)


def make_stateful_trainer(run_dir: Path, epochs: int, *, model_seed: int = 0, **kwargs) -> Trainer:
    torch.manual_seed(model_seed)
    model = EpochNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    config = TrainerConfig(
        device="cpu", run_dir=run_dir, epochs=epochs, log_every=1, progress=False, deterministic=True, **kwargs
    )
    return Trainer(model, StatefulCriterion(), optimizer, make_loader(), config, forward=image_forward)


def _buffers(criterion: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in criterion.state_dict().items()}


def test_stateful_criterion_and_epoch_hooks_survive_a_resume(tmp_path: Path) -> None:
    full = make_stateful_trainer(tmp_path / "full", epochs=4)
    full.fit()
    assert full.criterion.calls == [0, 1, 2, 3] and full.module.epochs_seen == [0, 1, 2, 3]
    assert float(full.criterion.weight) > 0  # the state matters: the triplet term is on from epoch 1

    first = make_stateful_trainer(tmp_path / "cut", epochs=2)
    first.fit()
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    for key, value in first.criterion.state_dict().items():
        assert torch.equal(state["criterion"][key], value), key
    assert int(state["criterion"]["epoch"]) == 1 and float(state["criterion"]["running_count"]) == 3

    torch.manual_seed(999)
    second = make_stateful_trainer(tmp_path / "cut", epochs=4, model_seed=7)
    result = second.fit(resume=tmp_path / "cut" / "last.pt")
    assert second.criterion.calls == [2, 3] and second.module.epochs_seen == [2, 3]
    for key, value in _buffers(full.criterion).items():
        assert torch.equal(value, second.criterion.state_dict()[key]), key
    for key, value in full.module.state_dict().items():
        assert torch.equal(value, second.module.state_dict()[key]), key
    assert [h["total"] for h in result.history] == [h["total"] for h in full.history]


def test_stateful_criterion_resume_mid_epoch(tmp_path: Path) -> None:
    """Resumed inside epoch 1, set_epoch(1) is called again and the partial sums of epoch 1 are restored."""
    full = make_stateful_trainer(tmp_path / "full", epochs=3)
    full.fit()

    cut = make_stateful_trainer(tmp_path / "cut", epochs=3, checkpoint_every_steps=1)
    real_step = cut.train_step

    def crash_after_four_steps(batch: object) -> dict[str, float]:
        if cut.global_step == 4:
            raise KeyboardInterrupt
        return real_step(batch)

    cut.train_step = crash_after_four_steps  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert float(state["criterion"]["running_count"]) == 1 and int(state["criterion"]["epoch"]) == 1

    torch.manual_seed(999)
    resumed = make_stateful_trainer(tmp_path / "cut", epochs=3, model_seed=7)
    result = resumed.fit(resume=tmp_path / "cut" / "last.pt")
    assert resumed.criterion.calls == [1, 2] and resumed.module.epochs_seen == [1, 2]
    for key, value in _buffers(full.criterion).items():
        assert torch.equal(value, resumed.criterion.state_dict()[key]), key
    assert [h["total"] for h in result.history] == [h["total"] for h in full.history]


def test_criterion_state_without_the_state_is_a_different_run(tmp_path: Path) -> None:
    """The state is what makes the resume exact: a fresh criterion state (weight 0) changes the objective."""
    full = make_stateful_trainer(tmp_path / "full", epochs=3)
    full.fit()
    make_stateful_trainer(tmp_path / "cut", epochs=2).fit()
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    del state["criterion"]  # a checkpoint written without it (e.g. before the criterion had state)
    save_checkpoint(state, tmp_path / "cut" / "old.pt")
    resumed = make_stateful_trainer(tmp_path / "cut", epochs=3, model_seed=7)
    result = resumed.fit(resume=tmp_path / "cut" / "old.pt")
    assert "the checkpoint holds no criterion state" in (tmp_path / "cut" / "train.log").read_text()
    assert result.history[-1]["total"] != full.history[-1]["total"]


def test_criterion_state_is_loaded_strictly(tmp_path: Path) -> None:
    make_stateful_trainer(tmp_path, epochs=1).fit()
    with pytest.raises(RuntimeError, match="Unexpected key"):
        make_trainer(tmp_path, epochs=2).fit(resume=tmp_path / "last.pt")  # TinyCriterion has no buffers

    def plain(output: tuple[Tensor, Tensor], batch: ImageSample) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(output[1], batch.identity)}

    with pytest.raises(ValueError, match="holds a criterion state"):
        make_trainer(tmp_path, epochs=2, criterion=plain).fit(resume=tmp_path / "last.pt")


def test_stateless_criteria_store_an_empty_state(tmp_path: Path) -> None:
    def plain(output: tuple[Tensor, Tensor], batch: ImageSample) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(output[1], batch.identity)}

    make_trainer(tmp_path / "a", epochs=1, criterion=plain).fit()
    assert torch.load(tmp_path / "a" / "last.pt", weights_only=True)["criterion"] == {}
    make_trainer(tmp_path / "a", epochs=2, criterion=plain).fit(resume=tmp_path / "a" / "last.pt")
