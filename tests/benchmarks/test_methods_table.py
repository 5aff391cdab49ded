"""The methods table (``benchmarks/methods_table.py``): the plan of runs, the common budget, the table, ``--update``,
and one real ``--quick`` run end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_gpu_check import isolated_import

ROOT = Path(__file__).resolve().parents[2]
(methods_table,) = isolated_import(ROOT / "benchmarks", "methods_table")


def test_budget_and_milestones() -> None:
    args = methods_table.parse_args([])
    assert methods_table.budget(args) == {"epochs": 14, "steps_per_epoch": 25, "steps": 350, "eval_trials": 10}
    assert methods_table.budget(methods_table.parse_args(["--epochs", "3"]))["steps"] == 75
    assert methods_table.budget(methods_table.parse_args(["--quick"]))["steps"] == 2
    assert methods_table.scaled_milestones((11,), 14, 3) == (2,)
    with pytest.raises(SystemExit):
        methods_table.parse_args(["--epochs", "0"])
    with pytest.raises(SystemExit):
        methods_table.parse_args(["--ablation", "everything"])


def test_plan_every_row_has_the_same_budget_and_batch(tmp_path: Path) -> None:
    args = methods_table.parse_args(["--methods", "deen", "agw", "nonexistent", "--seeds", "0", "1", "--epochs", "2"])
    specs = methods_table.plan_runs(args, methods_table.budget(args), tmp_path)
    rows = [s["row"] for s in specs]
    assert "nonexistent" not in {s["method"] for s in specs}  # not registered: simply absent
    assert rows[:6] == ["deen", "agw", "deen/base", "deen/dee", "deen/dee-cpm", "deen/dee-cpm-ort"]
    assert [s["seed"] for s in specs] == [0] * 6 + [1] * 6  # seed-major
    for spec in specs:
        o = spec["overrides"]
        assert (o["epochs"], o["epoch_length"], o["batch_identities"], o["num_instances"]) == (2, "25", 8, 2)
        assert o["eval_trials"] == 10 and o["threads"] == 1 and o["seed"] == spec["seed"]
    base = next(s for s in specs if s["row"] == "deen/base")["overrides"]
    assert (base["num_branches"], base["mfa"], base["lambda_cpm"], base["lambda_ort"]) == (0, False, 0.0, 0.0)
    no_ablation = methods_table.parse_args(["--methods", "agw", "--seeds", "0"])
    assert [s["row"] for s in methods_table.plan_runs(no_ablation, methods_table.budget(no_ablation), tmp_path)] == [
        "agw"
    ]


def test_every_variant_builds_its_model() -> None:
    from vireid_layers.recipes import build_recipe

    for name, (_, overrides, (dee, cpm, ort, mfa), _) in methods_table.VARIANTS.items():
        recipe = build_recipe("deen", **overrides)
        model = recipe.build_model(4)
        assert (model.num_branches > 0, model.has_mfa) == (dee, mfa), name
        assert (recipe.config.lambda_cpm > 0, recipe.config.lambda_ort > 0) == (cpm, ort), name


def fake_row(spec: dict[str, Any]) -> dict[str, Any]:
    """A run's row without training: Rank-1 ordered agw > deen, so the table must report a reversed pair."""
    rank1 = {"deen": 10.0, "agw": 20.0}.get(spec["row"], 5.0) + spec["seed"]
    return {
        **{k: spec[k] for k in ("row", "method", "variant", "seed")},
        "status": "ok",
        "rank1": rank1,
        "mAP": rank1 + 1,
        "mINP": rank1 - 1,
        "step_s": 0.5,
        "steps": 2,
        "wall_s": 1.0,
        "feature": "official",
        "loadavg_start": 1.0,
        "loadavg_end": 1.0,
    }


def test_table_and_update_without_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(methods_table, "launch", fake_row)
    monkeypatch.setattr(methods_table, "prepare_dataset", lambda: None)
    argv = ["--quick", "--out", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), "--seeds", "0", "1"]
    assert methods_table.main([*argv, "--methods", "deen", "--ablation", "base"]) == 0
    (path,) = tmp_path.glob("methods-table-quick--*--cpu.json")
    results = json.loads(path.read_text())
    assert results["complete"] and len(results["runs"]) == 4 and results["settings"]["steps"] == 2
    md = path.with_suffix(".md").read_text()
    assert "| deen | official | 2 | 10.50 ± 0.71 |" in md and "74.7 / 71.8 / –" in md
    assert "## DEEN ablation" in md and "60.7 / 57.7" in md and "| agw |" not in md
    assert "--ablation base" in results["reproduce"] and "--quick" in results["reproduce"]
    # --update adds rows, keeps the others, and records the added rows.
    assert methods_table.main([*argv, "--methods", "agw", "--no-ablation", "--update"]) == 0
    updated = json.loads(path.read_text())
    assert len(updated["runs"]) == 6 and updated["reruns"][0]["rows"] == ["agw"]
    assert updated["runs"][:4] == results["runs"]
    md = path.with_suffix(".md").read_text()
    assert md.index("| deen |") < md.index("| agw |")  # the papers' order
    assert "reversed: deen ≤ agw" in md and "Rows added" in md
    # --render rewrites the same markdown from the JSON.
    path.with_suffix(".md").unlink()
    assert methods_table.main(["--render", str(path)]) == 0 and path.with_suffix(".md").read_text() == md
    inc = tmp_path / "methods_table.inc"
    assert methods_table.main(["--render", str(path), "--rst", str(inc)]) == 0
    text = inc.read_text()
    assert text.startswith(".. Generated by benchmarks/methods_table.py") and text.count(".. list-table::") == 2
    assert "   * - deen\n     - 2\n     - 10.50 ± 0.71" in text and "60.7 / 57.7" in text
    # Another budget is not the same table.
    assert methods_table.main([*argv, "--methods", "agw", "--epochs", "2", "--update"]) == 2


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    """One real run through a worker process: the recipe trains 2 steps and the table gets its metrics."""
    argv = ["--quick", "--methods", "agw", "--seeds", "0", "--out", str(tmp_path), "--runs-dir", str(tmp_path / "r")]
    assert methods_table.main(argv) == 0
    (path,) = tmp_path.glob("methods-table-quick--*--cpu.json")
    (run,) = json.loads(path.read_text())["runs"]
    assert run["status"] == "ok" and run["steps"] == 2 and run["step_s"] > 0 and run["feature"] == "fc"
    assert 0 <= run["rank1"] <= 100 and 0 < run["mAP"] <= 100 and 0 < run["mINP"] <= 100
