"""Kaldi data directories: read, write, validate, subset, and evaluation folds.

A data directory holds one ``key value`` table per file, sorted under ``LC_ALL=C``:

``wav.scp``   recording id -> audio path, a relative one relative to the data directory (or
              a Kaldi pipe command ending in ``|``)
``segments``  utterance id -> recording id, start and end in seconds (optional)
``utt2spk``   utterance id -> speaker id (the speaker id is a prefix of the utterance id)
``spk2utt``   speaker id -> its utterance ids
``utt2emo``   utterance id -> emotion label (emotion corpora)
``utt2conv``  utterance id -> conversation / dialog id (IEMOCAP; conversation-level CMVN)
``feats.scp`` utterance id -> ``ark:offset`` (after ``extract-feats``)
``folds/<k>/{train,test}`` utterance lists, ``folds/protocol.json`` describes them.

Python's ``sorted`` on ``str`` orders by code point, which is the byte order of UTF-8 and
therefore the same as ``LC_ALL=C sort``. As in Kaldi, sorting utt2spk by utterance must also
leave its speakers in sorted order (speaker id a prefix of the utterance id guarantees it
when ids share one separator), so that per-speaker processing can stream the files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sertool.errors import SertoolError
from sertool.io_utils import (
    atomic_dir,
    atomic_open,
    atomic_write_json,
    atomic_write_text,
    not_a_file,
    refuse_output_over_inputs,
)

if TYPE_CHECKING:
    from sertool.labels import LabelMap

TABLES = ("wav.scp", "segments", "utt2spk", "spk2utt", "utt2emo", "utt2conv", "feats.scp")
# optional tables keyed by utterance, one token per value
UTT_TABLES = ("utt2emo", "utt2conv")


class DataDirError(SertoolError, ValueError):
    """A problem in one file of a data directory, with the line where it is."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------------------- tables


def _require_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise DataDirError(path, None, "a directory, where a file is expected")
    if not path.is_file():
        raise DataDirError(path, None, "file not found")
    return path


def read_table(path: str | os.PathLike, *, fields: int | None = None) -> dict[str, str]:
    """Read a ``key value`` file into an ordered dict (value = rest of the line).

    ``fields`` fixes the number of whitespace-separated fields after the key (e.g. 3 for
    segments). Blank lines, empty keys, missing values and duplicate keys are errors
    that name the file and line.
    """
    path = _require_file(path)
    table: dict[str, str] = {}
    first_line: dict[str, int] = {}
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            raise DataDirError(path, lineno, "empty line")
        if line != line.strip():
            raise DataDirError(path, lineno, "leading or trailing whitespace")
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            raise DataDirError(path, lineno, f"key {parts[0]!r} has no value")
        key, value = parts
        if fields is not None and len(value.split()) != fields:
            raise DataDirError(
                path, lineno, f"expected {fields + 1} fields, found {len(value.split()) + 1}"
            )
        if key in table:
            raise DataDirError(
                path, lineno, f"duplicate key {key!r} (first on line {first_line[key]})"
            )
        table[key] = value
        first_line[key] = lineno
    return table


def read_text(path: str | os.PathLike, *, bom: bool = False) -> str:
    """The UTF-8 text of ``path``; not UTF-8 (e.g. a Latin-1 file from another tool) is an error
    naming the line. ``bom``: drop a leading byte-order mark (files saved by Excel or Notepad);
    tables are read without (Kaldi's own tools do not drop it either)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataDirError(path, None, f"cannot read: {err.strerror}") from None
    try:
        return data.decode("utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError as err:
        lineno = data[: err.start].count(b"\n") + 1
        raise DataDirError(path, lineno, "not UTF-8 text (save the file as UTF-8)") from None


def write_table(path: str | os.PathLike, table: Mapping[str, str] | Iterable[tuple[str, str]]):
    """Write ``key value`` lines sorted by key (C order), atomically."""
    items = table.items() if isinstance(table, Mapping) else table
    rows = sorted((str(k), str(v)) for k, v in items)
    for key, value in rows:
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"{path}: invalid key {key!r}")
        if not value.strip():
            raise ValueError(f"{path}: key {key!r} has an empty value")
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for key, value in rows:
            handle.write(f"{key} {value}\n")


def read_list(path: str | os.PathLike) -> list[str]:
    """Read a file with one utterance id per line (fold lists); an id on two lines is an
    error naming both (a fold list is a set: a repeat would be trained or scored twice)."""
    path = _require_file(path)
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for lineno, raw in enumerate(handle, start=1):
            token = raw.strip()
            if not token or len(token.split()) != 1:
                raise DataDirError(path, lineno, f"expected one utterance id, got {raw.strip()!r}")
            if token in first_line:
                raise DataDirError(path, lineno, f"utterance {token!r} repeats line "
                                   f"{first_line[token]} (a fold lists each utterance once)")
            first_line[token] = lineno
    return list(first_line)


def write_list(path: str | os.PathLike, items: Iterable[str]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for item in sorted(items):
            handle.write(f"{item}\n")


def spk2utt_from_utt2spk(utt2spk: Mapping[str, str]) -> dict[str, str]:
    groups: dict[str, list[str]] = {}
    for utt, spk in sorted(utt2spk.items()):
        groups.setdefault(spk, []).append(utt)
    return {spk: " ".join(utts) for spk, utts in groups.items()}


# ---------------------------------------------------------------------------- the directory


def is_pipe(value: str) -> bool:
    """Whether a wav.scp value is a Kaldi pipe command (``cmd ... |``), not a path."""
    return value.rstrip().endswith("|")


def wav_entry(data_dir: str | os.PathLike, value: str) -> str:
    """A wav.scp value as every reader opens it: the one rule for relative paths.

    A relative path is relative to the data directory (as Kaldi users expect, whatever the
    working directory), returned absolute; absolute paths and pipe commands are unchanged.
    Symlinks and ``..`` are left for the system to follow, as it would from inside the data
    directory. Loaded paths are absolute, so a subset or combination written elsewhere still
    names the same audio.
    """
    if is_pipe(value) or os.path.isabs(value):
        return value
    return os.path.join(Path(data_dir).absolute(), value)


def utterance_problem(where: str, utt: str, source: str, reason: str) -> str:
    """Why an utterance's audio could not be used, in the one form of extract-feats and
    check-folds: ``DATA_DIR/wav.scp:LINE: utterance UTT (AUDIO): REASON`` (no line: unknown)."""
    return f"{where + ': ' if where else ''}utterance {utt} ({source}): {reason}"


def wav_scp_lines(data_dir: str | os.PathLike | None, *,
                  missing_ok: bool = False) -> dict[str, str]:
    """Each utterance's wav.scp line as ``DATA_DIR/wav.scp:LINE`` (through its segments line's
    recording, if there is a segments file): where an error about its audio points. Every line
    of a readable wav.scp holds one key (read_table refuses blank lines), so a key's line is its
    position. Read from the files again: called only when some audio failed. ``missing_ok``:
    empty (no directory, or one that cannot be read again, as from a node that does not see
    it) instead of an error: the failure is then named by utterance and audio alone."""
    if data_dir is None:
        return {}
    if missing_ok:
        try:
            return wav_scp_lines(data_dir)
        except (OSError, DataDirError):
            return {}
    data_dir = Path(data_dir)
    wav = data_dir / "wav.scp"
    line_of = {rec: f"{wav}:{n}" for n, rec in enumerate(read_table(wav), start=1)}
    if not (data_dir / "segments").is_file():
        return line_of
    recordings = {utt: v.split()[0] for utt, v in read_table(data_dir / "segments").items()}
    return {utt: line_of[rec] for utt, rec in recordings.items() if rec in line_of}


@dataclass
class Segment:
    recording: str
    start: float
    end: float


@dataclass
class DataDir:
    """An in-memory data directory. ``wav_scp`` is keyed by recording id."""

    wav_scp: dict[str, str]
    utt2spk: dict[str, str]
    utt2emo: dict[str, str] | None = None
    segments: dict[str, Segment] | None = None
    feats_scp: dict[str, str] | None = None
    utt2conv: dict[str, str] | None = None
    path: Path | None = field(default=None, compare=False)

    @property
    def utts(self) -> list[str]:
        return sorted(self.utt2spk)

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        return {s: u.split() for s, u in spk2utt_from_utt2spk(self.utt2spk).items()}

    def audio_of(self, utt: str) -> tuple[str, float | None, float | None]:
        """(audio path or pipe, start s, end s) of an utterance; times None without segments.
        A loaded directory's relative paths are already made absolute (``wav_entry``)."""
        if self.segments is not None:
            seg = self.segments[utt]
            return self.wav_scp[seg.recording], seg.start, seg.end
        return self.wav_scp[utt], None, None

    @classmethod
    def load(cls, path: str | os.PathLike) -> DataDir:
        path = Path(path)
        if not path.is_dir():
            raise DataDirError(path, None, "data directory not found")
        wav_scp = {rec: wav_entry(path, value)
                   for rec, value in read_table(path / "wav.scp").items()}
        utt2spk = read_table(path / "utt2spk")
        utt2emo = read_table(path / "utt2emo") if (path / "utt2emo").exists() else None
        feats = read_table(path / "feats.scp") if (path / "feats.scp").exists() else None
        conv = read_table(path / "utt2conv") if (path / "utt2conv").exists() else None
        segments = None
        if (path / "segments").exists():
            segments = {}
            for lineno, (utt, value) in enumerate(
                read_table(path / "segments", fields=3).items(), start=1
            ):
                rec, start, end = value.split()
                try:
                    segments[utt] = Segment(rec, float(start), float(end))
                except ValueError as err:
                    raise DataDirError(path / "segments", lineno, f"bad time: {err}") from err
        return cls(wav_scp, utt2spk, utt2emo, segments, feats, conv, path)

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_table(path / "wav.scp", self.wav_scp)
        write_table(path / "utt2spk", self.utt2spk)
        write_table(path / "spk2utt", spk2utt_from_utt2spk(self.utt2spk))
        if self.utt2emo is not None:
            write_table(path / "utt2emo", self.utt2emo)
        if self.segments is not None:
            write_table(
                path / "segments",
                {u: f"{s.recording} {s.start:.3f} {s.end:.3f}" for u, s in self.segments.items()},
            )
        if self.feats_scp is not None:
            write_table(path / "feats.scp", self.feats_scp)
        if self.utt2conv is not None:
            write_table(path / "utt2conv", self.utt2conv)
        self.path = path

    def subset(self, utts: Iterable[str]) -> DataDir:
        keep = set(utts)
        missing = keep - set(self.utt2spk)
        if missing:
            raise KeyError(f"utterances not in the data directory: {sorted(missing)[:5]}")
        segments = (
            {u: s for u, s in self.segments.items() if u in keep} if self.segments else None
        )
        recordings = {s.recording for s in segments.values()} if segments is not None else keep
        return DataDir(
            wav_scp={r: p for r, p in self.wav_scp.items() if r in recordings},
            utt2spk={u: s for u, s in self.utt2spk.items() if u in keep},
            utt2emo={u: e for u, e in self.utt2emo.items() if u in keep} if self.utt2emo else None,
            segments=segments,
            feats_scp={u: f for u, f in self.feats_scp.items() if u in keep}
            if self.feats_scp
            else None,
            utt2conv={u: c for u, c in self.utt2conv.items() if u in keep}
            if self.utt2conv
            else None,
        )


# ---------------------------------------------------------------------------- folds


@dataclass
class Fold:
    name: str
    train: list[str]
    test: list[str]


def fold_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a fold name, or None. The one rule, for folds written and read:
    a fold name becomes the folders ``folds/<name>`` and ``EXP_DIR/fold_<name>``, so it must be
    one path component (no separator, not ``.`` or ``..``, not absolute) without spaces; a data
    dir is something users download, and its names must not steer writes elsewhere."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return "must be one path component (no '/', '\\', '.' or '..')"
    if any(c.isspace() or not c.isprintable() for c in name):
        return "must not hold spaces or control characters"
    return None


def write_folds(
    data_dir: str | os.PathLike, folds: Iterable[Fold], protocol: Mapping[str, object]
) -> None:
    """Write ``folds/<name>/{train,test}`` and ``folds/protocol.json``.

    ``protocol`` describes how the folds were made (``name``, ``speaker_independent``,
    ``description``, ...); reports copy it.
    """
    root = Path(data_dir) / "folds"
    root.mkdir(parents=True, exist_ok=True)
    folds = list(folds)
    names = [fold.name for fold in folds]
    for name in names:
        problem = fold_name_problem(name)
        if problem:
            raise ValueError(f"fold name {name!r} {problem}")
    if len(set(names)) != len(names):
        raise ValueError(f"fold names repeat: {names}")
    for fold in folds:
        write_list(root / fold.name / "train", fold.train)
        write_list(root / fold.name / "test", fold.test)
    atomic_write_json(root / "protocol.json", {**dict(protocol), "folds": names})
    # folds of an earlier protocol with more folds would otherwise linger beside the new ones
    for old in root.iterdir():
        if old.is_dir() and old.name not in names and {p.name for p in old.iterdir()} <= {
                "train", "test"}:
            for part in old.iterdir():
                part.unlink()
            old.rmdir()


def read_folds(data_dir: str | os.PathLike) -> tuple[list[Fold], dict]:
    root = Path(data_dir) / "folds"
    proto_path = root / "protocol.json"
    if not proto_path.is_file():
        raise DataDirError(proto_path, None, "no folds in this data directory (run prepare)")
    try:
        protocol = json.loads(proto_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataDirError(proto_path, getattr(err, "lineno", None), f"not valid JSON: {err}"
                           ) from err
    names = protocol.get("folds") if isinstance(protocol, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DataDirError(proto_path, None, "'folds' must list the fold names (the folders "
                           f"beside it), got {names!r}")
    text = proto_path.read_text(encoding="utf-8")
    for name in names:
        problem = fold_name_problem(name)
        if problem:
            raise DataDirError(proto_path, _json_line_of(text, name),
                               f"fold name {name!r} {problem}")
    if not names:  # 'all folds' would then be none: a verdict over 0 folds, no experiment
        raise DataDirError(proto_path, _json_line_of(text, "folds"),
                           "'folds' is empty: list the fold names (the folders beside "
                           "it), or prepare the data directory again")
    if len(set(names)) != len(names):
        raise DataDirError(proto_path, None, f"fold names repeat: {names}")
    folds = [
        Fold(name, read_list(root / name / "train"), read_list(root / name / "test"))
        for name in names
    ]
    _refuse_overlapping_tests(root, folds)
    return folds, protocol


def _refuse_overlapping_tests(root: Path, folds: Sequence[Fold]) -> None:
    """The folds' test lists must be disjoint: an utterance tested by two folds is counted
    twice in the pooled scores. (They need not cover every utterance: a protocol may test
    only some, e.g. one random split.)"""
    tested_in: dict[str, tuple[Fold, int]] = {}
    for fold in folds:
        for lineno, utt in enumerate(fold.test, start=1):
            if utt in tested_in:
                first, first_line = tested_in[utt]
                raise DataDirError(root / fold.name / "test", lineno,
                                   f"utterance {utt!r} is also tested by fold {first.name} "
                                   f"({root / first.name / 'test'}:{first_line}); the test "
                                   "lists of the folds must not overlap")
            tested_in[utt] = (fold, lineno)


def _json_line_of(text: str, value: str) -> int | None:
    """The line of ``text`` (a JSON file) where the string ``value`` is written, if any."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if json.dumps(value) in line or json.dumps(value, ensure_ascii=False) in line:
            return lineno
    return None


# ---------------------------------------------------------------------------- validation


def _check_sorted(path: Path) -> list[str]:
    problems = []
    previous = None
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            key = line.split(maxsplit=1)[0] if line.strip() else ""
            if previous is not None and key < previous:
                problems.append(
                    f"{path}:{lineno}: not sorted (LC_ALL=C): {key!r} after {previous!r}"
                )
                break
            previous = key
    return problems


def _line_of(path: Path, key: str) -> int | None:
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if line.split(maxsplit=1)[:1] == [key]:
                return lineno
    return None


def validate_data_dir(
    path: str | os.PathLike, *, check_files: bool = True, require_emotion: bool = False,
    labels: LabelMap | None = None,
) -> list[str]:
    """Check a data directory as Kaldi's validate_data_dir.sh does; return the problems.

    Each problem is one line ``file:line: message``. An empty list means valid. ``labels``:
    also check that every ``utt2emo`` label is a class code or a name the map maps to one.
    """
    path = Path(path)
    if not path.is_dir():
        return [f"{path}: data directory not found"]
    problems: list[str] = []
    tables: dict[str, dict[str, str]] = {}
    required = ["wav.scp", "utt2spk"] + (["utt2emo"] if require_emotion else [])
    for name in TABLES:
        file = path / name
        if not file.exists():
            if name in required:
                problems.append(f"{file}: required file missing")
            continue
        try:
            tables[name] = read_table(file, fields=3 if name == "segments" else None)
        except DataDirError as err:
            problems.append(str(err))
            continue
        problems += _check_sorted(file)
    if problems:
        return problems

    wav, utt2spk = tables["wav.scp"], tables["utt2spk"]
    if not utt2spk:
        problems.append(f"{path / 'utt2spk'}: empty (no utterances)")
    for utt, spk in utt2spk.items():
        if len(spk.split()) != 1:
            problems.append(f"{path / 'utt2spk'}:{_line_of(path / 'utt2spk', utt)}: "
                            f"speaker of {utt!r} must be one token, got {spk!r}")
        elif not utt.startswith(spk):
            problems.append(f"{path / 'utt2spk'}:{_line_of(path / 'utt2spk', utt)}: "
                            f"speaker id {spk!r} is not a prefix of utterance id {utt!r}")
    problems += _check_speaker_order(path / "utt2spk", utt2spk)
    if "spk2utt" in tables:
        expected = spk2utt_from_utt2spk(utt2spk)
        for spk, utts in tables["spk2utt"].items():
            if expected.get(spk) != " ".join(sorted(utts.split())):
                problems.append(f"{path / 'spk2utt'}:{_line_of(path / 'spk2utt', spk)}: "
                                f"speaker {spk!r} disagrees with utt2spk")
        for spk in sorted(set(expected) - set(tables["spk2utt"])):
            problems.append(f"{path / 'spk2utt'}: speaker {spk!r} of utt2spk is missing")

    if "segments" in tables:
        segs = tables["segments"]
        for utt, value in segs.items():
            rec, start, end = value.split()
            where = f"{path / 'segments'}:{_line_of(path / 'segments', utt)}"
            if rec not in wav:
                problems.append(f"{where}: recording {rec!r} not in wav.scp")
            try:
                if not 0 <= float(start) < float(end):
                    problems.append(f"{where}: need 0 <= start < end, got {start} {end}")
            except ValueError:
                problems.append(f"{where}: start/end are not numbers: {start} {end}")
        problems += _mismatch(path, "segments", set(segs), "utt2spk", set(utt2spk))
    else:
        problems += _mismatch(path, "wav.scp", set(wav), "utt2spk", set(utt2spk))

    for optional in (*UTT_TABLES, "feats.scp"):
        if optional in tables:
            extra = set(tables[optional]) - set(utt2spk)
            for utt in sorted(extra)[:10]:
                problems.append(f"{path / optional}:{_line_of(path / optional, utt)}: "
                                f"utterance {utt!r} is not in utt2spk")
    for name in UTT_TABLES:
        if name not in tables:
            continue
        missing = set(utt2spk) - set(tables[name])
        for utt in sorted(missing)[:10]:
            problems.append(f"{path / name}: utterance {utt!r} of utt2spk has no entry")
        for utt, value in tables[name].items():
            if len(value.split()) != 1:
                problems.append(f"{path / name}:{_line_of(path / name, utt)}: "
                                f"value must be one token, got {value!r}")
    if labels is not None and "utt2emo" in tables:
        problems += labels.apply(tables["utt2emo"], path / "utt2emo")[1]

    if check_files:
        for rec, value in wav.items():
            if is_pipe(value):
                continue  # a pipe command; it is checked when it runs
            kind = not_a_file(wav_entry(path, value))  # stat only: a FIFO cannot block
            if kind is not None:
                what = "not found" if kind == "not found" else f"is {kind}, not an audio file"
                problems.append(f"{path / 'wav.scp'}:{_line_of(path / 'wav.scp', rec)}: "
                                f"audio file of {rec!r} {what}: {value}")

    if (path / "folds" / "protocol.json").exists():
        problems += _validate_folds(path, set(utt2spk))
    return problems


def _check_speaker_order(file: Path, utt2spk: Mapping[str, str]) -> list[str]:
    """Kaldi's rule: utt2spk sorted by utterance is also sorted by speaker."""
    previous = None
    for lineno, (utt, spk) in enumerate(utt2spk.items(), start=1):
        if previous is not None and spk < previous[1]:
            return [f"{file}:{lineno}: speakers out of order: {utt!r} of speaker {spk!r} "
                    f"sorts after {previous[0]!r} of speaker {previous[1]!r} (make speaker "
                    "ids prefixes of utterance ids with one separator, e.g. spk-utt)"]
        previous = (utt, spk)
    return []


def _mismatch(path: Path, name_a: str, keys_a: set, name_b: str, keys_b: set) -> list[str]:
    problems = []
    for key in sorted(keys_a - keys_b)[:10]:
        problems.append(f"{path / name_a}:{_line_of(path / name_a, key)}: "
                        f"{key!r} has no entry in {name_b}")
    for key in sorted(keys_b - keys_a)[:10]:
        problems.append(f"{path / name_b}:{_line_of(path / name_b, key)}: "
                        f"{key!r} has no entry in {name_a}")
    return problems


def _validate_folds(path: Path, utts: set[str]) -> list[str]:
    problems = []
    try:
        folds, protocol = read_folds(path)
    except (DataDirError, KeyError, TypeError, json.JSONDecodeError) as err:
        return [f"{path / 'folds'}: {err}"]
    for key in ("name", "speaker_independent"):
        if key not in protocol:
            problems.append(f"{path / 'folds' / 'protocol.json'}: no {key!r} field "
                            "(write folds with datadir.write_folds)")
    for fold in folds:
        for part, items in (("train", fold.train), ("test", fold.test)):
            file = path / "folds" / fold.name / part
            if not items:
                problems.append(f"{file}: empty fold list")
            for lineno, utt in enumerate(items, start=1):
                if utt not in utts:
                    problems.append(f"{file}:{lineno}: utterance {utt!r} is not in utt2spk")
                    break
        both = set(fold.train) & set(fold.test)
        if both:
            problems.append(f"{path / 'folds' / fold.name}: {len(both)} utterances in both "
                            f"train and test, e.g. {sorted(both)[0]!r}")
    return problems


def require_valid(path: str | os.PathLike, **kwargs) -> DataDir:
    """Validate, raise with every problem listed, and load the directory."""
    problems = validate_data_dir(path, **kwargs)
    if problems:
        raise DataDirError(path, None, "invalid data directory:\n  " + "\n  ".join(problems))
    return DataDir.load(path)


# ---------------------------------------------------------------------------- combine, subset, fix
# Kaldi's utils/combine_data.sh, subset_data_dir.sh and fix_data_dir.sh, with the same
# file:line errors as validate_data_dir. Each result is validated before it is kept; audio
# files are not stat-ed again (check_files=False): these tools never change which audio a
# recording names, and on VoxCeleb that check alone is a million stat calls.


@dataclass
class DataDirEdit:
    """What combine/subset/fix wrote, and what the user should know about it."""

    data_dir: Path
    n_utts: int
    n_speakers: int
    notes: list[str] = field(default_factory=list)
    removed: dict[str, str] = field(default_factory=dict)  # fix: utterance -> reason

    def summary(self) -> str:
        return f"{self.data_dir}: {self.n_utts} utterances, {self.n_speakers} speakers"


def restrict_folds(folds: Iterable[Fold], keep: set[str]) -> tuple[list[Fold], list[str]]:
    """Each fold with only the kept utterances; a fold left without test (or training)
    utterances is dropped, and the returned notes say so."""
    kept, notes = [], []
    for fold in folds:
        train = [u for u in fold.train if u in keep]
        test = [u for u in fold.test if u in keep]
        if not test or not train:
            side = "test" if not test else "training"
            notes.append(f"fold {fold.name}: dropped (no {side} utterance left)")
            continue
        kept.append(Fold(fold.name, train, test))
    return kept, notes


def _check_result(out: Path, require_emotion: bool) -> None:
    """Validate what a tool wrote; a problem is a bug here, so say all of them."""
    problems = validate_data_dir(out, check_files=False, require_emotion=require_emotion)
    if problems:
        raise DataDirError(out, None, "result is invalid:\n  " + "\n  ".join(problems))


def _write_restricted_folds(src: Path, out: Path, keep: set[str], notes: list[str]) -> None:
    """Copy ``src``'s folds into ``out``, restricted to ``keep``; note dropped folds."""
    if not (src / "folds" / "protocol.json").is_file():
        return
    folds, protocol = read_folds(src)
    kept, dropped = restrict_folds(folds, keep)
    notes += dropped
    if kept:
        protocol = {k: v for k, v in protocol.items() if k != "folds"}
        write_folds(out, kept, protocol)
    else:
        notes.append("no fold has both training and test utterances left: no folds written")


def _first_fields(path: Path, what: str, known: Iterable[str]) -> set[str]:
    """The first field of each line of a list file (as Kaldi's filter_scp.pl reads it); an
    empty line or an id not in ``known`` is an error naming the line."""
    known = set(known)
    _require_file(path)
    ids = set()
    with open(path, encoding="utf-8") as handle:
        for lineno, raw in enumerate(handle, start=1):
            fields = raw.split()
            if not fields:
                raise DataDirError(path, lineno, f"empty line (expected a {what} id)")
            if fields[0] not in known:
                raise DataDirError(path, lineno, f"{what} {fields[0]!r} is not in the data "
                                                 "directory")
            ids.add(fields[0])
    return ids


def combine_data_dirs(out: str | os.PathLike, inputs: Sequence[str | os.PathLike], *,
                      keep_folds: bool = False) -> DataDirEdit:
    """Union of data directories into ``out`` (replaced as a whole on success).

    An utterance id in two inputs, or one recording id naming two different audio files, is
    an error naming both files and lines. utt2emo, utt2conv, segments and feats.scp are kept
    when every input has them (segments in only some inputs is an error: the others'
    recordings would have no times). Folds are left out, since each input's folds were made
    for it alone, unless ``keep_folds``: then every input must have the same fold names, and
    fold K of the output is the union of the inputs' folds K.
    """
    out, paths = Path(out), [Path(p) for p in inputs]
    if not paths:  # one input is a validated copy, as in Kaldi (a recipe's optional corpora)
        raise DataDirError(out, None, "no input directories to combine")
    refuse_output_over_inputs(out, paths)
    dirs = [require_valid(p, check_files=False) for p in paths]
    _refuse_duplicates(paths, [d.utt2spk for d in dirs], "utt2spk", "utterance")
    with_segments = [d.segments is not None for d in dirs]
    if any(with_segments) and not all(with_segments):
        lacking = paths[with_segments.index(False)]
        raise DataDirError(lacking / "segments", None, "not found, but "
                           f"{paths[with_segments.index(True)] / 'segments'} exists: combine "
                           "directories that all have segments, or none")
    wav_scp: dict[str, str] = {}
    for path, d in zip(paths, dirs, strict=True):
        for rec, value in d.wav_scp.items():
            if wav_scp.setdefault(rec, value) != value:  # a shared recording must be the same
                first = next(p for p, e in zip(paths, dirs, strict=True) if rec in e.wav_scp)
                raise DataDirError(path / "wav.scp", _line_of(path / "wav.scp", rec),
                                   f"recording {rec!r} is also in {first / 'wav.scp'}:"
                                   f"{_line_of(first / 'wav.scp', rec)} with other audio")
    notes: list[str] = []

    def union(name: str, attr: str) -> dict | None:
        tables = [getattr(d, attr) for d in dirs]
        if all(t is not None for t in tables):
            return {k: v for t in tables for k, v in t.items()}
        if any(t is not None for t in tables):
            absent = [str(p) for p, t in zip(paths, tables, strict=True) if t is None]
            notes.append(f"{name}: left out (not in {', '.join(absent)})")
        return None

    data = DataDir(wav_scp=wav_scp, utt2spk={u: s for d in dirs for u, s in d.utt2spk.items()},
                   utt2emo=union("utt2emo", "utt2emo"),
                   segments=union("segments", "segments"),
                   feats_scp=union("feats.scp", "feats_scp"),
                   utt2conv=union("utt2conv", "utt2conv"))
    folds = _combined_folds(paths, data.utt2spk) if keep_folds else None
    with atomic_dir(out) as tmp:
        data.save(tmp)
        if folds is not None:
            write_folds(tmp, *folds)
            notes.append(f"folds: {len(folds[0])} combined ({', '.join(f.name for f in folds[0])})")
        _check_result(tmp, require_emotion=data.utt2emo is not None)
    return DataDirEdit(out, len(data.utt2spk), len(set(data.utt2spk.values())), notes)


def _refuse_duplicates(paths: Sequence[Path], tables: Sequence[Mapping[str, str]], name: str,
                       what: str) -> None:
    owner: dict[str, Path] = {}
    for path, table in zip(paths, tables, strict=True):
        for key in table:
            if key in owner:
                first = owner[key]
                raise DataDirError(path / name, _line_of(path / name, key),
                                   f"{what} {key!r} is also in {first / name}:"
                                   f"{_line_of(first / name, key)} (ids must be unique across "
                                   "the combined directories)")
            owner[key] = path


def _combined_folds(paths: Sequence[Path], utt2spk: Mapping[str, str]
                    ) -> tuple[list[Fold], dict]:
    """Fold K = union of the inputs' folds K; speaker independence recomputed per fold."""
    read = [read_folds(p) for p in paths]
    names = [f.name for f in read[0][0]]
    for path, (folds, _) in zip(paths, read, strict=True):
        if [f.name for f in folds] != names:
            raise DataDirError(path / "folds" / "protocol.json", None,
                               f"folds {[f.name for f in folds]} differ from {names} of "
                               f"{paths[0]}: --keep-folds needs the same fold names")
    combined = []
    for i, name in enumerate(names):
        train = sorted(u for folds, _ in read for u in folds[i].train)
        test = sorted(u for folds, _ in read for u in folds[i].test)
        combined.append(Fold(name, train, test))
    independent = all(bool(p.get("speaker_independent")) for _, p in read) and not any(
        {utt2spk[u] for u in f.train} & {utt2spk[u] for u in f.test} for f in combined)
    protocol = {"name": "+".join(sorted({str(p.get("name")) for _, p in read})),
                "speaker_independent": independent,
                "description": "union of the folds of " + ", ".join(map(str, paths)),
                "combined_from": [{"data_dir": str(p), "protocol": proto.get("name")}
                                  for p, (_, proto) in zip(paths, read, strict=True)]}
    return combined, protocol


def subset_data_dir(src: str | os.PathLike, out: str | os.PathLike, *,
                    speakers: str | os.PathLike | None = None,
                    utt_list: str | os.PathLike | None = None) -> DataDirEdit:
    """The utterances of the listed speakers (or the listed utterances) of ``src`` into ``out``.

    The list files hold one id per line (extra fields are ignored, as in Kaldi). Folds are
    restricted to the kept utterances; a fold left without test utterances is dropped and the
    notes say so.
    """
    src, out = Path(src), Path(out)
    if (speakers is None) == (utt_list is None):
        raise DataDirError(src, None, "give exactly one of a speaker list and an utterance list")
    refuse_output_over_inputs(out, [src, speakers or utt_list])  # read, then replaced: kept
    data = require_valid(src, check_files=False)
    if speakers is not None:
        chosen = _first_fields(Path(speakers), "speaker", data.utt2spk.values())
        keep = {u for u, s in data.utt2spk.items() if s in chosen}
    else:
        keep = _first_fields(Path(utt_list), "utterance", data.utt2spk)
    if not keep:
        raise DataDirError(speakers or utt_list, None, "lists nothing")
    subset = data.subset(keep)
    notes: list[str] = []
    with atomic_dir(out) as tmp:
        subset.save(tmp)
        _write_restricted_folds(src, tmp, keep, notes)
        _check_result(tmp, require_emotion=subset.utt2emo is not None)
    return DataDirEdit(out, len(subset.utt2spk), len(set(subset.utt2spk.values())), notes)


def _folds_leave(data_dir: Path, keep: set[str]) -> bool:
    """Whether ``data_dir`` has folds that name an utterance outside ``keep``."""
    if not (data_dir / "folds" / "protocol.json").is_file():
        return False
    folds, _ = read_folds(data_dir)
    return any(u not in keep for f in folds for u in (*f.train, *f.test))


def fix_data_dir(data_dir: str | os.PathLike,
                 feat_dir: str | os.PathLike | None = None) -> DataDirEdit:
    """Kaldi's fix_data_dir.sh, in place: keep the utterances every table agrees on.

    Removed: utterances missing from one of utt2spk, segments (or wav.scp), utt2emo,
    utt2conv, feats.scp; with ``feat_dir``, those listed in FEAT_DIR/failed or absent from
    FEAT_DIR/feats.scp; recordings no utterance uses. Tables are rewritten sorted, spk2utt
    regenerated, folds restricted (a fold without test utterances is dropped). Each file that
    changes is first copied to DATA_DIR/.backup/ (as Kaldi does); DATA_DIR/.backup/removed
    lists each removed utterance and why. Every file is replaced atomically; a rerun after a
    kill finishes the job, since the kept set only shrinks to the same fixed point.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataDirError(data_dir, None, "data directory not found")
    tables = {n: read_table(data_dir / n, fields=3 if n == "segments" else None)
              for n in TABLES if (data_dir / n).is_file() and n != "spk2utt"}
    for required in ("wav.scp", "utt2spk"):
        if required not in tables:
            raise DataDirError(data_dir / required, None, "required file missing")
    removed: dict[str, str] = {}

    def drop(utts: Iterable[str], reason: str) -> None:
        for utt in sorted(utts):
            removed.setdefault(utt, reason)

    utts = set(tables["utt2spk"])
    audio = "segments" if "segments" in tables else "wav.scp"
    for name in (audio, *UTT_TABLES, "feats.scp"):
        if name in tables:
            drop(utts - set(tables[name]), f"not in {name}")
    if "segments" in tables:
        wav = tables["wav.scp"]
        drop((u for u, v in tables["segments"].items() if u in utts and v.split()[0] not in wav),
             "its recording is not in wav.scp")
    if feat_dir is not None:
        feat_dir = Path(feat_dir)
        failed = feat_dir / "failed"
        if failed.is_file():
            for line in failed.read_text(encoding="utf-8").splitlines():
                utt, *why = line.split("\t")  # utt <TAB> audio <TAB> reason
                if utt in utts:
                    removed.setdefault(utt, f"listed in {failed}: {': '.join(why)}")
        feats = read_table(feat_dir / "feats.scp")
        drop(utts - set(feats), f"not in {feat_dir / 'feats.scp'}")
    keep = utts - set(removed)
    if not keep:
        raise DataDirError(data_dir, None, f"no utterance would be left (all {len(utts)} "
                                           "removed); nothing changed")

    new = {name: {k: v for k, v in t.items() if k in keep} for name, t in tables.items()
           if name != "wav.scp"}
    used = ({v.split()[0] for v in new["segments"].values()} if "segments" in new else keep)
    new["wav.scp"] = {r: v for r, v in tables["wav.scp"].items() if r in used}
    new["spk2utt"] = spk2utt_from_utt2spk(new["utt2spk"])
    backup = data_dir / ".backup"
    changed = []
    for name, table in new.items():
        text = "".join(f"{k} {v}\n" for k, v in sorted(table.items()))
        old = data_dir / name
        if old.is_file() and old.read_text(encoding="utf-8") == text:
            continue
        if old.is_file():
            backup.mkdir(exist_ok=True)
            atomic_write_text(backup / name, old.read_text(encoding="utf-8"))
        atomic_write_text(old, text)
        changed.append(name)
    notes: list[str] = []
    if _folds_leave(data_dir, keep):
        folds_before = {p.relative_to(data_dir): p.read_text(encoding="utf-8")
                        for p in (data_dir / "folds").rglob("*") if p.is_file()}
        for rel, text in folds_before.items():
            atomic_write_text(backup / rel, text)
        folds, protocol = read_folds(data_dir)
        kept, dropped = restrict_folds(folds, keep)
        notes += dropped
        if kept:
            write_folds(data_dir, kept, {k: v for k, v in protocol.items() if k != "folds"})
        else:
            shutil.rmtree(data_dir / "folds")
            notes.append("no fold has both training and test utterances left: folds/ removed "
                         f"(copy in {backup / 'folds'})")
        changed.append("folds")
    if removed:
        atomic_write_text(backup / "removed",
                          "".join(f"{u}\t{r}\n" for u, r in sorted(removed.items())))
    if changed:
        notes.append(f"rewrote {', '.join(changed)}; the previous versions are in {backup}")
    problems = validate_data_dir(data_dir, check_files=False)
    if problems:
        raise DataDirError(data_dir, None, "still invalid after fixing:\n  " +
                           "\n  ".join(problems))
    return DataDirEdit(data_dir, len(keep), len(set(new["utt2spk"].values())), notes, removed)
