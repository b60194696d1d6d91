"""CREMA-D: ``AudioWAV/1001_DFA_ANG_XX.wav`` = actor, sentence, emotion, level.

Speaker ``cremadNNNN``, utterance ``cremadNNNN-<file stem>``. 91 actors: the default folds
are 5 speaker groups (seeded), speaker-independent.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.corpora.base import Scan, Utt, scan_files

NAME = "cremad"
EMOTION = True
DEFAULT_PROTOCOL = "speaker-kfold"
LAYOUT = "[AudioWAV/]AAAA_SSS_EEE_LL.wav|.flac, e.g. 1001_DFA_ANG_XX.wav"
LABELS = {"ANG": "ang", "DIS": "dis", "FEA": "fea", "HAP": "hap", "NEU": "neu", "SAD": "sad"}
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})$")


def _parse(path: Path) -> Utt | str:
    match = _NAME.match(path.stem)
    if not match:
        return "file name does not follow the CREMA-D convention"
    actor, _, emotion, level = match.groups()
    if emotion not in LABELS:
        return f"unknown emotion {emotion!r}"
    if level not in ("LO", "MD", "HI", "XX", "X"):
        return f"unknown level {level!r}"
    spk = f"cremad{actor}"
    return Utt(f"{spk}-{path.stem}", spk, path, LABELS[emotion])


def scan(src: Path, **_options) -> Scan:
    return scan_files(src, _parse, what="AAAA_SSS_EEE_LL")
