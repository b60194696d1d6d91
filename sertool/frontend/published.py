"""Front-ends of published speaker models, reproduced so that an imported model sees exactly
the features it was trained on.

``kaldi_fbank`` (WeSpeaker): Kaldi fbank (torchaudio.compliance.kaldi.fbank, Hamming window,
no dither) of the samples scaled to the int16 range, minus the utterance mean (done by the
pipeline's ``cmvn``), no VAD. torchaudio is imported here only, inside the function, so the
log-mel/MFCC extraction path never imports torch.

``ge2e_mel`` (Resemblyzer's GE2E encoder): power mel spectrogram, NOT logarithmic (the encoder
was trained on it), 25 ms periodic Hann window, 10 ms hop, frames centred on multiples of the hop
with the signal zero-padded by half a window on both sides, 40 Slaney-style mel filters
(area-normalised), 0 Hz to Nyquist, of the waveform raised to -30 dBFS (as Resemblyzer's
``preprocess_wav`` does; its webrtcvad pause trimming is not reproduced). Two extra frames of
the zero-extended signal are appended (``GE2E_TAIL_FRAMES``): Resemblyzer zero-pads the
waveform to cover its last partial window, and the two frames just past the end still overlap
the signal. The ``ge2e_lstm`` model drops them before it places its windows and uses them as
that padding (frames further out are exactly zero, as the model pads them).

``whisper_mel`` (OpenAI's Whisper; whisper/audio.py's ``log_mel_spectrogram``, the same as
transformers' ``WhisperFeatureExtractor``): power spectrum of 400-sample periodic Hann frames
every 160 samples, centred (the signal reflected by half a window at both ends), the last frame
dropped (so ``len // 160`` frames), the same Slaney filters as ``ge2e_mel`` (0 Hz to Nyquist),
log10 floored at 1e-10, then clamped at the maximum over the input - 8 and mapped by
(x + 4) / 4. The maximum is taken over what is passed: the utterance itself (``pad_to_s`` 0),
or the utterance zero-padded to whole 30 s windows (``pad_to_s`` 30), which is what Whisper's
``transcribe`` and transformers' extractor (with its default padding) give the encoder for a
file of up to 30 s.
"""

from __future__ import annotations

import numpy as np

# Frames appended after the last centred frame; the ge2e_lstm model expects this many.
GE2E_TAIL_FRAMES = 2


def kaldi_fbank(wave: np.ndarray, sample_rate: int, num_bins: int, frame_length_ms: float,
                frame_shift_ms: float, window_type: str, dither: float,
                waveform_scale: float) -> np.ndarray:
    """Kaldi fbank (log mel energies) of ``wave`` (float in [-1, 1)), shape (frames, num_bins)."""
    import torch
    import torchaudio.compliance.kaldi as kaldi

    scaled = torch.from_numpy(np.asarray(wave, dtype=np.float32) * np.float32(waveform_scale))
    with torch.inference_mode():
        feats = kaldi.fbank(scaled.unsqueeze(0), num_mel_bins=num_bins,
                            frame_length=frame_length_ms, frame_shift=frame_shift_ms,
                            sample_frequency=sample_rate, window_type=window_type,
                            dither=dither)
    return feats.numpy().astype(np.float32)


def _hz_to_slaney_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    linear = freq * 3.0 / 200.0
    log_part = 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(freq >= 1000.0, log_part, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


def slaney_mel_filterbank(num_bins: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """Triangular filters equally spaced on Slaney's mel scale from 0 Hz to Nyquist, each
    scaled by 2 / bandwidth (equal area), shape (n_fft // 2 + 1, num_bins)."""
    edges_hz = _slaney_mel_to_hz(np.linspace(0.0, _hz_to_slaney_mel(sample_rate / 2.0),
                                             num_bins + 2))
    bins_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)[:, None]
    left, centre, right = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (bins_hz - left) / (centre - left)
    falling = (right - bins_hz) / (right - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (right - left))


def normalise_volume(wave: np.ndarray, target_dbfs: float, increase_only: bool) -> np.ndarray:
    """Scale to an RMS level of ``target_dbfs`` (dB re full scale); with ``increase_only`` a
    louder signal is left as it is. A silent signal is left as it is."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    if rms == 0.0:
        return wave
    change_db = target_dbfs - 20.0 * np.log10(rms)
    if change_db < 0 and increase_only:
        return wave
    return wave * 10.0 ** (change_db / 20.0)


def ge2e_mel(wave: np.ndarray, sample_rate: int, num_bins: int, frame_length_ms: float,
             frame_shift_ms: float, normalise: bool = True, target_dbfs: float = -30.0,
             increase_only: bool = True) -> np.ndarray:
    """Power mel spectrogram, shape (1 + len(wave) // hop + GE2E_TAIL_FRAMES, num_bins), of the
    waveform brought to ``target_dbfs`` first (``normalise``): the encoder reads power, not its
    log, so it depends on the level, and it was trained on audio at -30 dBFS."""
    n_fft = int(sample_rate * frame_length_ms / 1000)
    hop = int(sample_rate * frame_shift_ms / 1000)
    wave = np.asarray(wave, dtype=np.float64)
    if normalise:
        wave = normalise_volume(wave, target_dbfs, increase_only)
    half = n_fft // 2
    padded = np.concatenate([np.zeros(half), wave, np.zeros(half + GE2E_TAIL_FRAMES * hop)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    # periodic Hann (the DFT-even window of spectral analysis), not the symmetric one
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    spectrum = np.fft.rfft(frames * window, axis=1)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    mel = power @ slaney_mel_filterbank(num_bins, n_fft, sample_rate)
    return mel.astype(np.float32)


def whisper_mel(wave: np.ndarray, sample_rate: int, num_bins: int, n_fft: int, hop: int,
                pad_to_s: float = 0.0) -> np.ndarray:
    """Whisper's normalised log-mel, shape (len(padded wave) // hop, num_bins); ``pad_to_s`` > 0
    zero-pads the wave to a whole number (at least one) of windows of that many seconds."""
    wave = np.asarray(wave, dtype=np.float64)
    if pad_to_s > 0:
        window = int(round(pad_to_s * sample_rate))
        wave = np.pad(wave, (0, max(1, -(-len(wave) // window)) * window - len(wave)))
    padded = np.pad(wave, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:-1]
    window_fn = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    spectrum = np.fft.rfft(frames * window_fn, axis=1)
    mel = (spectrum.real ** 2 + spectrum.imag ** 2) @ slaney_mel_filterbank(num_bins, n_fft,
                                                                           sample_rate)
    log_mel = np.log10(np.maximum(mel, 1e-10))
    log_mel = np.maximum(log_mel, log_mel.max() - 8.0)
    return ((log_mel + 4.0) / 4.0).astype(np.float32)
