"""Data augmentation: SpecAugment policies (paper Table 1) and waveform augmentation (1D-CNN).

Waveform augmentation (:class:`WaveAugment`, Lee & Nadeem 2025) makes fixed augmented copies of
each recording at feature-extraction time (``sertool extract-feats --wave-augment``), the way
Kaldi recipes augment a data directory before making features: the trainer reads feature
archives, so copies are features like any other, keyed ``<utt>#<copy>``, and training uses the
copies of its training utterances only.

SpecAugment (Park et al. 2019) as the paper applies it, per sample: ``n_freq`` frequency
masks of width f ~ U[0, F] at f0 ~ U[0, nu - f] and ``n_time`` time masks of width
t ~ U[0, W'] at t0 ~ U[0, T - t], with W' = min(W, p * T). Masked values are set to zero
(features are mean-normalised, so zero is the mean). Features are ``(T, F)`` or ``(B, T, F)``;
in a batch every sample draws its own masks.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sertool.errors import SertoolError

if TYPE_CHECKING:
    import torch

# torch is imported where it is used (SpecAugment.masks, pitch_shift), not here: every
# extract-feats job imports this module for WaveAugment, and torch would add ~600 MB and ~1 s
# to each of them when no pitch copy is made.

POLICIES: dict[str, dict] = {
    "none": {"F": 0, "W": 0, "p": 0.0, "n_freq": 0, "n_time": 0},
    "conservative": {"F": 15, "W": 50, "p": 0.2, "n_freq": 2, "n_time": 2},
    "aggressive": {"F": 27, "W": 70, "p": 0.2, "n_freq": 2, "n_time": 2},
}


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
            raise ValueError(f"unknown SpecAugment policy {name!r} (known: {', '.join(POLICIES)})")
        return cls(**POLICIES[name])

    @property
    def is_identity(self) -> bool:
        return (self.n_freq == 0 or self.F == 0) and (self.n_time == 0 or self.W == 0
                                                      or self.p == 0)

    def masks(self, frames: int, dims: int, generator: torch.Generator | None = None
              ) -> torch.Tensor:
        """Boolean (T, F) mask of one sample: True where the value is zeroed."""
        import torch

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


# ----------------------------------------------------------------------------- waveforms


def add_noise(wave: np.ndarray, max_ratio: float = 0.035,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """Additive Gaussian noise with amplitude a * peak, a ~ U[0, max_ratio] (Lee & Nadeem)."""
    rng = rng if rng is not None else np.random.default_rng()
    wave = np.asarray(wave, dtype=np.float32)
    amp = rng.uniform(0.0, max_ratio) * float(np.max(np.abs(wave)) if wave.size else 0.0)
    return (wave + amp * rng.standard_normal(wave.shape)).astype(np.float32)


def pitch_shift(wave: np.ndarray, sample_rate: int, n_steps: float) -> np.ndarray:
    """Shift the pitch by ``n_steps`` semitones, keeping the duration (torchaudio's phase
    vocoder + resampling)."""
    import torch
    import torchaudio.functional as AF

    tensor = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    out = AF.pitch_shift(tensor.unsqueeze(0), sample_rate, float(n_steps))[0]
    return out[: tensor.shape[-1]].numpy()


def random_pitch_shift(wave: np.ndarray, sample_rate: int, max_steps: float = 2.0,
                       rng: np.random.Generator | None = None) -> np.ndarray:
    rng = rng if rng is not None else np.random.default_rng()
    return pitch_shift(wave, sample_rate, float(rng.uniform(-max_steps, max_steps)))


# Defaults of conf/wave_augment.toml (a test checks that the two agree).
WAVE_AUGMENT_DEFAULTS: dict = {
    "seed": 0,
    "copies": ["noise", "pitch", "pitch_noise"],
    "noise_max_ratio": 0.035,
    "pitch_steps": 0.7,
}
WAVE_TRANSFORMS = ("noise", "pitch", "pitch_noise")


class WaveAugmentError(SertoolError, ValueError):
    pass


@dataclass(frozen=True)
class WaveAugment:
    """Fixed augmented copies of a recording, each a deterministic function of (seed, utt).

    ``noise``: Gaussian noise of amplitude a * peak, a ~ U[0, noise_max_ratio];
    ``pitch``: pitch shifted by ``pitch_steps`` semitones, duration kept;
    ``pitch_noise``: the pitch-shifted copy plus noise.
    """

    copies: tuple[str, ...] = ("noise", "pitch", "pitch_noise")
    noise_max_ratio: float = 0.035
    pitch_steps: float = 0.7
    seed: int = 0

    @classmethod
    def from_conf(cls, conf: Mapping, where: str = "wave augmentation") -> WaveAugment:
        from sertool.config import check_known

        check_known(WAVE_AUGMENT_DEFAULTS, conf, where)
        full = {**WAVE_AUGMENT_DEFAULTS, **dict(conf)}
        copies = full["copies"]
        if isinstance(copies, str) or not all(isinstance(c, str) for c in copies):
            raise WaveAugmentError(f"{where}: copies must be a list of names "
                                   f"({', '.join(WAVE_TRANSFORMS)})")
        bad = [c for c in copies if c not in WAVE_TRANSFORMS]
        if bad or len(set(copies)) != len(copies) or not copies:
            raise WaveAugmentError(f"{where}: copies {list(copies)}: each of "
                                   f"{', '.join(WAVE_TRANSFORMS)} at most once, at least one")
        if not 0 <= float(full["noise_max_ratio"]) < 1:
            raise WaveAugmentError(f"{where}: noise_max_ratio must be in [0, 1)")
        return cls(tuple(copies), float(full["noise_max_ratio"]), float(full["pitch_steps"]),
                   int(full["seed"]))

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: tuple[str, ...] = ()
             ) -> WaveAugment:
        from sertool.config import load_config

        conf = load_config(WAVE_AUGMENT_DEFAULTS, path, overrides)
        return cls.from_conf(conf, str(path) if path else "wave augmentation")

    def to_dict(self) -> dict:
        return {**asdict(self), "copies": list(self.copies)}

    @staticmethod
    def key(utt: str, copy: str) -> str:
        return f"{utt}#{copy}"

    def apply(self, utt: str, wave: np.ndarray, sample_rate: int
              ) -> Iterator[tuple[str, np.ndarray]]:
        """(key, augmented waveform) for each copy of utterance ``utt``."""
        shifted = None
        for index, name in enumerate(self.copies):
            rng = np.random.default_rng([self.seed, zlib.crc32(utt.encode()), index])
            out = np.asarray(wave, dtype=np.float32)
            if name.startswith("pitch"):
                if shifted is None:
                    shifted = pitch_shift(out, sample_rate, self.pitch_steps)
                out = shifted
            if name.endswith("noise"):
                out = add_noise(out, self.noise_max_ratio, rng)
            yield self.key(utt, name), out
