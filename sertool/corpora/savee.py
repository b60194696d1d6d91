"""SAVEE (Surrey): ``DC_a01.wav`` (flat) or ``AudioData/DC/a01.wav`` (as distributed).

Speakers DC, JE, JK, KL; emotion prefixes a (anger), d (disgust), f (fear), h (happiness),
n (neutral), sa (sadness), su (surprise). Speaker ``saveeDC``, utterance ``saveeDC-a01``.
Default folds: leave-one-speaker-out (4 speakers).
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.corpora.base import Scan, Utt, scan_files

NAME = "savee"
EMOTION = True
DEFAULT_PROTOCOL = "leave-one-speaker-out"
LAYOUT = "SPK_eNN.wav or SPK/eNN.wav (.flac), e.g. DC_a01.wav or DC/a01.wav"
LABELS = {"a": "ang", "d": "dis", "f": "fea", "h": "hap", "n": "neu", "sa": "sad", "su": "sur"}
SPEAKERS = ("DC", "JE", "JK", "KL")
_FLAT = re.compile(r"^([A-Z]{2})_([a-z]{1,2})(\d\d)$")
_CODE = re.compile(r"^([a-z]{1,2})(\d\d)$")


def _parse(path: Path) -> Utt | str:
    match = _FLAT.match(path.stem)
    if match:
        speaker, emotion, number = match.groups()
    else:
        match = _CODE.match(path.stem)
        if not match:
            return "file name does not follow the SAVEE convention"
        speaker = path.parent.name
        emotion, number = match.groups()
    if speaker not in SPEAKERS:
        return f"unknown speaker {speaker!r} (one of {', '.join(SPEAKERS)})"
    if emotion not in LABELS:
        return f"unknown emotion prefix {emotion!r}"
    spk = f"savee{speaker}"
    return Utt(f"{spk}-{emotion}{number}", spk, path, LABELS[emotion])


def scan(src: Path, **_options) -> Scan:
    return scan_files(src, _parse, what="SPK_eNN or SPK/eNN")
