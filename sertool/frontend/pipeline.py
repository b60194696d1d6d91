"""The whole front-end for one waveform: spectrum -> log-mel (or MFCC) -> VAD -> CMVN.

The configuration (conf/frontend.toml, conf/mfcc.toml) is written as ``frontend.json`` in
every feature directory and copied into model bundles, so prediction applies exactly the
front-end a model was trained with.

Kinds ``kaldi_fbank``, ``ge2e_mel`` and ``whisper_mel`` reproduce the front-ends of published
models (WeSpeaker, Resemblyzer, Whisper; see :mod:`sertool.frontend.published`); ``waveform``
stores the samples themselves (the self-supervised encoders', :mod:`sertool.models.ssl`); kind
``opensmile`` is openSMILE's published functionals (eGeMAPS, ComParE; see
:mod:`sertool.frontend.functionals`), one vector per utterance stored as a 1-frame matrix. They
have their own, smaller set of options (:data:`DEFAULTS_BY_KIND`), so the resolved log-mel and MFCC
configurations are unchanged by their existence. An imported model records its front-end, and
:func:`check_model_frontend` refuses features made with another one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from sertool.config import (
    differing_keys,
    load_config,
    load_toml,
    lookup,
    parse_override,
    shipped_conf,
)
from sertool.errors import SertoolError
from sertool.frontend.cmvn import segment_cmvn
from sertool.frontend.features import (
    SpectrumConfig,
    choose_n_fft,
    emphasise,
    empty_filters,
    frame_power,
    log_mel,
    mel_filterbank,
    mfcc_from_log_mel,
    num_frames,
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
# WeSpeaker's inference front-end (wespeaker/cli/speaker.py): Kaldi fbank of int16-range samples,
# Hamming window, no dither, minus the utterance mean (cmvn segment without variance), no VAD.
KALDI_FBANK_DEFAULTS: dict[str, Any] = {
    "kind": "kaldi_fbank",
    "sample_rate": 16000,
    "frame": {"frame_length_ms": 25.0, "frame_shift_ms": 10.0},
    "mel": {"num_bins": 80},
    "fbank": {"window_type": "hamming", "dither": 0.0, "waveform_scale": 32768.0},
    "vad": {"enabled": False},
    "cmvn": {"mode": "segment", "norm_vars": False},
}
# Resemblyzer's GE2E encoder (resemblyzer/audio.py, hparams.py): waveform raised to -30 dBFS
# (preprocess_wav's normalize_volume), 40 power mels (no log), 25 ms / 10 ms, no feature
# normalisation; preprocess_wav's webrtcvad pause trimming is not applied (README, "Transfer
# from a published speaker model").
GE2E_MEL_DEFAULTS: dict[str, Any] = {
    "kind": "ge2e_mel",
    "sample_rate": 16000,
    "volume": {"normalise": True, "target_dbfs": -30.0, "increase_only": True},
    "frame": {"frame_length_ms": 25.0, "frame_shift_ms": 10.0},
    "mel": {"num_bins": 40},
    "vad": {"enabled": False},
    "cmvn": {"mode": "none", "norm_vars": False},
}
# Whisper's log-mel (whisper/audio.py, transformers' WhisperFeatureExtractor): 400-sample Hann
# window, hop 160, Slaney mels, log10 clamped at the maximum - 8, (x + 4) / 4. ``pad_to_s`` 0:
# the utterance as it is; 30: zero-padded to whole 30 s windows, the input Whisper was trained on.
WHISPER_MEL_DEFAULTS: dict[str, Any] = {
    "kind": "whisper_mel",
    "sample_rate": 16000,
    "pad_to_s": 0.0,
    "frame": {"frame_length_ms": 25.0, "frame_shift_ms": 10.0},
    "mel": {"num_bins": 80},
    "vad": {"enabled": False},
    "cmvn": {"mode": "none", "norm_vars": False},
}
# The waveform itself, a (samples, 1) float32 matrix: the input of the self-supervised encoders
# (sertool.models.ssl; their input normalisation belongs to the model, so it is not done here).
WAVEFORM_DEFAULTS: dict[str, Any] = {
    "kind": "waveform",
    "sample_rate": 16000,
    "vad": {"enabled": False},
    "cmvn": {"mode": "none", "norm_vars": False},
}
# openSMILE functionals (the opensmile package's SMILExtract): statistics of its low-level
# descriptors over the whole signal, one vector per utterance (a 1-frame matrix). Computed on
# the whole signal, as nkululeko and the openSMILE papers do (eGeMAPS has its own voicing
# gates), so no VAD; no CMVN (it would zero a single frame): the linear head standardises
# with the training vectors' statistics.
OPENSMILE_DEFAULTS: dict[str, Any] = {
    "kind": "opensmile",
    "sample_rate": 16000,
    "feature_set": "eGeMAPSv02",
    "vad": {"enabled": False},
    "cmvn": {"mode": "none", "norm_vars": False},
}
DEFAULTS_BY_KIND: dict[str, dict[str, Any]] = {
    "logmel": DEFAULTS, "mfcc": DEFAULTS,
    "kaldi_fbank": KALDI_FBANK_DEFAULTS, "ge2e_mel": GE2E_MEL_DEFAULTS,
    "whisper_mel": WHISPER_MEL_DEFAULTS, "waveform": WAVEFORM_DEFAULTS,
    "opensmile": OPENSMILE_DEFAULTS,
}
# the kinds computed straight from the waveform, with no VAD and no spectrum options of ours
PUBLISHED_KINDS = ("kaldi_fbank", "ge2e_mel", "whisper_mel", "waveform", "opensmile")


# The upper bounds keep a configuration (a bundle's frontend.json, too) from asking for arrays
# that fill the memory: n_fft as far as the automatic choice goes (choose_n_fft).
LIMITS = {"sample_rate": (1000, 768000), "frame.frame_length_ms": (1.0, 1000.0),
          "frame.frame_shift_ms": (1.0, 1000.0), "frame.preemphasis": (0.0, 1.0),
          "mel.num_bins": (1, 2048), "mel.low_freq": (0.0, None), "pad_to_s": (0.0, 3600.0),
          "mel.n_fft": (0, 1 << 16), "mfcc.num_ceps": (1, 2048), "mfcc.lifter": (0.0, None),
          "vad.alpha": (0.0, 1.0), "vad.a01": (0.0, 1.0), "vad.a10": (0.0, 1.0),
          "vad.noise_quantile": (0.0, 1.0), "vad.silence_floor_db": (0.0, None),
          "vad.bin_step": (1, None), "vad.hangover_ms": (0.0, None),
          "vad.min_speech_ms": (0.0, None), "vad.min_kept_frames": (1, None)}


# The spectrum of a long signal is computed this many frames (60 s) at a time: its float32/
# complex64 temporaries (~6 kB a frame) would otherwise grow with the file's length; what is
# kept per frame is the log-mels and the bins the VAD reads (~1.5 kB).
BLOCK_FRAMES = 6000
# Signal checks (flags in vad_stats and predict's warning column). No sample differs from the
# others by one 16-bit step: digital silence or a constant (DC) value, no signal at all.
SILENCE_PEAK_TO_PEAK = 2.0 ** -15
CLIP_LEVEL = 0.999  # of full scale
CLIP_FRACTION = 1e-3  # of the samples at or above CLIP_LEVEL: clipped
MIN_FRAMES = 20  # too_short below this many frames (vad.min_kept_frames where there is a VAD)


class FrontendError(SertoolError, ValueError):
    """A signal the front-end cannot turn into features (too short, all silence, ...)."""


def signal_flags(wave: np.ndarray) -> dict[str, str]:
    """``silent`` and ``clipped``, each with what was seen (empty when the signal is fine)."""
    if not len(wave):
        return {}
    return flags_of_signal(len(wave), float(np.ptp(wave)), float(wave[0]),
                           int(np.count_nonzero(np.abs(wave) >= CLIP_LEVEL)))


def flags_of_signal(n: int, peak_to_peak: float, first: float, clipped: int
                    ) -> dict[str, str]:
    """:func:`signal_flags` from what a pass over the samples gathers: their count, range,
    first value and the count at full scale (a long file is read in blocks)."""
    flags = {}
    if n and peak_to_peak < SILENCE_PEAK_TO_PEAK:
        flags["silent"] = (f"no signal: every sample is {first:.6g} "
                           "(digital silence or DC only)")
    if n and clipped >= max(1, CLIP_FRACTION * n):
        flags["clipped"] = (f"{clipped} of {n} samples at full scale "
                            f"({100 * clipped / n:.2g}%)")
    return flags


def unusable(feats: np.ndarray, stats: VadStats) -> str | None:
    """Why features must not be stored for training (extract-feats lists the utterance as
    failed), or None: silent audio, or features that came out all zero (segment CMVN of a
    single frame). Both carry no information; ``predict`` warns instead."""
    if "silent" in stats.flags:
        return f"silent: {stats.flags['silent']}"
    if feats.size and not np.any(feats):
        return (f"its features are all zero ({stats.frames_kept} frame(s) after VAD, "
                "normalised to nothing)")
    return None


def default_frontend_conf(kind: str = "logmel") -> dict:
    """The shipped configuration: conf/frontend.toml (log-mel) or conf/mfcc.toml."""
    name = {"logmel": "frontend.toml", "mfcc": "mfcc.toml"}[kind]
    return load_config(DEFAULTS, shipped_conf(name))


def _kind_of(conf: Mapping | None, path: str | Path | None, overrides, where: str) -> str:
    """The front-end kind a configuration asks for (its option set depends on it)."""
    kind = None
    if conf is not None:
        kind = conf.get("kind") if isinstance(conf, Mapping) else None
    elif path is not None:
        kind = load_toml(path).get("kind")
    for text in overrides:
        key, value = parse_override(text)
        if key == ["kind"]:
            kind = value
    kind = kind or "logmel"
    if not isinstance(kind, str) or kind not in DEFAULTS_BY_KIND:
        raise FrontendError(f"{where}front-end kind must be one of "
                            f"{', '.join(DEFAULTS_BY_KIND)}, got {kind!r}")
    return kind


def resolve_conf(conf: dict | None = None, path: str | Path | None = None,
                 overrides: tuple[str, ...] | list[str] = (),
                 source: str = "front-end configuration") -> dict:
    """Defaults < ``conf`` (a stored configuration, e.g. a frontend.json; ``source`` says
    where it was read from) < file < overrides, each checked against the schema (known keys,
    types, :data:`LIMITS`); then the FFT size is fixed (``n_fft = 0`` means auto)."""
    where = f"{source}: " if conf is not None else ""  # in the errors about a stored one
    kind = _kind_of(conf, path, overrides, where)
    defaults = DEFAULTS_BY_KIND[kind]
    stored = (source, conf) if conf is not None else None
    if conf is None and path is None and defaults is DEFAULTS:
        defaults = default_frontend_conf()
    resolved = load_config(defaults, path, overrides, LIMITS, stored=stored)
    if resolved["cmvn"]["mode"] not in ("segment", "conversation", "none"):
        raise FrontendError(f"{where}cmvn.mode must be segment, conversation or none, "
                            f"got {resolved['cmvn']['mode']!r}")
    if kind == "opensmile":
        _check_opensmile(resolved, where)
    if kind in PUBLISHED_KINDS:
        if resolved["vad"]["enabled"]:
            raise FrontendError(f"{where}front-end kind {kind} reproduces a published model's "
                                "inference, which has no VAD: vad.enabled must be false")
        return resolved
    if resolved["vad"]["on_too_little"] not in ("keep_all", "fail"):
        raise FrontendError(f"{where}vad.on_too_little must be keep_all or fail")
    spec = SpectrumConfig(resolved["sample_rate"], **{
        k: resolved["frame"][k] for k in ("frame_length_ms", "frame_shift_ms", "preemphasis")})
    mel = resolved["mel"]
    if not mel["n_fft"]:
        try:
            mel["n_fft"] = choose_n_fft(mel["num_bins"], spec.win_length, spec.sample_rate,
                                        mel["low_freq"], mel["high_freq"])
        except ValueError as err:
            raise FrontendError(f"{where}{err} (mel.num_bins, mel.low_freq, mel.high_freq)"
                                ) from err
    return resolved


def _check_opensmile(resolved: Mapping, where: str) -> None:
    """The options of kind ``opensmile``: a known feature set, no VAD, no CMVN."""
    from sertool.frontend.functionals import FEATURE_SETS

    if resolved["feature_set"] not in FEATURE_SETS:
        raise FrontendError(f"{where}feature_set must be one of {', '.join(FEATURE_SETS)}, "
                            f"got {resolved['feature_set']!r}")
    if resolved["vad"]["enabled"]:
        raise FrontendError(f"{where}front-end kind opensmile computes its functionals on the "
                            "whole signal: vad.enabled must be false")
    if resolved["cmvn"]["mode"] != "none":
        raise FrontendError(f"{where}front-end kind opensmile gives one vector per utterance, "
                            "which CMVN would make all zero: cmvn.mode must be none (the "
                            "linear head standardises with the training vectors' statistics)")


class Frontend:
    """Turns a waveform into a (frames, dim) float32 matrix and VAD statistics."""

    def __init__(self, conf: dict | None = None):
        self.conf = resolve_conf(conf)
        c = self.conf
        if self.kind == "opensmile":  # the package is needed from here on: checked now
            from sertool.frontend.functionals import Functionals

            self.functionals = Functionals(c["feature_set"], c["sample_rate"])
        if self.kind in PUBLISHED_KINDS:  # features straight from the waveform, no VAD
            return
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
        if self.kind == "waveform":
            return 1
        if self.kind == "mfcc":
            return self.conf["mfcc"]["num_ceps"]
        if self.kind == "opensmile":
            from sertool.frontend.functionals import FEATURE_SETS

            return FEATURE_SETS[self.conf["feature_set"]]
        return self.conf["mel"]["num_bins"]

    @property
    def sample_rate(self) -> int:
        return self.conf["sample_rate"]

    def _too_short(self, wave: np.ndarray) -> FrontendError:
        return FrontendError(f"signal of {len(wave)} samples is shorter than one frame "
                             f"({self.spectrum.win_length} samples)")

    def min_frames(self) -> int:
        """Fewer frames than this are ``too_short`` (the VAD's vad.min_kept_frames)."""
        return int(self.conf["vad"].get("min_kept_frames", MIN_FRAMES))

    def frames_of(self, wave: np.ndarray, feats: np.ndarray) -> int:
        """The signal's length in frames for the ``too_short`` check: the feature matrix's
        rows, or for kind opensmile (one row per utterance) its 10 ms frames."""
        if self.kind == "opensmile":
            return len(wave) * 100 // self.sample_rate
        return len(feats)

    def _features_and_vad_bins(self, wave: np.ndarray, features: bool = True
                               ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Features (before CMVN) of every frame and the spectrum bins the VAD reads, computed
        :data:`BLOCK_FRAMES` at a time: one pass's values (up to float rounding of the
        mel matrix product), with the temporaries bounded. ``features=False``: the bins
        only (None for the features)."""
        n = num_frames(len(wave), self.spectrum)
        if n == 0:
            raise self._too_short(wave)
        emphasised = emphasise(wave, self.spectrum)
        feats = np.empty((n, self.dim), dtype=np.float32) if features else None
        step = self.vad.bin_step
        vad_bins = (np.empty((n, len(range(0, self.n_fft // 2 + 1, step))), dtype=np.float32)
                    if self.vad.enabled else None)
        for first in range(0, n, BLOCK_FRAMES):
            power = frame_power(emphasised, self.spectrum, self.n_fft, first, first + BLOCK_FRAMES)
            if feats is not None:
                feats[first:first + len(power)] = self.features(power)
            if vad_bins is not None:
                vad_bins[first:first + len(power)] = power[:, ::step]
        return feats, vad_bins

    def vad_bins(self, wave: np.ndarray) -> np.ndarray:
        """The spectrum bins the VAD reads, of every frame (``detect_speech(...,
        subsampled=True)``): what ``predict --segments vad`` cuts a recording with."""
        if not self.vad.enabled:
            raise FrontendError("vad.enabled is false: this front-end has no VAD")
        return self._features_and_vad_bins(wave, features=False)[1]

    def features(self, power: np.ndarray) -> np.ndarray:
        """Log-mels (or MFCCs) of power-spectrum frames, before CMVN."""
        feats = log_mel(power, self.bank)
        if self.kind == "mfcc":
            feats = mfcc_from_log_mel(feats, self.conf["mfcc"]["num_ceps"],
                                      self.conf["mfcc"]["lifter"])
        return feats

    def published_features(self, wave: np.ndarray) -> np.ndarray:
        """Features of the kinds kaldi_fbank, ge2e_mel, whisper_mel, waveform and opensmile,
        before CMVN."""
        from sertool.frontend import published

        c = self.conf
        if self.kind == "waveform":
            if len(wave) == 0:
                raise FrontendError("empty signal")
            return np.asarray(wave, dtype=np.float32).reshape(-1, 1)
        if self.kind == "opensmile":
            return self.functionals(wave)
        frame = c["frame"]
        if self.kind == "kaldi_fbank":
            win = int(c["sample_rate"] * frame["frame_length_ms"] / 1000)
            if len(wave) < win:  # Kaldi (snip_edges) makes no frame of it
                raise FrontendError(f"signal of {len(wave)} samples is shorter than one "
                                    f"frame ({win} samples)")
            return published.kaldi_fbank(wave, c["sample_rate"], c["mel"]["num_bins"],
                                         frame["frame_length_ms"], frame["frame_shift_ms"],
                                         **c["fbank"])
        if self.kind == "whisper_mel":
            n_fft = int(c["sample_rate"] * frame["frame_length_ms"] / 1000)
            hop = int(c["sample_rate"] * frame["frame_shift_ms"] / 1000)
            if len(wave) < max(hop, n_fft // 2 + 1):  # no frame, or too short to reflect
                raise FrontendError(f"signal of {len(wave)} samples is shorter than "
                                    f"{max(hop, n_fft // 2 + 1)} samples")
            return published.whisper_mel(wave, c["sample_rate"], c["mel"]["num_bins"], n_fft,
                                         hop, c["pad_to_s"])
        if len(wave) == 0:
            raise FrontendError("empty signal")
        return published.ge2e_mel(wave, c["sample_rate"], c["mel"]["num_bins"],
                                  frame["frame_length_ms"], frame["frame_shift_ms"],
                                  **c["volume"])

    def speech_mask(self, power: np.ndarray, subsampled: bool = False
                    ) -> tuple[np.ndarray, VadStats]:
        """The frames to keep. Fewer than vad.min_kept_frames kept (or in the whole signal):
        all are kept and the stats say so (``vad_fallback``), or FrontendError with
        ``vad.on_too_little = "fail"``."""
        n = power.shape[0]
        if not self.vad.enabled:
            return np.ones(n, dtype=bool), VadStats(n, n)
        return self.kept_frames(detect_speech(power, self.vad, self.spectrum.frame_shift_ms,
                                              subsampled))

    def kept_frames(self, mask: np.ndarray) -> tuple[np.ndarray, VadStats]:
        """:meth:`speech_mask` from the VAD's decisions ``mask`` (vad.min_kept_frames)."""
        n = len(mask)
        kept = int(mask.sum())
        if kept < self.vad.min_kept_frames:
            if self.vad.on_too_little == "fail":
                raise FrontendError(f"VAD kept {kept} of {n} frames "
                                    f"(fewer than vad.min_kept_frames={self.vad.min_kept_frames})")
            note = (f"only {n} frame(s) in all" if n < self.vad.min_kept_frames
                    else f"VAD kept only {kept} of {n} frames")
            return np.ones(n, dtype=bool), VadStats(
                n, n, fallback=True, note=f"{note}; kept all",
                flags={"vad_fallback": f"{note} (fewer than vad.min_kept_frames="
                                       f"{self.vad.min_kept_frames}); kept all"})
        return mask, VadStats(n, kept)

    def process(self, wave: np.ndarray, sample_rate: int | None = None,
                normalise: bool = True) -> tuple[np.ndarray, VadStats]:
        """Features after VAD frame dropping and (segment-level) CMVN.

        With ``cmvn.mode = conversation`` (or ``normalise=False``) the matrix is returned
        unnormalised; the caller pools the statistics over the conversation. The stats'
        ``flags`` name what is wrong with the signal (``silent``, ``clipped``, ``too_short``,
        ``vad_fallback``); the features are made all the same.
        """
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise FrontendError(f"expected {self.sample_rate} Hz audio, got {sample_rate} Hz "
                                "(load it with sertool.frontend.audio.load_audio)")
        if self.kind in PUBLISHED_KINDS:
            feats = self.published_features(wave)
            stats = VadStats(len(feats), len(feats))
        else:
            feats, vad_bins = self._features_and_vad_bins(wave)
            if vad_bins is None:
                stats = VadStats(len(feats), len(feats))
            else:
                mask, stats = self.speech_mask(vad_bins, subsampled=True)
                del vad_bins
                if stats.frames_kept < len(mask):
                    feats = feats[mask]
        stats.flags = {**signal_flags(wave), **stats.flags}
        frames = self.frames_of(wave, feats)
        if frames < self.min_frames():
            stats.flags["too_short"] = (f"{len(wave) / self.sample_rate:.3f} s: "
                                        f"{frames} frame(s), fewer than "
                                        f"{self.min_frames()}")
        if normalise and self.conf["cmvn"]["mode"] == "segment":
            feats = segment_cmvn(feats, self.conf["cmvn"]["norm_vars"])
        return feats, stats


def check_model_frontend(model_meta: Mapping, feat_dir_frontend_json: str | Path,
                         model_path: str | Path | None = None) -> None:
    """Refuse features made with another front-end than the one ``model_meta`` records.

    ``model_meta`` is the metadata of :func:`sertool.nnet.checkpoint.load_model`; an imported
    speaker model records its front-end in ``extra["frontend"]`` (``import-speaker-model``).
    A model that records none (trained by sertool on features of its own) is not checked.
    Raises FrontendError naming both files and the command that makes the right features.
    """
    recorded = (model_meta.get("extra") or {}).get("frontend")
    if not recorded:
        return
    path = Path(feat_dir_frontend_json)
    if not path.is_file():
        raise FrontendError(f"{path}: not found (make the feature directory with extract-feats)")
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise FrontendError(f"{path}: not a front-end configuration ({err})") from err
    used = resolve_conf(stored, source=str(path))
    wanted = resolve_conf(dict(recorded), source=f"{model_path or 'the model'}: extra.frontend")
    keys = differing_keys(used, wanted)
    if not keys:
        return
    differ = [f"{k} {lookup(used, k)!r} (model: {lookup(wanted, k)!r})"
              for k in sorted(keys, key=lambda k: (k != "kind", k))]  # the kind says most
    model = f"the model {model_path}" if model_path else "the model"
    conf_toml = (Path(model_path).parent / "frontend.toml" if model_path
                 else "<the model's frontend.toml>")
    raise FrontendError(
        f"{path.parent} was made with another front-end than {model} expects "
        f"({'; '.join(differ[:4])}{'; ...' if len(differ) > 4 else ''}): make its features "
        f"with `sertool extract-feats DATA FEAT_DIR --conf {conf_toml}`")
