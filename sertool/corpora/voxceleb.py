"""VoxCeleb1 / VoxCeleb2 dev: ``wav/<idNNNNN>/<video>/<nnnnn>.wav`` (VoxCeleb2: ``aac/.../*.m4a``).

Speaker ``idNNNNN``, utterance ``idNNNNN-<video>-<nnnnn>``. VoxCeleb2 ships AAC in ``.m4a``,
which soundfile cannot read: ``prepare`` decodes each file once to 16 kHz mono 16-bit WAV
with PyAV (``pip install 'sertool[voxceleb2]'``) into ``--wav-dir`` (default
``<DATA_DIR>_wav``) and points wav.scp there. Without PyAV it stops with an error that says
so; it never drops the ``.m4a`` files silently. No emotion labels, no folds by default.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.corpora.base import (
    AUDIO_EXTENSIONS,
    PrepareError,
    Scan,
    Utt,
    not_read,
    walk_files,
)

NAME = "voxceleb"
EMOTION = False
DEFAULT_PROTOCOL = "none"
LAYOUT = "[wav/ or aac/]<idNNNNN>/<video>/<nnnnn>.wav|.flac|.m4a"
_SPK = re.compile(r"^id\d+$")
_UTT = re.compile(r"^\d+$")
_EXTENSIONS = (*AUDIO_EXTENSIONS, ".m4a")


def _root(src: Path) -> list[Path]:
    roots = [src / sub for sub in ("wav", "aac", "dev/wav", "dev/aac", "test/wav", "test/aac")
             if (src / sub).is_dir()]
    return roots or [src]


def scan(src: Path, *, wav_dir: Path | None = None, progress: bool = True, **_options) -> Scan:
    scan = Scan()
    m4a: list[tuple[Path, Utt]] = []
    for root in _root(src):
        for path in walk_files(root, _EXTENSIONS):
            if unreadable := not_read(path):
                scan.skip(path, unreadable)
                continue
            try:
                spk_dir, video_dir = path.relative_to(root).parts[-3:-1]
            except ValueError:
                scan.skip(path, "not in <idNNNNN>/<video>/ (expected VoxCeleb layout)")
                continue
            if not _SPK.match(spk_dir) or not _UTT.match(path.stem):
                scan.skip(path, "path does not follow <idNNNNN>/<video>/<nnnnn> (VoxCeleb)")
                continue
            utt = Utt(f"{spk_dir}-{video_dir}-{path.stem}", spk_dir, path)
            if path.suffix.lower() == ".m4a":
                m4a.append((path, utt))
            else:
                scan.utts.append(utt)
    if m4a:
        if wav_dir is None:
            raise PrepareError(f"{m4a[0][0]}: .m4a files need a --wav-dir to decode into")
        scan.utts += _convert(m4a, wav_dir, scan, progress)
    return scan


def _convert(items: list[tuple[Path, Utt]], wav_dir: Path, scan: Scan,
             progress: bool) -> list[Utt]:
    try:
        import av  # noqa: F401
    except ImportError as err:
        raise PrepareError(
            f"{items[0][0]}: {len(items)} VoxCeleb2 .m4a files need PyAV to decode: "
            "pip install 'sertool[voxceleb2]' (or convert them to .wav with ffmpeg first, "
            "keeping <idNNNNN>/<video>/<nnnnn>.wav, and prepare that tree)") from err
    from sertool.progress import progress_bar

    out = []
    for path, utt in progress_bar(items, desc="decoding m4a", unit="file", disable=not progress):
        target = wav_dir / utt.spk / path.parent.name / f"{path.stem}.wav"
        try:
            if not target.is_file():
                decode_to_wav(path, target)
        except Exception as err:  # noqa: BLE001 - any decoder failure is a listed skip
            scan.skip(path, f"cannot decode with PyAV: {err}")
            continue
        out.append(Utt(utt.utt, utt.spk, target))
    return out


def decode_to_wav(src: Path, target: Path, rate: int = 16000) -> None:
    """Decode any FFmpeg-readable file to mono 16-bit WAV at ``rate``, written atomically."""
    import av
    import numpy as np
    import soundfile as sf

    from sertool.io_utils import atomic_replace_file

    chunks = []
    with av.open(str(src)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    if samples.size == 0:
        raise ValueError("no audio samples decoded")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    sf.write(str(tmp), samples, rate, subtype="PCM_16", format="WAV")
    atomic_replace_file(tmp, target)
