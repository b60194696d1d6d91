"""Mean and variance normalisation of feature matrices (after VAD frame dropping).

``segment`` (default): statistics of each utterance alone, so every utterance is
normalised independently of the others. ``conversation``: statistics pooled over all
utterances of one conversation (IEMOCAP dialog); the paper found it helps, but it lets
the test utterances' neighbours shape their features, so it is off by default and
reports say when it was used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STD_FLOOR = 1e-5


def normalise(feats: np.ndarray, mean: np.ndarray, std: np.ndarray, norm_vars: bool) -> np.ndarray:
    out = feats - mean
    if norm_vars:
        out = out / np.maximum(std, STD_FLOOR)
    return out.astype(np.float32)


def segment_cmvn(feats: np.ndarray, norm_vars: bool = True) -> np.ndarray:
    if feats.shape[0] == 0:
        return feats
    return normalise(feats, feats.mean(axis=0), feats.std(axis=0), norm_vars)


def conversation_cmvn(segments: Sequence[np.ndarray], norm_vars: bool = True) -> list[np.ndarray]:
    """Normalise every matrix with the statistics of all of them together."""
    stacked = np.concatenate([s for s in segments if s.shape[0]], axis=0).astype(np.float64)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    return [normalise(s, mean, std, norm_vars) for s in segments]
