"""Waveform augmentation of the 1D-CNN system (Lee & Nadeem 2025), a front-end step.

:class:`WaveAugment` makes fixed augmented copies of each recording at feature-extraction time
(``sertool extract-feats --wave-augment``), the way Kaldi recipes augment a data directory before
making features: the trainer reads feature archives, so copies are features like any other,
keyed ``<utt>#<copy>``, and training uses the copies of its training utterances only.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sertool.config import check_known, load_config
from sertool.errors import SertoolError

# torch is imported inside pitch_shift only (the torch boundary): extract-feats jobs import this
# module, and torch would add ~600 MB and ~1 s to each of them when no pitch copy is made.


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
