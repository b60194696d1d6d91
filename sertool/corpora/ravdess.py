"""RAVDESS speech: ``Actor_NN/03-01-EE-II-SS-RR-AA.wav`` (or ``.flac``).

Fields: modality (03 audio-only), channel (01 speech, 02 song), emotion, intensity,
statement, repetition, actor (odd male, even female). Speaker ``ravdessNN``, utterance
``ravdessNN-<file stem>``. Default folds: the six actor groups of the EmoBox benchmark.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.corpora.base import Scan, Utt, scan_files

NAME = "ravdess"
EMOTION = True
DEFAULT_PROTOCOL = "speaker-groups"
LAYOUT = "[Audio_Speech_Actors_01-24/]Actor_NN/03-01-EE-II-SS-RR-AA.wav|.flac"
LABELS = {"01": "neu", "02": "cal", "03": "hap", "04": "sad",
          "05": "ang", "06": "fea", "07": "dis", "08": "sur"}
SPEAKER_GROUPS_DESCRIPTION = ("the six actor groups of the EmoBox benchmark (4 test actors per "
                              "fold); a test group's actors never occur in training")
# EmoBox's speaker-independent 6-fold split (test actors per fold), see ../shared/data/README.md
SPEAKER_GROUPS = [[f"ravdess{a:02d}" for a in group] for group in (
    (1, 11, 20, 21), (4, 10, 12, 14), (8, 9, 19, 23),
    (3, 5, 7, 24), (2, 15, 16, 18), (6, 13, 17, 22))]

_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def _parse(path: Path) -> Utt | str:
    match = _NAME.match(path.stem)
    if not match:
        return "file name does not follow the RAVDESS convention"
    modality, channel, emotion, intensity, _, _, actor = match.groups()
    if modality != "03":
        return f"modality {modality} is not audio-only (03)"
    if channel != "01":
        return f"channel {channel} is song, not speech (01)"
    if emotion not in LABELS:
        return f"unknown emotion code {emotion}"
    if intensity not in ("01", "02") or (emotion == "01" and intensity != "01"):
        return f"invalid intensity {intensity} for emotion {emotion}"
    folder = re.fullmatch(r"Actor_(\d\d)", path.parent.name)
    if folder and folder.group(1) != actor:
        return f"actor {actor} in the name but the file is in {path.parent.name}"
    spk = f"ravdess{actor}"
    return Utt(f"{spk}-{path.stem}", spk, path, LABELS[emotion])


def scan(src: Path, **_options) -> Scan:
    return scan_files(src, _parse, what="03-01-EE-II-SS-RR-AA")
