"""LibriSpeech as a speaker-labelled set:
``[LibriSpeech/]<split>/<spk>/<chapter>/<spk>-<chapter>-<n>.flac``.

The native utterance id ``<spk>-<chapter>-<n>`` already starts with the speaker id. Every split
directory found is used (e.g. train-clean-100 and test-other). No emotion labels, no folds by
default (speaker pre-training).
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.corpora.base import Scan, Utt, scan_files

NAME = "librispeech"
EMOTION = False
DEFAULT_PROTOCOL = "none"
LAYOUT = "[LibriSpeech/]<split>/<spk>/<chapter>/<spk>-<chapter>-<n>.flac|.wav"
_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def _parse(path: Path) -> Utt | str:
    match = _NAME.match(path.stem)
    if not match:
        return "file name does not follow the LibriSpeech convention"
    speaker, chapter, _ = match.groups()
    if path.parent.name != chapter or path.parent.parent.name != speaker:
        return (f"speaker/chapter {speaker}/{chapter} in the name but the file is in "
                f"{path.parent.parent.name}/{path.parent.name}/")
    return Utt(path.stem, speaker, path)


def scan(src: Path, **_options) -> Scan:
    root = src / "LibriSpeech" if (src / "LibriSpeech").is_dir() else src
    return scan_files(root, _parse, what="<spk>-<chapter>-<n>")
