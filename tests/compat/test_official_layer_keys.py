"""Each block's entries of an official checkpoint load with ``strict=True`` into the library's layer.

The sub-dicts come from the fake official checkpoints of tests/official_checkpoints.py, which follow
reference/official_checkpoints.md key by key: IWPA from DDAG's ``wpa.*`` (its ``fc1`` is a one-element
``nn.Sequential``: ``wpa.fc1.0.weight`` / ``.bias``; ``wpa.W.*`` is dead), NonLocal from AGW's ``NL_*``, MAM and
PAM from MPANet's ``backbone.MAM{3,4}.*`` and ``spatial_attention.*``, MFA and DEE from DEEN's ``MFA*`` and
``DEE.*``. After loading, the layer holds exactly the checkpoint's numbers (the dead ones aside).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from official_checkpoints import build_state_dict, layout
from torch import Tensor, nn

from vireid_layers import DEE, IWPA, MAM, MFA, PAM, NonLocal

# (model, entries taken from the checkpoint, prefix stripped from their keys, the layer)
CASES: list[tuple[str, str, str, Callable[[], nn.Module]]] = [
    ("ddag", "wpa.", "wpa.", lambda: IWPA(2048, parts=3)),
    ("agw", "NL_2.0.", "NL_2.0.", lambda: NonLocal(512)),
    ("agw", "NL_3.2.", "NL_3.2.", lambda: NonLocal(1024)),
    ("mpanet", "backbone.MAM3.", "backbone.MAM3.", lambda: MAM(1024)),
    ("mpanet", "backbone.MAM4.", "backbone.MAM4.", lambda: MAM(2048)),
    ("mpanet", "spatial_attention.", "", lambda: PAM(2048, num_parts=6)),  # the hook renames spatial_attention.*
    ("deen-sysu", "MFA1.", "MFA1.", lambda: MFA(256, 64, stride=1)),
    ("deen-sysu", "MFA2.", "MFA2.", lambda: MFA(512, 256, stride=2)),
    ("deen-sysu", "MFA3.", "MFA3.", lambda: MFA(1024, 512, stride=2)),
    ("deen-regdb", "MFA2.", "MFA2.", lambda: MFA(512, 256, stride=2)),
    ("deen-sysu", "DEE.", "DEE.", lambda: DEE(1024)),
    ("deen-regdb", "DEE.", "DEE.", lambda: DEE(512)),
]


def sorted_values(tensors: list[Tensor]) -> Tensor:
    return torch.sort(torch.cat([t.flatten() for t in tensors if t.is_floating_point()])).values


@pytest.mark.parametrize(("model", "select", "strip", "factory"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_official_block_loads_strictly(model: str, select: str, strip: str, factory: Callable[[], nn.Module]) -> None:
    entries = [e for e in layout(model) if e.key.startswith(select)]
    assert entries, select
    official = build_state_dict(entries, seed=11, dead="random")
    sub = {key.removeprefix(strip): value for key, value in official.items()}
    layer = factory()
    layer.load_state_dict(sub, strict=True)
    # Every live number of the checkpoint is in the layer, and nothing else (DEE stacks its branches, MAM and PAM
    # rename their convolutions: compare the sorted values).
    live = [official[e.key] for e in entries if e.status != "dead"]
    torch.testing.assert_close(sorted_values(list(layer.state_dict().values())), sorted_values(live), rtol=0, atol=0)
    counters = {k: v for k, v in layer.state_dict().items() if k.endswith("num_batches_tracked")}
    assert all(int(v) == 7 for v in counters.values())
    assert len(counters) == sum(e.key.endswith("num_batches_tracked") and e.status != "dead" for e in entries)
