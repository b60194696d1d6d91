"""Audio loading: any format soundfile reads, any rate, any channel count -> 16 kHz mono float32.

``wav.scp`` values may be file paths or Kaldi pipe commands ending in ``|`` whose standard
output is an audio file (e.g. ``sox in.sph -t wav - |``).

Every reader of audio opens it here (:func:`open_audio`, :func:`span`): extract-feats,
predict and check-folds' content hashes. What a header claims is checked before anything is
decoded, so a damaged header cannot turn a small file into hours of samples: the sample rate
must lie in [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`], the span to decode must be at
most :func:`max_audio_seconds` long, and a pipe's output is cut off at
:func:`pipe_byte_limit` (its command stopped).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from sertool.datadir import is_pipe
from sertool.errors import SertoolError
from sertool.io_utils import not_a_file


class AudioError(SertoolError, ValueError):
    """Audio that cannot be used; the message names the file (or pipe command)."""


# 8 kHz is telephone speech, the lowest rate speech corpora use; below it the band ends under
# 4 kHz, without the formants that carry most of what is said and how. A header claiming 1 Hz
# or 4 Hz is damaged, and believing it makes every stored sample 16000 / rate output samples
# (hours of audio from kilobytes). Above 384 kHz (the highest rate recorders offer), a rate
# sharing no factor with 16 kHz would need a resampling filter of gigabytes.
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 384000

# The longest span (a file, or a segment of one) decoded at once; predict and extract-feats
# hold its samples and features in memory (predict about 0.4 MB per second: some 6 GB at the
# default). Four hours is longer than any recording session of a speech corpus; longer
# recordings are cut with a segments file, or the limit raised in the environment.
MAX_SECONDS_ENV = "SERTOOL_MAX_AUDIO_SECONDS"
DEFAULT_MAX_SECONDS = 4 * 3600.0

# A pipe's output is held whole before it is decoded: it may carry the limit's length of
# 48 kHz 16-bit stereo, more than a speech recording needs; beyond that the command is stopped.
PIPE_BYTES_PER_SECOND = 48000 * 2 * 2


def max_audio_seconds() -> float:
    """The longest audio decoded at once, in seconds: $SERTOOL_MAX_AUDIO_SECONDS, else 4 h."""
    value = os.environ.get(MAX_SECONDS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise AudioError(f"{MAX_SECONDS_ENV}={value!r}: not a positive number of seconds")
    return seconds


def pipe_byte_limit() -> int:
    """The most bytes read from one wav.scp pipe command (see PIPE_BYTES_PER_SECOND)."""
    return int(max_audio_seconds() * PIPE_BYTES_PER_SECOND)


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as an audio file (missing, a directory, a FIFO or device:
    never opened, so a FIFO cannot block), or None for a regular file."""
    kind = not_a_file(path)
    if kind is None:
        return None
    if kind == "not found":
        return "audio file not found"
    if kind.startswith("cannot read"):
        return kind.replace("cannot read", "cannot read the audio file", 1)
    if kind == "a directory":
        return "is a directory, not an audio file"
    return f"not a regular file ({kind}); give an audio file"


def _pipe_output(source: str) -> bytearray:
    """Standard output of the wav.scp pipe command ``source`` (``cmd |``), at most
    :func:`pipe_byte_limit` bytes: a command writing more is stopped and refused."""
    limit = pipe_byte_limit()
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: no deadlock on a chatty stderr
        # its own process group: stopping it stops the whole shell pipeline and anything it
        # started, never leaving it running
        proc = subprocess.Popen(source.rstrip()[:-1], shell=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=errors, start_new_session=True)
        try:
            output = bytearray()
            while len(output) <= limit and (block := proc.stdout.read1(1 << 20)):
                output += block
            if len(output) > limit:
                seconds = max_audio_seconds()
                raise AudioError(f"{source}: pipe output is more than {limit} bytes, the most "
                                 f"{seconds:g}s of audio may take (48 kHz 16-bit stereo; "
                                 f"{MAX_SECONDS_ENV} sets the seconds); the command was stopped")
            code = proc.wait()
        finally:
            if proc.returncode is None:  # refused or interrupted: stop it before reaping it
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
        if code != 0:
            errors.seek(max(0, errors.seek(0, io.SEEK_END) - 4096))
            err = errors.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise AudioError(f"{source}: pipe command failed ({code}): {err[0]}")
    return output


# ``predict -`` reads a WAV/FLAC stream from standard input (``sox ... -t wav - | sertool
# predict BUNDLE -``): read whole, at most a pipe's limit, like a wav.scp pipe's output.
STDIN = "-"


def _stdin_bytes() -> bytes:
    import sys

    limit = pipe_byte_limit()
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise AudioError(f"{STDIN} (standard input): more than {limit} bytes, the most "
                         f"{max_audio_seconds():g}s of audio may take ({MAX_SECONDS_ENV} sets "
                         "the seconds)")
    if not data:
        raise AudioError(f"{STDIN} (standard input): no data (pipe audio in: "
                         "`sox in.mp3 -t wav - | sertool predict BUNDLE -`)")
    return data


@contextlib.contextmanager
def spool_stdin() -> Iterator[str]:
    """Standard input copied to a temporary file (removed afterwards), at most a pipe's limit,
    in blocks: a stream that is read more than once (``predict`` reads long audio in passes)
    without holding it in memory. Yields the file's path."""
    import sys

    limit = pipe_byte_limit()
    with tempfile.NamedTemporaryFile(prefix="sertool-stdin-", suffix=".audio") as spool:
        size = 0
        while block := sys.stdin.buffer.read(1 << 20):
            size += len(block)
            if size > limit:
                raise AudioError(f"{STDIN} (standard input): more than {limit} bytes, the most "
                                 f"{max_audio_seconds():g}s of audio may take "
                                 f"({MAX_SECONDS_ENV} sets the seconds)")
            spool.write(block)
        if not size:
            raise AudioError(f"{STDIN} (standard input): no data (pipe audio in: "
                             "`sox in.mp3 -t wav - | sertool predict BUNDLE -`)")
        spool.flush()
        yield spool.name


@contextlib.contextmanager
def open_audio(source: str, name: str | None = None) -> Iterator[sf.SoundFile]:
    """The audio of a wav.scp value (a file, or a pipe command ending in ``|``; ``-``: standard
    input), open, with a usable sample rate. Raises AudioError naming ``source`` (or ``name``,
    what the user called it: ``-`` for a spooled standard input) for anything that cannot be
    read."""
    shown = name or source
    if source == STDIN:
        handle: str | io.BytesIO = io.BytesIO(_stdin_bytes())
    elif is_pipe(source):
        handle = io.BytesIO(_pipe_output(source))
    else:
        if problem := file_problem(source):
            raise AudioError(f"{shown}: {problem}")
        handle = source
    try:
        snd = sf.SoundFile(handle)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        rate = _wav_rate(handle)  # libsndfile refuses 0 Hz and 4e9 Hz itself, not saying why
        if rate is not None and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise AudioError(_rate_problem(shown, rate)) from err
        raise AudioError(f"{shown}: cannot decode audio ({err})") from err
    with snd:
        if not MIN_SAMPLE_RATE <= snd.samplerate <= MAX_SAMPLE_RATE:
            raise AudioError(_rate_problem(shown, snd.samplerate))
        yield snd


def _rate_problem(source: str, rate: int) -> str:
    return (f"{source}: sample rate {rate} Hz in its header is outside "
            f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz, the rates of speech recordings "
            f"(a damaged header?)")


def _wav_rate(handle: str | io.BytesIO) -> int | None:
    """The sample rate a RIFF/WAVE header's ``fmt `` chunk states, or None (not a WAV)."""
    if isinstance(handle, io.BytesIO):
        head = handle.getvalue()[:4096]
    else:
        try:
            with open(handle, "rb") as file:
                head = file.read(4096)
        except OSError:
            return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 16 <= len(head):
        chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"fmt ":
            return int.from_bytes(head[pos + 12:pos + 16], "little")
        pos += 8 + size + (size & 1)
    return None


def span(snd: sf.SoundFile, source: str, start: float | None,
         end: float | None) -> tuple[int, int]:
    """Frames [first, last) of the segment [start, end) in seconds (None: the file's start or
    end), checked to lie in the file and to be at most :func:`max_audio_seconds` long."""
    rate = snd.samplerate
    first = 0 if start is None else int(round(start * rate))
    last = snd.frames if end is None else int(round(end * rate))
    if first >= snd.frames and snd.frames > 0:
        raise AudioError(f"{source}: segment start {start}s is past the end "
                         f"({snd.frames / rate:.3f}s)")
    # a segment ending past the file (a wrong segments line, a truncated copy) is an
    # error, not silently clipped; one frame of rounding slack
    if last > snd.frames + 1:
        raise AudioError(f"{source}: segment end {end}s is past the end of the audio "
                         f"({snd.frames / rate:.3f}s)")
    last = min(last, snd.frames)
    if (last - first) / rate > max_audio_seconds():
        raise AudioError(f"{source}: {(last - first) / rate:.3f}s of audio is longer than the "
                         f"limit of {max_audio_seconds():g}s ({MAX_SECONDS_ENV}; cut it with a "
                         f"segments file, or raise the limit)")
    return first, max(first, last)


_DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)
_BYTES_PER_SEC = re.compile(r"Bytes/sec\s*:\s*(\d+)")


def truncation(snd: sf.SoundFile) -> str | None:
    """Why ``snd`` is a cut-off copy, or None. libsndfile quietly reads what is there when a
    WAV's data chunk is shorter than its header says (a copy stopped part-way); its header
    report then reads ``data : <declared> (should be <present>)``."""
    info = snd.extra_info
    match = _DATA_CHUNK.search(info)
    if not match or int(match.group(2)) >= int(match.group(1)):
        return None
    rate = _BYTES_PER_SEC.search(info)
    if rate is None:
        return f"truncated audio: the header declares {match.group(1)} bytes of samples, " \
               f"the file holds {match.group(2)}"
    per_s = int(rate.group(1))
    return (f"truncated audio: the header says {int(match.group(1)) / per_s:.3f}s, the file "
            f"holds {int(match.group(2)) / per_s:.3f}s")


def _read(source: str, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    with open_audio(source) as snd:
        first, last = span(snd, source, start, end)
        try:
            snd.seek(first)
            if cut := truncation(snd):
                raise AudioError(f"{source}: {cut}")
            data = snd.read(last - first, dtype="float32", always_2d=True)
        except AudioError:
            raise
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
            raise AudioError(f"{source}: cannot decode audio ({err})") from err
        return data, snd.samplerate


def load_audio(
    source: str | Path,
    target_sr: int = 16000,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Read ``source`` (optionally the segment [start, end) in seconds), downmix, resample.

    Resampling uses a polyphase FIR with a Kaiser-windowed anti-aliasing low-pass
    (scipy.signal.resample_poly), so 44.1/48 kHz input does not fold energy above 8 kHz
    into the band. Raises AudioError for missing, corrupt, empty, or non-finite audio.
    """
    source = str(source)
    data, rate = _read(source, start, end)
    if data.size == 0:
        raise AudioError(f"{source}: no audio samples (empty file or segment)")
    if not np.isfinite(data).all():
        raise AudioError(f"{source}: audio contains NaN or infinite samples")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != target_sr:
        from scipy.signal import resample_poly  # here: check-folds opens audio without it

        common = math.gcd(rate, target_sr)
        wave = resample_poly(wave, target_sr // common, rate // common).astype(np.float32)
    return np.ascontiguousarray(wave, dtype=np.float32)
