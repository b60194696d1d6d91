"""What every corpus module returns, and helpers shared by them.

A corpus module scans a corpus *as distributed* and returns a :class:`Scan`: one
:class:`Utt` per usable utterance, plus a :class:`Skip` (file and reason) for everything it
had to leave out. Nothing is dropped silently: ``prepare`` writes the skips to
``DATA_DIR/skipped`` and reports them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sertool.errors import SertoolError

AUDIO_EXTENSIONS = (".wav", ".flac")


class PrepareError(SertoolError, ValueError):
    """A corpus cannot be prepared (wrong directory, empty corpus, broken file)."""


@dataclass
class Utt:
    utt: str  # utterance id; starts with ``spk``
    spk: str
    path: Path
    label: str | None = None  # emotion label (emotion corpora)
    group: str | None = None  # session (IEMOCAP) for leave-one-session-out
    conv: str | None = None  # conversation / dialog id (IEMOCAP)
    where: str | None = None  # the line it comes from (``file:line``), where a list names it


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


def walk_files(root: Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> Iterator[Path]:
    """Every file under ``root`` whose suffix is in ``extensions``, in sorted order.

    Symlinked folders and files are followed (corpora are usually linked in, Kaldi style:
    ``ln -s /export/corpora/...``); a symlink that leads back into one of its own parent
    folders is a loop and raises :class:`PrepareError` naming it instead of recursing forever.
    Paths keep the names they were reached by (not resolved), so ``wav.scp`` shows the user's
    layout. Hidden files and dangling links are included: the caller lists them as skips.
    """
    def key(path: Path) -> tuple[int, int]:
        stat = path.stat()
        return stat.st_dev, stat.st_ino

    def walk(folder: Path, ancestors: frozenset[tuple[int, int]]) -> Iterator[Path]:
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as err:
            raise PrepareError(f"{folder}: cannot list the folder ({err.strerror})") from err
        for entry in entries:
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:  # ELOOP: a link that leads to itself
                is_dir = False
            if is_dir:
                here = key(path)
                if here in ancestors:
                    raise PrepareError(
                        f"{path}: symlink loop (it leads back to {os.path.realpath(path)}, "
                        "a folder above it); remove or fix the link")
                yield from walk(path, ancestors | {here})
                continue
            if path.suffix.lower() not in extensions:
                continue
            if entry.is_symlink():
                try:
                    os.stat(path)
                except OSError as err:
                    if err.errno == errno.ELOOP:
                        raise PrepareError(f"{path}: symlink loop (the link leads back to "
                                           "itself)") from None
                    yield path  # dangling: the caller lists it as a skip
                    continue
            yield path

    yield from walk(root, frozenset({key(root)}))


def audio_files(root: Path) -> Iterator[Path]:
    """Every ``.wav`` / ``.flac`` under ``root`` in sorted order, symlinks followed."""
    return walk_files(root, AUDIO_EXTENSIONS)


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def not_read(path: Path) -> str | None:
    """Why a found file is listed as a skip without being read (None: read it)."""
    if not path.exists():
        return "broken symlink (its target does not exist)"
    if is_hidden(path):
        return "hidden file (e.g. a macOS ._ resource fork), not read"
    return None


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
        if unreadable := not_read(path):
            scan.skip(path, unreadable)
            continue
        result = parse(path)
        if isinstance(result, str):
            scan.skip(path, f"{result} (expected {what})")
        else:
            scan.utts.append(result)
    return scan
