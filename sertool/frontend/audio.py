"""Audio loading: any format soundfile reads, any rate, any channel count -> 16 kHz mono float32.

``wav.scp`` values may be file paths or Kaldi pipe commands ending in ``|`` whose standard
output is an audio file (e.g. ``sox in.sph -t wav - |``).
"""

from __future__ import annotations

import io
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from sertool.errors import SertoolError


class AudioError(SertoolError, ValueError):
    """Audio that cannot be used; the message names the file (or pipe command)."""


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
    if source.rstrip().endswith("|"):
        command = source.rstrip()[:-1]
        proc = subprocess.run(command, shell=True, capture_output=True)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise AudioError(f"{source}: pipe command failed ({proc.returncode}): {err[0]}")
        handle: str | io.BytesIO = io.BytesIO(proc.stdout)
    else:
        if not Path(source).is_file():
            raise AudioError(f"{source}: audio file not found")
        handle = source
    try:
        with sf.SoundFile(handle) as snd:
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
            snd.seek(first)
            if cut := truncation(snd):
                raise AudioError(f"{source}: {cut}")
            data = snd.read(max(0, last - first), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"{source}: cannot decode audio ({err})") from err
    return data, rate


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
        common = math.gcd(rate, target_sr)
        wave = resample_poly(wave, target_sr // common, rate // common).astype(np.float32)
    return np.ascontiguousarray(wave, dtype=np.float32)
