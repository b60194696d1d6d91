"""Kaldi data directories: read, write, validate, subset, and evaluation folds.

A data directory holds one ``key value`` table per file, sorted under ``LC_ALL=C``:

``wav.scp``   recording id -> audio path (or a Kaldi pipe command ending in ``|``)
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sertool.errors import SertoolError
from sertool.io_utils import atomic_open, atomic_write_json

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


def read_table(path: str | os.PathLike, *, fields: int | None = None) -> dict[str, str]:
    """Read a ``key value`` file into an ordered dict (value = rest of the line).

    ``fields`` fixes the number of whitespace-separated fields after the key (e.g. 3 for
    segments). Blank lines, empty keys, missing values and duplicate keys are errors
    that name the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataDirError(path, None, "file not found")
    table: dict[str, str] = {}
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.rstrip("\n").rstrip("\r")
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
    """Read a file with one token per line (fold lists)."""
    path = Path(path)
    if not path.is_file():
        raise DataDirError(path, None, "file not found")
    items = []
    with open(path, encoding="utf-8") as handle:
        for lineno, raw in enumerate(handle, start=1):
            token = raw.strip()
            if not token or len(token.split()) != 1:
                raise DataDirError(path, lineno, f"expected one utterance id, got {raw.strip()!r}")
            items.append(token)
    return items


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
        """(audio path or pipe, start s, end s) of an utterance; times None without segments."""
        if self.segments is not None:
            seg = self.segments[utt]
            return self.wav_scp[seg.recording], seg.start, seg.end
        return self.wav_scp[utt], None, None

    @classmethod
    def load(cls, path: str | os.PathLike) -> DataDir:
        path = Path(path)
        if not path.is_dir():
            raise DataDirError(path, None, "data directory not found")
        wav_scp = read_table(path / "wav.scp")
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
        if not name or name != Path(name).name or any(c.isspace() for c in name):
            raise ValueError(f"fold name {name!r} must be one path component without spaces")
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
    with open(proto_path, encoding="utf-8") as handle:
        protocol = json.load(handle)
    folds = [
        Fold(name, read_list(root / name / "train"), read_list(root / name / "test"))
        for name in protocol["folds"]
    ]
    return folds, protocol


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
    path: str | os.PathLike, *, check_files: bool = True, require_emotion: bool = False
) -> list[str]:
    """Check a data directory as Kaldi's validate_data_dir.sh does; return the problems.

    Each problem is one line ``file:line: message``. An empty list means valid.
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

    if check_files:
        for rec, value in wav.items():
            if value.endswith("|"):
                continue  # a pipe command; it is checked when it runs
            file = Path(value)
            if not file.is_absolute():
                file = path / file
            if not file.is_file():
                problems.append(f"{path / 'wav.scp'}:{_line_of(path / 'wav.scp', rec)}: "
                                f"audio file of {rec!r} not found: {value}")

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
    if not folds:
        problems.append(f"{path / 'folds' / 'protocol.json'}: lists no folds")
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
