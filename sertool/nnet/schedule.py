"""The paper's learning-rate schedule (section 4.2), the one definition used by every trainer.

LR constant for the first ``constant`` epochs, then halved every ``halve_every`` epochs.
"""

from __future__ import annotations

import math

import torch


def lr_factor(epoch: int, constant: int, halve_every: int) -> float:
    """LR multiplier of (1-based) ``epoch``: 1 for the first ``constant`` epochs, then halved
    every ``halve_every`` epochs."""
    extra = max(0, epoch - constant)
    return 0.5 ** math.ceil(extra / halve_every)


def paper_scheduler(optimizer: torch.optim.Optimizer, constant: int, halve_every: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler stepped once per epoch: its step k (0-based) sets the LR of epoch k + 1."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: lr_factor(k + 1, constant, halve_every))
