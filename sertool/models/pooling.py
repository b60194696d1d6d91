"""Pooling from frame-level feature maps to one vector per segment.

Statistics pooling (Snyder et al. 2018; as in the paper and WeSpeaker's ``TSTP``): mean ‖
standard deviation over time of every (channel, frequency) output of the trunk. The
no-pooling variant of the paper's ablation flattens a fixed-size map instead.
"""

from __future__ import annotations

import torch
from torch import nn


class StatsPool(nn.Module):
    """(B, D, T) -> (B, 2D): mean ‖ std over the last axis.

    ``variance="population"`` (sertool's): population std floored at sqrt(eps), so a single
    frame is legal. ``"tstp"``: WeSpeaker's TSTP, sqrt(unbiased variance + 1e-7), which an
    imported WeSpeaker model needs to reproduce its embeddings (one frame gives NaN there, as
    in WeSpeaker).
    """

    def __init__(self, eps: float = 1e-5, variance: str = "population"):
        super().__init__()
        if variance not in ("population", "tstp"):
            raise ValueError(f"variance must be population or tstp, not {variance!r}")
        self.variance = variance
        self.eps = eps if variance == "population" else 1e-7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1)
        if self.variance == "tstp":
            std = torch.sqrt(torch.var(x, dim=-1) + self.eps)
        else:
            std = torch.sqrt(x.var(dim=-1, unbiased=False).clamp(min=self.eps))
        return torch.cat([mean, std], dim=-1)

    def from_sums(self, count: int, total: torch.Tensor, total_sq: torch.Tensor
                  ) -> torch.Tensor:
        """The same statistics from running sums over time (float64), so a long input can be
        pooled chunk by chunk: ``total`` = sum of x, ``total_sq`` = sum of x^2, both (B, D)."""
        mean = total / count
        squares = (total_sq - count * mean * mean).clamp(min=0.0)
        if self.variance == "tstp":
            std = torch.sqrt(squares / (count - 1) + self.eps)
        else:
            std = torch.sqrt((squares / count).clamp(min=self.eps))
        return torch.cat([mean, std], dim=-1).float()


class MeanPool(nn.Module):
    """(B, D, T) -> (B, D): mean over time (the 1D-CNN's global average pooling)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-1)


class FlattenPool(nn.Module):
    """(B, D, T) -> (B, D*T): no statistics pooling; T must be fixed (paper's ablation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def fix_length(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Truncate (keep the start) or zero-pad (at the end) (B, T, F) features to ``frames``."""
    t = x.shape[1]
    if t >= frames:
        return x[:, :frames]
    return torch.nn.functional.pad(x, (0, 0, 0, frames - t))
