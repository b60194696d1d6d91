"""Long recordings in blocks: audio read, resampled, turned into features and classified a
block at a time, so that memory does not grow with the recording's length (issue 22, item 2).

:class:`AudioSource` gives any span of samples of a recording at the front-end's rate, equal
to the same span of :func:`sertool.frontend.audio.load_audio`'s whole waveform: soundfile seeks
to the input samples the span needs and :class:`Resampler` computes only its output samples
(the polyphase filter of ``scipy.signal.resample_poly``, run with ``upfirdn`` on a slice of the
input that starts on a multiple of the decimation factor: the same products summed in the same
order, so the samples are bit for bit those of resampling the whole file).

The front-end's whole-signal statistics are taken honestly, in passes over the span (each
pass reads it again from the file, never holding it):

1. the mean (DC removal before pre-emphasis) and the signal checks (range, clipped samples);
2. the energy of every frame, then the VAD's silence floor and noise frames (the quietest
   ``noise_quantile`` of the audible frames: which ones is known only after the last frame);
3. the noise estimate, the mean VAD spectrum of those frames;
4. the VAD's recursions (decision-directed SNR, HMM) block after block with their state
   carried (:class:`sertool.frontend.vad.SohnState`): the frame decisions;
5. CMVN's mean and variance of the kept frames (combined block by block in float64);
6. the normalised features of the kept frames into the network, which pools them in chunks
   (:meth:`sertool.models.resnet.ResNetTrunk.pooled_stream`).

What is held per frame of the whole span is its energy (float64), then two booleans (audible,
kept): ~10 bytes a frame, 3.6 MB an hour; everything else is one block (:data:`BLOCK_FRAMES`,
60 s) or one chunk of the network. The results equal the in-memory path's up to float
rounding: the mean, the noise estimate and the CMVN statistics are sums in another order (the
whole-signal sums of float32 numpy are themselves rounded; these are float64). A trunk that
cannot pool in chunks (other than the ResNet with statistics pooling) is given all the
features at once, and the published front-ends (kaldi_fbank, ge2e_mel, whisper_mel) are not
streamed: ``predict`` reads such audio whole.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sertool.frontend.audio import STDIN, AudioError, open_audio, span, spool_stdin, truncation
from sertool.frontend.features import frame_power, num_frames
from sertool.frontend.pipeline import BLOCK_FRAMES, CLIP_LEVEL, PUBLISHED_KINDS, FrontendError
from sertool.frontend.vad import (
    _TINY,
    SohnState,
    frame_energy_db,
    log_odds_block,
    noise_frames,
    smooth_decisions,
)

# Spans longer than this are streamed; shorter ones are read whole (one pass, and their
# waveform and features, ~0.4 MB a second, are small).
STREAM_ABOVE_S = 60.0
# Input samples decoded per read when a whole file is scanned (non-finite float samples).
SCAN_FRAMES = 1 << 20


_LIBC: Any = None


def release_freed_memory() -> None:
    """Give memory freed inside the C heap back to the system (glibc ``malloc_trim``; nothing
    elsewhere). Hundreds of segments of different lengths leave the heap fragmented: measured,
    RSS then grows with the number of segments (~130 MB over 60 minutes of ``--segments
    vad``) although nothing is kept; trimmed after each segment it does not."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


# ----------------------------------------------------------------------------- resampling


class Resampler:
    """``scipy.signal.resample_poly(x, up, down)`` (float32, Kaiser window 5.0, zero padding),
    any range of its output from the input samples that range needs."""

    def __init__(self, rate_in: int, rate_out: int, n_in: int):
        from scipy.signal import firwin

        common = math.gcd(rate_in, rate_out)
        self.up, self.down = rate_out // common, rate_in // common
        self.n_in = n_in
        up, down = self.up, self.down
        self.n_out = -(-n_in * up // down)
        # resample_poly's filter, padding and offset, step for step (float32 like its input)
        half_len = 10 * max(up, down)
        h = np.asarray(firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0)),
                       dtype=np.float32)
        h *= up
        pre_pad = down - half_len % down
        self.pre_remove = (half_len + pre_pad) // down
        post_pad = 0
        while self._out_len(len(h) + pre_pad + post_pad, n_in) < self.n_out + self.pre_remove:
            post_pad += 1
        self.h = np.concatenate([np.zeros(pre_pad, np.float32), h,
                                 np.zeros(post_pad, np.float32)])

    def _out_len(self, len_h: int, n_in: int) -> int:
        return ((n_in - 1) * self.up + len_h - 1) // self.down + 1

    def input_span(self, first: int, last: int) -> tuple[int, int]:
        """Input samples [lo, hi) that output samples [first, last) are made of; ``lo`` a
        multiple of ``down``, so that the slice's output grid is the whole input's."""
        j0, j1 = first + self.pre_remove, last + self.pre_remove
        lowest = max(0, -(-(j0 * self.down - len(self.h) + 1) // self.up))
        return lowest // self.down * self.down, min(self.n_in, (j1 - 1) * self.down // self.up + 1)

    def outputs(self, x: np.ndarray, lo: int, first: int, last: int) -> np.ndarray:
        """Output samples [first, last) from the input slice ``x`` = input[lo:hi] of
        :meth:`input_span`."""
        from scipy.signal import upfirdn

        y = upfirdn(self.h, x, self.up, self.down)
        shift = lo * self.up // self.down - self.pre_remove
        return np.ascontiguousarray(y[first - shift:last - shift], dtype=np.float32)


# ----------------------------------------------------------------------------- sources


def downmix(data: np.ndarray) -> np.ndarray:
    """(frames, channels) float32 -> mono, as load_audio downmixes."""
    return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]


class ArraySource:
    """A waveform already in memory, as a source (the same code paths as a file's)."""

    def __init__(self, wave: np.ndarray, name: str = "<waveform>"):
        self.wave = np.ascontiguousarray(wave, dtype=np.float32)
        self.n = len(self.wave)
        self.name = name

    def read(self, first: int, last: int) -> np.ndarray:
        return self.wave[first:last]


class AudioSource:
    """A recording opened for reading in spans at ``rate``: ``read(first, last)`` equals
    ``load_audio(file, rate)[first:last]``. ``-`` is standard input, spooled to a temporary
    file first. Errors are AudioError naming the file, as load_audio's."""

    def __init__(self, file: str, rate: int):
        self.name = str(file)
        self._stack = contextlib.ExitStack()
        try:
            path = self._stack.enter_context(spool_stdin()) if self.name == STDIN else self.name
            self.snd = self._stack.enter_context(open_audio(path, name=self.name))
            self._check()
        except BaseException:
            self._stack.close()
            raise
        self.rate = int(rate)
        self.resampler = (Resampler(self.snd.samplerate, self.rate, self.n_in)
                          if self.snd.samplerate != self.rate else None)
        self.n = self.resampler.n_out if self.resampler else self.n_in

    def _check(self) -> None:
        """What load_audio refuses before anything is resampled: a cut-off copy, a span over
        the length limit, no samples, non-finite float samples (a scan of the file; integer
        formats cannot hold them)."""
        snd, name = self.snd, self.name
        try:
            if cut := truncation(snd):
                raise AudioError(f"{name}: {cut}")
            _, self.n_in = span(snd, name, None, None)
            if self.n_in == 0:
                raise AudioError(f"{name}: no audio samples (empty file or segment)")
            if snd.subtype in ("FLOAT", "DOUBLE") or not snd.subtype.startswith("PCM"):
                snd.seek(0)
                while len(block := snd.read(SCAN_FRAMES, dtype="float32", always_2d=True)):
                    if not np.isfinite(block).all():
                        raise AudioError(f"{name}: audio contains NaN or infinite samples")
        except AudioError:
            raise
        except (RuntimeError, TypeError, ValueError) as err:  # soundfile's decoding errors
            raise AudioError(f"{name}: cannot decode audio ({err})") from err

    def _input(self, lo: int, hi: int) -> np.ndarray:
        """Input samples [lo, hi), downmixed to float32 mono."""
        try:
            self.snd.seek(lo)
            data = self.snd.read(hi - lo, dtype="float32", always_2d=True)
        except (RuntimeError, TypeError, ValueError) as err:
            raise AudioError(f"{self.name}: cannot decode audio ({err})") from err
        if len(data) < hi - lo:
            raise AudioError(f"{self.name}: the audio ends at sample {lo + len(data)}, before "
                             f"the {self.n_in} its header gives (a damaged or cut-off file?)")
        return downmix(data)

    def read(self, first: int, last: int) -> np.ndarray:
        """Samples [first, last) at the source's rate, float32."""
        first, last = max(0, first), min(self.n, last)
        if last <= first:
            return np.zeros(0, np.float32)
        if self.resampler is None:
            return np.ascontiguousarray(self._input(first, last), dtype=np.float32)
        lo, hi = self.resampler.input_span(first, last)
        return self.resampler.outputs(self._input(lo, hi), lo, first, last)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> AudioSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- front-end


def streamable(frontend: Any) -> bool:
    """The front-end can run in blocks (the log-mel and MFCC kinds)."""
    return frontend.kind not in PUBLISHED_KINDS


@dataclass
class SpanStats:
    """Pass 1 over a span: the mean (float32, as ``wave.mean()``) and the signal checks."""

    n: int
    mean: np.float32
    peak_to_peak: float
    first: float
    clipped: int


def span_stats(src: Any, lo: int, hi: int, block: int | None = None) -> SpanStats:
    block = block or BLOCK_FRAMES * 160  # samples a read (60 s at 16 kHz)
    total, lowest, highest, clipped, first = 0.0, np.inf, -np.inf, 0, 0.0
    for a in range(lo, hi, block):
        x = src.read(a, min(hi, a + block))
        if a == lo:
            first = float(x[0])
        total += float(x.sum(dtype=np.float64))
        lowest, highest = min(lowest, float(x.min())), max(highest, float(x.max()))
        clipped += int(np.count_nonzero(np.abs(x) >= CLIP_LEVEL))
    n = hi - lo
    return SpanStats(n, np.float32(total / n), float(np.float32(highest) - np.float32(lowest)),
                     first, clipped)


def power_blocks(src: Any, lo: int, hi: int, frontend: Any, mean: np.float32,
                 block: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first frame, power spectrum of frames [first, first + block)) of the span's frames,
    equal to the whole span's ``frame_power(emphasise(wave[lo:hi]))``: each block's samples
    minus the span's mean, pre-emphasised against the sample before the block."""
    block = block or BLOCK_FRAMES  # looked up here: a test sets it small
    spec, n_fft = frontend.spectrum, frontend.n_fft
    hop, win, pre = spec.hop_length, spec.win_length, spec.preemphasis
    frames = num_frames(hi - lo, spec)
    for f0 in range(0, frames, block):
        f1 = min(frames, f0 + block)
        a, b = lo + f0 * hop, lo + (f1 - 1) * hop + win
        x = src.read(a - 1 if f0 else a, b) - mean  # float32, as emphasise's wave - mean
        if pre:
            x = (np.concatenate([x[:1] * (1 - pre), x[1:] - pre * x[:-1]]) if not f0
                 else x[1:] - pre * x[:-1])
        yield f0, frame_power(x, spec, n_fft)


def vad_decisions(src: Any, lo: int, hi: int, frontend: Any, vad: Any,
                  mean: np.float32 | None = None) -> np.ndarray:
    """The speech frames of samples [lo, hi) of ``src``: ``detect_speech(frontend.vad_bins(
    wave[lo:hi]), vad, subsampled=True)`` in passes (module docstring, 2-4)."""
    if mean is None:
        mean = span_stats(src, lo, hi).mean
    step = vad.bin_step
    frames = num_frames(hi - lo, frontend.spectrum)
    energy = np.empty(frames)
    for f0, power in power_blocks(src, lo, hi, frontend, mean):
        energy[f0:f0 + len(power)] = frame_energy_db(np.ascontiguousarray(power[:, ::step]))
    audible, quiet = noise_frames(energy, vad)
    del energy
    is_quiet = np.zeros(frames, bool)
    is_quiet[quiet] = True
    noise = None
    for f0, power in power_blocks(src, lo, hi, frontend, mean):
        rows = power[is_quiet[f0:f0 + len(power)], ::step]
        part = rows.sum(axis=0, dtype=np.float64)
        noise = part if noise is None else noise + part
    noise = noise / len(quiet) + _TINY
    speech = np.empty(frames, bool)
    state = SohnState.start(len(noise))
    for f0, power in power_blocks(src, lo, hi, frontend, mean):
        used = np.ascontiguousarray(power[:, ::step])
        odds = log_odds_block(used, noise, audible[f0:f0 + len(used)], vad, state)
        speech[f0:f0 + len(used)] = odds > 0
    return smooth_decisions(speech, vad, frontend.spectrum.frame_shift_ms)


@dataclass
class StreamedFeatures:
    """A span's features after VAD and CMVN, to be read in blocks (:meth:`blocks`, each pass
    reading the audio again), and what the front-end says of it."""

    src: Any
    lo: int
    hi: int
    frontend: Any
    stats: SpanStats
    keep: np.ndarray  # per frame: kept after the VAD
    flags: dict[str, str]
    cmvn: tuple[np.ndarray, np.ndarray] | None  # float32 mean and std, or no normalisation

    @property
    def frames(self) -> int:
        return int(self.keep.sum())

    def blocks(self) -> Iterator[np.ndarray]:
        from sertool.frontend.cmvn import normalise

        for f0, power in power_blocks(self.src, self.lo, self.hi, self.frontend,
                                      self.stats.mean):
            feats = self.frontend.features(power)[self.keep[f0:f0 + len(power)]]
            if self.cmvn is not None:
                feats = normalise(feats, *self.cmvn, self.frontend.conf["cmvn"]["norm_vars"])
            if len(feats):
                yield feats
            release_freed_memory()  # the blocks' temporaries: a heap that does not grow


def stream_features(src: Any, lo: int, hi: int, frontend: Any, normalise: bool
                    ) -> StreamedFeatures:
    """``frontend.process(wave[lo:hi])`` (with segment CMVN when ``normalise``) in passes:
    the VAD's decisions and the CMVN statistics are computed here, the features themselves
    when :meth:`StreamedFeatures.blocks` is read."""
    from sertool.frontend.pipeline import flags_of_signal
    from sertool.frontend.vad import VadStats

    frames = num_frames(hi - lo, frontend.spectrum)
    if frames == 0:
        raise FrontendError(f"signal of {hi - lo} samples is shorter than one frame "
                            f"({frontend.spectrum.win_length} samples)")
    stats = span_stats(src, lo, hi)
    if frontend.vad.enabled:
        keep, vad_stats = frontend.kept_frames(vad_decisions(src, lo, hi, frontend,
                                                             frontend.vad, stats.mean))
    else:
        keep, vad_stats = np.ones(frames, bool), VadStats(frames, frames)
    flags = {**flags_of_signal(stats.n, stats.peak_to_peak, stats.first, stats.clipped),
             **vad_stats.flags}
    if vad_stats.frames_in < frontend.min_frames():
        flags["too_short"] = (f"{stats.n / frontend.sample_rate:.3f} s: "
                              f"{vad_stats.frames_in} frame(s), fewer than "
                              f"{frontend.min_frames()}")
    out = StreamedFeatures(src, lo, hi, frontend, stats, keep, flags, None)
    if normalise:
        out.cmvn = _mean_std(out.blocks())
    return out


def _mean_std(blocks: Iterator[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and (population) standard deviation of the rows of all blocks,
    float32 as ``feats.mean(0)``, ``feats.std(0)``: block means and squared deviations in
    float64, combined pairwise (Chan et al.), so no large sums cancel."""
    count, mean, m2 = 0, None, None
    for feats in blocks:
        x = feats.astype(np.float64)
        n, block_mean = len(x), x.mean(axis=0)
        block_m2 = ((x - block_mean) ** 2).sum(axis=0)
        if mean is None:
            count, mean, m2 = n, block_mean, block_m2
            continue
        delta = block_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + block_m2 + delta ** 2 * (count * n / total)
        count = total
    return mean.astype(np.float32), np.sqrt(m2 / count).astype(np.float32)


# ----------------------------------------------------------------------------- the network


def streamed_probabilities(model: Any, feats: StreamedFeatures, device: str,
                           chunk_frames: int) -> np.ndarray:
    """The softmax output for the span's features, as ``class_probabilities`` of them all:
    a ResNet with statistics pooling pools them chunk by chunk as they are made; any other
    trunk is given them whole."""
    import torch

    total = feats.frames
    dim = feats.frontend.dim
    if dim != model.feat_dim:
        raise ValueError(f"expected features (batch, frames, {model.feat_dim}), got "
                         f"(1, {total}, {dim})")
    tensors: Callable[[], Iterator[Any]] = lambda: (  # noqa: E731
        torch.from_numpy(np.require(b, np.float32, ["C", "W"])).to(device).unsqueeze(0)
        for b in feats.blocks())
    with torch.inference_mode():
        stream = getattr(model.trunk, "pooled_stream", None)
        if stream is not None and total > chunk_frames:
            logits = model.head(stream(tensors(), total, chunk_frames))
        else:
            logits = model(torch.cat(list(tensors()), dim=1))
        return torch.softmax(logits, dim=-1)[0].cpu().numpy()
