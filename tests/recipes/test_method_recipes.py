"""Tests of the DDAG, MPANet and MSO recipes: official values, per-dataset values, checks, parameter groups, the
MPANet batch layout, the epoch hooks, tiny training runs (synthetic and in each dataset's layout on disk) and a
resume.

The official values are those of the reference notes: DDAG's ``train_ddag.py`` / ``test_ddag.py``
(ddag_agw_eval.md sections 2.4, 3.2, 4.2-4.3, 5), MPANet's ``configs/*.yml`` and ``train.py``
(deen_mpanet_mso.md sections 4.1-4.9) and the MSO paper, which has no official code (deen_mpanet_mso.md section
5 and the paper's Sec. 4.1, "Implementation details").
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from PIL import Image

from vireid_layers import Modality
from vireid_layers.data import TRAIN_PIPELINES, build_train_transform
from vireid_layers.engine import Trainer
from vireid_layers.evaluation import negative_cosine_similarity, squared_euclidean_distance
from vireid_layers.losses import mean_classifier_momentum
from vireid_layers.models import DDAGCriterion, MPANetCriterion, MSOCriterion
from vireid_layers.recipes import (
    QUICK_RUN,
    ConfigurationError,
    DDAGRecipe,
    MPANetRecipe,
    MSORecipe,
    build_recipe,
    list_recipes,
    setup,
    train,
)
from vireid_layers.recipes.cli import build_parser, parse_args

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("ddag", "mpanet", "mso")


def load_data_fixtures() -> ModuleType:
    """tests/data/conftest.py, loaded by path: its builders of SYSU-MM01, RegDB and LLCM layouts on disk."""
    spec = importlib.util.spec_from_file_location("_data_fixtures", ROOT / "tests" / "data" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


#: A run of a few seconds on the tiny dataset.
TINY = {"epochs": 1, "epoch_length": "2", "batch_identities": 4, "eval_trials": 2, "threads": 1}


# ------------------------------------------------------------------------------------------------ registry


def test_the_five_recipes_are_registered() -> None:
    assert list_recipes() == ["agw", "ddag", "deen", "mpanet", "mso"]
    for name, cls in zip(METHODS, (DDAGRecipe, MPANetRecipe, MSORecipe), strict=True):
        recipe = build_recipe(name)
        assert type(recipe) is cls and recipe.name == name
        assert recipe.config == cls.quick_config()  # without a dataset: the quick synthetic run
        assert recipe.run_dir() == f"runs/{name}-synthetic-seed0"


# ------------------------------------------------------------------------------------------------ official values


def test_ddag_official_values() -> None:
    c = DDAGRecipe.official_config("sysu", root=str(ROOT))
    assert (c.backbone, c.pretrained, c.height, c.width) == ("resnet50.tv_in1k", True, 288, 144)  # 1.2, 4.3
    assert (c.batch_identities, c.num_instances, c.epoch_length) == (8, 4, "official")  # 4.3, 10.1
    assert (c.optimizer, c.lr, c.backbone_lr_scale, c.attention_lr_scale) == ("sgd", 0.1, 0.1, 1.0)  # 4.3, 2.4
    assert (c.momentum, c.weight_decay, c.nesterov) == (0.9, 5e-4, True)  # 4.3
    assert (c.epochs, c.warmup_epochs, c.milestones, c.gamma) == (81, 10, (20, 50), 0.1)  # 4.3, 4.4
    assert (c.lambda_triplet, c.margin, c.lambda_part, c.graph_weight) == (1.0, 0.3, 1.0, None)  # 4.2
    assert (c.parts, c.iwpa_form, c.graph_hidden, c.graph_heads, c.graph_dropout) == (3, "official", 512, 4, 0.2)
    assert (c.graph_output_elu, c.graph_reduction) == (True, "mean")  # 3.2, 3.3
    assert (c.feature, c.flip, c.eval_every) == ("att", False, 2)  # 2.2, 4.3, 5
    recipe = DDAGRecipe(c)
    assert recipe.pipeline_name() == "ddag"  # pad 10, crop, flip (4.3)
    criterion = recipe.build_criterion()
    assert isinstance(criterion, DDAGCriterion) and criterion.fixed_graph_weight is None  # dynamic (4.2)
    assert criterion.weights == {"ce": 1.0, "triplet": 1.0, "part": 1.0, "graph": 0.0}  # w = 0 in epoch 0
    assert criterion.triplet.margin == 0.3 and criterion.graph.reduction == "mean"
    schedule = recipe.build_schedule()
    assert [schedule(e) for e in (0, 9, 19, 20, 49)] == [0.1, 1.0, 1.0, 0.1, 0.1]
    assert schedule(50) == pytest.approx(0.01) and schedule(80) == pytest.approx(0.01)


def test_mpanet_official_values() -> None:
    c = MPANetRecipe.official_config("sysu", root=str(ROOT))
    assert (c.backbone, c.pretrained, c.height, c.width) == ("resnet50.tv_in1k", True, 384, 128)  # 4.1, 4.8
    assert (c.batch_identities, c.num_instances) == (16, 4)  # p_size 16, k_size 8 = 4 + 4 (4.8)
    assert (c.optimizer, c.lr, c.weight_decay, c.backbone_lr_scale) == ("adam", 3.5e-4, 5e-4, 1.0)  # 4.8
    assert (c.epochs, c.warmup_epochs, c.milestones, c.gamma) == (140, 0, (80, 120), 0.1)  # 4.8
    assert (c.margin, c.lambda_triplet) == (0.7, 0.0)  # rho (4.5); no triplet loss (4.7)
    weights = (c.lambda_center_cluster, c.lambda_separation, c.lambda_specific, c.lambda_mutual_mean)
    assert weights == (1.0, 0.5, 1.0, 2.5)  # 4.6, 4.7: the specific losses are added twice with 0.5
    assert (c.anchors, c.mutual_mean) == ("official", "official")  # 4.5, 4.6
    assert (c.num_parts, c.modality_attention, c.mam_reduction, c.shared_stem) == (6, 2, 16, True)  # 4.1-4.3
    assert (c.feature, c.flip) == ("bn", False)  # 4.9
    recipe = MPANetRecipe(c)
    assert recipe.pipeline_name() == "mpanet"  # resize, flip, pad 127, crop, RandomErasing (4.8)
    criterion = recipe.build_criterion()
    assert isinstance(criterion, MPANetCriterion)
    assert criterion.weights == {
        "ce": 1.0,
        "center_cluster": 1.0,
        "separation": 0.5,
        "visible": 1.0,
        "infrared": 1.0,
        "mutual_mean": 2.5,
    }
    assert criterion.center_cluster.margin == 0.7
    schedule = recipe.build_schedule()
    assert [schedule(e) for e in (0, 79, 80, 119)] == [1.0, 1.0, 0.1, 0.1] and schedule(120) == pytest.approx(0.01)
    # Test images are resized bilinearly (4.8), not with Lanczos.
    resize = [t for t in recipe.test_transform().transforms if type(t).__name__ == "Resize"]
    assert len(resize) == 1 and resize[0].interpolation.value == "bilinear"
    assert recipe.ranking() == (True, negative_cosine_similarity)  # SYSU-MM01: unit features (4.9)


def test_mso_values_of_the_paper() -> None:
    c = MSORecipe.official_config("sysu", root=str(ROOT))
    assert (c.backbone, c.pretrained, c.height, c.width) == ("resnet50.tv_in1k", True, 288, 144)  # 5.1
    assert (c.batch_identities, c.num_instances) == (8, 4)  # 64 = 8 ids x (4 + 4) (5.1)
    assert (c.optimizer, c.lr, c.backbone_lr_scale) == ("adam", 5e-4, 1.0)  # 5.1
    assert (c.epochs, c.warmup_epochs, c.milestones, c.gamma) == (100, 0, (20, 25, 35), 0.1)  # 5.1
    assert c.weight_decay == 5e-4  # not in the paper: the AGW code base's value (a documented choice)
    assert (c.lambda_triplet, c.lambda_pef, c.lambda_cmcc) == (1.0, 1.0, 1.0)  # every weight 1 (8)
    assert (c.normalize_wrt, c.normalize_cmcc) == (True, True)  # 5.4, 5.5
    assert (c.vgg_weights, c.pef_entry, c.pef_block_output, c.sobel_combine) == ("imagenet", "conv1_2", "pool", "sum")
    assert (c.non_local_form, c.gem_p, c.feature, c.flip) == ("official", 3.0, "fc", False)  # 5.1
    recipe = MSORecipe(c)
    assert recipe.pipeline_name() == "mso"
    criterion = recipe.build_criterion()
    assert isinstance(criterion, MSOCriterion)
    assert criterion.weights == {"ce": 1.0, "wrt": 1.0, "pef": 1.0, "cmcc": 1.0}
    assert criterion.wrt.normalize and criterion.cmcc.normalize
    schedule = recipe.build_schedule()
    assert [schedule(e) for e in (0, 19, 20, 24)] == [1.0, 1.0, 0.1, 0.1]
    assert schedule(25) == pytest.approx(0.01) and schedule(35) == pytest.approx(0.001)


def test_quick_runs_are_the_shared_quick_run_with_their_overrides() -> None:
    for name in METHODS:
        quick = build_recipe(name).config
        for key, value in QUICK_RUN.items():
            assert getattr(quick, key) == value, (name, key)
    mso = MSORecipe.quick_config()
    assert (mso.vgg_weights, mso.pef_block_output) == ("none", "relu")  # no download; 16x8 stem maps
    ddag, mpanet = DDAGRecipe.quick_config(), MPANetRecipe.quick_config()
    assert (ddag.lambda_triplet, ddag.lambda_part, ddag.graph_weight) == (1.0, 1.0, None)  # official weights
    assert (mpanet.lambda_separation, mpanet.lambda_mutual_mean) == (0.5, 2.5)


def test_mso_pipeline_is_registered() -> None:
    """``mso``: the paper's random crop and flip, as the AGW code base does them (pad 10, crop, flip)."""
    assert TRAIN_PIPELINES["mso"].height == 288 and TRAIN_PIPELINES["mso"].width == 144
    image = Image.new("RGB", (30, 70), (200, 30, 90))
    outputs = []
    for name in ("mso", "agw"):
        torch.manual_seed(5)
        outputs.append(torch.stack([build_train_transform(name)(image) for _ in range(4)]))
    assert outputs[0].shape == (4, 3, 288, 144)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)  # the same steps, the same draws
    shifted = [build_train_transform("mso", height=32, width=16)(image) for _ in range(20)]
    assert any(not torch.equal(shifted[0], s) for s in shifted[1:])  # random crop / flip


# ------------------------------------------------------------------------------------------------ per dataset


def test_per_dataset_values(tmp_path: Path) -> None:
    root = str(tmp_path)
    for cls in (DDAGRecipe, MPANetRecipe, MSORecipe):
        names = {d: cls(cls.official_config(d, root)).pipeline_name() for d in ("sysu", "regdb", "llcm")}
        assert set(names.values()) == {cls.name}, names  # each method's own pipeline on every dataset
        assert cls(cls.quick_config()).pipeline_name() == "light"
    # MPANet: configs/RegDB.yml (4.1, 4.8): 256x128, 12 identities x 10 images, one decay at 110.
    regdb = MPANetRecipe.official_config("regdb", root)
    assert (regdb.height, regdb.width, regdb.batch_identities, regdb.num_instances) == (256, 128, 12, 5)
    assert regdb.milestones == (110,) and MPANetRecipe(regdb).build_schedule()(110) == pytest.approx(0.1)
    # The same values when the recipe is built from keywords (no configuration given) or by name.
    assert MPANetRecipe(dataset="regdb", root=root).config == regdb
    assert build_recipe("mpanet", dataset="regdb", root=root).config == regdb
    llcm = MPANetRecipe.official_config("llcm", root)
    assert (llcm.height, llcm.batch_identities, llcm.milestones) == (384, 16, (80, 120))
    # RegDB is ranked as the official RegDB evaluation: unnormalised BN features, squared Euclidean (4.9).
    normalize, distance = MPANetRecipe(regdb).ranking()
    assert normalize is False and distance is squared_euclidean_distance
    assert MPANetRecipe(llcm).ranking() == (True, negative_cosine_similarity)
    # The other methods have no per-dataset values besides the pipeline and the protocol's direction.
    for cls in (DDAGRecipe, MSORecipe):
        assert cls.official_config("regdb", root) == cls.official_config("sysu", root).replace(dataset="regdb")


def test_squared_euclidean_distance_matches_a_plain_reference() -> None:
    torch.manual_seed(0)
    q, g = torch.randn(5, 7, dtype=torch.float64), torch.randn(6, 7, dtype=torch.float64)
    expected = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    out = squared_euclidean_distance(q, g)
    assert out.dtype == torch.float64  # never cast down
    torch.testing.assert_close(out, expected)
    assert squared_euclidean_distance(q[:1], q[:1]).item() == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("method", "argv", "match"),
    [
        ("ddag", ["--feature", "fc2"], "--feature must be one of"),
        ("ddag", ["--lambda-part", "-1"], "--lambda-part must be >= 0"),
        ("ddag", ["--graph-weight", "-0.5"], "--graph-weight must be >= 0 or none"),
        ("ddag", ["--graph-dropout", "1"], r"--graph-dropout must be in \[0, 1\)"),
        ("ddag", ["--parts", "0"], "--parts must be >= 1"),
        ("ddag", ["--iwpa-form", "code"], "--iwpa-form must be one of"),
        ("ddag", ["--graph-reduction", "none"], "--graph-reduction must be one of"),
        ("ddag", ["--attention-lr-scale", "-1"], "--attention-lr-scale must be >= 0"),
        ("mpanet", ["--lambda-triplet", "1"], "--lambda-triplet must be 0"),
        ("mpanet", ["--lambda-mutual-mean", "-2"], "--lambda-mutual-mean must be >= 0"),
        ("mpanet", ["--modality-attention", "3"], "--modality-attention must be one of"),
        ("mpanet", ["--num-parts", "0"], "--num-parts must be >= 1"),
        ("mpanet", ["--anchors", "batch"], "--anchors must be one of"),
        ("mpanet", ["--feature", "att"], "--feature must be one of"),
        ("mso", ["--vgg-weights", "/nonexistent/vgg16.pth"], "--vgg-weights must be one of"),
        ("mso", ["--lambda-pef", "-1"], "--lambda-pef must be >= 0"),
        ("mso", ["--pef-entry", "conv1_1"], "--pef-entry must be one of"),
        ("mso", ["--gem-p", "0"], "--gem-p must be > 0"),
        ("mso", ["--sobel-combine", "none"], "--sobel-combine must be one of"),
        ("mso", ["--dataset", "sysu"], "--root is required"),
    ],
)
def test_bad_configuration_names_the_option(method: str, argv: list[str], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        parse_args(["--method", method, *argv])


def test_command_line_of_the_new_recipes(tmp_path: Path) -> None:
    recipe, _ = parse_args(["--method", "ddag", "--graph-weight", "0.5", "--no-graph-output-elu", "--parts", "2"])
    c = recipe.config
    assert isinstance(recipe, DDAGRecipe) and (c.graph_weight, c.graph_output_elu, c.parts) == (0.5, False, 2)
    assert parse_args(["--method", "ddag", "--graph-weight", "none"])[0].config.graph_weight is None
    recipe, _ = parse_args(["--method", "mpanet", "--dataset", "regdb", "--root", str(tmp_path), "--lr", "1e-4"])
    assert isinstance(recipe, MPANetRecipe) and recipe.config.milestones == (110,) and recipe.config.lr == 1e-4
    vgg = tmp_path / "vgg16.pth"
    vgg.write_bytes(b"")
    recipe, _ = parse_args(["--method", "mso", "--vgg-weights", str(vgg), "--pef-entry", "block2"])
    assert isinstance(recipe, MSORecipe)
    assert (recipe.config.vgg_weights, recipe.config.pef_entry) == (str(vgg), "block2")
    for name in METHODS:  # every option has its help and its default; the quick run's and the official differ
        helps = {a.dest: a.help for a in build_parser(type(build_recipe(name)))._actions if a.dest != "help"}
        assert all(h and "default" in h for h in helps.values())
    mso_help = {a.dest: a.help for a in build_parser(MSORecipe)._actions}
    assert mso_help["vgg_weights"].endswith("(default: none; with --dataset: imagenet)")


# ------------------------------------------------------------------------------------------------ the pieces


def test_ddag_param_groups_have_the_three_official_rates() -> None:
    official = {"optimizer": "sgd", "lr": 0.1, "backbone_lr_scale": 0.1, "weight_decay": 5e-4}
    recipe = DDAGRecipe(DDAGRecipe.quick_config(), **official)  # the official optimiser on the small network
    model = recipe.build_model(4)
    optimizer = recipe.build_optimizer(model)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    groups = optimizer.param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.1, 0.1])  # backbone, IWPA + CGSA, head
    assert [g["base_lr"] for g in groups] == pytest.approx([0.01, 0.1, 0.1])
    assert all(g["weight_decay"] == 5e-4 for g in groups)
    names = {id(p): n for n, p in model.named_parameters()}
    members = [{names[id(p)].split(".")[0] for p in g["params"]} for g in groups]
    assert members == [{"backbone"}, {"iwpa", "cgsa"}, {"neck", "classifier"}]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable  # the frozen BN-neck biases left out
    scaled = DDAGRecipe(recipe.config, attention_lr_scale=0.5).param_groups(model)
    assert [g["lr"] for g in scaled] == pytest.approx([0.01, 0.05, 0.1])


def test_mpanet_and_mso_param_groups_are_one_rate() -> None:
    mpanet = MPANetRecipe(MPANetRecipe.quick_config())
    model = mpanet.build_model(4)
    (group,) = mpanet.build_optimizer(model).param_groups
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert group["lr"] == 1e-3 and len(group["params"]) == len(trainable) < len(list(model.parameters()))
    split = MPANetRecipe(mpanet.config, backbone_lr_scale=0.1).param_groups(model)
    assert [g["lr"] for g in split] == pytest.approx([1e-4, 1e-3])
    mso = MSORecipe(MSORecipe.quick_config())
    model = mso.build_model(4)
    groups = mso.build_optimizer(model).param_groups
    assert {g["lr"] for g in groups} == {1e-3}
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in in_groups for p in model.pef.parameters())  # the frozen VGG-16 is not optimised


def test_mso_pretrained_false_builds_no_vgg_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model rebuilt to load a checkpoint (``pretrained=False``) downloads neither the backbone nor the VGG."""
    import vireid_layers.recipes.mso as mso_module

    seen = []

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs["vgg_weights"])
        raise RuntimeError("stop")

    monkeypatch.setattr(mso_module, "MSO", spy)
    recipe = MSORecipe(MSORecipe.official_config("sysu", str(ROOT)))
    for pretrained in (False, None):
        with pytest.raises(RuntimeError, match="stop"):
            recipe.build_model(4, pretrained=pretrained)
    assert seen == [None, "imagenet"]


def test_mso_refuses_an_image_size_its_pef_cannot_take() -> None:
    recipe = build_recipe("mso", pef_block_output="pool")  # 64x32: the stem map is 16x8, pool needs 16x16
    with pytest.raises(ConfigurationError, match=r"--height 64 --width 32 \(--pef-block-output pool\)"):
        recipe.check_model(recipe.build_model(4))
    build_recipe("mso").check_model(build_recipe("mso").build_model(4))  # the quick run's relu taps fit


def test_mpanet_loader_layout(tiny_root: Path) -> None:
    """Identity blocks of 2K rows, infrared first and the modalities alternating, K distinct images each."""
    recipe = build_recipe("mpanet", root=str(tiny_root), batch_identities=3, num_instances=2, threads=1)
    env = setup(recipe)
    loader = recipe.train_loader(env.dataset)
    assert type(loader.batch_sampler).__name__ == "MPANetIdentitySampler"
    records = env.dataset.train
    for indices in list(loader.batch_sampler)[:5]:
        ids = [records[i].identity for i in indices]
        modalities = [int(records[i].modality) for i in indices]
        blocks = [ids[b : b + 4] for b in range(0, 12, 4)]
        assert all(len(set(block)) == 1 for block in blocks) and len({b[0] for b in blocks}) == 3
        assert modalities == [int(Modality.INFRARED), int(Modality.VISIBLE)] * 6
        for b in range(0, 12, 4):  # two distinct images per modality (the identity has more)
            assert len(set(indices[b : b + 4 : 2])) == 2 and len(set(indices[b + 1 : b + 4 : 2])) == 2
    batch = next(iter(loader))
    assert batch.image.shape == (12, 3, 64, 32) and batch.modality.tolist() == [1, 0] * 6


def test_set_epoch_reaches_the_model_and_the_criterion(tiny_root: Path, tmp_path: Path) -> None:
    """The engine tells MPANet's model (its mean-classifier rate) and DDAG's criterion (its graph weight) the epoch."""
    for name in ("mpanet", "ddag"):
        recipe = build_recipe(name, root=str(tiny_root), run_dir=str(tmp_path / name), **TINY)
        env = setup(recipe)
        model, criterion = recipe.build_model(env.dataset.num_train_identities), recipe.build_criterion()
        trainer = Trainer(
            model,
            criterion,
            recipe.build_optimizer(model),
            recipe.train_loader(env.dataset),
            recipe.trainer_config(device="cpu"),
            schedule=recipe.build_schedule(),
            forward=recipe.forward,
        )
        trainer.start_epoch(120)
        if name == "mpanet":
            assert model.mean_update_rate == pytest.approx(mean_classifier_momentum(121))
            assert model.mean_update_rate < 0.2  # the official decay after epoch 99
        else:
            assert int(criterion.epoch) == 120 and criterion.graph_weight == 0.0  # no epoch closed yet


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("method", METHODS)
def test_tiny_synthetic_run(method: str, tmp_path: Path, tiny_root: Path) -> None:
    run = tmp_path / "run"
    result = train(build_recipe(method, root=str(tiny_root), run_dir=str(run), seed=1, **TINY))
    assert result.epochs == 1 and result.final.result.num_trials == 2
    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["num_classes"]) == (method, 10)
    results = json.loads((run / "results.json").read_text())["results"]
    expected_feature = {"ddag": "att", "mpanet": "bn", "mso": "fc"}[method]
    assert results["settings"]["feature"] == expected_feature
    assert 0 <= results["mean"]["mAP"] <= 1
    terms = {"ddag": "graph", "mpanet": "mutual_mean", "mso": "pef"}[method]
    assert terms in result.history[0]


def test_ddag_resume_carries_the_graph_weight(tmp_path: Path, tiny_root: Path) -> None:
    """A resumed DDAG run continues with the dynamic weight of the epochs before (the criterion's state)."""
    run = tmp_path / "run"
    base = {**TINY, "root": str(tiny_root), "run_dir": str(run), "seed": 2, "eval_every": 0}
    first = train(build_recipe("ddag", **base))
    epoch0 = first.history[0]
    mean_lp = epoch0["ce"] + epoch0["triplet"] + epoch0["part"]  # lambda_triplet = lambda_part = 1
    resumed = train(build_recipe("ddag", **{**base, "epochs": 2}), resume=run / "last.pt")
    assert resumed.epochs == 2 and len(resumed.history) == 2
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["criterion"]
    assert int(state["epoch"]) == 1
    assert float(state["previous_epoch_mean"]) == pytest.approx(mean_lp, rel=1e-4)
    assert json.loads((run / "results.json").read_text())["results"]["settings"]["feature"] == "att"


@pytest.mark.parametrize(("method", "layout"), [("ddag", "sysu"), ("mpanet", "regdb"), ("mso", "llcm")])
def test_one_step_on_a_dataset_in_its_layout_on_disk(method: str, layout: str, tmp_path: Path) -> None:
    """The official recipe of each dataset (its pipeline, per-dataset values, protocol), one step, small network."""
    fixtures = load_data_fixtures()
    root = tmp_path / layout
    getattr(fixtures, f"build_{layout}")(root)
    small = {"backbone": "resnet18", "pretrained": False, "height": 64, "width": 32, "device": "cpu", "workers": 0}
    small.update(batch_identities=2, num_instances=2, epochs=1, epoch_length="1", eval_trials=1, threads=1)
    if method == "mso":
        small.update(vgg_weights="none", pef_block_output="relu")
    recipe = build_recipe(method, dataset=layout, root=str(root), run_dir=str(tmp_path / "run"), **small)
    assert recipe.pipeline_name() == method  # the dataset's official pipeline, not the quick run's
    result = train(recipe)
    assert result.epochs == 1
    results = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    assert results["settings"]["dataset"] == layout
    if method == "mpanet":  # RegDB's values of configs/RegDB.yml, overridden here only where given
        assert recipe.config.milestones == (110,) and results["settings"]["distance"] == "squared_euclidean_distance"


def load_evaluate_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_evaluate_example", ROOT / "examples" / "evaluate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", METHODS)
def test_evaluate_py_reproduces_the_final_evaluation(method: str, tmp_path: Path, tiny_root: Path) -> None:
    """``python examples/evaluate.py runs/<x>/last.pt`` (the docs' command) rebuilds the model from config.json."""
    run = tmp_path / "run"
    train(build_recipe(method, root=str(tiny_root), run_dir=str(run), seed=4, **TINY))
    out = tmp_path / "evaluate.json"
    assert load_evaluate_example().main([str(run / "last.pt"), "--trials", "2", "--json", str(out)]) == 0
    again = json.loads(out.read_text())["results"]["mean"]
    final = json.loads((run / "results.json").read_text())["results"]["mean"]
    assert again["mAP"] == pytest.approx(final["mAP"], abs=1e-6) and again["rank1"] == pytest.approx(final["rank1"])
