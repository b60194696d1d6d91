"""Audio loading: any format soundfile reads, any rate, any channel count -> 16 kHz mono float32.

``wav.scp`` values may be file paths or Kaldi pipe commands ending in ``|`` whose standard
output is an audio file (e.g. ``sox in.sph -t wav - |``).
"""

from __future__ import annotations

import io
import math
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from sertool.errors import SertoolError


class AudioError(SertoolError, ValueError):
    """Audio that cannot be used; the message names the file (or pipe command)."""


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
            last = snd.frames if end is None else min(snd.frames, int(round(end * rate)))
            if first >= snd.frames and snd.frames > 0:
                raise AudioError(f"{source}: segment start {start}s is past the end "
                                 f"({snd.frames / rate:.3f}s)")
            snd.seek(first)
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
