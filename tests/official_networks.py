"""The official DDAG and MPANet networks written out in plain code, for the float64 reference tests.

Written from reference/official_checkpoints.md and the reference notes (ddag_agw_eval.md, deen_mpanet_mso.md), not
from the official code: module names and registration order give exactly the official state-dict keys (checked
against the documented layouts of tests/official_checkpoints.py in tests/compat), and the forwards follow the
official data flow literally (loops, the pyGAT pair tensor, the parameter-free InstanceNorm of MAM, ...).

* :class:`OfficialDDAG` (``mangye16/DDAG`` ``embed_net`` with ``wpa=True``): three timm ResNets of which only
  the stems or the trunk run, :class:`OfficialIWPA` with its ``fc1`` Sequential and dead ``W`` block, the
  :class:`OfficialGAT` heads, BN neck, shared classifier and the dead ``classifier1`` / ``classifier2``;
  :func:`official_adjacency` is the graph of ``train_ddag.py``.
* :class:`OfficialMPANet` (``DoubtedSteam/MPANet`` ``Baseline``, SYSU config): one timm ResNet with
  :class:`OfficialMAM` ``MAM3`` / ``MAM4`` registered inside it, ``spatial_attention``, the modality
  classifiers and their EMA copies (frozen parameters updated inside the forward), BN neck, classifier.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "OfficialDDAG",
    "OfficialGAT",
    "OfficialIWPA",
    "OfficialMAM",
    "OfficialMPANet",
    "OfficialResNetHolder",
    "official_adjacency",
]


class OfficialIWPA(nn.Module):
    """The official ``IWPA`` forward, literally (``t = 1``): part pooling, unscaled attention, softmax gate, BN."""

    def __init__(self, channels: int, part: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Sequential(nn.Conv2d(channels, channels, 1))  # the one-element Sequential of the code
        self.fc2 = nn.Conv2d(channels, channels, 1)
        self.fc3 = nn.Conv2d(channels, channels, 1)
        self.W = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels))  # never called
        self.bottleneck = nn.BatchNorm1d(channels)
        self.gate = nn.Parameter(torch.full((part,), 1.0 / part))

    def forward(self, x: Tensor, feat: Tensor, t: int, part: int) -> Tensor:
        b, c = x.shape[:2]
        parts = F.adaptive_avg_pool2d(x, (part, 1)).view(b, c, 1, part)
        query = self.fc1(parts).view(b, c, -1).permute(0, 2, 1)  # (b, p, c)
        key = self.fc2(parts).view(b, c, -1)  # (b, c, p)
        value = self.fc3(parts).view(b, c, -1).permute(0, 2, 1)  # (b, p, c)
        attention = F.softmax(torch.matmul(query, key), dim=-1)
        refined = torch.matmul(attention, value).permute(0, 2, 1)  # (b, c, p)
        weights = F.softmax(self.gate, dim=0)
        aggregated = torch.zeros(b, c, dtype=x.dtype)
        for i in range(part):
            aggregated = aggregated + weights[i] * refined[:, :, i]
        _ = F.adaptive_avg_pool2d(x, 1)  # computed and discarded by the official code
        return self.bottleneck(aggregated + feat)


class OfficialGAT(nn.Module):
    """pyGAT's ``GraphAttentionLayer`` as DDAG uses it: the (N, N, 2d) pair tensor, -9e15 masking, dim-1 softmax."""

    def __init__(self, fin: int, fout: int, dropout: float, alpha: float, concat: bool) -> None:
        super().__init__()
        self.fout, self.dropout, self.alpha, self.concat = fout, dropout, alpha, concat
        self.W = nn.Parameter(torch.empty(fin, fout))
        self.a = nn.Parameter(torch.empty(2 * fout, 1))
        nn.init.xavier_uniform_(self.W, gain=1.414)
        nn.init.xavier_uniform_(self.a, gain=1.414)

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        h = torch.mm(x, self.W)
        n = h.size(0)
        pairs = torch.cat([h.repeat(1, n).view(n * n, -1), h.repeat(n, 1)], dim=1).view(n, -1, 2 * self.fout)
        e = F.leaky_relu(torch.matmul(pairs, self.a).squeeze(2), self.alpha)
        attention = torch.where(adj > 0, e, -9e15 * torch.ones_like(e))
        attention = F.dropout(F.softmax(attention, dim=1), self.dropout, training=self.training)
        h_prime = torch.matmul(attention, h)
        return F.elu(h_prime) if self.concat else h_prime


class OfficialResNetHolder(nn.Module):
    """``visible_module.visible`` / ``thermal_module.thermal`` / ``base_resnet.base``: one full ResNet each."""

    def __init__(self, name: str, arch: str) -> None:
        super().__init__()
        net = timm.create_model(arch, num_classes=0)
        block = net.layer4[0]  # last_conv_stride=1: the stride sits on conv2 (Bottleneck) or conv1 (BasicBlock)
        strided = block.conv2 if hasattr(block, "conv3") else block.conv1
        strided.stride = block.downsample[0].stride = (1, 1)
        self.add_module(name, net)


class OfficialDDAG(nn.Module):
    """The official ``embed_net`` with ``wpa=True``: training returns 4 outputs, evaluation the 2 test features."""

    def __init__(self, arch: str, n_class: int, low_dim: int, drop: float, part: int = 3, nheads: int = 4) -> None:
        super().__init__()
        self.thermal_module = OfficialResNetHolder("thermal", arch)
        self.visible_module = OfficialResNetHolder("visible", arch)
        self.base_resnet = OfficialResNetHolder("base", arch)
        dim = self.base_resnet.base.num_features
        self.drop, self.part = drop, part
        self.bottleneck = nn.BatchNorm1d(dim)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, n_class, bias=False)
        self.classifier1 = nn.Linear(dim, n_class, bias=False)  # dead
        self.classifier2 = nn.Linear(dim, n_class, bias=False)  # dead
        self.wpa = OfficialIWPA(dim, part)
        self.attentions = [OfficialGAT(dim, low_dim, drop, 0.2, True) for _ in range(nheads)]
        for i, attention in enumerate(self.attentions):
            self.add_module(f"attention_{i}", attention)
        self.out_att = OfficialGAT(low_dim * nheads, n_class, drop, 0.2, False)

    @staticmethod
    def stem(net: nn.Module, x: Tensor) -> Tensor:
        return net.maxpool(net.act1(net.bn1(net.conv1(x))))

    def forward(self, x1: Tensor, x2: Tensor, adj: Tensor | int, modal: int = 0) -> tuple[Tensor, ...]:
        if modal == 0:
            x = torch.cat((self.stem(self.visible_module.visible, x1), self.stem(self.thermal_module.thermal, x2)), 0)
        elif modal == 1:
            x = self.stem(self.visible_module.visible, x1)
        else:
            x = self.stem(self.thermal_module.thermal, x2)
        base = self.base_resnet.base
        x = base.layer4(base.layer3(base.layer2(base.layer1(x))))
        x_pool = F.adaptive_avg_pool2d(x, 1).view(x.size(0), x.size(1))
        feat = self.bottleneck(x_pool)
        if self.training:
            x_g = F.dropout(x_pool, self.drop, training=self.training)
            x_g = torch.cat([att(x_g, adj) for att in self.attentions], dim=1)
            x_g = F.dropout(x_g, self.drop, training=self.training)
            x_g = F.elu(self.out_att(x_g, adj))
        feat_att = self.wpa(x, feat, 1, self.part)
        if self.training:
            return x_pool, self.classifier(feat), self.classifier(feat_att), F.log_softmax(x_g, dim=1)
        return F.normalize(feat, p=2, dim=1), F.normalize(feat_att, p=2, dim=1)


def official_adjacency(labels: Tensor, n_class: int) -> Tensor:
    """As ``train_ddag.py``: one-hot rows of an identity matrix, A = L L^T + I, each row L2-normalised."""
    one_hot = torch.index_select(torch.eye(n_class, dtype=torch.float64), 0, labels)
    adj = torch.mm(one_hot, one_hot.t()) + torch.eye(len(labels), dtype=torch.float64)
    return adj / adj.pow(2).sum(1, keepdim=True).pow(0.5)


class OfficialMAM(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.channel_attention = nn.Sequential(
            nn.Conv2d(c, c // 16, 1, bias=False), nn.ReLU(), nn.Conv2d(c // 16, c, 1, bias=False), nn.Sigmoid()
        )
        self.IN = nn.InstanceNorm2d(c, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        mask = self.channel_attention(F.adaptive_avg_pool2d(x, 1))
        return x * mask + self.IN(x) * (1 - mask)


class OfficialMPANet(nn.Module):
    """The official ``Baseline`` (SYSU config) on a timm ResNet, written from the reference notes."""

    def __init__(self, name: str, num_classes: int, num_parts: int = 6, update_rate: float = 0.2) -> None:
        super().__init__()
        backbone = timm.create_model(name, num_classes=0)
        block = backbone.layer4[0]
        for conv in (getattr(block, "conv2", None) if hasattr(block, "conv3") else block.conv1, block.downsample[0]):
            conv.stride = (1, 1)
        c3, c4 = backbone.layer3[-1].bn2.num_features, backbone.num_features
        if hasattr(backbone.layer3[-1], "bn3"):
            c3 = backbone.layer3[-1].bn3.num_features
        backbone.MAM3, backbone.MAM4 = OfficialMAM(c3), OfficialMAM(c4)
        self.backbone = backbone
        self.num_parts, self.update_rate = num_parts, update_rate
        self.spatial_attention = nn.Conv2d(c4, num_parts, 1)
        nn.init.zeros_(self.spatial_attention.bias)
        dim = c4 * (num_parts + 1)
        self.visible_classifier = nn.Linear(dim, num_classes, bias=False)
        self.infrared_classifier = nn.Linear(dim, num_classes, bias=False)
        self.visible_classifier_ = nn.Linear(dim, num_classes, bias=False)
        self.visible_classifier_.weight = nn.Parameter(self.visible_classifier.weight.data, requires_grad=False)
        self.infrared_classifier_ = nn.Linear(dim, num_classes, bias=False)
        self.infrared_classifier_.weight = nn.Parameter(self.infrared_classifier.weight.data, requires_grad=False)
        self.bn_neck = nn.BatchNorm1d(dim)
        self.bn_neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)

    def maps(self, x: Tensor) -> Tensor:
        b = self.backbone
        x = b.maxpool(b.act1(b.bn1(b.conv1(x))))
        x = b.MAM3(b.layer3(b.layer2(b.layer1(x))))
        return b.MAM4(b.layer4(x))

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        fmap = self.maps(x)
        masks = torch.sigmoid(self.spatial_attention(fmap))
        parts = [(masks[:, k : k + 1] * fmap).mean(dim=(2, 3)) for k in range(self.num_parts)]
        return torch.cat([*parts, fmap.mean(dim=(2, 3))], dim=1), masks

    def forward(self, x: Tensor, cam_ids: Tensor) -> tuple[Tensor, ...]:
        feats, masks = self.features(x)
        neck = self.bn_neck(feats)
        if not self.training:
            return (neck,)
        ir = (cam_ids == 3) | (cam_ids == 6)
        r = self.update_rate
        with torch.no_grad():
            self.visible_classifier_.weight.data = (1 - r) * self.visible_classifier_.weight.data + r * (
                self.visible_classifier.weight.data
            )
            self.infrared_classifier_.weight.data = (1 - r) * self.infrared_classifier_.weight.data + r * (
                self.infrared_classifier.weight.data
            )
        own = torch.empty(x.shape[0], self.classifier.out_features, dtype=x.dtype)
        mean = torch.empty_like(own)
        for i in range(x.shape[0]):
            if ir[i]:
                own[i] = self.infrared_classifier(neck[i])
                mean[i] = self.visible_classifier_(neck[i]).detach()
            else:
                own[i] = self.visible_classifier(neck[i])
                mean[i] = self.infrared_classifier_(neck[i]).detach()
        return feats, neck, self.classifier(neck), masks, own, mean
