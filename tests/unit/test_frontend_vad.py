"""Sohn VAD with HMM smoothing and the 500 ms hang-over, on built and on real signals."""

from __future__ import annotations

import glob

import numpy as np
import pytest
from signals import SR, voiced, with_noise

from sertool.frontend.audio import load_audio
from sertool.frontend.features import power_spectrum
from sertool.frontend.pipeline import Frontend
from sertool.frontend.vad import (
    VadConfig,
    detect_speech,
    fill_short_gaps,
    frame_log_likelihood_ratios,
)


def speech_mask(wave: np.ndarray) -> np.ndarray:
    frontend = Frontend()
    power = power_spectrum(wave, frontend.spectrum, frontend.n_fft)
    return detect_speech(power, frontend.vad)


def frames(seconds: float) -> int:
    return int(round(seconds * 100))


def test_finds_speech_bursts_in_noise():
    rng = np.random.default_rng(0)
    gap = np.zeros(int(1.0 * SR), np.float32)
    wave = with_noise([gap, voiced(0.8, rng), gap, voiced(0.6, rng), gap], rng)
    mask = speech_mask(wave)
    # Bursts at 1.0-1.8 s and 2.8-3.4 s; the 1 s gap between them stays out.
    assert mask[frames(1.1):frames(1.7)].mean() > 0.95
    assert mask[frames(2.9):frames(3.3)].mean() > 0.95
    assert mask[: frames(0.9)].mean() < 0.05
    assert mask[frames(1.95):frames(2.65)].mean() < 0.05
    assert mask[frames(3.55):].mean() < 0.05


def test_bridges_200ms_pause_but_not_800ms():
    rng = np.random.default_rng(1)
    lead = np.zeros(int(0.5 * SR), np.float32)
    short = np.zeros(int(0.2 * SR), np.float32)
    long = np.zeros(int(0.8 * SR), np.float32)
    wave = with_noise([lead, voiced(0.6, rng), short, voiced(0.6, rng), long,
                       voiced(0.6, rng), lead], rng)
    mask = speech_mask(wave)
    # 200 ms pause at 1.1-1.3 s: bridged by the hang-over (pauses carry emotion).
    assert mask[frames(1.12):frames(1.28)].all()
    # 800 ms pause at 1.9-2.7 s: most of it stays non-speech.
    assert mask[frames(2.0):frames(2.6)].mean() < 0.1


def test_noise_only_is_non_speech():
    rng = np.random.default_rng(2)
    wave = rng.normal(0, 0.01, 3 * SR).astype(np.float32)
    assert speech_mask(wave).mean() < 0.05


def test_noise_only_keeps_all_frames_and_says_so():
    rng = np.random.default_rng(3)
    wave = rng.normal(0, 0.01, 2 * SR).astype(np.float32)
    feats, stats = Frontend().process(wave)
    assert stats.fallback and stats.frames_kept == stats.frames_in == feats.shape[0]
    assert "kept all" in stats.note


def test_fill_short_gaps_only_between_speech():
    mask = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0], dtype=bool)
    out = fill_short_gaps(mask, max_gap=3)
    assert out.tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0]


def test_hangover_length_is_configurable():
    rng = np.random.default_rng(4)
    lead = np.zeros(int(0.5 * SR), np.float32)
    wave = with_noise([lead, voiced(0.5, rng), np.zeros(int(0.3 * SR), np.float32),
                       voiced(0.5, rng), lead], rng)
    frontend = Frontend()
    power = power_spectrum(wave, frontend.spectrum, frontend.n_fft)
    bridged = detect_speech(power, frontend.vad)
    strict = detect_speech(power, VadConfig(hangover_ms=100))
    assert bridged[frames(1.05):frames(1.25)].all()
    assert strict[frames(1.05):frames(1.25)].mean() < 0.5


@pytest.mark.shared_data
def test_real_ravdess_drops_leading_and_trailing_silence(ravdess_dir):
    files = sorted(glob.glob(str(ravdess_dir / "Audio_Speech_Actors_01-24/*/*.*")))[::20]
    assert len(files) >= 70
    frontend = Frontend()
    silence = dropped = core = core_kept = 0
    for path in files:
        power = power_spectrum(load_audio(path), frontend.spectrum, frontend.n_fft)
        energy = 10 * np.log10(power.sum(axis=1) + 1e-12)
        mask = detect_speech(power, frontend.vad)
        loud = np.flatnonzero(energy > energy.max() - 20)  # the loudest region
        assert mask[np.argmax(energy)], path
        # Silence: quiet frames (40 dB below the peak) before / after the loud region.
        outside = np.zeros(len(energy), bool)
        outside[: loud[0]] = outside[loud[-1] + 1:] = True
        quiet = outside & (energy < energy.max() - 40)
        silence += quiet.sum()
        dropped += (quiet & ~mask).sum()
        core += len(loud)
        core_kept += mask[loud].sum()
    assert dropped / silence > 0.8, f"only {dropped / silence:.2f} of the silence dropped"
    assert core_kept / core > 0.98, f"only {core_kept / core:.3f} of the loud region kept"


def _textbook_log_odds(power: np.ndarray, conf: VadConfig) -> np.ndarray:
    """Sohn's VAD written plainly (numpy per frame, log-add-exp HMM): the compiled
    recursions in sertool.frontend.vad must give the same log odds."""
    power = power[:, :: conf.bin_step].astype(np.float64) + 1e-12
    energy_db = 10 * np.log10(power.sum(axis=1))
    audible = energy_db > energy_db.max() - conf.silence_floor_db
    candidates = np.flatnonzero(audible)
    n_init = max(1, int(np.ceil(conf.noise_quantile * len(candidates))))
    noise = power[candidates[np.argsort(energy_db[candidates], kind="stable")[:n_init]]]
    gamma = np.minimum(power / noise.mean(axis=0), 1e4)
    xi = np.empty_like(gamma)
    prev_clean = np.zeros(gamma.shape[1])
    for t in range(len(gamma)):
        xi[t] = np.maximum(conf.alpha * prev_clean
                           + (1 - conf.alpha) * np.maximum(gamma[t] - 1, 0),
                           10 ** (conf.xi_min_db / 10))
        prev_clean = (xi[t] / (1 + xi[t])) ** 2 * gamma[t]
    scores = np.mean(gamma * xi / (1 + xi) - np.log1p(xi), axis=1) - conf.threshold
    scores[~audible] = -conf.threshold - 1
    odds, out = 0.0, []
    for score in scores:
        prior = (np.logaddexp(np.log(conf.a01), np.log(1 - conf.a10) + odds)
                 - np.logaddexp(np.log(1 - conf.a01), np.log(conf.a10) + odds))
        odds = score + prior
        out.append(odds)
    return np.array(out)


def test_compiled_recursions_equal_the_textbook_form():
    rng = np.random.default_rng(5)
    lead = np.zeros(int(0.4 * SR), np.float32)
    # speech in noise, a clipped-loud burst (gamma hits its 1e4 cap, log odds in the
    # hundreds) and digital silence (all-zero frames) at the end
    loud = np.clip(voiced(0.5, rng) * 50, -1, 1)
    wave = np.concatenate([with_noise([lead, voiced(0.7, rng), lead, loud, lead], rng),
                           np.zeros(int(0.5 * SR), np.float32)])
    frontend = Frontend()
    power = power_spectrum(wave, frontend.spectrum, frontend.n_fft)
    for conf in (frontend.vad, VadConfig(bin_step=1, alpha=0.9, xi_min_db=-15)):
        expected = _textbook_log_odds(power, conf)
        got = frame_log_likelihood_ratios(power, conf)
        energy = power.sum(axis=1)
        assert expected.max() > 100 and energy[-10:].max() < 1e-6 * energy.max()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
