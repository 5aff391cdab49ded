"""Assemble a DEEN-like network from vireid-layers blocks and train it for a few steps on random data.

It shows, without the engine or any data, how the blocks fit on the two-stream backbone (MFA after stages
1-3, DEE after MFA3, BN neck and classifier) and how the DEEN losses are wired with explicit labels and
modalities; ``vireid_layers.models.DEEN`` is the same network as one module, and ``vireid-train``
(``examples/train.py``) trains and evaluates it on real or synthetic data. Defaults are small enough for a laptop CPU
(ResNet-18, 128x64 images, 4 identities x 2 images x 2 modalities); ``--backbone resnet50 --height 384
--width 144 --identities 6 --instances 4`` is the official SYSU setting.

Run ``python examples/deen_random.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vireid_layers import (
    DEE,
    MFA,
    CPMLoss,
    HardTripletLoss,
    OrthogonalLoss,
    TwoStreamBackbone,
    build_two_stream_backbone,
)


class DEENLike(nn.Module):
    """Two-stream backbone + MFA after stages 1-3 + DEE after MFA3 + BN neck + classifier (DEEN, SYSU variant)."""

    def __init__(self, backbone: TwoStreamBackbone, num_classes: int, num_branches: int = 2) -> None:
        super().__init__()
        self.backbone = backbone
        channels = [backbone.stem_channels, *backbone.channels]
        reductions = [backbone.stem_reduction, *backbone.reductions]
        # MFA_i aggregates the map entering stage i (low) into the map it produces (high).
        self.mfa = nn.ModuleList(
            MFA(channels[i + 1], channels[i], stride=reductions[i + 1] // reductions[i]) for i in range(3)
        )
        self.dee = DEE(channels[3], num_branches=num_branches)
        self.num_branches = num_branches
        self.neck = nn.BatchNorm1d(channels[4])
        self.neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(channels[4], num_classes, bias=False)
        nn.init.normal_(self.neck.weight, 1.0, 0.01)
        nn.init.zeros_(self.neck.bias)
        nn.init.normal_(self.classifier.weight, 0.0, 0.001)

    def forward(self, images: Tensor, modalities: Tensor) -> tuple[Tensor, Tensor]:
        """Return the pooled features ((1+K)N, C) and the logits ((1+K)N, classes)."""
        x_low = self.backbone.forward_stem(images, modalities)
        for i, mfa in enumerate(self.mfa):
            x_low = mfa(self.backbone.forward_stage(i, x_low), x_low)
        x = self.backbone.forward_stage(3, self.dee(x_low))
        pooled = x.mean(dim=(2, 3))
        return pooled, self.classifier(self.neck(pooled))


def random_batch(identities: int, instances: int, height: int, width: int, generator: torch.Generator):
    """A shuffled P x K x 2 batch: labels and modalities are explicit, the order is arbitrary."""
    labels = torch.arange(identities).repeat_interleave(2 * instances) * 7 + 100  # arbitrary label values
    modalities = torch.tensor([0, 1]).repeat_interleave(instances).repeat(identities)
    order = torch.randperm(labels.numel(), generator=generator)
    images = torch.randn(labels.numel(), 3, height, width, generator=generator)
    return images, labels[order], modalities[order]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet18", help="timm model name")
    parser.add_argument("--height", type=int, default=128, help="image height")
    parser.add_argument("--width", type=int, default=64, help="image width")
    parser.add_argument("--identities", type=int, default=4, help="identities per batch (P)")
    parser.add_argument("--instances", type=int, default=2, help="images per identity and modality (K)")
    parser.add_argument("--steps", type=int, default=5, help="optimisation steps")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the random batches")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where to run")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    device = torch.device(args.device)
    backbone = build_two_stream_backbone(args.backbone, pretrained=False)
    model = DEENLike(backbone, num_classes=args.identities).to(device).train()
    cpm, triplet, orthogonal = CPMLoss(margin=0.2), HardTripletLoss(margin=0.3), OrthogonalLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)

    print(f"DEEN-like network on {args.backbone}, {args.height}x{args.width}, device {device}")
    print(f"batch: {args.identities} identities x {args.instances} images x 2 modalities (shuffled order)")
    print(f"{'step':>4} {'ce':>8} {'triplet':>8} {'cpm':>8} {'ort':>9} {'total':>8} {'time':>7}")
    for step in range(1, args.steps + 1):
        images, labels, modalities = random_batch(args.identities, args.instances, args.height, args.width, generator)
        images, labels, modalities = images.to(device), labels.to(device), modalities.to(device)
        targets = (labels - 100) // 7  # the random labels are 100, 107, ...: class indices for the classifier
        start = time.perf_counter()
        pooled, logits = model(images, modalities)
        n, k = labels.numel(), model.num_branches
        repeat = 1 + k  # DEE appends K generated copies of every row
        original, generated = pooled[:n], pooled[n:].view(k, n, -1)
        terms = {
            "ce": F.cross_entropy(logits, targets.repeat(repeat)),
            "triplet": triplet(pooled, labels.repeat(repeat)),
            "cpm": 0.8 * cpm(original, generated, labels, modalities),
            "ort": 0.01 * orthogonal(generated),
        }
        total = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        values = " ".join(f"{v.item():8.4f}" if name != "ort" else f"{v.item():9.5f}" for name, v in terms.items())
        print(f"{step:>4} {values} {total.item():8.4f} {elapsed:6.2f}s")
    print("done: every loss term is finite" if torch.isfinite(total) else "non-finite loss!")


if __name__ == "__main__":
    main()
