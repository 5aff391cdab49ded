"""save_pretrained / from_pretrained: round trips, config.json without code, refusals naming the key, a mocked Hub."""

from __future__ import annotations

import copy
import json
import pickle
import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

from vireid_layers import Modality, build_two_stream_backbone
from vireid_layers.data import ImagePreprocessor, build_test_transform
from vireid_layers.evaluation import ProtocolResult, TrialResult, retrieval_metrics
from vireid_layers.hub import (
    build_from_config,
    from_pretrained,
    load_config,
    model_card,
    model_config,
    push_to_hub,
    register_model,
    registered_models,
    save_pretrained,
)
from vireid_layers.hub import registry as hub_registry
from vireid_layers.models import AGW, DDAG, DEEN, MSO, MPANet
from vireid_layers.models._pretrained import PretrainedMixin

H, W = 64, 32


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, H, W, generator=torch.Generator().manual_seed(n))


def toy_result(**settings) -> ProtocolResult:
    m = retrieval_metrics(torch.tensor([[0.9, 0.1]]), torch.tensor([1]), torch.tensor([1, 2]))
    return ProtocolResult(
        "sysu", {"dataset": "sysu", "protocol": "sysu", "mode": "all", **settings}, "dedup", (TrialResult(0, 1, 2, m),)
    )


@pytest.fixture(scope="module")
def deen():
    torch.manual_seed(0)
    return randomized(DEEN(5, backbone="resnet18"))


@pytest.fixture(scope="module")
def saved(deen, tmp_path_factory):
    return save_pretrained(deen, tmp_path_factory.mktemp("deen"), preprocess=ImagePreprocessor(H, W))


# ------------------------------------------------------------------------------------------------ round trips


def test_round_trip_gives_the_same_weights_and_embeddings(deen, saved):
    loaded = from_pretrained(saved)
    assert isinstance(loaded, DEEN) and not loaded.training
    for key, value in deen.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = images()
    with torch.no_grad():
        for mode in ("plain", "official"):
            assert torch.equal(loaded.embed(x, 1, mode=mode), deen.embed(x, 1, mode=mode))


def test_saved_directory_holds_config_weights_and_card(deen, saved):
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((saved / "config.json").read_text())
    assert config["format"] == "vireid-layers/pretrained" and config["format_version"] == 1
    assert config["model"] == "DEEN" and config["embed_dim"] == 512
    assert config["init"] == {
        "num_classes": 5,
        "backbone": "resnet18",
        "pretrained": False,
        "variant": "sysu",
        "num_branches": 2,
        "mfa_form": "official",
        "mfa": True,
        "dee_dropout": 0.01,
        "backbone_kwargs": None,
    }
    assert config["preprocess"]["height"] == H and config["preprocess"]["interpolation"] == "lanczos"
    assert set(load_file(str(saved / "model.safetensors"))) == set(deen.state_dict())


def test_three_lines_from_files_to_embeddings(deen, saved, tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        path = tmp_path / f"person{i}.png"
        PIL.Image.fromarray(rng.integers(0, 256, (100, 40, 3), dtype=np.uint8)).save(path)
        files.append(path)
    model, preprocess = from_pretrained(saved), ImagePreprocessor.from_pretrained(saved)
    embeddings = model.embed(preprocess(files), Modality.INFRARED)
    # the same as the dataset path: the test transform of each file, then embed
    batch = torch.stack([build_test_transform(H, W)(PIL.Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        assert torch.equal(embeddings.detach(), deen.embed(batch, 1))
    assert embeddings.shape == (2, 512)


def test_every_model_with_non_default_arguments_round_trips(tmp_path):
    torch.manual_seed(0)
    backbone = build_two_stream_backbone("resnet18", last_stride=2)
    models = [
        DEEN(3, backbone=backbone, variant="regdb", num_branches=3, mfa_form="paper"),
        AGW(4, backbone="resnet18", non_local_blocks=[0, 1, 2, 0], non_local_form="corrected", learnable_p=True),
        AGW(2, backbone="resnet18", method="base", backbone_kwargs={"last_stride": 2}),
    ]
    x = images(2)
    for i, model in enumerate(models):
        model = randomized(model, seed=i)
        loaded = from_pretrained(save_pretrained(model, tmp_path / str(i)))
        assert type(loaded) is type(model)
        with torch.no_grad():
            assert torch.equal(loaded.embed(x, 0), model.embed(x, 0))
    config = load_config(tmp_path / "0")
    assert config["init"]["backbone"] == "resnet18"
    assert config["init"]["backbone_kwargs"] == {"last_stride": 2, "in_chans": 3}  # from the built backbone
    assert load_config(tmp_path / "1")["preprocess"]["height"] == 288  # AGW's official test size by default


def _vgg_state() -> dict[str, torch.Tensor]:
    """A VGG-16 state dict for MSO's ``vgg_weights`` (a mapping: config.json cannot hold it, the weights can)."""
    torch.manual_seed(1)
    return {k: v.clone() for k, v in MSO(2, backbone="resnet18").pef.state_dict().items()}


@pytest.mark.parametrize(
    "build",
    [
        lambda: DDAG(3, backbone="resnet18", parts=2, graph_hidden=8, graph_heads=2, iwpa_form="paper"),
        lambda: MPANet(4, backbone="resnet18", num_parts=3, modality_attention=1, shared_stem=False),
        lambda: MSO(3, backbone="resnet18", vgg_weights=_vgg_state(), non_local_blocks=(0, 1, 1, 0)),
    ],
    ids=["DDAG", "MPANet", "MSO"],
)
def test_ddag_mpanet_mso_round_trip(build, tmp_path):
    torch.manual_seed(0)
    model = randomized(build())
    cls = type(model)
    directory = model.save_pretrained(tmp_path / "model")
    loaded = cls.from_pretrained(directory)
    assert type(loaded) is cls and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = images(2)
    with torch.no_grad():
        for modality in (0, 1):
            assert torch.equal(loaded.embed(x, modality), model.embed(x, modality))
    config = load_config(directory)
    assert config["model"] == cls.__name__ and config["init"]["pretrained"] is False
    assert config["embed_dim"] == model.embed_dim
    if cls is MSO:
        assert config["init"]["vgg_weights"] is None  # the VGG-16 weights are in model.safetensors
    assert cls.__name__ in registered_models()
    with pytest.raises(TypeError, match=f"holds a {cls.__name__}"):
        DEEN.from_pretrained(directory)


def test_compiled_model_is_saved_unwrapped(deen, tmp_path):
    compiled = torch.compile(deen, backend="eager")
    loaded = from_pretrained(save_pretrained(compiled, tmp_path))
    assert set(loaded.state_dict()) == set(deen.state_dict())  # no `_orig_mod.` prefix


def test_public_names_are_sorted_documented_and_modules_short():
    import importlib
    import inspect
    import re

    import vireid_layers.export
    import vireid_layers.hub

    api = (Path(__file__).resolve().parents[2] / "docs" / "api.rst").read_text()
    for package in (vireid_layers.hub, vireid_layers.export):
        names = list(package.__all__)
        assert names == sorted(names) and all(hasattr(package, n) for n in names)
        missing = [n for n in names if not re.search(rf"\b{n}\b", api)]
        assert not missing, f"not in docs/api.rst: {missing}"
    for module in ("registry", "card", "pretrained"):
        mod = importlib.import_module(f"vireid_layers.hub.{module}")
        assert inspect.getsource(mod).count("\n") <= 400
    for module in ("embedding", "onnx", "cli"):
        mod = importlib.import_module(f"vireid_layers.export.{module}")
        assert inspect.getsource(mod).count("\n") <= 400


def test_class_method_checks_the_class(saved):
    assert isinstance(DEEN.from_pretrained(saved), DEEN)
    with pytest.raises(TypeError, match="holds a DEEN"):
        AGW.from_pretrained(saved)


def test_device_argument(saved):
    model = from_pretrained(saved, device="cpu")
    assert next(model.parameters()).device.type == "cpu"


# ------------------------------------------------------------------------------------------ the recorded arguments


def test_recorded_arguments_survive_copy_and_pickle(deen):
    assert copy.deepcopy(deen).init_arguments == deen.init_arguments
    assert pickle.loads(pickle.dumps(deen)).init_arguments == deen.init_arguments
    bare = DEEN.__new__(DEEN)
    with pytest.raises(RuntimeError, match="no recorded constructor arguments"):
        bare.init_arguments  # noqa: B018


def test_recorded_arguments_are_a_copy_of_the_callers_lists():
    counts = [0, 1, 1, 0]
    model = AGW(2, backbone="resnet18", non_local_blocks=counts)
    counts[1] = 5
    assert model.init_arguments["non_local_blocks"] == [0, 1, 1, 0]


@settings(max_examples=8, deadline=None)
@given(
    num_classes=st.integers(1, 50),
    variant=st.sampled_from(["sysu", "regdb"]),
    num_branches=st.integers(1, 4),
    mfa_form=st.sampled_from(["official", "paper"]),
)
def test_config_rebuilds_the_same_structure(num_classes, variant, num_branches, mfa_form):
    with torch.device("meta"):  # structure only: no memory, fast
        model = DEEN(num_classes, backbone="resnet18", variant=variant, num_branches=num_branches, mfa_form=mfa_form)
        config = model_config(model)
        rebuilt = build_from_config(json.loads(json.dumps(config)))
    assert rebuilt.init_arguments == model.init_arguments
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------ refusals


def _copy(saved: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(saved, out)
    return out


def _edit_config(directory: Path, edit) -> None:
    config = json.loads((directory / "config.json").read_text())
    edit(config)
    (directory / "config.json").write_text(json.dumps(config))


def test_weights_missing_a_key_are_refused_naming_it(saved, tmp_path):
    d = _copy(saved, tmp_path)
    state = load_file(str(d / "model.safetensors"))
    del state["dee.project.weight"]
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=r"lacks the key 'dee.project.weight'"):
        from_pretrained(d)


def test_weights_with_an_unexpected_key_are_refused_naming_it(saved, tmp_path):
    d = _copy(saved, tmp_path)
    state = load_file(str(d / "model.safetensors"))
    state["head.extra"] = torch.zeros(2)
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=r"has the key 'head.extra'"):
        from_pretrained(d)


def test_weights_of_another_shape_are_refused_naming_the_key(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_config(d, lambda c: c["init"].update(num_classes=7))
    with pytest.raises(ValueError, match=r"'classifier.weight' has shape \(5, 512\)"):
        from_pretrained(d)


def test_weights_of_another_model_are_refused(saved, tmp_path):
    d = _copy(saved, tmp_path)
    state = load_file(str(d / "model.safetensors"))
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt", "model": "AGW"})
    with pytest.raises(ValueError, match="weights of a AGW"):
        from_pretrained(d)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["init"].update(colour="red"), "'init' has the key 'colour', which DEEN does not take"),
        (lambda c: c["init"].pop("num_classes"), "'init' lacks the key 'num_classes'"),
        (lambda c: c["init"].update(variant="llcm"), "does not build a DEEN: `variant`"),
        (lambda c: c.update(model="Transformer"), r"'model' must be one of \[.*'DEEN'.*\], got 'Transformer'"),
        (lambda c: c.pop("model"), "lacks the key 'model'"),
        (lambda c: c.update(init=[1]), "the key 'init' must hold"),
        (lambda c: c.update(format="timm"), "the key 'format' must be"),
        (lambda c: c.update(format_version=99), "the key 'format_version'"),
        (lambda c: c.update(embed_dim=2048), "the key 'embed_dim' is 2048"),
    ],
)
def test_config_errors_name_the_key(saved, tmp_path, edit, message):
    d = _copy(saved, tmp_path)
    _edit_config(d, edit)
    with pytest.raises(ValueError, match=message):
        from_pretrained(d)


def test_unreadable_files_are_refused(saved, tmp_path):
    d = _copy(saved, tmp_path)
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"cannot read .* as safetensors"):
        from_pretrained(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        from_pretrained(d)
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds no config.json"):
        from_pretrained(d)
    with pytest.raises(FileNotFoundError, match="neither a directory"):
        from_pretrained(tmp_path / "no" / "such" / "dir")
    with pytest.raises(TypeError, match="`source`"):
        from_pretrained(3)


def test_models_config_json_cannot_describe_are_refused_at_save(tmp_path):
    stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1))
    stages = [nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Conv2d(16, 16, 3, padding=1)]
    from vireid_layers import TwoStreamBackbone

    backbone = TwoStreamBackbone(
        stem, stages, stem_channels=8, stem_reduction=4, channels=[8, 16, 16], reductions=[4, 8, 8]
    )
    with pytest.raises(ValueError, match="'backbone' is a TwoStreamBackbone built from parts"):
        save_pretrained(AGW(2, backbone=backbone, method="base"), tmp_path)
    with pytest.raises(ValueError, match="not a registered model"):
        save_pretrained(nn.Linear(2, 2), tmp_path)
    assert not (tmp_path / "config.json").exists()
    with pytest.raises(TypeError, match="`preprocess`"):
        save_pretrained(AGW(2, backbone="resnet18"), tmp_path, preprocess=(64, 32))
    with pytest.raises(TypeError, match=r"`results\[0\]`"):
        save_pretrained(AGW(2, backbone="resnet18"), tmp_path, results={"rank1": 0.5})


# ------------------------------------------------------------------------------------------------ registry


class TinyReID(PretrainedMixin, nn.Module):
    """A user's model: records its arguments through the mixin, nothing else."""

    def __init__(self, dim: int, *, scale: float = 1.0) -> None:
        super().__init__()
        self.proj = nn.Linear(3, dim)
        self.scale = scale

    def embed(self, images, modalities):
        return self.scale * self.proj(images.mean((2, 3)))


def test_register_a_model_of_ones_own(monkeypatch, tmp_path):
    monkeypatch.setattr(hub_registry, "_REGISTERED", {})
    model = TinyReID(4, scale=2.0)
    with pytest.raises(ValueError, match="not a registered model"):
        save_pretrained(model, tmp_path)
    register_model("TinyReID", TinyReID)
    assert registered_models()["TinyReID"] is TinyReID
    loaded = from_pretrained(save_pretrained(model, tmp_path))
    assert isinstance(loaded, TinyReID) and loaded.scale == 2.0
    assert torch.equal(loaded.proj.weight, model.proj.weight)
    with pytest.raises(ValueError, match="already registered"):
        register_model("TinyReID", TinyReID)
    with pytest.raises(TypeError, match="PretrainedMixin"):
        register_model("Linear", nn.Linear)
    with pytest.raises(TypeError, match="`name`"):
        register_model("", TinyReID)


def test_builtin_models_are_every_model_of_the_package():
    assert {"AGW", "DEEN"} <= set(registered_models())
    assert all(issubclass(cls, PretrainedMixin) for cls in registered_models().values())


# ------------------------------------------------------------------------------------------------ model card


@dataclass
class Recipe:
    epochs: int = 151
    lr: float = 0.1
    optimizer: str = "SGD, momentum 0.9, nesterov"


def test_model_card_states_recipe_dataset_protocol_and_results(deen, tmp_path):
    result = toy_result(feature="official", flip=False, selection="last")
    d = save_pretrained(deen, tmp_path, recipe=Recipe(), results=result, license="mit", description="A test model.")
    card = (d / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: vireid-layers\n") and "license: mit" in card
    assert "A test model." in card
    assert "| epochs | 151 |" in card and "| optimizer | SGD, momentum 0.9, nesterov |" in card
    assert "## Dataset\n\nsysu\n" in card  # read from the results' settings
    assert "## Evaluation protocol\n\nsysu (mode all)\n" in card
    assert result.format_table() in card  # the table with its evaluation settings
    assert "- feature: " in card and "- checkpoint selection: " in card
    assert "| num_classes | 5 |" in card
    stored = json.loads((d / "results.json").read_text())
    assert ProtocolResult.from_dict(stored[0]).as_dict() == result.as_dict()


def test_model_card_says_what_was_not_stated(deen):
    card = model_card(model_config(deen) | {"embed_dim": 512, "preprocess": {"height": H}})
    for section in ("Training recipe", "Dataset", "Evaluation protocol", "Results"):
        assert f"## {section}\n\nNot stated.\n" in card


def test_model_card_takes_a_protocol_object_and_text(deen):
    from vireid_layers.evaluation import SYSUProtocol

    card = model_card(model_config(deen), protocol=SYSUProtocol(mode="indoor"), recipe="151 epochs of DEEN.")
    assert "sysu" in card and "indoor" in card and "151 epochs of DEEN." in card
    with pytest.raises(TypeError, match="`recipe`"):
        model_card(model_config(deen), recipe=3)


# ------------------------------------------------------------------------------------------------ the Hub, mocked


class FakeHub(types.ModuleType):
    """Stands in for ``huggingface_hub``: downloads copy from a local 'remote' folder, uploads are recorded."""

    def __init__(self, remote: Path, cache: Path) -> None:
        super().__init__("huggingface_hub")
        self.remote, self.cache, self.downloads, self.calls = remote, cache, [], []
        hub = self

        class HfApi:
            def __init__(self, token=None):
                hub.calls.append(("HfApi", token))

            def create_repo(self, repo_id, private=True, exist_ok=False):
                hub.calls.append(("create_repo", repo_id, private, exist_ok))

            def upload_folder(self, repo_id, folder_path, commit_message):
                files = sorted(p.name for p in Path(folder_path).iterdir())
                hub.calls.append(("upload_folder", repo_id, files, commit_message))
                shutil.copytree(folder_path, hub.remote / repo_id, dirs_exist_ok=True)
                return f"https://huggingface.co/{repo_id}/commit/abc"

        self.HfApi = HfApi

    def hf_hub_download(self, repo_id, filename, revision=None, cache_dir=None):
        self.downloads.append((repo_id, filename, revision))
        source = self.remote / repo_id / filename
        if not source.is_file():
            raise FileNotFoundError(f"{repo_id} has no {filename}")
        target = self.cache / repo_id / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        return str(target)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    hub = FakeHub(tmp_path / "remote", tmp_path / "cache")
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    return hub


def test_push_to_hub_then_from_pretrained_by_repository_id(deen, fake_hub):
    url = push_to_hub(deen, "lab/deen-sysu", results=toy_result(), token="t0")
    assert url.endswith("/commit/abc")
    assert ("create_repo", "lab/deen-sysu", True, True) in fake_hub.calls
    upload = next(c for c in fake_hub.calls if c[0] == "upload_folder")
    assert upload[2] == ["README.md", "config.json", "model.safetensors", "results.json"]
    assert 'from_pretrained("lab/deen-sysu")' in (fake_hub.remote / "lab/deen-sysu/README.md").read_text()
    loaded = from_pretrained("lab/deen-sysu", revision="v1")
    assert ("lab/deen-sysu", "config.json", "v1") in fake_hub.downloads
    assert ("lab/deen-sysu", "model.safetensors", "v1") in fake_hub.downloads
    x = images(2)
    with torch.no_grad():
        assert torch.equal(loaded.embed(x, 0), deen.embed(x, 0))
    assert ImagePreprocessor.from_pretrained("lab/deen-sysu") == ImagePreprocessor.official("DEEN")


def test_model_method_pushes_too(deen, fake_hub):
    deen.push_to_hub("lab/other", private=False)
    assert ("create_repo", "lab/other", False, True) in fake_hub.calls


def test_hub_errors(deen, fake_hub, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"has no config.json"):
        from_pretrained("lab/missing")
    with pytest.raises(ValueError, match="`repo_id`"):
        push_to_hub(deen, "no-owner")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(ImportError, match=r"vireid-layers\[hub\]"):
        from_pretrained("lab/deen-sysu")
