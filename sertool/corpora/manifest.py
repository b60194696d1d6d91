"""Any other corpus from a CSV manifest with a header: ``path,label,speaker`` (any column order;
``label`` may be left out for a speaker-only set; an optional ``utt`` column gives the id).

Relative paths are relative to the CSV file. Speaker and label must be single tokens; labels
must be class codes (sertool.labels) or names mapped to them by ``prepare --labels FILE``.
The file is UTF-8, with or without the byte-order mark Excel writes. Utterance id
``<speaker>-<utt or file stem>``, made Kaldi-safe ASCII: accents dropped (``chanté`` ->
``chante``), any other character outside ``A-Za-z0-9_.+-`` becomes ``_``; two rows that end up
with one id are refused naming both, and the ``utt`` column gives each its own. SRC_DIR is the
CSV file itself.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from pathlib import Path

from sertool.corpora.base import AUDIO_EXTENSIONS, PrepareError, Scan, Utt
from sertool.datadir import read_text
from sertool.labels import TOKEN, LabelError, LabelMap

NAME = "manifest"
EMOTION = True  # when the manifest has a label column
DEFAULT_PROTOCOL = "auto"
LAYOUT = "a CSV file with header path,label,speaker[,utt]"
DUPLICATE_ID_HINT = ("give each row its own id in the manifest's utt column (a header "
                     "path,label,speaker,utt; the id becomes <speaker>-<utt>)")


def ascii_id(text: str) -> str:
    """``text`` as a Kaldi-safe ASCII token: accents dropped (NFKD without its combining marks),
    every other character outside ``A-Za-z0-9_.+-`` replaced by ``_``."""
    kept = (c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", "".join(kept))


def scan(src: Path, *, labels: LabelMap | None = None, **_options) -> Scan:
    if not src.is_file():
        raise PrepareError(f"{src}: the manifest corpus takes a CSV file, not a directory")
    labels = labels or LabelMap()
    scan = Scan()
    unknown: dict[str, list[int]] = {}  # label -> its lines
    reader = csv.DictReader(io.StringIO(read_text(src, bom=True), newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "path" not in columns or "speaker" not in columns:
        raise PrepareError(f"{src}:1: header must name the columns path and speaker "
                           f"(and label); found {columns}")
    reader.fieldnames = columns
    for row in reader:
        lineno = reader.line_num
        where = f"{src}:{lineno}"
        path_text = (row.get("path") or "").strip()
        speaker = (row.get("speaker") or "").strip()
        label = (row.get("label") or "").strip() if "label" in columns else None
        if not path_text or not speaker or (label is not None and not label):
            scan.skip(where, "empty path, speaker or label")
            continue
        if not TOKEN.match(speaker) or (label is not None and not TOKEN.match(label)):
            scan.skip(where, f"speaker {speaker!r} / label {label!r} must be one token "
                      "of letters, digits, _ . + -")
            continue
        if label is not None:
            code = labels.code_of(label)
            if code is None:
                unknown.setdefault(label, []).append(lineno)
                continue
            label = code
        path = Path(path_text)
        if not path.is_absolute():
            path = src.parent / path
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            scan.skip(where, f"{path}: not a .wav or .flac file")
            continue
        if not path.is_file():
            scan.skip(where, f"{path}: audio file not found")
            continue
        stem = ascii_id((row.get("utt") or "").strip() or path.stem)
        utt = f"{speaker}-{stem}"  # always prefixed: "s1"+"s10_x" would break C order
        scan.utts.append(Utt(utt, speaker, path.resolve(), label, where=where))
    if unknown:  # every unknown label at once, each with its first line
        raise LabelError("\n  ".join(labels.unknown(label, f"{src}:{lines[0]}", len(lines), "rows")
                                      for label, lines in unknown.items()))
    return scan
