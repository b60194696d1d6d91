"""The whole front-end for one waveform: spectrum -> log-mel (or MFCC) -> VAD -> CMVN.

The configuration (conf/frontend.toml, conf/mfcc.toml) is written as ``frontend.json`` in
every feature directory and copied into model bundles, so prediction applies exactly the
front-end a model was trained with.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from sertool.config import check_known, deep_update, load_config, shipped_conf
from sertool.errors import SertoolError
from sertool.frontend.cmvn import segment_cmvn
from sertool.frontend.features import (
    SpectrumConfig,
    choose_n_fft,
    empty_filters,
    log_mel,
    mel_filterbank,
    mfcc_from_log_mel,
    power_spectrum,
)
from sertool.frontend.vad import VadConfig, VadStats, detect_speech

DEFAULTS: dict[str, Any] = {
    "kind": "logmel",
    "sample_rate": 16000,
    "frame": {"frame_length_ms": 25.0, "frame_shift_ms": 10.0, "preemphasis": 0.97},
    "mel": {"num_bins": 128, "low_freq": 20.0, "high_freq": 0.0, "n_fft": 0},
    "mfcc": {"num_ceps": 40, "lifter": 22.0},
    "vad": {f.name: f.default for f in fields(VadConfig)},
    "cmvn": {"mode": "segment", "norm_vars": True},
}


class FrontendError(SertoolError, ValueError):
    """A signal the front-end cannot turn into features (too short, all silence, ...)."""


def default_frontend_conf(kind: str = "logmel") -> dict:
    """The shipped configuration: conf/frontend.toml (log-mel) or conf/mfcc.toml."""
    name = {"logmel": "frontend.toml", "mfcc": "mfcc.toml"}[kind]
    return load_config(DEFAULTS, shipped_conf(name))


def resolve_conf(conf: dict | None = None, path: str | Path | None = None,
                 overrides: tuple[str, ...] | list[str] = ()) -> dict:
    """Defaults < file < overrides; then the FFT size is fixed (``n_fft = 0`` means auto)."""
    if conf is not None:  # e.g. a frontend.json: complete it with the defaults
        check_known(DEFAULTS, conf, "front-end configuration")
        start = deep_update(DEFAULTS, conf)
    elif path is None:
        start = default_frontend_conf()
    else:
        start = DEFAULTS
    resolved = load_config(start, path, overrides)
    if resolved["kind"] not in ("logmel", "mfcc"):
        raise FrontendError(f"front-end kind must be logmel or mfcc, got {resolved['kind']!r}")
    if resolved["cmvn"]["mode"] not in ("segment", "conversation", "none"):
        raise FrontendError(f"cmvn.mode must be segment, conversation or none, "
                            f"got {resolved['cmvn']['mode']!r}")
    if resolved["vad"]["on_too_little"] not in ("keep_all", "fail"):
        raise FrontendError("vad.on_too_little must be keep_all or fail")
    spec = SpectrumConfig(resolved["sample_rate"], **{
        k: resolved["frame"][k] for k in ("frame_length_ms", "frame_shift_ms", "preemphasis")})
    mel = resolved["mel"]
    if not mel["n_fft"]:
        mel["n_fft"] = choose_n_fft(mel["num_bins"], spec.win_length, spec.sample_rate,
                                    mel["low_freq"], mel["high_freq"])
    return resolved


class Frontend:
    """Turns a waveform into a (frames, dim) float32 matrix and VAD statistics."""

    def __init__(self, conf: dict | None = None):
        self.conf = resolve_conf(conf)
        c = self.conf
        self.spectrum = SpectrumConfig(c["sample_rate"], **{
            k: c["frame"][k] for k in ("frame_length_ms", "frame_shift_ms", "preemphasis")})
        self.n_fft = int(c["mel"]["n_fft"])
        self.bank = mel_filterbank(c["mel"]["num_bins"], self.n_fft, c["sample_rate"],
                                   c["mel"]["low_freq"], c["mel"]["high_freq"])
        empty = empty_filters(self.bank)
        if empty:
            raise FrontendError(f"mel filters {empty} are empty with n_fft={self.n_fft}: "
                                "use a larger mel.n_fft (or 0 for automatic)")
        self.vad = VadConfig(**c["vad"])

    @property
    def kind(self) -> str:
        return self.conf["kind"]

    @property
    def dim(self) -> int:
        if self.kind == "mfcc":
            return self.conf["mfcc"]["num_ceps"]
        return self.conf["mel"]["num_bins"]

    @property
    def sample_rate(self) -> int:
        return self.conf["sample_rate"]

    def power_spectrum(self, wave: np.ndarray) -> np.ndarray:
        """Power spectrum (frames, n_fft // 2 + 1) of a waveform at ``sample_rate``."""
        power = power_spectrum(wave, self.spectrum, self.n_fft)
        if power.shape[0] == 0:
            raise FrontendError(
                f"signal of {len(wave)} samples is shorter than one frame "
                f"({self.spectrum.win_length} samples)")
        return power

    def features(self, power: np.ndarray) -> np.ndarray:
        """Log-mels (or MFCCs) of power-spectrum frames, before CMVN."""
        feats = log_mel(power, self.bank)
        if self.kind == "mfcc":
            feats = mfcc_from_log_mel(feats, self.conf["mfcc"]["num_ceps"],
                                      self.conf["mfcc"]["lifter"])
        return feats

    def speech_mask(self, power: np.ndarray) -> tuple[np.ndarray, VadStats]:
        n = power.shape[0]
        if not self.vad.enabled:
            return np.ones(n, dtype=bool), VadStats(n, n)
        mask = detect_speech(power, self.vad, self.spectrum.frame_shift_ms)
        kept = int(mask.sum())
        if kept < min(self.vad.min_kept_frames, n):
            if self.vad.on_too_little == "fail":
                raise FrontendError(f"VAD kept {kept} of {n} frames "
                                    f"(fewer than vad.min_kept_frames={self.vad.min_kept_frames})")
            return np.ones(n, dtype=bool), VadStats(
                n, n, fallback=True, note=f"VAD kept only {kept} of {n} frames; kept all")
        return mask, VadStats(n, kept)

    def process(self, wave: np.ndarray, sample_rate: int | None = None,
                normalise: bool = True) -> tuple[np.ndarray, VadStats]:
        """Features after VAD frame dropping and (segment-level) CMVN.

        With ``cmvn.mode = conversation`` (or ``normalise=False``) the matrix is returned
        unnormalised; the caller pools the statistics over the conversation.
        """
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise FrontendError(f"expected {self.sample_rate} Hz audio, got {sample_rate} Hz "
                                "(load it with sertool.frontend.audio.load_audio)")
        power = self.power_spectrum(wave)
        mask, stats = self.speech_mask(power)
        # The VAD reads the spectrum, so only the frames it keeps get mel filters.
        feats = self.features(power if stats.frames_kept == len(mask) else power[mask])
        if normalise and self.conf["cmvn"]["mode"] == "segment":
            feats = segment_cmvn(feats, self.conf["cmvn"]["norm_vars"])
        return feats, stats
