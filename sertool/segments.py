"""Emotion over time in long recordings: ``sertool predict --segments`` (issue 22).

A recording is cut into segments, and each segment is classified by the bundle's model exactly
as ``predict`` classifies a whole file (:func:`sertool.predict.classify_wave`: the bundle's
front-end, its VAD and CMVN, on the segment's samples alone), so a segment's probabilities are
those its cut-out audio would get as a file of its own. Three ways to cut
(:func:`parse_segmentation`):

``vad``            the Sohn VAD of the bundle's front-end (:mod:`sertool.frontend.vad`) on the
                   whole recording: runs of speech, pauses shorter than ``min_pause_s`` kept
                   inside a run (the VAD's hang-over), runs shorter than ``min_s`` dropped, a
                   run longer than ``max_s`` cut into equal pieces that overlap by
                   ``overlap_s``. A bundle whose front-end has no VAD (the published kinds)
                   is cut with the shipped log-mel front-end's VAD.
``fixed:W[:H]``    windows of W seconds every H seconds (H = W by default) from 0; the last
                   window ends at the end of the file (moved back to keep its W seconds), so
                   the windows cover the file exactly (with H <= W).
``FILE``           a Kaldi ``segments`` file, ``seg_id reco_id start end`` a line (seconds).
                   ``reco_id`` names an AUDIO argument by its file name without extension
                   (``calls/a.wav``: ``a``), by its file name (``a.wav``) or by the path as
                   given; a line naming none of them, or ``end <= start``, is an error naming
                   the file and line.

The audio is read in spans (:class:`sertool.frontend.stream.AudioSource`, equal to the
whole-file waveform resampled to the front-end's rate), and segment times are turned into
samples of it as ``load_audio`` turns a segment's (``round(t * rate)``). A VAD pass over more
than a minute, and a segment longer than that, are read in blocks with the whole-span
statistics taken in passes (:mod:`sertool.frontend.stream`), so memory does not grow with the
recording; segments are produced one at a time (:meth:`Segmentation.segments`).

Per file, a summary (:func:`summarise`): the seconds and share of the segmented time each
class was predicted for, and the dominant class. Overlapping segments (fixed windows with
H < W, the pieces of a long VAD run) do not count time twice: each instant goes to the
covering segment whose centre is nearest (with H < W each window gets its middle H seconds).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sertool.datadir import DataDirError, read_table, spk2utt_from_utt2spk, write_table
from sertool.errors import SertoolError
from sertool.io_utils import atomic_dir, atomic_write_json, atomic_write_text
from sertool.predict import PredictionWriter

STDIN = "-"


class SegmentsError(SertoolError, ValueError):
    """A segmentation that cannot be used (the message names the option, or file and line)."""


# ----------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class Segment:
    """A span [start, end) of a recording in seconds; ``where``: the segments-file line it
    came from (for errors), empty for segments made here."""

    id: str
    start: float
    end: float
    where: str = ""

    def samples(self, rate: int, n: int) -> tuple[int, int]:
        """Samples [first, last) at ``rate`` of a waveform of ``n`` samples (as ``load_audio``
        cuts a segment). A segment past the end is an error naming it."""
        first, last = int(round(self.start * rate)), int(round(self.end * rate))
        if last > n + 1:  # one sample of rounding slack, as load_audio allows
            where = f"{self.where}: " if self.where else ""
            raise SegmentsError(f"{where}segment {self.id} ends at {fmt_time(self.end)}s, past "
                                f"the end of the audio ({n / rate:.3f}s)")
        return first, min(last, n)


def fmt_time(seconds: float) -> str:
    """Seconds with as few digits as keep the sample: 5 decimals (a 16 kHz sample is 62.5 us:
    ``round(t * rate)`` gives it back), trailing zeros dropped."""
    text = f"{seconds:.5f}".rstrip("0").rstrip(".")
    return text or "0"


def recording_id(file: str) -> str:
    """The recording id of an AUDIO argument: its file name without extension, whitespace
    replaced (a Kaldi id is one token); ``-`` (standard input) is ``stdin``."""
    if file == STDIN:
        return "stdin"
    name = Path(file).name
    stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
    return re.sub(r"\s", "_", stem) or "audio"


def segment_id(recording: str, start: float, end: float) -> str:
    """``RECO-SSSSSSSS-EEEEEEEE`` (milliseconds): sorts by recording, then time, in C order."""
    return f"{recording}-{int(round(start * 1000)):08d}-{int(round(end * 1000)):08d}"


# ----------------------------------------------------------------------------- segmentation


@dataclass
class VadOptions:
    max_s: float = 10.0  # a longer speech run is cut into pieces this long at most
    overlap_s: float = 1.0  # between the pieces of a cut run
    min_pause_s: float | None = None  # None: the bundle's vad.hangover_ms
    min_s: float = 0.3  # shorter speech runs are dropped (a click, a breath)

    def check(self) -> None:
        for name in ("max_s", "overlap_s", "min_s") + (("min_pause_s",) if self.min_pause_s
                                                      is not None else ()):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise SegmentsError(f"--{_OPTION[name]}: must be a number >= 0, got {value}")
        if self.max_s <= 0:
            raise SegmentsError(f"--max-segment: must be > 0, got {self.max_s}")
        if self.overlap_s >= self.max_s:
            raise SegmentsError(f"--segment-overlap {self.overlap_s}: must be shorter than "
                                f"--max-segment {self.max_s}")


_OPTION = {"max_s": "max-segment", "overlap_s": "segment-overlap", "min_pause_s": "min-pause",
           "min_s": "min-segment"}


@dataclass
class Segmentation:
    """How recordings are cut: ``kind`` vad, fixed or file (see the module docstring)."""

    kind: str
    vad: VadOptions = field(default_factory=VadOptions)
    window_s: float = 0.0
    hop_s: float = 0.0
    path: Path | None = None
    by_file: dict[str, list[Segment]] = field(default_factory=dict)  # kind file: AUDIO -> its
    recording_of: dict[str, str] = field(default_factory=dict)  # kind file: AUDIO -> reco_id

    def describe(self) -> dict:
        """The segmentation in the JSON output."""
        if self.kind == "vad":
            return {"kind": "vad", **dataclasses.asdict(self.vad)}
        if self.kind == "fixed":
            return {"kind": "fixed", "window_s": self.window_s, "hop_s": self.hop_s}
        return {"kind": "file", "path": str(self.path)}

    def recording(self, file: str) -> str:
        return self.recording_of.get(file) or recording_id(file)

    def speech(self, wave: np.ndarray, rate: int, frontend_conf: Mapping | None
               ) -> list[tuple[float, float]]:
        """The speech runs of a recording (:func:`speech_runs` with these VAD options)."""
        return speech_runs(wave, rate, frontend_conf, self.vad.min_pause_s, self.vad.min_s)

    def segments(self, file: str, duration: float,
                 speech: Sequence[tuple[float, float]] | None = None) -> Iterator[Segment]:
        """The segments of one recording of ``duration`` seconds, in time order, one at a
        time (kind vad: cut from its ``speech`` runs)."""
        reco = self.recording(file)
        if self.kind == "file":
            yield from self.by_file.get(file, [])
            return
        if self.kind == "fixed":
            spans = fixed_windows(duration, self.window_s, self.hop_s)
        else:
            if speech is None:
                raise ValueError("segmentation vad needs the speech runs")
            spans = split_long(speech, self.vad.max_s, self.vad.overlap_s)
        for start, end in spans:
            yield Segment(segment_id(reco, start, end), start, end)


def parse_segmentation(spec: str, files: Sequence[str], vad: VadOptions | None = None
                       ) -> Segmentation:
    """``vad``, ``fixed:W[:H]`` or the path of a segments file (read and matched to ``files``
    here, before any audio is read)."""
    if spec == "vad":
        options = vad or VadOptions()
        options.check()
        return Segmentation("vad", options)
    if spec.startswith("fixed:") or spec == "fixed":
        parts = spec.split(":")[1:]
        try:
            if not 1 <= len(parts) <= 2:
                raise ValueError
            window = float(parts[0])
            hop = float(parts[1]) if len(parts) == 2 else window
        except ValueError:
            raise SegmentsError(f"--segments {spec}: expected fixed:W or fixed:W:H (seconds, "
                                "e.g. fixed:3 or fixed:3:1.5)") from None
        for what, value in (("W", window), ("H", hop)):
            if not (math.isfinite(value) and value > 0):
                raise SegmentsError(f"--segments {spec}: window length and hop must be > 0 "
                                    f"seconds, got {what}={parts[0 if what == 'W' else 1]}")
        return Segmentation("fixed", window_s=window, hop_s=hop)
    path = Path(spec)
    if not path.is_file():
        raise SegmentsError(f"--segments {spec}: not vad, fixed:W[:H] or a segments file "
                            f"({'a directory' if path.is_dir() else 'no such file'})")
    by_file, recording_of = read_segments_file(path, files)
    return Segmentation("file", path=path, by_file=by_file, recording_of=recording_of)


def read_segments_file(path: str | os.PathLike, files: Sequence[str]
                       ) -> tuple[dict[str, list[Segment]], dict[str, str]]:
    """The segments of each AUDIO argument, in time order, from a Kaldi ``segments`` file, and
    the recording id it is called by. Every error names the file and line."""
    path = Path(path)
    table = read_table(path, fields=3)  # empty lines, duplicate ids: DataDirError file:line
    names: dict[str, set[str]] = {}  # reco_id -> the AUDIO arguments it may mean
    for file in files:
        for name in {file, Path(file).name, recording_id(file)}:
            names.setdefault(name, set()).add(file)
    by_file: dict[str, list[Segment]] = {}
    recording_of: dict[str, str] = {}
    for lineno, (seg_id, value) in enumerate(table.items(), start=1):
        reco, start_text, end_text = value.split()
        try:
            start, end = float(start_text), float(end_text)
        except ValueError:
            raise DataDirError(path, lineno, f"start and end must be seconds, got "
                               f"{start_text!r} {end_text!r}") from None
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
            raise DataDirError(path, lineno, f"segment {seg_id}: need 0 <= start < end, got "
                               f"{start_text} {end_text}")
        matches = names.get(reco, set())
        if not matches:
            shown = ", ".join(sorted(recording_id(f) for f in files)[:5])
            raise DataDirError(path, lineno, f"recording {reco!r} is none of the audio files "
                               f"given (their ids: {shown}{', ...' if len(files) > 5 else ''})")
        if len(matches) > 1:
            raise DataDirError(path, lineno, f"recording {reco!r} could be any of "
                               f"{', '.join(sorted(matches))}: give them distinct names")
        file = next(iter(matches))
        if recording_of.setdefault(file, reco) != reco:
            raise DataDirError(path, lineno, f"recording {reco!r} is {file}, which earlier "
                               f"lines call {recording_of[file]!r}: one id per recording")
        by_file.setdefault(file, []).append(Segment(seg_id, start, end, f"{path}:{lineno}"))
    for segs in by_file.values():
        segs.sort(key=lambda s: (s.start, s.end, s.id))
    return by_file, recording_of


def fixed_windows(duration: float, window: float, hop: float) -> list[tuple[float, float]]:
    """Windows [k H, k H + W) while they end inside the file; then one ending at its end
    (moved back to start at ``duration - W``, so it has W seconds too). A file shorter than
    W is one window."""
    if duration <= window:
        return [(0.0, duration)]
    out, k = [], 0
    while k * hop + window < duration - 1e-9:
        out.append((k * hop, k * hop + window))
        k += 1
    last = (max(0.0, duration - window), duration)
    if k * hop < duration - 1e-9:  # else a hop > W left the end out: no window there
        out.append(last)
    return out


def segmentation_frontend(frontend_conf: Mapping | None) -> Any:
    """The front-end whose VAD cuts the recording: the bundle's, with its VAD on (it may be
    off for the model's input); the shipped log-mel front-end for kinds without a VAD."""
    from sertool.frontend.pipeline import PUBLISHED_KINDS, Frontend, default_frontend_conf

    if frontend_conf is None or frontend_conf.get("kind") in PUBLISHED_KINDS:
        conf = default_frontend_conf()
    else:
        conf = json.loads(json.dumps(frontend_conf))  # a copy
    conf["vad"]["enabled"] = True
    return Frontend(conf)


# Seconds of audio either side of a speech region that its second VAD pass sees (bounded by
# the neighbouring regions): enough quiet frames for a noise estimate of its own.
REGION_CONTEXT_S = 1.0


def speech_runs(wave: np.ndarray, rate: int, frontend_conf: Mapping | None,
                min_pause_s: float | None = None, min_s: float = 0.0
                ) -> list[tuple[float, float]]:
    """Speech runs [start, end) in seconds found by the bundle's VAD: pauses shorter than
    ``min_pause_s`` (None: the VAD's hang-over) are kept inside a run, runs shorter than
    ``min_s`` dropped. A run of frames spans the samples of its frames.

    Two passes: the VAD over the whole recording finds the speech regions; then each region,
    with :data:`REGION_CONTEXT_S` of audio either side (never reaching into the next region),
    goes through the VAD again alone. The VAD's noise estimate (its quietest frames) and
    silence floor (its loudest frame) are global to the audio it is given; over a whole
    recording one loud stretch raises the floor for the others, and a recording's noise
    changes. The second pass gives each region the statistics of its own neighbourhood (a
    region it finds no speech in keeps the first pass's run)."""
    from sertool.frontend.stream import ArraySource

    return source_speech_runs(ArraySource(wave), rate, frontend_conf, min_pause_s, min_s)


def source_speech_runs(src: Any, rate: int, frontend_conf: Mapping | None,
                       min_pause_s: float | None = None, min_s: float = 0.0,
                       stream_above_s: float | None = None) -> list[tuple[float, float]]:
    """:func:`speech_runs` of a source (sertool.frontend.stream): a pass over a span longer
    than ``stream_above_s`` reads it in blocks (the same decisions; memory bounded)."""
    from sertool.frontend.features import num_frames
    from sertool.frontend.stream import STREAM_ABOVE_S

    frontend = segmentation_frontend(frontend_conf)
    if rate != frontend.sample_rate:
        raise SegmentsError(f"expected {frontend.sample_rate} Hz audio, got {rate} Hz")
    n = src.n
    if num_frames(n, frontend.spectrum) == 0:
        return []
    vad = frontend.vad
    if min_pause_s is not None:
        vad = dataclasses.replace(vad, hangover_ms=1000.0 * min_pause_s)
    above = int((STREAM_ABOVE_S if stream_above_s is None else stream_above_s) * rate)
    regions = _vad_runs(src, 0, n, frontend, vad, above)
    context = int(round(REGION_CONTEXT_S * rate))
    refined: list[tuple[int, int]] = []
    for i, (first, last) in enumerate(regions):
        lo = max(regions[i - 1][1] if i else 0, first - context)
        hi = min(regions[i + 1][0] if i + 1 < len(regions) else n, last + context)
        local = _vad_runs(src, lo, hi, frontend, vad, above)
        refined += [(lo + a, lo + b) for a, b in local] or [(first, last)]
    # runs of neighbouring regions' passes can meet: one run, as the hang-over would make it
    gap = int(round(vad.hangover_ms / 1000 * rate))
    merged: list[list[int]] = []
    for first, last in sorted(refined):
        if merged and first - merged[-1][1] < gap:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return [(a / rate, b / rate) for a, b in merged if (b - a) / rate >= min_s]


def _vad_runs(src: Any, lo: int, hi: int, frontend: Any, vad: Any, stream_above: int
              ) -> list[tuple[int, int]]:
    """One VAD pass over samples [lo, hi) of ``src``: its speech runs as samples
    [first, last) of that span (read whole up to ``stream_above`` samples, else in blocks)."""
    from sertool.frontend.features import num_frames
    from sertool.frontend.stream import vad_decisions
    from sertool.frontend.vad import detect_speech

    spec = frontend.spectrum
    n = hi - lo
    if num_frames(n, spec) == 0:
        return []
    if n <= stream_above:
        speech = detect_speech(frontend.vad_bins(src.read(lo, hi)), vad, spec.frame_shift_ms,
                               subsampled=True)
    else:
        speech = vad_decisions(src, lo, hi, frontend, vad)
    padded = np.concatenate([[False], speech, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1)
    hop, win = spec.hop_length, spec.win_length
    return [(int(a) * hop, min(n, (int(b) - 1) * hop + win))
            for a, b in zip(starts, ends, strict=True)]


def split_long(runs: Sequence[tuple[float, float]], max_s: float, overlap_s: float
               ) -> list[tuple[float, float]]:
    """Each run longer than ``max_s`` cut into the fewest equal pieces of at most ``max_s``
    that overlap by ``overlap_s``; times on the millisecond."""
    out = []
    for start, end in runs:
        length = end - start
        if length <= max_s:
            out.append((start, end))
            continue
        pieces = math.ceil((length - overlap_s) / (max_s - overlap_s) - 1e-9)
        size = (length + (pieces - 1) * overlap_s) / pieces
        step = size - overlap_s
        for k in range(pieces):
            a = round(start + k * step, 3)
            b = end if k == pieces - 1 else round(start + k * step + size, 3)
            out.append((a, b))
    return out


# ----------------------------------------------------------------------------- prediction


@dataclass
class SegmentPrediction:
    segment: Segment
    prediction: Any  # sertool.predict.Prediction of the segment's audio

    @property
    def pred(self) -> str | None:
        return self.prediction.pred

    def to_dict(self) -> dict:
        p = self.prediction
        return {"segment": self.segment.id, "start": round(self.segment.start, 5),
                "end": round(self.segment.end, 5), "pred": p.pred, "probs": p.probs,
                "entropy": p.entropy, "max_prob": p.max_prob, "error": p.error,
                "warnings": dict(p.warnings)}


@dataclass
class FileSegments:
    """One AUDIO argument: its segments' predictions, or the error that stopped it;
    ``speech``: the VAD's speech runs (shaded in the timeline picture)."""

    file: str
    recording: str
    duration_s: float | None = None
    segments: list[SegmentPrediction] = field(default_factory=list)
    error: str | None = None
    speech: list[tuple[float, float]] | None = None
    classes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict:
        return summarise(self.segments, self.classes)

    def to_dict(self) -> dict:
        return {"file": self.file, "recording": self.recording, "duration_s": self.duration_s,
                "error": self.error, "summary": None if self.error else self.summary,
                "segments": [s.to_dict() for s in self.segments]}


def time_per_class(spans: Sequence[tuple[float, float, str]]) -> dict[str, float]:
    """Seconds per label of labelled spans (start, end, label), each instant counted once: for
    the covering span whose centre is nearest (ties: the earlier span)."""
    if not spans:
        return {}
    centres = [(a + b) / 2 for a, b, _ in spans]
    cuts = {t for a, b, _ in spans for t in (a, b)}
    for i, (a, b, _) in enumerate(spans):  # where the nearest centre changes
        for j in range(i + 1, len(spans)):
            if spans[j][0] < b and a < spans[j][1]:
                cuts.add((centres[i] + centres[j]) / 2)
    edges = sorted(cuts)
    out: dict[str, float] = {}
    for lo, hi in zip(edges, edges[1:], strict=False):
        mid = (lo + hi) / 2
        covering = [i for i, (a, b, _) in enumerate(spans) if a <= mid < b]
        if covering:
            best = min(covering, key=lambda i: (abs(centres[i] - mid), i))
            label = spans[best][2]
            out[label] = out.get(label, 0.0) + hi - lo
    return out


def summarise(segments: Sequence[SegmentPrediction], classes: Sequence[str]) -> dict:
    """Seconds and share of the segmented time per predicted class (segments that failed left
    out), the dominant class (most time; None without any segment), counts."""
    spans = [(s.segment.start, s.segment.end, s.pred) for s in segments if s.pred is not None]
    seconds = time_per_class(spans)
    total = sum(seconds.values())
    dominant = max(classes, key=lambda c: seconds.get(c, 0.0)) if total > 0 else None
    return {"speech_s": round(total, 5),
            "seconds": {c: round(seconds.get(c, 0.0), 5) for c in classes},
            "share": {c: round(seconds.get(c, 0.0) / total, 6) if total else 0.0
                      for c in classes},
            "dominant": dominant, "segments": len(segments),
            "failed_segments": sum(1 for s in segments if s.prediction.error)}


def summary_line(result: FileSegments) -> str:
    """One line per file for stderr: speech time, the shares, the dominant class."""
    if result.error:
        return f"{result.file}: {result.error}"
    s = result.summary
    if not s["dominant"]:
        return f"{result.file}: no segment classified ({s['segments']} segment(s))"
    shares = ", ".join(f"{c} {100 * v:.0f}%" for c, v in
                       sorted(s["share"].items(), key=lambda kv: -kv[1]) if v > 0)
    return (f"{result.file}: {s['speech_s']:.1f}s in {s['segments']} segment(s): {shares}; "
            f"dominant {s['dominant']}")


def predict_segments(bundle: Any, files: Sequence[str], segmentation: Segmentation, *,
                     progress: bool = False, chunk_frames: int | None = None,
                     with_speech: bool = False,
                     on_result: Callable[[FileSegments], None] | None = None,
                     stream_above_s: float | None = None,
                     min_confidence: float | None = None) -> list[FileSegments]:
    """Every file cut and each segment classified (:func:`sertool.predict.classify_span`); a
    file that cannot be read gets ``error`` set, a segment that cannot be classified its
    prediction's ``error``, and the rest go on. ``with_speech``: find the VAD's speech runs
    whatever the segmentation (for the timeline picture). The audio is read in spans
    (sertool.frontend.stream.AudioSource): a segment's samples, or blocks of a VAD pass over
    more than ``stream_above_s`` seconds; never the whole recording at once.
    ``min_confidence``: each segment's low-confidence warning (sertool.predict)."""
    from sertool.faults import kill_point
    from sertool.frontend.pipeline import Frontend
    from sertool.frontend.stream import AudioSource
    from sertool.predict import CHUNK_FRAMES, Prediction, classify_span, flag_low_confidence
    from sertool.progress import progress_bar

    frontend = Frontend(bundle.frontend_conf)
    per_file_cmvn = frontend.conf["cmvn"]["mode"] == "conversation"
    rate = int(frontend.sample_rate)
    out: list[FileSegments] = []
    for file in progress_bar(files, desc="predict", unit="file", disable=not progress):
        kill_point("predict:before-file")
        result = FileSegments(file, segmentation.recording(file), classes=list(bundle.classes))
        try:
            src = AudioSource(file, rate)
        except SertoolError as err:
            result.error = str(err)
        else:
            with src:
                _segment_file(result, src, bundle, frontend, segmentation, rate, per_file_cmvn,
                              chunk_frames or CHUNK_FRAMES, with_speech, stream_above_s,
                              classify_span, Prediction)
        for s in result.segments:
            flag_low_confidence(s.prediction, min_confidence)
        out.append(result)
        if on_result is not None:
            on_result(result)
    return out


def _segment_file(result: FileSegments, src: Any, bundle: Any, frontend: Any,
                  segmentation: Segmentation, rate: int, per_file_cmvn: bool,
                  chunk_frames: int, with_speech: bool, stream_above_s: float | None,
                  classify_span: Callable[..., Any], prediction: Callable[..., Any]) -> None:
    from sertool.frontend.stream import release_freed_memory

    result.duration_s = src.n / rate
    try:
        if segmentation.kind == "vad" or with_speech:
            result.speech = source_speech_runs(src, rate, bundle.frontend_conf,
                                               segmentation.vad.min_pause_s,
                                               segmentation.vad.min_s, stream_above_s)
        for seg in segmentation.segments(result.file, result.duration_s, result.speech):
            try:
                first, last = seg.samples(rate, src.n)
            except SegmentsError as err:
                pred = prediction(result.file, error=str(err))
            else:
                pred = classify_span(bundle, frontend, src, first, last, result.file,
                                     per_file_cmvn=per_file_cmvn, chunk_frames=chunk_frames,
                                     stream_above_s=stream_above_s)
            result.segments.append(SegmentPrediction(seg, pred))
            release_freed_memory()  # memory must not grow with the number of segments
    except SertoolError as err:
        result.error = f"cannot segment: {err}"


# ----------------------------------------------------------------------------- outputs


def csv_header(classes: Sequence[str]) -> str:
    from sertool.predict import UNCERTAINTY

    return _csv([["file", "segment", "start", "end", "pred", *classes, *UNCERTAINTY, "error",
                  "warning"]])


def _csv(rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def csv_rows(result: FileSegments, classes: Sequence[str]) -> str:
    """The CSV lines of one file: one per segment (a file that failed, or has no segment: one
    line with its error, or none, and empty cells)."""
    if result.error or not result.segments:
        return _csv([[result.file, "", "", "", "", *[""] * (len(classes) + 2),
                      result.error or "", ""]])
    from sertool.predict import probability_cells

    rows = []
    for s in result.segments:
        p = s.prediction
        rows.append([result.file, s.segment.id, fmt_time(s.segment.start),
                     fmt_time(s.segment.end), p.pred or "", *probability_cells(p, classes),
                     p.error or "", ";".join(p.warnings)])
    return _csv(rows)


def results_json(results: Sequence[FileSegments], bundle: Any,
                 segmentation: Segmentation) -> dict:
    return {"bundle": bundle.path.name, "classes": bundle.classes,
            "provenance": bundle.provenance, "segmentation": segmentation.describe(),
            "files": [r.to_dict() for r in results]}


def write_results(path: str | os.PathLike, results: Sequence[FileSegments], bundle: Any,
                  segmentation: Segmentation) -> None:
    """``.json`` (files, each with its segments and summary) or ``.csv`` (a row a segment),
    atomically."""
    if Path(path).suffix.lower() == ".json":
        atomic_write_json(path, results_json(results, bundle, segmentation))
    else:
        atomic_write_text(path, csv_header(bundle.classes)
                          + "".join(csv_rows(r, bundle.classes) for r in results))


def summary_csv(results: Sequence[FileSegments], classes: Sequence[str]) -> str:
    """``file,speech_s,dominant,<class>...,segments,failed_segments,error``: the class
    columns are shares of the speech time (0-1)."""
    rows = [["file", "speech_s", "dominant", *classes, "segments", "failed_segments", "error"]]
    for r in results:
        if r.error:
            rows.append([r.file, "", "", *[""] * len(classes), "", "", r.error])
            continue
        s = r.summary
        rows.append([r.file, f"{s['speech_s']:.3f}", s["dominant"] or "",
                     *(f"{s['share'][c]:.6f}" for c in classes), str(s["segments"]),
                     str(s["failed_segments"]), ""])
    return _csv(rows)


def write_summary(path: str | os.PathLike, results: Sequence[FileSegments],
                  classes: Sequence[str]) -> None:
    """The per-file summaries alone, ``.csv`` or ``.json``, atomically."""
    if Path(path).suffix.lower() == ".json":
        atomic_write_json(path, {"classes": list(classes), "files": [
            {"file": r.file, "error": r.error, "summary": None if r.error else r.summary}
            for r in results]})
    else:
        atomic_write_text(path, summary_csv(results, classes))


def check_data_out(path: str | os.PathLike, files: Sequence[str], inputs: Sequence[str]
                   ) -> Path:
    """Refuse a ``--data-out`` that cannot be written, before any work: standard input (no
    path for wav.scp), two files with one recording id, a directory that is not an earlier
    data directory (it is replaced whole), or one holding an input."""
    from sertool.io_utils import refuse_output_over_inputs

    path = Path(path)
    if STDIN in files:
        raise SegmentsError(f"--data-out {path}: standard input has no path for wav.scp; "
                            "save the audio to a file first")
    seen: dict[str, str] = {}
    for file in files:
        reco = recording_id(file)
        if seen.setdefault(reco, file) != file:
            raise SegmentsError(f"--data-out {path}: {seen[reco]} and {file} both have the "
                                f"recording id {reco!r}; give them distinct names")
    if path.exists() and (not path.is_dir() or (any(path.iterdir())
                                                 and not (path / "wav.scp").is_file())):
        raise SegmentsError(f"--data-out {path}: exists and is not a data directory; it would "
                            "be replaced whole, so give a new directory")
    refuse_output_over_inputs(path, inputs)
    return path


def write_data_dir(path: str | os.PathLike, results: Sequence[FileSegments],
                   segmentation: Segmentation) -> int:
    """A Kaldi data directory of the classified segments (failed ones left out), atomically:
    wav.scp (absolute paths), segments, utt2spk and spk2utt (the recording is the speaker,
    unless a segments file's id does not start with it: then the segment is its own),
    utt2emo (the predicted class). Returns the number of segments written."""
    from sertool.datadir import validate_data_dir

    wav, segs, utt2spk, utt2emo = {}, {}, {}, {}
    for r in results:
        kept = [s for s in r.segments if s.pred is not None]
        if r.error or not kept:
            continue
        wav[r.recording] = os.path.abspath(r.file)
        for s in kept:
            seg = s.segment
            segs[seg.id] = f"{r.recording} {fmt_time(seg.start)} {fmt_time(seg.end)}"
            utt2spk[seg.id] = r.recording if seg.id.startswith(r.recording) else seg.id
            utt2emo[seg.id] = s.pred
    if not segs:
        raise SegmentsError(f"--data-out {path}: no segment was classified; nothing to write")
    with atomic_dir(path) as tmp:
        write_table(tmp / "wav.scp", wav)
        write_table(tmp / "segments", segs)
        write_table(tmp / "utt2spk", utt2spk)
        write_table(tmp / "spk2utt", spk2utt_from_utt2spk(utt2spk))
        write_table(tmp / "utt2emo", utt2emo)
        problems = validate_data_dir(tmp)
        if problems:  # e.g. a segments file's ids that leave its speakers out of order
            raise SegmentsError(f"--data-out {path}: the segments do not make a valid data "
                                f"directory: {problems[0].replace(str(tmp), str(path))}")
    return len(segs)


# ----------------------------------------------------------------------------- the picture


def plot_paths(plot: str | os.PathLike, files: Sequence[str]) -> dict[str, Path]:
    """The PNG of each file: ``plot`` itself for one file named ``*.png``, else
    ``plot/RECO.png`` (the directory is made)."""
    plot = Path(plot)
    if plot.suffix.lower() == ".png":
        if len(files) > 1:
            raise SegmentsError(f"--plot {plot}: {len(files)} files make {len(files)} "
                                "pictures; give a directory")
        return {files[0]: plot}
    if plot.exists() and not plot.is_dir():
        raise SegmentsError(f"--plot {plot}: not a directory (or give a .png for one file)")
    out: dict[str, Path] = {}
    for file in files:
        png = plot / f"{recording_id(file)}.png"
        if png in out.values():
            raise SegmentsError(f"--plot {plot}: two files would make {png.name}; give them "
                                "distinct names")
        out[file] = png
    return out


def plot_timeline(result: FileSegments, classes: Sequence[str],
                  out_png: str | os.PathLike) -> None:
    """Each class's probability over time (a line per class through the segments, each
    segment drawn over its span), the VAD's speech shaded, the predicted class a coloured
    strip on top; time in seconds."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    from sertool.scoring import _save_figure  # the figures' one atomic PNG writer

    duration = result.duration_s or max((s.segment.end for s in result.segments), default=1)
    fig = Figure(figsize=(min(24.0, max(9.0, duration / 8)) + 1.2, 4.2), layout="constrained")
    strip, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 8]})
    colours = {c: f"C{i % 10}" for i, c in enumerate(classes)}
    for a, b in result.speech or []:
        ax.axvspan(a, b, color="0.88", zorder=0, lw=0)
    done = [s for s in result.segments if s.prediction.probs]
    mids = np.array([(s.segment.start + s.segment.end) / 2 for s in done])
    for c in classes:
        probs = np.array([s.prediction.probs[c] for s in done])
        ax.plot(mids, probs, color=colours[c], lw=1.0, alpha=0.35, zorder=2)
        ax.hlines(probs, [s.segment.start for s in done], [s.segment.end for s in done],
                  color=colours[c], lw=2.5, zorder=3, label=c)
    for s in done:
        strip.axvspan(s.segment.start, s.segment.end, color=colours[s.pred], lw=0)
        if s.segment.end - s.segment.start >= duration / 60:  # the name where it fits
            strip.text((s.segment.start + s.segment.end) / 2, 0.5, s.pred, ha="center",
                       va="center", fontsize=8, color="white", fontweight="bold",
                       transform=strip.get_xaxis_transform())
    ax.set_xlim(0, duration)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("class probability")
    # beside the axes, not on them: a probability near 1 is not hidden behind it
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    strip.set_yticks([])
    strip.set_ylabel("pred", rotation=0, ha="right", va="center", fontsize=8)
    summary = result.summary
    title = Path(result.file).name
    if summary["dominant"]:
        title += (f": dominant {summary['dominant']} "
                  f"({100 * summary['share'][summary['dominant']]:.0f}% of "
                  f"{summary['speech_s']:.1f}s); speech (VAD) shaded")
    strip.set_title(title, fontsize=10)
    _save_figure(fig, out_png)


# ----------------------------------------------------------------------------- safe output


class SegmentWriter(PredictionWriter):
    """:class:`sertool.predict.PredictionWriter` for segments: each file's rows (CSV) or its
    object (a JSON line) appended to ``OUT.partial`` as it is done; ``OUT`` written whole at
    the end."""

    def __init__(self, path: str | os.PathLike, bundle: Any, segmentation: Segmentation):
        self.segmentation = segmentation
        super().__init__(path, bundle)

    def _line(self, result: Any) -> str:
        return (json.dumps(result.to_dict()) + "\n" if self.json
                else csv_rows(result, self.bundle.classes))

    def _write_final(self, results: Sequence[Any]) -> None:
        write_results(self.path, results, self.bundle, self.segmentation)

    def kept(self) -> int:
        """The files in the ``.partial`` (a CSV has a row per segment: runs of one file)."""
        text = self.partial.read_text(encoding="utf-8")
        if self.json:
            return text.count("\n")
        files = [row[0] for row in csv.reader(io.StringIO(text)) if row][1:]
        return sum(1 for i, f in enumerate(files) if i == 0 or files[i - 1] != f)
