"""Statistical model-based voice activity detection (Sohn, Kim & Sung, 1999).

Per frame t and DFT bin k, speech absent/present are zero-mean complex Gaussians with
variance lambda_N (noise) and lambda_N (1 + xi) (noise + speech). The bin's likelihood
ratio is  log L_k = gamma_k xi_k / (1 + xi_k) - log(1 + xi_k), with gamma the a-posteriori
SNR and xi the a-priori SNR from the decision-directed estimate
    xi_t = alpha * G_{t-1}^2 gamma_{t-1} + (1 - alpha) * max(gamma_t - 1, 0).
The frame score is the geometric mean of the bin ratios (the mean of log L_k); a two-state
HMM (speech / non-speech, Sohn's hang-over scheme) smooths the decisions. Then the
*hang-over* of the paper relabels as speech every non-speech run shorter than
``hangover_ms`` that has speech on both sides, so pauses inside an utterance are kept.

Noise: the noise PSD is the mean spectrum of the quietest frames (a quantile of frame
energy) rather than of the first frames, which works for utterances that start with
speech. It is held fixed over the utterance (emotion corpora are segmented utterances of
seconds; the decision-directed recursion is then the only sequential step, which keeps the
VAD cheap next to the FFT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np


@dataclass
class VadConfig:
    enabled: bool = True
    alpha: float = 0.98  # decision-directed smoothing of the a-priori SNR
    xi_min_db: float = -25.0  # floor of the a-priori SNR
    threshold: float = 1.0  # on the mean log likelihood ratio per bin
    a01: float = 0.2  # HMM transition non-speech -> speech
    a10: float = 0.1  # HMM transition speech -> non-speech
    noise_quantile: float = 0.1  # the quietest frames (this fraction) give the noise estimate
    silence_floor_db: float = 50.0  # frames this far below the loudest: silence, not noise
    bin_step: int = 2  # use every n-th FFT bin (see frame_log_likelihood_ratios)
    hangover_ms: float = 500.0
    min_speech_ms: float = 0.0  # drop isolated speech runs shorter than this (0: keep all)
    min_kept_frames: int = 20  # below this the utterance is kept whole (see on_too_little)
    on_too_little: str = "keep_all"  # or "fail": the utterance is listed as failed


@dataclass
class VadStats:
    frames_in: int
    frames_kept: int
    fallback: bool = False  # VAD kept too little: all frames were kept instead
    note: str = field(default="")
    # what is wrong with the signal, flag -> what was seen: silent, clipped, too_short,
    # vad_fallback (sertool.frontend.pipeline; vad_stats and predict's warning column)
    flags: dict[str, str] = field(default_factory=dict)


_TINY = 1e-12  # added to every power value: an all-zero bin must not divide by zero


def frame_energy_db(used: np.ndarray) -> np.ndarray:
    """Energy in dB of each frame of the VAD's bins ``used`` (T, K), float64."""
    return 10 * np.log10(used.sum(axis=1, dtype=np.float64) + used.shape[1] * _TINY)


def noise_frames(energy_db: np.ndarray, conf: VadConfig) -> tuple[np.ndarray, np.ndarray]:
    """(audible, quiet): the frames above the silence floor, and the indices of the quietest
    of them (``noise_quantile``), whose mean spectrum is the noise estimate.

    Frames far below the loudest one are digital silence (noise-gated or zero-padded
    recordings): never speech, and left out of the noise estimate, which would otherwise be so
    low that the room noise between words looks like speech."""
    audible = energy_db > energy_db.max() - conf.silence_floor_db
    candidates = np.flatnonzero(audible)
    n_init = max(1, int(np.ceil(conf.noise_quantile * len(candidates))))
    quiet = candidates[np.argsort(energy_db[candidates], kind="stable")[:n_init]]
    return audible, quiet


@dataclass
class SohnState:
    """What the VAD's recursions carry from one frame to the next: the decision-directed
    term per bin and the HMM's log odds. A signal in blocks, each with the state the last
    left, gets the decisions of the signal in one piece (``predict`` streaming long files)."""

    carried: np.ndarray
    odds: float = 0.0

    @classmethod
    def start(cls, n_bins: int) -> SohnState:
        return cls(np.zeros(n_bins))


def log_odds_block(used: np.ndarray, noise: np.ndarray, audible: np.ndarray,
                   conf: VadConfig, state: SohnState) -> np.ndarray:
    """The smoothed log odds of speech of consecutive frames ``used`` (their VAD bins,
    contiguous float32) given the noise estimate; ``state`` is updated for the next block."""
    scores = _sohn_scores(used, 1, noise, conf.alpha, 10.0 ** (conf.xi_min_db / 10),
                          state.carried) - conf.threshold
    scores[~audible] = -conf.threshold - 1.0
    a00, a01, a10, a11 = 1 - conf.a01, conf.a01, conf.a10, 1 - conf.a10
    log_odds = _hmm_log_odds(scores, a00, a01, a10, a11, state.odds)
    if len(log_odds):
        state.odds = float(log_odds[-1])
    return log_odds


def frame_log_likelihood_ratios(power: np.ndarray, conf: VadConfig,
                                subsampled: bool = False) -> np.ndarray:
    """Smoothed log odds of speech per frame (> 0 means speech).

    ``power`` is a power spectrum (T, K); with a zero-padded FFT only every
    ``bin_step``-th bin is used (the even bins of a 1024-point FFT of a 400-sample frame are
    exactly the bins of its 512-point FFT: neighbouring bins of the padded FFT are not
    independent, which Sohn's model assumes). ``subsampled``: ``power`` holds those bins
    only (``power[:, ::bin_step]``), which is all the VAD reads: half the memory.
    """
    n_frames = power.shape[0]
    if n_frames == 0:
        return np.zeros(0)
    power = np.ascontiguousarray(power, dtype=np.float32)
    step = 1 if subsampled else conf.bin_step
    used = np.ascontiguousarray(power[:, ::step])
    audible, quiet = noise_frames(frame_energy_db(used), conf)
    noise = used[quiet].mean(axis=0, dtype=np.float64) + _TINY
    return log_odds_block(used, noise, audible, conf, SohnState.start(used.shape[1]))


# The two recursions below are the front-end's only sequential steps. They are compiled with
# numba (cached on disk after the first call): as numpy calls on one frame's 257 bins they
# cost ~1 us per call and made the VAD slower than the FFT; compiled, they are ~10x faster.


@numba.njit(cache=True, nogil=True)
def _sohn_scores(power: np.ndarray, bin_step: int, noise: np.ndarray, alpha: float,
                 xi_min: float, carried: np.ndarray) -> np.ndarray:  # pragma: no cover

    """Mean log likelihood ratio per frame, sum_k (gamma_k G_k - log(1 + xi_k)) / K, with
    the a-posteriori SNR gamma = min(P / lambda_N, 1e4), the decision-directed a-priori SNR
        xi_t = max(alpha * G_{t-1}^2 gamma_{t-1} + (1 - alpha) * max(gamma_t - 1, 0), xi_min)
    and the Wiener gain G = xi / (1 + xi). The sum of log(1 + xi) is taken as the log of
    products of 16 factors (each < 1e4 + 1, so no overflow): 16x fewer logs. ``carried``
    (alpha * G_{t-1}^2 gamma_{t-1} = alpha |A_{t-1}|^2 / lambda_N per bin; zeros before the
    first frame) is updated in place: the next block of frames goes on from it."""
    n_frames, n_bins = power.shape[0], noise.shape[0]
    scores = np.empty(n_frames)
    for t in range(n_frames):
        total = 0.0
        product = 1.0
        for k in range(n_bins):
            gamma = min((power[t, k * bin_step] + _TINY) / noise[k], 1e4)
            xi = max(carried[k] + (1.0 - alpha) * max(gamma - 1.0, 0.0), xi_min)
            gain = xi / (1.0 + xi)
            total += gamma * gain
            product *= 1.0 + xi
            if k % 16 == 15:
                total -= math.log(product)
                product = 1.0
            carried[k] = alpha * gain * gain * gamma
        scores[t] = (total - math.log(product)) / n_bins
    return scores


@numba.njit(cache=True, nogil=True)
def _hmm_log_odds(scores: np.ndarray, a00: float, a01: float, a10: float,
                  a11: float, odds: float) -> np.ndarray:  # pragma: no cover - compiled
    """Two-state HMM forward recursion on the posterior log odds of speech (Sohn's hang-over):
        odds_t = score_t + log((a01 + a11 e^odds_{t-1}) / (a00 + a10 e^odds_{t-1})).
    The prior term is flat beyond |odds| = 50 (to double precision), so the exponent is
    clamped there instead of overflowing. ``odds``: the last frame's before these (0 at the
    start)."""
    log_odds = np.empty(scores.shape[0])
    for t in range(scores.shape[0]):
        e = math.exp(min(max(odds, -50.0), 50.0))
        odds = scores[t] + math.log((a01 + a11 * e) / (a00 + a10 * e))
        log_odds[t] = odds
    return log_odds


def fill_short_gaps(speech: np.ndarray, max_gap: int) -> np.ndarray:
    """Relabel as speech every non-speech run shorter than ``max_gap`` frames that has
    speech on both sides (leading and trailing non-speech are never filled)."""
    out = speech.copy()
    idx = np.flatnonzero(speech)
    if len(idx) < 2:
        return out
    gaps = np.diff(idx) - 1
    for pos in np.flatnonzero((gaps > 0) & (gaps < max_gap)):
        out[idx[pos] + 1: idx[pos + 1]] = True
    return out


def drop_short_runs(speech: np.ndarray, min_run: int) -> np.ndarray:
    """Relabel as non-speech every speech run shorter than ``min_run`` frames."""
    if min_run <= 1:
        return speech
    out = speech.copy()
    padded = np.concatenate([[False], speech, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1)
    for s, e in zip(starts, ends, strict=True):
        if e - s < min_run:
            out[s:e] = False
    return out


def detect_speech(power: np.ndarray, conf: VadConfig, frame_shift_ms: float = 10.0,
                  subsampled: bool = False) -> np.ndarray:
    """Boolean speech mask per frame, after HMM smoothing and the hang-over (``subsampled``:
    see :func:`frame_log_likelihood_ratios`)."""
    return smooth_decisions(frame_log_likelihood_ratios(power, conf, subsampled) > 0, conf,
                            frame_shift_ms)


def smooth_decisions(speech: np.ndarray, conf: VadConfig, frame_shift_ms: float = 10.0
                     ) -> np.ndarray:
    """The frame decisions after ``min_speech_ms`` and the hang-over (``hangover_ms``)."""
    speech = drop_short_runs(speech, int(round(conf.min_speech_ms / frame_shift_ms)))
    return fill_short_gaps(speech, int(round(conf.hangover_ms / frame_shift_ms)))
