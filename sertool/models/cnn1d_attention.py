"""1D-CNN with channel and spatial attention (Lee & Nadeem 2025) on MFCC sequences.

Conv1D(256, k=7) -> BN -> ReLU -> Conv1D(256, k=7) -> BN -> ReLU -> dropout 0.2 -> channel
attention (CBAM: shared MLP with reduction 16 on average- and max-pooled descriptors) ->
spatial attention (k=7 convolution over the channel-average and channel-max maps) -> global
average over time (the pooled vector, 256-d) -> dense 64 (ReLU) -> classes.
The convolutions run over time with the MFCC coefficients as input channels; input is
``(B, T, F)`` like every sertool model.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from sertool.models.pooling import MeanPool


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        w = torch.sigmoid(self.mlp(x.mean(dim=-1)) + self.mlp(x.amax(dim=-1)))
        return x * w.unsqueeze(-1)


class SpatialAttention(nn.Module):
    def __init__(self, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv1d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(maps))


class CNN1DTrunk(nn.Module):
    def __init__(self, feat_dim: int, channels: int = 256, kernel: int = 7,
                 dropout: float = 0.2, reduction: int = 16, spatial_kernel: int = 7):
        super().__init__()
        pad = kernel // 2
        self.net = nn.Sequential(
            nn.Conv1d(feat_dim, channels, kernel, padding=pad), nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel, padding=pad), nn.BatchNorm1d(channels),
            nn.ReLU(), nn.Dropout(dropout),
            ChannelAttention(channels, reduction), SpatialAttention(spatial_kernel))
        self.pool = MeanPool()
        self.pooled_dim = channels
        self.min_frames = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.net(x.transpose(1, 2)))


def dense_head(in_dim: int, dense: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, dense), nn.ReLU(), nn.Linear(dense, num_classes))


def trunk_from_conf(feat_dim: int, conf: Mapping) -> CNN1DTrunk:
    """The trunk of a resolved ``cnn1d_attention`` configuration (sertool.models.TRUNKS)."""
    return CNN1DTrunk(feat_dim, int(conf["channels"]), int(conf["kernel"]),
                      float(conf["dropout"]), int(conf["reduction"]),
                      int(conf["spatial_kernel"]))
