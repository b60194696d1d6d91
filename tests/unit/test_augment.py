"""SpecAugment policy bounds (statistical) and waveform augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sertool.frontend.wave_augment import (
    WAVE_AUGMENT_DEFAULTS,
    WaveAugment,
    WaveAugmentError,
    add_noise,
    pitch_shift,
)
from sertool.nnet.specaugment import POLICIES, SpecAugment, augmented_copies


def _widths(mask_1d: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean mask."""
    runs, n = [], 0
    for v in mask_1d.tolist() + [False]:
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


@pytest.mark.parametrize("policy", ["conservative", "aggressive"])
def test_mask_widths_within_policy_bounds(policy):
    aug = SpecAugment.from_policy(policy)
    gen = torch.Generator().manual_seed(0)
    freq_total, time_total, seen_freq, seen_time = [], [], set(), set()
    for frames in (40, 200, 1000):
        w_prime = min(aug.W, int(aug.p * frames))
        for _ in range(120):
            m = aug.masks(frames, 128, generator=gen)
            freq_cols = m.all(dim=0)
            time_rows = m.all(dim=1)
            n_f = int(freq_cols.sum())
            n_t = int(time_rows.sum())
            # two masks of at most F (W') each; overlapping masks merge
            assert n_f <= aug.n_freq * aug.F
            assert n_t <= aug.n_time * w_prime
            for w in _widths(freq_cols):
                assert w <= aug.n_freq * aug.F
                seen_freq.add(w)
            for w in _widths(time_rows):
                assert w <= aug.n_time * w_prime
                seen_time.add(w)
            freq_total.append(n_f)
            if frames == 1000:
                time_total.append(n_t)
    # widths uniform on [0, F]: expected masked count n * F/2 = F (overlaps make it a bit less);
    # the tolerance is ~3 standard errors of the mean
    assert 0.8 * aug.F <= np.mean(freq_total) <= 1.1 * aug.F
    assert 0.8 * aug.W <= np.mean(time_total) <= 1.15 * aug.W
    assert max(seen_freq) > aug.F // 2 and min(seen_freq) <= 3


def test_w_prime_respected_on_short_inputs():
    # aggressive's time masks (W=70, p=0.2) alone, so a row is masked only by a time mask
    aug = SpecAugment(F=0, W=70, p=0.2, n_freq=0, n_time=2)
    gen = torch.Generator().manual_seed(1)
    for frames in (5, 20, 60):
        bound = int(0.2 * frames)  # < W: p*T is the binding limit
        widest = 0
        for _ in range(400):
            rows = aug.masks(frames, 40, generator=gen).all(dim=1)
            widest = max([widest] + _widths(rows))
        assert widest <= 2 * bound
        if bound:
            assert widest >= bound  # the bound is reached, not just respected


def test_masks_differ_between_samples_and_input_untouched():
    aug = SpecAugment.from_policy("conservative")
    x = torch.randn(8, 200, 128) + 5.0  # no zero in the input: zeros are masks
    y = aug(x, generator=torch.Generator().manual_seed(2))
    assert torch.all(x != 0)  # not modified in place
    masks = [(y[i] == 0) for i in range(8)]
    distinct = {tuple(m.all(dim=1).nonzero().flatten().tolist()) for m in masks}
    assert len(distinct) >= 6
    kept = ~masks[0]
    torch.testing.assert_close(y[0][kept], x[0][kept])


def test_policy_none_is_identity_and_reproducible():
    x = torch.randn(2, 100, 40)
    none = SpecAugment.from_policy("none")
    assert none.is_identity
    assert torch.equal(none(x), x)
    aug = SpecAugment.from_policy("aggressive")
    a = aug(x, generator=torch.Generator().manual_seed(5))
    b = aug(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert POLICIES["conservative"] == {"F": 15, "W": 50, "p": 0.2, "n_freq": 2, "n_time": 2}
    with pytest.raises(ValueError, match="unknown SpecAugment policy"):
        SpecAugment.from_policy("medium")


def test_augmented_copies_original_plus_two():
    x = torch.randn(300, 128) + 5.0
    out = augmented_copies(x, "conservative", copies=2,
                           generator=torch.Generator().manual_seed(0))
    assert len(out) == 3
    assert torch.equal(out[0], x)
    assert all((c == 0).any() for c in out[1:])
    assert not torch.equal(out[1], out[2])


def test_add_noise_amplitude_bound():
    rng = np.random.default_rng(0)
    wave = np.sin(np.linspace(0, 200, 16000)).astype(np.float32) * 0.5
    diffs = [np.std(add_noise(wave, 0.035, rng) - wave) for _ in range(200)]
    assert max(diffs) <= 0.035 * 0.5 * 1.05
    assert min(diffs) < 0.2 * 0.035 * 0.5 < max(diffs)


def test_pitch_shift_moves_the_fundamental():
    sr = 16000
    t = np.arange(sr) / sr
    wave = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    up = pitch_shift(wave, sr, 12.0)  # one octave up
    assert up.shape == wave.shape
    spec = np.abs(np.fft.rfft(up[2000:-2000]))
    peak = np.argmax(spec) * sr / (len(up) - 4000)
    assert abs(peak - 400) < 20


def _peak_hz(wave: np.ndarray, sr: int) -> float:
    part = wave[2000:-2000]
    return float(np.argmax(np.abs(np.fft.rfft(part))) * sr / len(part))


def test_wave_augment_copies_are_deterministic_and_do_what_they_say():
    sr = 16000
    wave = (0.5 * np.sin(2 * np.pi * 200 * np.arange(2 * sr) / sr)).astype(np.float32)
    aug = WaveAugment()  # noise, pitch (+0.7 semitone), pitch + noise
    first = dict(aug.apply("spk1-u1", wave, sr))
    again = dict(aug.apply("spk1-u1", wave, sr))
    other = dict(aug.apply("spk1-u2", wave, sr))
    assert list(first) == ["spk1-u1#noise", "spk1-u1#pitch", "spk1-u1#pitch_noise"]
    assert all(np.array_equal(first[k], again[k]) for k in first)  # a rerun makes the same
    assert not np.array_equal(first["spk1-u1#noise"], other["spk1-u2#noise"])
    assert all(c.shape == wave.shape and c.dtype == np.float32 for c in first.values())
    noise = first["spk1-u1#noise"] - wave
    assert 0 < np.std(noise) <= 0.035 * 0.5 * 1.05
    assert _peak_hz(wave, sr) == pytest.approx(200, abs=1)
    assert _peak_hz(first["spk1-u1#pitch"], sr) == pytest.approx(200 * 2 ** (0.7 / 12), abs=1.5)
    added = first["spk1-u1#pitch_noise"] - first["spk1-u1#pitch"]
    assert 0 < np.std(added) <= 0.035 * np.abs(first["spk1-u1#pitch"]).max() * 1.05


def test_wave_augment_conf_file_and_bad_settings():
    from sertool.config import CONF_DIR, load_toml

    assert load_toml(CONF_DIR / "wave_augment.toml") == {}  # the defaults live in the code
    assert WaveAugment.from_conf(WAVE_AUGMENT_DEFAULTS) == WaveAugment()
    assert WaveAugment.load(CONF_DIR / "wave_augment.toml") == WaveAugment()
    assert WaveAugment.load(None, ("copies=['pitch']",)).copies == ("pitch",)
    for conf, message in (({"copies": ["echo"]}, "at most once"),
                          ({"copies": ["noise", "noise"]}, "at most once"),
                          ({"copies": "noise"}, "a list of names"),
                          ({"noise_max_ratio": 2.0}, "noise_max_ratio"),
                          ({"speed": 1.1}, "unknown option")):
        with pytest.raises(ValueError, match=message):
            WaveAugment.from_conf(conf)
    assert issubclass(WaveAugmentError, ValueError)
