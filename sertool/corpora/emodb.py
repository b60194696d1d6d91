"""EMO-DB (Berlin): ``wav/03a01Fa.wav`` = speaker 03, text a01, emotion F, version a.

Emotion letters (German): W Wut (anger), L Langeweile (boredom), E Ekel (disgust), A Angst
(fear), F Freude (happiness), T Trauer (sadness), N neutral. Speaker ``emodbNN``, utterance
``emodbNN-<file stem>``. Default folds: leave-one-speaker-out (10 speakers).
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.corpora.base import Scan, Utt, scan_files

NAME = "emodb"
EMOTION = True
DEFAULT_PROTOCOL = "leave-one-speaker-out"
LAYOUT = "[wav/]SSTNNEV.wav|.flac, e.g. 03a01Fa.wav"
LABELS = {"W": "ang", "L": "bor", "E": "dis", "A": "fea", "F": "hap", "T": "sad", "N": "neu"}
_NAME = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")


def _parse(path: Path) -> Utt | str:
    match = _NAME.match(path.stem)
    if not match:
        return "file name does not follow the EMO-DB convention"
    speaker, _, emotion, _ = match.groups()
    if emotion not in LABELS:
        return f"unknown emotion letter {emotion!r}"
    spk = f"emodb{speaker}"
    return Utt(f"{spk}-{path.stem}", spk, path, LABELS[emotion])


def scan(src: Path, **_options) -> Scan:
    return scan_files(src, _parse, what="e.g. 03a01Fa")
