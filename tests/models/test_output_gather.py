"""DEENOutput.gather / AGWOutput.gather: a model output merges itself across DDP ranks (gloo, two processes)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

from vireid_layers.data import ImageSample
from vireid_layers.models import AGWOutput, DEENOutput
from vireid_layers.recipes import gather_outputs_and_labels

N, K, D, C = 3, 2, 4, 5  # images per rank, DEE branches, feature size, classes


def deen_output(rank: int) -> DEENOutput:
    """A DEEN-shaped output whose every value encodes (rank, block, row, column)."""
    pooled = torch.arange((1 + K) * N * D, dtype=torch.float64).view((1 + K) * N, D) + 1000 * rank
    pooled.requires_grad_(True)
    features, logits = 2 * pooled, pooled[:, :1].expand(-1, C) + 0.5
    return DEENOutput(pooled, features, logits, pooled[:N], pooled[N:].unflatten(0, (K, N)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        out = deen_output(rank)
        gathered = out.gather()
        gathered.pooled.sum().backward()  # every rank's loss of the global batch: the gradient of its own rows
        labels = torch.arange(N) + 10 * rank
        batch = ImageSample(torch.zeros(N, 3, 2, 2), labels, labels, torch.full((N,), rank))
        _, small = gather_outputs_and_labels(out, batch)
        agw = AGWOutput(*(torch.full((N, D), float(rank)) for _ in range(3))).gather()
        torch.save(
            {
                "gathered": [t.detach() for t in gathered],
                "grad": out.pooled.grad,
                "small": tuple(small),
                "agw": tuple(agw),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        torch.distributed.destroy_process_group()


def test_gather_keeps_the_block_layout(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    outputs = [deen_output(r) for r in range(2)]
    # The reference: block k of the gathered output is block k of rank 0, then block k of rank 1.
    blocks = [torch.cat([o.pooled.detach()[k * N : (k + 1) * N] for o in outputs]) for k in range(1 + K)]
    expected = torch.cat(blocks)
    for r in range(2):
        pooled, features, logits, original, generated = results[r]["gathered"]
        assert torch.equal(pooled, expected) and torch.equal(features, 2 * expected)
        assert torch.equal(logits, expected[:, :1].expand(-1, C) + 0.5)
        assert torch.equal(original, expected[: 2 * N])
        assert torch.equal(generated, expected[2 * N :].unflatten(0, (K, 2 * N)))
        # Both ranks back-propagate the same global loss: each row's gradient arrives from both (DDP then averages).
        assert torch.equal(results[r]["grad"], torch.full(((1 + K) * N, D), 2.0, dtype=torch.float64))
        image, identity, _, modality = results[r]["small"]
        assert image.shape == (0, 3, 2, 2)  # the losses do not read the images: not sent
        assert identity.tolist() == [0, 1, 2, 10, 11, 12] and modality.tolist() == [0] * N + [1] * N
        # DEENOutput.per_row labels every gathered row with the gathered labels.
        assert DEENOutput(*results[r]["gathered"]).per_row(identity).shape == (6 * (1 + K),)
        assert [t[:, 0].tolist() for t in results[r]["agw"]] == [[0.0] * N + [1.0] * N] * 3


def test_single_process_gather_is_the_output_itself() -> None:
    out = deen_output(0)
    assert out.gather() is out
    agw = AGWOutput(torch.ones(2, D), torch.ones(2, D), torch.ones(2, C))
    assert agw.gather() is agw
