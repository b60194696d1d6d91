"""SpecAugment as the paper applies it (Table 1), a training step on feature matrices.

SpecAugment (Park et al. 2019) per sample: ``n_freq`` frequency masks of width f ~ U[0, F] at
f0 ~ U[0, nu - f] and ``n_time`` time masks of width t ~ U[0, W'] at t0 ~ U[0, T - t], with
W' = min(W, p * T). Masked values are set to zero (features are mean-normalised, so zero is the
mean). Features are ``(T, F)`` or ``(B, T, F)``; in a batch every sample draws its own masks.
:data:`POLICIES` is the one table of policy names; configurations and the CLI check against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sertool.errors import SertoolError

POLICIES: dict[str, dict] = {
    "none": {"F": 0, "W": 0, "p": 0.0, "n_freq": 0, "n_time": 0},
    "conservative": {"F": 15, "W": 50, "p": 0.2, "n_freq": 2, "n_time": 2},
    "aggressive": {"F": 27, "W": 70, "p": 0.2, "n_freq": 2, "n_time": 2},
}


class SpecAugmentError(SertoolError, ValueError):
    """An unknown policy name."""


@dataclass(frozen=True)
class SpecAugment:
    F: int
    W: int
    p: float
    n_freq: int = 2
    n_time: int = 2

    @classmethod
    def from_policy(cls, name: str) -> SpecAugment:
        if name not in POLICIES:
            raise SpecAugmentError(f"unknown SpecAugment policy {name!r} "
                                   f"(known: {', '.join(POLICIES)})")
        return cls(**POLICIES[name])

    @property
    def is_identity(self) -> bool:
        return (self.n_freq == 0 or self.F == 0) and (self.n_time == 0 or self.W == 0
                                                      or self.p == 0)

    def masks(self, frames: int, dims: int, generator: torch.Generator | None = None
              ) -> torch.Tensor:
        """Boolean (T, F) mask of one sample: True where the value is zeroed."""
        mask = torch.zeros(frames, dims, dtype=torch.bool)
        for _ in range(self.n_freq):
            f = int(torch.randint(0, min(self.F, dims) + 1, (1,), generator=generator))
            f0 = int(torch.randint(0, dims - f + 1, (1,), generator=generator))
            mask[:, f0:f0 + f] = True
        w_max = min(self.W, int(self.p * frames))  # W' = min(W, p T)
        for _ in range(self.n_time):
            t = int(torch.randint(0, w_max + 1, (1,), generator=generator))
            t0 = int(torch.randint(0, frames - t + 1, (1,), generator=generator))
            mask[t0:t0 + t, :] = True
        return mask

    def __call__(self, feats: torch.Tensor, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """A masked copy of ``feats`` ((T, F) or (B, T, F)); the input is not modified."""
        if self.is_identity:
            return feats.clone()
        if feats.dim() == 2:
            return feats.masked_fill(self.masks(*feats.shape, generator=generator).to(
                feats.device), 0.0)
        out = feats.clone()
        for i in range(feats.shape[0]):
            mask = self.masks(feats.shape[1], feats.shape[2], generator=generator)
            out[i].masked_fill_(mask.to(feats.device), 0.0)
        return out


def augmented_copies(feats: torch.Tensor, policy: str | SpecAugment, copies: int = 2,
                     generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The paper's setting for one whole segment: [original, copy 1, ..., copy ``copies``]."""
    aug = policy if isinstance(policy, SpecAugment) else SpecAugment.from_policy(policy)
    return [feats.clone()] + [aug(feats, generator=generator) for _ in range(copies)]


