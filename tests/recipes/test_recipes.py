"""Tests of the recipes: the registry, the official values, the configuration checks, the command line, and
training a recipe from a script of one's own.

The official values are those of the reference notes on the official code bases: DEEN's ``train.py``
(deen_mpanet_mso.md sections 1.5-1.12) and the cross-modality AGW baseline (ddag_agw_eval.md sections 4.3, 7).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch
from PIL import Image

from vireid_layers.data import IMAGENET_MEAN, IMAGENET_STD
from vireid_layers.data.datasets.synthetic import make_synthetic_dataset
from vireid_layers.models import AGWCriterion, DEENCriterion
from vireid_layers.recipes import (
    QUICK_RUN,
    AGWRecipe,
    ConfigurationError,
    DEENRecipe,
    Recipe,
    build_pipeline,
    build_recipe,
    list_recipes,
    register_recipe,
    train,
)
from vireid_layers.recipes.cli import build_parser, main, parse_args

ROOT = Path(__file__).resolve().parents[2]


#: A run of a few seconds on the tiny dataset.
TINY = {"epochs": 1, "epoch_length": "2", "batch_identities": 4, "eval_trials": 2, "threads": 1}


# ------------------------------------------------------------------------------------------------ the registry


def test_registry() -> None:
    assert list_recipes() == ["agw", "ddag", "deen", "mpanet", "mso"]
    assert isinstance(build_recipe("deen"), DEENRecipe) and isinstance(build_recipe("agw"), AGWRecipe)
    registered = r"\['agw', 'ddag', 'deen', 'mpanet', 'mso'\]"
    with pytest.raises(ValueError, match=rf"unknown recipe 'caj'; registered recipes: {registered}"):
        build_recipe("caj")
    with pytest.raises(ValueError, match="already registered"):
        register_recipe("deen", DEENRecipe)
    with pytest.raises(TypeError, match="Recipe subclass"):
        register_recipe("other", dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown option"):
        build_recipe("deen", learning_rate=0.1)


# ------------------------------------------------------------------------------------------------ official values


def test_deen_official_values() -> None:
    c = DEENRecipe.official_config("sysu", root=str(ROOT))
    assert (c.backbone, c.pretrained, c.height, c.width) == ("resnet50.tv_in1k", True, 384, 144)  # 1.1, 1.11
    assert (c.batch_identities, c.num_instances, c.epoch_length) == (6, 4, "official")  # 1.10
    assert (c.optimizer, c.lr, c.backbone_lr_scale, c.momentum, c.weight_decay, c.nesterov) == (
        "sgd",
        0.1,
        0.1,
        0.9,
        5e-4,
        True,
    )  # 1.9
    assert (c.epochs, c.warmup_epochs, c.milestones, c.gamma) == (151, 10, (20, 80), 0.1)  # 1.9
    assert (c.lambda_triplet, c.margin, c.lambda_cpm, c.cpm_margin, c.lambda_ort) == (1.0, 0.3, 0.8, 0.2, 0.01)  # 1.8
    assert (c.feature, c.mfa_form) == ("official", "official")  # 1.13
    recipe = DEENRecipe(c)
    criterion = recipe.build_criterion()
    assert isinstance(criterion, DEENCriterion)
    assert criterion.weights == {"ce": 1.0, "triplet": 1.0, "cpm": 0.8, "ort": 0.01}
    assert (criterion.triplet.margin, criterion.cpm.margin) == (0.3, 0.2)
    schedule = recipe.build_schedule()
    assert [schedule(e) for e in (0, 9, 19)] == [0.1, 1.0, 1.0] and schedule(80) == pytest.approx(0.01)
    # Per dataset (1.11, 1.12): the erasing range of the pipeline and RegDB's variant.
    datasets = ("sysu", "regdb", "llcm")
    pipelines = {d: DEENRecipe(DEENRecipe.official_config(d, str(ROOT))).pipeline_name() for d in datasets}
    assert pipelines == {"sysu": "deen_sysu", "regdb": "deen_regdb", "llcm": "deen_llcm"}
    assert DEENRecipe(DEENRecipe.official_config("regdb", str(ROOT))).variant() == "regdb"
    assert DEENRecipe(DEENRecipe.official_config("llcm", str(ROOT))).variant() == "sysu"
    assert recipe.trainer_config().select_metric == "rank1"


def test_agw_official_values() -> None:
    c = AGWRecipe.official_config("sysu", root=str(ROOT))
    assert (c.backbone, c.pretrained, c.variant, c.non_local_form) == ("resnet50.tv_in1k", True, "agw", "official")
    assert (c.height, c.width, c.batch_identities, c.num_instances) == (288, 144, 8, 4)
    assert (c.optimizer, c.lr, c.backbone_lr_scale, c.momentum, c.weight_decay, c.nesterov) == (
        "sgd",
        0.1,
        0.1,
        0.9,
        5e-4,
        True,
    )
    assert (c.epochs, c.warmup_epochs, c.milestones, c.gamma) == (81, 10, (20, 50), 0.1)
    assert (c.eval_every, c.feature, c.lambda_triplet, c.pipeline) == (2, "fc", 1.0, "auto")
    recipe = AGWRecipe(c)
    assert recipe.pipeline_name() == "agw"
    criterion = recipe.build_criterion()
    assert isinstance(criterion, AGWCriterion) and criterion.weights == {"ce": 1.0, "wrt": 1.0}
    assert AGWRecipe(c, variant="base").build_criterion().weights == {"ce": 1.0, "triplet": 1.0}
    # The official recipe trains with the official TripletLoss_WRT computation; the quick synthetic run with the
    # stable form (a random network's negatives are far apart, where the official weights vanish).
    assert c.wrt_form == "official" and criterion.metric.form == "official"
    assert AGWRecipe(AGWRecipe.quick_config()).build_criterion().metric.form == "stable"


def test_quick_runs() -> None:
    quick = DEENRecipe.quick_config()
    for key, value in {**QUICK_RUN, "lambda_triplet": 0.1, "lambda_cpm": 0.08, "lambda_ort": 0.001}.items():
        assert getattr(quick, key) == value, key
    agw = AGWRecipe.quick_config()
    assert (agw.dataset, agw.backbone, agw.height, agw.device) == ("synthetic", "resnet18", 64, "cpu")
    assert agw.feature == "fc"
    assert build_recipe("deen").config == quick  # the default of build_recipe is the quick run


# ------------------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--dataset", "market"], "--dataset must be one of"),
        (["--dataset", "sysu"], "--root is required"),
        (["--dataset", "sysu", "--root", "/nonexistent/sysu"], "does not exist"),
        (["--lr", "-1"], "--lr must be > 0"),
        (["--feature", "fc"], "--feature must be one of"),
        (["--dataset", "regdb", "--root", str(ROOT), "--trial", "11"], "--trial must be in 1..10"),
        (["--lambda-cpm", "-0.1"], "--lambda-cpm must be >= 0"),
        (["--epoch-length", "many"], "--epoch-length must be"),
        (["--checkpoint-every-steps", "0"], "--checkpoint-every-steps must be >= 1"),
        (["--dataset", "regdb", "--root", str(ROOT), "--select-on", "val"], "--select-on val needs --val-identities"),
        (["--method", "caj"], "unknown recipe 'caj'"),
        (["--resume", "/nonexistent/last.pt"], "--resume"),
        (["--mode", "indoor", "--dataset", "llcm", "--root", str(ROOT)], "exists only for SYSU-MM01"),
        (["--num-branches", "-1"], r"--num-branches must be >= 0 \(0: no DEE\), got -1"),
    ],
)
def test_deen_rejects_bad_configuration(argv: list[str], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--variant", "caj"], "--variant must be one of"),
        (["--non-local-form", "paper"], "--non-local-form must be one of"),
        (["--feature", "official"], "--feature must be one of"),
        (["--variant", "base", "--learnable-p"], "--learnable-p needs --variant agw"),
        (["--lambda-triplet", "-1"], "--lambda-triplet must be >= 0"),
        (["--margin", "0"], "--margin must be > 0"),
        (["--amp", "fp8"], "--amp must be one of"),
    ],
)
def test_agw_rejects_bad_configuration(argv: list[str], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        parse_args(["--method", "agw", *argv])


def test_command_line_layers_defaults_dataset_and_options() -> None:
    recipe, resume = parse_args(["--dataset", "sysu", "--root", str(ROOT), "--lambda-ort", "0.1"])
    c = recipe.config
    assert resume is None and isinstance(recipe, DEENRecipe)
    assert (c.backbone, c.height, c.width, c.batch_identities, c.num_instances) == ("resnet50.tv_in1k", 384, 144, 6, 4)
    assert (c.lr, c.epochs, c.lambda_cpm, c.lambda_ort, c.margin) == (0.1, 151, 0.8, 0.1, 0.3)
    assert c.milestones == (20, 80)
    quick, _ = parse_args([])
    assert quick.config == DEENRecipe.quick_config()
    recipe, _ = parse_args(["--milestones", "3", "5", "--grad-clip", "2.5", "--no-nesterov", "--flip"])
    c = recipe.config
    assert c.milestones == (3, 5) and c.grad_clip == 2.5 and c.nesterov is False and c.flip is True
    assert parse_args(["--grad-clip", "none"])[0].config.grad_clip is None
    agw, _ = parse_args(["--method", "agw", "--variant", "base"])
    assert isinstance(agw, AGWRecipe) and agw.config.variant == "base" and agw.config.height == 64


def test_deen_ablation_options(tmp_path: Path, tiny_root: Path) -> None:
    """--num-branches and --no-mfa reach the model; the defaults are the official network; the base network trains."""
    c = DEENRecipe.official_config("sysu", root=str(ROOT))
    assert (c.num_branches, c.mfa) == (2, True)
    official = DEENRecipe(c).build_model(4, pretrained=False)
    assert official.num_branches == 2 and official.has_mfa
    recipe, _ = parse_args(["--num-branches", "0", "--no-mfa", "--lambda-cpm", "0", "--lambda-ort", "0"])
    assert (recipe.config.num_branches, recipe.config.mfa) == (0, False)
    model = recipe.build_model(4)
    assert model.num_branches == 0 and not model.has_mfa and model.dee is None
    assert build_recipe("deen", num_branches=1).build_model(4).num_branches == 1
    with pytest.raises(ConfigurationError, match="--mfa must be of type"):
        build_recipe("deen", mfa="no")
    base = build_recipe(
        "deen", root=str(tiny_root), run_dir=str(tmp_path / "run"), num_branches=0, mfa=False, lambda_cpm=0.0, **TINY
    )
    result = train(base)
    terms = {k: result.history[0][k] for k in ("ce", "triplet", "cpm", "ort", "total")}
    assert result.epochs == 1 and all(math.isfinite(v) for v in terms.values()) and terms["cpm"] == terms["ort"] == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["num_branches"], config["mfa"]) == (0, False)


def test_type_checks_of_a_config_built_in_python() -> None:
    with pytest.raises(ConfigurationError, match="--epochs must be of type"):
        build_recipe("deen", epochs=2.5)
    with pytest.raises(ConfigurationError, match="--milestones must be of type"):
        build_recipe("deen", milestones=[3])


def test_every_option_has_help_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    for name in list_recipes():
        parser = build_parser(build_recipe(name).__class__)
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help and "default" in action.help, action.option_strings
        with pytest.raises(SystemExit):
            parser.parse_args(["--help"])
        text = capsys.readouterr().out
        assert "--threads" in text and "wait on each other" in text and "--deterministic" in text


def test_model_refuses_an_image_size_before_training() -> None:
    """DEEN's official MFA needs an even number of positions at every block: the model's own check speaks."""
    recipe = build_recipe("deen", height=200, width=72)
    with pytest.raises(ConfigurationError, match=r"--height 200 --width 72: MFA \(form='official'\)"):
        recipe.check_model(recipe.build_model(4))
    paper = build_recipe("deen", height=200, width=72, mfa_form="paper")
    model = paper.build_model(4).train()
    paper.check_model(model)  # the paper form takes any size; the probe leaves the model in its mode
    assert model.training


def test_train_transforms() -> None:
    image = Image.new("RGB", (20, 40), (200, 30, 90))
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]

    def grey(x: torch.Tensor) -> bool:
        rgb = x * std + mean
        return bool(torch.allclose(rgb[0], rgb[1], atol=1e-5) and torch.allclose(rgb[1], rgb[2], atol=1e-5))

    torch.manual_seed(0)
    light = build_recipe("deen", height=16, width=8).train_transform()
    assert light(image).shape == (3, 16, 8) and not any(grey(light(image)) for _ in range(20))
    gray = build_pipeline("light_gray", 16, 8)
    greys = sum(grey(gray(image)) for _ in range(200))
    assert 60 < greys < 140  # RandomGrayscale(0.5)
    official = build_recipe("agw", dataset="sysu", root=str(ROOT), height=32, width=16).train_transform()
    assert official(image).shape == (3, 32, 16)


# ------------------------------------------------------------------------------------------------ training


def test_train_a_recipe_from_a_script_of_ones_own(tmp_path: Path, tiny_root: Path) -> None:
    """The few lines of the documentation: build a recipe, train it, read the result."""
    recipe = build_recipe("agw", root=str(tiny_root), run_dir=str(tmp_path / "run"), seed=1, **TINY)
    result = train(recipe)
    assert result.epochs == 1 and result.final.result.num_trials == 2
    assert set(result.final.to_metrics()) >= {"rank1", "rank1_dedup", "mAP", "mINP"}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["model"], config["variant"], config["num_classes"]) == ("agw", "agw", 10)
    assert "resume" not in config
    # The final results state the test feature and how the checkpoint was selected (here: none, the last epoch).
    settings = json.loads((tmp_path / "run" / "results.json").read_text())["results"]["settings"]
    assert (settings["feature"], settings["selection"], settings["flip"]) == ("fc", "last", False)
    table = (tmp_path / "run" / "results.md").read_text().splitlines()
    assert "- feature: fc" in table and "- checkpoint selection: last epoch (no selection)" in table


def test_resume_warns_only_of_real_changes(tmp_path: Path, tiny_root: Path) -> None:
    run = tmp_path / "run"
    argv = ["--root", str(tiny_root), "--epoch-length", "2", "--batch-identities", "4", "--eval-trials", "1"]
    argv += ["--threads", "1", "--run-dir", str(run)]
    assert main([*argv, "--epochs", "1"]) == 0
    assert main([*argv, "--epochs", "1", "--resume", str(run / "last.pt")]) == 0
    log = (run / "train.log").read_text()
    assert "resumed from" in log and "differs from config.json" not in log  # --resume itself is no change
    assert main([*argv, "--epochs", "2", "--resume", str(run / "last.pt")]) == 0
    warning = [line for line in (run / "train.log").read_text().splitlines() if "differs from config.json" in line]
    assert len(warning) == 1 and warning[0].endswith("epochs: 1 -> 2")


def test_unreadable_image_exits_with_its_message(
    tmp_path: Path, tiny_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_synthetic_dataset(
        tmp_path / "data", num_identities=8, train_identities=4, images_per_camera=1, height=64, width=32, seed=0
    )
    for path in root.rglob("*.jpg"):
        path.write_bytes(b"not a jpeg")
    argv = ["--root", str(root), "--epochs", "1", "--epoch-length", "1", "--batch-identities", "2", "--threads", "1"]
    assert main([*argv, "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot read image ") and "Traceback" not in err[0]


def test_console_script_and_module(tmp_path: Path) -> None:
    """``vireid-train`` is declared in pyproject.toml and is ``python -m vireid_layers.recipes``, run from anywhere."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vireid-train"] == "vireid_layers.recipes.cli:console_main"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "vireid_layers.recipes", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("usage: vireid-train")
    bad = subprocess.run(
        [sys.executable, "-m", "vireid_layers.recipes", "--dataset", "sysu"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: invalid configuration: --root is required")


def test_recipe_interface_is_complete() -> None:
    for name in list_recipes():
        recipe = build_recipe(name)
        assert isinstance(recipe, Recipe) and recipe.name == name
        assert recipe.run_dir() == f"runs/{name}-synthetic-seed0"
        assert recipe.hparams(num_classes=3)["model"] == name
