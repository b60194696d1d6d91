"""What every corpus module returns, and helpers shared by them.

A corpus module scans a corpus *as distributed* and returns a :class:`Scan`: one
:class:`Utt` per usable utterance, plus a :class:`Skip` (file and reason) for everything it
had to leave out. Nothing is dropped silently: ``prepare`` writes the skips to
``DATA_DIR/skipped`` and reports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

AUDIO_EXTENSIONS = (".wav", ".flac")


class PrepareError(ValueError):
    """A corpus cannot be prepared (wrong directory, empty corpus, broken file)."""


@dataclass
class Utt:
    utt: str  # utterance id; starts with ``spk``
    spk: str
    path: Path
    label: str | None = None  # emotion label (emotion corpora)
    group: str | None = None  # session (IEMOCAP) for leave-one-session-out
    conv: str | None = None  # conversation / dialog id (IEMOCAP)


@dataclass
class Skip:
    path: str  # the file (with ``:line`` where a line is at fault)
    reason: str


@dataclass
class Scan:
    utts: list[Utt] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)  # label -> count, by the class map

    def skip(self, path: str | Path, reason: str) -> None:
        self.skipped.append(Skip(str(path), reason))


def audio_files(root: Path) -> Iterator[Path]:
    """Every ``.wav`` / ``.flac`` under ``root`` in sorted order (hidden files included:
    the caller lists them as skips rather than reading them)."""
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
            yield path


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def find_root(src: Path, marker: str, *, parents: tuple[str, ...] = ()) -> Path:
    """``src`` itself if it contains ``marker``, else the first of ``src/<p>`` that does."""
    if (src / marker).exists():
        return src
    for parent in parents:
        if (src / parent / marker).exists():
            return src / parent
    return src


def scan_files(src: Path, parse, *, what: str) -> Scan:
    """Scan every audio file under ``src`` with ``parse(path) -> Utt | str``.

    ``parse`` returns the reason as a string when a file breaks the naming convention; that
    file becomes a listed skip. ``what`` names the convention in the reasons.
    """
    scan = Scan()
    for path in audio_files(src):
        if is_hidden(path):
            scan.skip(path, "hidden file (e.g. a macOS ._ resource fork), not read")
            continue
        result = parse(path)
        if isinstance(result, str):
            scan.skip(path, f"{result} (expected {what})")
        else:
            scan.utts.append(result)
    return scan
