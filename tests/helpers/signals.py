"""Signals built by the tests: speech-like voiced bursts in noise."""

from __future__ import annotations

import numpy as np

SR = 16000


def voiced(seconds: float, rng: np.random.Generator, f0: float = 140.0) -> np.ndarray:
    """A speech-like burst: harmonics of a wobbling f0 under a syllabic envelope."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 4 * t))) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 25))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)) ** 2
    ramp = np.minimum(1, np.minimum(t, t[-1] - t) / 0.02)
    return (0.1 * wave * envelope * ramp).astype(np.float32)


def with_noise(parts: list[np.ndarray], rng: np.random.Generator, level: float = 0.003):
    wave = np.concatenate(parts)
    return (wave + rng.normal(0, level, len(wave))).astype(np.float32)
