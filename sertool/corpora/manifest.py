"""Any other corpus from a CSV manifest with a header: ``path,label,speaker`` (any column order;
``label`` may be left out for a speaker-only set; an optional ``utt`` column gives the id).

Relative paths are relative to the CSV file. Speaker and label must be single tokens.
Utterance id ``<speaker>-<utt or file stem>``. SRC_DIR is the CSV file itself.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from sertool.corpora.base import AUDIO_EXTENSIONS, PrepareError, Scan, Utt

NAME = "manifest"
EMOTION = True  # when the manifest has a label column
DEFAULT_PROTOCOL = "auto"
LAYOUT = "a CSV file with header path,label,speaker[,utt]"
_TOKEN = re.compile(r"^[A-Za-z0-9_.+-]+$")


def scan(src: Path, **_options) -> Scan:
    if not src.is_file():
        raise PrepareError(f"{src}: the manifest corpus takes a CSV file, not a directory")
    scan = Scan()
    with open(src, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "path" not in columns or "speaker" not in columns:
            raise PrepareError(f"{src}:1: header must name the columns path and speaker "
                               f"(and label); found {columns}")
        reader.fieldnames = columns
        for lineno, row in enumerate(reader, start=2):
            where = f"{src}:{lineno}"
            path_text = (row.get("path") or "").strip()
            speaker = (row.get("speaker") or "").strip()
            label = (row.get("label") or "").strip() if "label" in columns else None
            if not path_text or not speaker or (label is not None and not label):
                scan.skip(where, "empty path, speaker or label")
                continue
            if not _TOKEN.match(speaker) or (label is not None and not _TOKEN.match(label)):
                scan.skip(where, f"speaker {speaker!r} / label {label!r} must be one token "
                          "of letters, digits, _ . + -")
                continue
            path = Path(path_text)
            if not path.is_absolute():
                path = src.parent / path
            if path.suffix.lower() not in AUDIO_EXTENSIONS:
                scan.skip(where, f"{path}: not a .wav or .flac file")
                continue
            if not path.is_file():
                scan.skip(where, f"{path}: audio file not found")
                continue
            stem = (row.get("utt") or "").strip() or path.stem
            stem = re.sub(r"[^A-Za-z0-9_.+-]", "_", stem)
            utt = f"{speaker}-{stem}"  # always prefixed: "s1"+"s10_x" would break C order
            scan.utts.append(Utt(utt, speaker, path.resolve(), label))
    return scan
