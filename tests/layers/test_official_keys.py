"""Official checkpoint keys load strictly into every layer that claims it.

The fake official state dicts are written from ``/work/shared/reference/official_checkpoints.md`` (key names,
shapes and dtypes of the DEEN §3.4, DDAG §4.4, MPANet §5.4 and AGW §6.4 groups, at the official sizes; floating
entries float32, ``num_batches_tracked`` int64 of shape []), not from the modules under test. The parameter
counts quoted there are checked too, so a wrong shape in this file cannot go unnoticed.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from vireid_layers.layers import CGSA, DEE, IWPA, MAM, MFA, PAM, NonLocal

Spec = list[tuple[str, tuple[int, ...]]]


def batch_norm(prefix: str, c: int) -> Spec:
    """``BN(C)``: weight, bias, running_mean, running_var [C] and num_batches_tracked [] (int64)."""
    return [(f"{prefix}.{name}", (c,)) for name in ("weight", "bias", "running_mean", "running_var")] + [
        (f"{prefix}.num_batches_tracked", ())
    ]


def materialise(spec: Spec, seed: int = 0) -> dict[str, Tensor]:
    """Distinct random float32 values (int64 counters), in the spec's order."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, Tensor] = {}
    for i, (key, shape) in enumerate(spec):
        if key.endswith("num_batches_tracked"):
            assert shape == ()
            sd[key] = torch.tensor(100 + i, dtype=torch.int64)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g)
    return sd


def n_params(spec: Spec) -> int:
    """Parameter count as the document counts it: every entry except the BatchNorm buffers."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(torch.Size(shape).numel() for key, shape in spec if not key.endswith(buffers))


def load_strict(module: nn.Module, sd: dict[str, Tensor]) -> None:
    result = module.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def assert_round_trip(module: nn.Module, factory: type[nn.Module] | None = None, **kwargs: object) -> None:
    """The module's own state dict loads strictly into a fresh module and reproduces every entry."""
    fresh = (factory or type(module))(**kwargs)  # type: ignore[arg-type]
    load_strict(fresh, module.state_dict())
    for key, value in module.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


# ------------------------------------------------------------------------------------------------ DDAG IWPA


def iwpa_spec(c: int = 2048, parts: int = 3) -> Spec:
    """DDAG §4.4, indices 962–980 (``wpa.`` stripped): gate, fc1.0 (Sequential), fc2, fc3, dead W, bottleneck."""
    conv = [("weight", (c, c, 1, 1)), ("bias", (c,))]
    return [
        ("gate", (parts,)),
        *[(f"fc1.0.{n}", s) for n, s in conv],
        *[(f"fc2.{n}", s) for n, s in conv],
        *[(f"fc3.{n}", s) for n, s in conv],
        *[(f"W.0.{n}", s) for n, s in conv],
        *batch_norm("W.1", c),
        *batch_norm("bottleneck", c),
    ]


def test_iwpa_official_ddag_keys_load_strict() -> None:
    spec = iwpa_spec()
    assert len(spec) == 980 - 962 + 1  # 19 entries
    sd = materialise(spec)
    m = IWPA(2048, parts=3)
    load_strict(m, sd)
    assert "fc1.0.weight" in sd and "W.0.weight" in sd  # the caller's dict is untouched
    mine = m.state_dict()
    assert torch.equal(mine["fc1.weight"], sd["fc1.0.weight"]) and torch.equal(mine["fc1.bias"], sd["fc1.0.bias"])
    same = ("gate", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias", *[k for k, _ in batch_norm("bottleneck", 1)])
    for key in same:
        assert torch.equal(mine[key], sd[key]), key
    assert not any(k.startswith("W.") for k in mine)
    # The used parameters of the official IWPA (the dead W block excluded) are exactly ours.
    used = [(k, s) for k, s in spec if not k.startswith("W.")]
    assert n_params(used) == sum(p.numel() for p in m.parameters())
    assert_round_trip(m, IWPA, channels=2048, parts=3)


def test_iwpa_official_keys_nested_in_a_full_checkpoint() -> None:
    """``wpa.fc1.0.*`` etc. next to other keys of a DDAG checkpoint, loaded into a model holding ``wpa``."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bottleneck = nn.BatchNorm1d(8)
            self.wpa = IWPA(8, parts=3)

    sd = {f"wpa.{k}": v for k, v in materialise(iwpa_spec(8, 3)).items()}
    sd.update(materialise(batch_norm("bottleneck", 8), seed=1))
    net = Net()
    load_strict(net, sd)
    assert torch.equal(net.wpa.fc1.weight, sd["wpa.fc1.0.weight"])
    load_strict(Net(), net.state_dict())  # our own layout still loads


def test_iwpa_without_official_keys_still_reports_missing() -> None:
    sd = materialise(iwpa_spec(8, 3))
    del sd["fc1.0.bias"]
    result = IWPA(8, parts=3).load_state_dict(sd, strict=False)
    assert result.missing_keys == ["fc1.bias"]


# ------------------------------------------------------------------------------------------------ DDAG CGSA


def test_cgsa_official_ddag_keys_load_strict() -> None:
    """DDAG §4.4, indices 981–990: attention_{0..3}.W [2048, 512], .a [1024, 1]; out_att.W [2048, 395], .a [790, 1]."""
    spec: Spec = []
    for i in range(4):
        spec += [(f"attention_{i}.W", (2048, 512)), (f"attention_{i}.a", (1024, 1))]
    spec += [("out_att.W", (2048, 395)), ("out_att.a", (790, 1))]
    sd = materialise(spec)
    m = CGSA(2048, 395)
    load_strict(m, sd)
    for i in range(4):
        assert torch.equal(m.attentions.W[i], sd[f"attention_{i}.W"])
        assert torch.equal(m.attentions.a[i], sd[f"attention_{i}.a"])
    assert torch.equal(m.out_att.W[0], sd["out_att.W"]) and torch.equal(m.out_att.a[0], sd["out_att.a"])
    assert n_params(spec) == sum(p.numel() for p in m.parameters())
    assert_round_trip(m, CGSA, in_features=2048, num_classes=395)


# ------------------------------------------------------------------------------------------------- DEEN DEE


def dee_spec(c: int) -> Spec:
    """DEEN §3.4: FC11..FC13 [C/4, C, 3, 3] (no bias), FC1 [C, C/4, 1, 1] + bias [C]; then branch 2."""
    spec: Spec = []
    for b in (1, 2):
        spec += [(f"FC{b}{d}.weight", (c // 4, c, 3, 3)) for d in (1, 2, 3)]
        spec += [(f"FC{b}.weight", (c, c // 4, 1, 1)), (f"FC{b}.bias", (c,))]
    return spec


@pytest.mark.parametrize(("channels", "params"), [(1024, 14_682_112), (512, 3_671_040)])
def test_dee_official_deen_keys_load_strict(channels: int, params: int) -> None:
    spec = dee_spec(channels)
    assert len(spec) == 10 and n_params(spec) == params  # SYSU / RegDB counts of §3.4
    sd = materialise(spec)
    m = DEE(channels)
    load_strict(m, sd)
    for j, conv in enumerate(m.dilated):
        assert torch.equal(conv.weight, torch.cat([sd[f"FC1{j + 1}.weight"], sd[f"FC2{j + 1}.weight"]]))
    assert torch.equal(m.project.weight, torch.cat([sd["FC1.weight"], sd["FC2.weight"]]))
    assert torch.equal(m.project.bias, torch.cat([sd["FC1.bias"], sd["FC2.bias"]]))
    assert params == sum(p.numel() for p in m.parameters())
    assert_round_trip(m, DEE, channels=channels)


# ------------------------------------------------------------------------------------------------- DEEN MFA


def mfa_spec(h: int, low: int) -> Spec:
    """DEEN §3.4 template (26 entries): CNL g/theta/phi/W.0 + BN(h), PNL the same with l/2 inner channels."""
    half = low // 2
    spec: Spec = []
    for part, inner in (("CNL", low), ("PNL", half)):
        spec += [
            (f"{part}.g.weight", (inner, low, 1, 1)),
            (f"{part}.g.bias", (inner,)),
            (f"{part}.theta.weight", (inner, h, 1, 1)),
            (f"{part}.theta.bias", (inner,)),
            (f"{part}.phi.weight", (inner, low, 1, 1)),
            (f"{part}.phi.bias", (inner,)),
            (f"{part}.W.0.weight", (h, inner, 1, 1)),
            (f"{part}.W.0.bias", (h,)),
            *batch_norm(f"{part}.W.1", h),
        ]
    return spec


@pytest.mark.parametrize(
    ("high", "low", "stride", "params"),
    [(256, 64, 1, 63_264), (512, 256, 2, 594_048), (1024, 512, 2, 2_367_744)],
    ids=["MFA1", "MFA2", "MFA3"],
)
def test_mfa_official_deen_keys_load_strict(high: int, low: int, stride: int, params: int) -> None:
    spec = mfa_spec(high, low)
    assert len(spec) == 26 and n_params(spec) == params
    sd = materialise(spec)
    m = MFA(high, low, stride=stride)
    load_strict(m, sd)
    mine = m.state_dict()
    for key, value in sd.items():
        ours = key.replace("CNL.", "channel.", 1).replace("PNL.", "spatial.", 1)
        assert torch.equal(mine[ours], value), key
    assert params == sum(p.numel() for p in m.parameters())
    assert m.channel.phi.stride == (stride, stride) and m.channel.W[0].stride == (stride, stride)
    assert_round_trip(m, MFA, high_channels=high, low_channels=low, stride=stride)


# ------------------------------------------------------------------------------------------------ AGW NonLocal


@pytest.mark.parametrize("channels", [512, 1024])
def test_non_local_official_agw_keys_load_strict(channels: int) -> None:
    """AGW §6.4 template (13 entries; inter_channels = 1): g.0, W.0, W.1 BN(C), theta, phi."""
    c = channels
    spec: Spec = [
        ("g.0.weight", (1, c, 1, 1)),
        ("g.0.bias", (1,)),
        ("W.0.weight", (c, 1, 1, 1)),
        ("W.0.bias", (c,)),
        *batch_norm("W.1", c),
        ("theta.weight", (1, c, 1, 1)),
        ("theta.bias", (1,)),
        ("phi.weight", (1, c, 1, 1)),
        ("phi.bias", (1,)),
    ]
    assert len(spec) == 13
    sd = materialise(spec)
    m = NonLocal(c)
    load_strict(m, sd)
    for key, value in sd.items():
        assert torch.equal(m.state_dict()[key], value), key
    assert_round_trip(m, NonLocal, channels=c)


# ------------------------------------------------------------------------------------------ MPANet MAM / PAM


@pytest.mark.parametrize(("channels", "hidden"), [(1024, 64), (2048, 128)], ids=["MAM3", "MAM4"])
def test_mam_official_mpanet_keys_load_strict(channels: int, hidden: int) -> None:
    """MPANet §5.4: channel_attention.0.weight [C/16, C, 1, 1], .2.weight [C, C/16, 1, 1]; no IN keys."""
    spec: Spec = [
        ("channel_attention.0.weight", (hidden, channels, 1, 1)),
        ("channel_attention.2.weight", (channels, hidden, 1, 1)),
    ]
    sd = materialise(spec)
    m = MAM(channels)
    load_strict(m, sd)
    assert torch.equal(m.fc1.weight, sd["channel_attention.0.weight"])
    assert torch.equal(m.fc2.weight, sd["channel_attention.2.weight"])
    assert_round_trip(m, MAM, channels=channels)


def test_pam_official_mpanet_keys_load_strict() -> None:
    """MPANet §5.4: spatial_attention.weight [6, 2048, 1, 1] / .bias [6]."""
    sd = materialise([("spatial_attention.weight", (6, 2048, 1, 1)), ("spatial_attention.bias", (6,))])
    m = PAM(2048, num_parts=6)
    load_strict(m, sd)
    assert torch.equal(m.generator.weight, sd["spatial_attention.weight"])
    assert torch.equal(m.generator.bias, sd["spatial_attention.bias"])
    assert_round_trip(m, PAM, channels=2048)
