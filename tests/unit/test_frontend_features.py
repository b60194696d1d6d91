"""Log-mel / MFCC features, audio loading and resampling, CMVN."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sertool.frontend.audio import AudioError, load_audio
from sertool.frontend.cmvn import conversation_cmvn, segment_cmvn
from sertool.frontend.features import choose_n_fft, empty_filters, mel_filterbank
from sertool.frontend.pipeline import Frontend, FrontendError, default_frontend_conf

SR = 16000


def test_128_mels_need_a_1024_point_fft():
    # 128 filters are narrower than the 31.25 Hz bins of a 512-point FFT at low frequencies.
    assert empty_filters(mel_filterbank(128, 512, SR, 20.0, 8000.0))
    assert choose_n_fft(128, 400, SR, 20.0, 0.0) == 1024
    assert not empty_filters(mel_filterbank(128, 1024, SR, 20.0, 8000.0))
    with pytest.raises(FrontendError, match="empty"):
        Frontend({"mel": {"n_fft": 512}})


def test_dimensions_and_frame_count():
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 0.1, SR).astype(np.float32)  # 1 s -> 1 + (16000 - 400) // 160 frames
    logmel = Frontend({"vad": {"enabled": False}})
    feats, stats = logmel.process(wave)
    assert feats.shape == (98, 128) and feats.dtype == np.float32
    assert stats.frames_in == stats.frames_kept == 98
    mfcc = Frontend({**default_frontend_conf("mfcc"), "vad": {"enabled": False}})
    assert mfcc.dim == 40 and mfcc.process(wave)[0].shape == (98, 40)


def test_log_mel_peaks_at_a_tone():
    t = np.arange(SR) / SR
    wave = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    frontend = Frontend({"vad": {"enabled": False}, "cmvn": {"mode": "none"}})
    feats, _ = frontend.process(wave)
    peak = int(np.argmax(feats.mean(axis=0)))
    centres = np.linspace(1127 * np.log1p(20 / 700), 1127 * np.log1p(8000 / 700), 130)[1:-1]
    freq = 700 * (np.exp(centres[peak] / 1127) - 1)
    assert abs(freq - 1000) < 40


def test_segment_cmvn_zero_mean_unit_std():
    rng = np.random.default_rng(1)
    feats = rng.normal(3, 5, (200, 16)).astype(np.float32)
    out = segment_cmvn(feats)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-3)


def test_conversation_cmvn_pools_statistics():
    a = np.full((10, 2), 1.0, np.float32)
    b = np.full((30, 2), 5.0, np.float32)
    na, nb = conversation_cmvn([a, b])
    pooled = np.concatenate([na, nb])
    np.testing.assert_allclose(pooled.mean(axis=0), 0, atol=1e-5)
    assert na.mean() < 0 < nb.mean()  # each keeps its offset against the conversation


def test_resampling_is_anti_aliased_and_stereo_downmixed(tmp_path):
    sr = 48000
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 1000 * t)
    right = 0.5 * np.sin(2 * np.pi * 12000 * t)  # above 8 kHz: must not alias to 4 kHz
    path = tmp_path / "stereo48k.wav"
    sf.write(path, np.stack([left, right], axis=1), sr)
    wave = load_audio(path)
    assert len(wave) == SR
    spectrum = np.abs(np.fft.rfft(wave[1000:-1000]))
    freqs = np.fft.rfftfreq(len(wave) - 2000, 1 / SR)
    at = {f: spectrum[np.argmin(np.abs(freqs - f))] for f in (1000, 4000)}
    assert at[1000] > 1000 * at[4000]
    assert abs(np.sqrt(np.mean(wave[1000:-1000] ** 2)) - 0.25 / np.sqrt(2)) < 0.01  # (L+R)/2


def test_segments_and_pipes(tmp_path):
    wave = np.linspace(-0.5, 0.5, 3 * SR).astype(np.float32)
    path = tmp_path / "a.flac"
    sf.write(path, wave, SR)
    part = load_audio(path, start=1.0, end=2.0)
    np.testing.assert_allclose(part, wave[SR:2 * SR], atol=1e-4)
    piped = load_audio(f"cat {path} |")
    np.testing.assert_allclose(piped, wave, atol=1e-4)
    with pytest.raises(AudioError, match="pipe command failed"):
        load_audio("false |")


@pytest.mark.parametrize("kind", ["missing", "empty", "corrupt", "text", "nan"])
def test_bad_audio_names_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(40)))
    elif kind == "text":
        path.write_text("this is not audio\n" * 20)
    elif kind == "nan":
        sf.write(path, np.array([0.1, np.nan] * 800, np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioError, match=str(path)):
        load_audio(path)


def test_shorter_than_a_frame():
    with pytest.raises(FrontendError, match="shorter than one frame"):
        Frontend().process(np.zeros(300, np.float32))
