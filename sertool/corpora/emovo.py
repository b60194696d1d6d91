"""EMOVO (Italian): ``f1/dis-f1-b1.wav`` = emotion, speaker, sentence.

Emotions (Italian): dis disgusto, gio gioia (joy), neu neutro, pau paura (fear), rab rabbia
(anger), sor sorpresa (surprise), tri tristezza (sadness). Speakers f1-f3, m1-m3. Speaker
``emovof1``, utterance ``emovof1-dis-f1-b1``. Default folds: leave-one-speaker-out.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.corpora.base import Scan, Utt, scan_files

NAME = "emovo"
EMOTION = True
DEFAULT_PROTOCOL = "leave-one-speaker-out"
LAYOUT = "[<spk>/]eee-<spk>-<sentence>.wav|.flac, e.g. f1/dis-f1-b1.wav"
LABELS = {"dis": "dis", "gio": "hap", "neu": "neu", "pau": "fea", "rab": "ang", "sor": "sur",
          "tri": "sad"}
_NAME = re.compile(r"^([a-z]{3})-([fm][1-3])-([a-z]+\d*)$")


def _parse(path: Path) -> Utt | str:
    match = _NAME.match(path.stem.lower())
    if not match:
        return "file name does not follow the EMOVO convention"
    emotion, speaker, sentence = match.groups()
    if emotion not in LABELS:
        return f"unknown emotion {emotion!r}"
    if re.fullmatch(r"[fm][1-3]", path.parent.name.lower()) and path.parent.name.lower() != speaker:
        return f"speaker {speaker} in the name but the file is in {path.parent.name}/"
    spk = f"emovo{speaker}"
    return Utt(f"{spk}-{emotion}-{speaker}-{sentence}", spk, path, LABELS[emotion])


def scan(src: Path, **_options) -> Scan:
    return scan_files(src, _parse, what="eee-spk-sentence")
