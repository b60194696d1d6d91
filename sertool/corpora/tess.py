"""TESS (Toronto): ``OAF_angry/OAF_back_angry.wav`` = speaker (OAF older, YAF younger), word,
emotion (angry, disgust, fear, happy, neutral, ps = pleasant surprise, sad).

Speaker ``tessOAF`` / ``tessYAF``, utterance ``tessOAF-<word>_<emotion>``. Only two speakers:
the default folds are leave-one-speaker-out (train on one talker, test on the other).
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.corpora.base import Scan, Utt, scan_files

NAME = "tess"
EMOTION = True
DEFAULT_PROTOCOL = "leave-one-speaker-out"
LAYOUT = "[<SPK>_<emotion>/]<SPK>_<word>_<emotion>.wav|.flac, e.g. OAF_back_angry.wav"
LABELS = {"angry": "ang", "disgust": "dis", "fear": "fea", "happy": "hap", "neutral": "neu",
          "ps": "sur", "pleasant_surprise": "sur", "pleasant_surprised": "sur", "sad": "sad"}
# a few distributed files say OA_ / YA_ instead of OAF_ / YAF_
_SPEAKERS = {"OAF": "OAF", "OA": "OAF", "YAF": "YAF", "YA": "YAF"}
_NAME = re.compile(r"^([A-Za-z]+)_([A-Za-z']+)_([A-Za-z_]+)$")


def _parse(path: Path) -> Utt | str:
    match = _NAME.match(path.stem)
    if not match:
        return "file name does not follow the TESS convention"
    speaker, word, emotion = match.groups()
    speaker = _SPEAKERS.get(speaker.upper())
    if speaker is None:
        return f"unknown speaker {match.group(1)!r} (OAF or YAF)"
    label = LABELS.get(emotion.lower())
    if label is None:
        return f"unknown emotion {emotion!r}"
    spk = f"tess{speaker}"
    word = word.lower().replace("'", "")
    return Utt(f"{spk}-{word}_{label}", spk, path, label)


def scan(src: Path, **_options) -> Scan:
    return scan_files(src, _parse, what="SPK_word_emotion")
