"""Corpus preparation: a corpus as distributed -> a validated Kaldi data directory with folds.

``prepare(corpus, src, data_dir, ...)`` scans the corpus with its module (one per corpus,
listed in ``CORPORA``), writes ``wav.scp`` (absolute paths), ``utt2spk``, ``spk2utt``,
``utt2emo`` (emotion corpora), ``utt2conv`` (IEMOCAP dialogs), ``folds/`` with
``protocol.json``, ``skipped`` (every file left out, with the reason) and ``prepare.json``
(counts and options), validates the result and only then moves it into place.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from sertool import folds as F
from sertool.corpora import (
    cremad,
    emodb,
    emovo,
    iemocap,
    librispeech,
    manifest,
    ravdess,
    savee,
    tess,
    voxceleb,
)
from sertool.corpora.base import PrepareError, Scan, Skip, Utt
from sertool.datadir import DataDir, Fold, validate_data_dir, write_folds
from sertool.faults import kill_point
from sertool.io_utils import (
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    refuse_output_over_inputs,
)
from sertool.labels import read_label_map

CORPORA: dict[str, ModuleType] = {
    m.NAME: m
    for m in (iemocap, voxceleb, librispeech, ravdess, emodb, cremad, tess, savee, emovo, manifest)
}
# other spellings people type
ALIASES = {"voxceleb1": "voxceleb", "voxceleb2": "voxceleb", "crema-d": "cremad",
           "emo-db": "emodb", "csv": "manifest"}

__all__ = ["CORPORA", "PrepareError", "PrepareResult", "Scan", "Skip", "Utt",
           "corpus_module", "make_folds", "prepare"]


@dataclass
class PrepareResult:
    data_dir: Path
    corpus: str
    n_utts: int
    n_speakers: int
    labels: dict[str, int]
    skipped: list[Skip]
    excluded: dict[str, int]
    protocol: dict | None
    fold_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.data_dir}: {self.corpus}: {self.n_utts} utterances, "
                 f"{self.n_speakers} speakers"]
        if self.labels:
            lines.append("labels: " + ", ".join(f"{k} {v}" for k, v in self.labels.items()))
        if self.excluded:
            lines.append("excluded by the class map: "
                         + ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items())))
        if self.protocol:
            sizes = " ".join(f"{n}:{tr}/{te}" for n, (tr, te) in self.fold_sizes.items())
            lines.append(f"folds: {self.protocol['name']} (speaker-independent: "
                         f"{self.protocol['speaker_independent']}) train/test {sizes}")
        if self.skipped:
            lines.append(f"SKIPPED {len(self.skipped)} files, listed in "
                         f"{self.data_dir / 'skipped'}:")
            lines += [f"  {s.path}: {s.reason}" for s in self.skipped[:10]]
            if len(self.skipped) > 10:
                lines.append(f"  ... and {len(self.skipped) - 10} more")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def corpus_module(name: str) -> ModuleType:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in CORPORA:
        raise PrepareError(f"unknown corpus {name!r}; supported: {', '.join(sorted(CORPORA))}")
    return CORPORA[key]


def make_folds(
    module: ModuleType, utts: list[Utt], protocol: str, *, k: int = 5, seed: int = 0
) -> tuple[list[Fold], dict] | None:
    """Folds of ``protocol`` for the scanned utterances (``None`` for ``none``): the corpus's
    own default for ``auto`` and its published speaker groups; the splits are sertool.folds'."""
    n_spk = len({u.spk for u in utts})
    if protocol == "auto":
        protocol = module.DEFAULT_PROTOCOL
        if protocol == "auto":  # generic manifest: one fold per speaker while that stays small
            protocol = "leave-one-speaker-out" if n_spk <= 10 else "speaker-kfold"
    utt2spk = {u.utt: u.spk for u in utts}
    groups = getattr(module, "SPEAKER_GROUPS", None)
    absent: list[str] = []
    if groups is not None:  # a partial copy of the corpus: the published groups, minus absent
        present = set(utt2spk.values())
        absent = sorted({s for g in groups for s in g} - present)
        groups = [kept for g in groups if (kept := [s for s in g if s in present])]
    sessions = ({u.utt: u.group for u in utts} if all(u.group is not None for u in utts)
                else None)
    try:
        made = F.make_folds(protocol, utt2spk,
                            utt2label={u.utt: u.label for u in utts if u.label is not None},
                            utt2session=sessions, speaker_groups_=groups, k=k, seed=seed,
                            corpus=module.NAME)
    except F.SplitError as err:
        raise PrepareError(str(err)) from err
    if made is not None and protocol == "speaker-groups":
        made[1]["description"] = getattr(module, "SPEAKER_GROUPS_DESCRIPTION",
                                         made[1]["description"])
        if absent:
            made[1]["note"] = (f"{len(absent)} speakers of the published groups are absent: "
                               + " ".join(absent))
    return made


def prepare(
    corpus: str,
    src: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    exp: int = 1,
    protocol: str = "auto",
    k: int = 5,
    seed: int = 0,
    wav_dir: str | os.PathLike | None = None,
    strict: bool = False,
    progress: bool = True,
    labels: str | os.PathLike | None = None,
) -> PrepareResult:
    """Prepare ``corpus`` found at ``src`` into ``data_dir`` (replaced as a whole on success).

    ``labels``: a ``--labels`` file (sertool.labels) mapping the manifest's emotion names to
    class codes; for the other corpora it maps their codes (e.g. ``cal neu`` merges calm into
    neutral).
    """
    module = corpus_module(corpus)
    label_map = read_label_map(labels)
    src = Path(src).expanduser().resolve()
    data_dir = Path(data_dir).expanduser().resolve()
    if not src.exists():
        raise PrepareError(f"{src}: not found")
    if src.is_dir() and not any(src.iterdir()):
        raise PrepareError(f"{src}: empty directory (expected layout: {module.LAYOUT})")
    refuse_output_over_inputs(data_dir, [src])  # the corpus is never written
    wav_dir = Path(wav_dir) if wav_dir else data_dir.with_name(data_dir.name + "_wav")
    scan: Scan = module.scan(src, exp=exp, wav_dir=wav_dir.resolve(), progress=progress,
                             labels=label_map)
    if labels is not None and module is not manifest:  # the manifest maps with its lines
        for u in scan.utts:
            u.label = label_map.code_of(u.label) if u.label is not None else None
    _drop_unreadable(scan, progress)
    if not scan.utts:
        detail = f"; {len(scan.skipped)} files skipped, e.g. {scan.skipped[0].path}: " \
                 f"{scan.skipped[0].reason}" if scan.skipped else ""
        raise PrepareError(f"{src}: no utterances of {module.NAME} found "
                           f"(expected layout: {module.LAYOUT}){detail}")
    if strict and scan.skipped:
        raise PrepareError(f"{len(scan.skipped)} files skipped (--strict), e.g. "
                           f"{scan.skipped[0].path}: {scan.skipped[0].reason}")
    _check_ids(scan.utts, getattr(module, "DUPLICATE_ID_HINT", None))
    emotion = all(u.label is not None for u in scan.utts)
    if module.EMOTION and module is not manifest and not emotion:
        raise PrepareError(f"{module.NAME}: some utterances have no label")
    folds = make_folds(module, scan.utts, protocol, k=k, seed=seed)

    _check_replaceable(data_dir)
    with atomic_dir(data_dir) as tmp:
        data = DataDir(
            wav_scp={u.utt: str(Path(u.path).resolve()) for u in scan.utts},
            utt2spk={u.utt: u.spk for u in scan.utts},
            utt2emo={u.utt: u.label for u in scan.utts} if emotion else None,
            utt2conv={u.utt: u.conv for u in scan.utts} if all(u.conv for u in scan.utts)
            else None,
        )
        data.save(tmp)
        kill_point("prepare:after-data-files")  # a half-made data dir, still temporary
        if folds is not None:
            write_folds(tmp, *folds)
        skipped = sorted(scan.skipped, key=lambda s: s.path)
        if skipped:
            atomic_write_text(tmp / "skipped",
                              "".join(f"{s.path}\t{s.reason}\n" for s in skipped))
        result = PrepareResult(
            data_dir=data_dir, corpus=module.NAME, n_utts=len(scan.utts),
            n_speakers=len(set(data.utt2spk.values())),
            labels=dict(sorted(Counter(u.label for u in scan.utts if emotion).items())),
            skipped=skipped, excluded=dict(scan.excluded),
            protocol={**folds[1], "folds": [f.name for f in folds[0]]} if folds else None,
            fold_sizes={f.name: (len(f.train), len(f.test)) for f in folds[0]} if folds else {},
        )
        result.notes += _expected_counts(module, result, exp)
        atomic_write_json(tmp / "prepare.json", {
            "corpus": module.NAME, "src": str(src), "exp": exp if module is iemocap else None,
            "protocol": result.protocol, "n_utts": result.n_utts,
            "n_speakers": result.n_speakers, "labels": result.labels,
            "excluded": result.excluded, "n_skipped": len(skipped), "notes": result.notes,
            **({"label_map": label_map.to_json()} if labels is not None else {})})
        problems = validate_data_dir(tmp, require_emotion=emotion, labels=label_map)
        if problems:  # a bug in a corpus module, not a user error; say everything
            raise PrepareError("prepared directory is invalid:\n  " + "\n  ".join(problems))
    return result


def _drop_unreadable(scan: Scan, progress: bool) -> None:
    """Read each file's header: empty or unreadable audio becomes a listed skip now rather than
    a failure in feature extraction later (CREMA-D, for one, has a zero-length file)."""
    import soundfile as sf

    from sertool.progress import progress_bar

    kept = []
    for utt in progress_bar(scan.utts, desc="checking audio headers", unit="file",
                            disable=not progress or len(scan.utts) < 2000):
        try:
            frames = sf.info(str(utt.path)).frames
        except (RuntimeError, sf.LibsndfileError) as err:
            scan.skip(utt.path, f"unreadable audio: {err}")
            continue
        if frames <= 0:
            scan.skip(utt.path, "empty audio (0 samples)")
            continue
        kept.append(utt)
    scan.utts = kept


def _check_ids(utts: list[Utt], hint: str | None = None) -> None:
    """Utterance ids are unique and start with their speaker; a collision names both sources
    (with the line, where a list gave them) and the corpus module's ``hint`` for the fix."""
    seen: dict[str, Utt] = {}
    for u in utts:
        if u.utt in seen:
            first = seen[u.utt]
            raise PrepareError(f"{_source(u)}: utterance id {u.utt!r} also made from "
                               f"{_source(first)}" + (f"; {hint}" if hint else ""))
        if not u.utt.startswith(u.spk):
            raise PrepareError(f"{u.path}: utterance id {u.utt!r} does not start with its "
                               f"speaker {u.spk!r}")
        seen[u.utt] = u


def _source(u: Utt) -> str:
    return f"{u.where} ({u.path})" if u.where else str(u.path)


# What prepare writes (and so may replace); check-folds keeps its audio-hash cache beside them.
PREPARE_OUTPUTS = {"wav.scp", "utt2spk", "spk2utt", "utt2emo", "utt2conv", "segments", "folds",
                   "prepare.json", "skipped", ".audio_hashes.json",
                   ".prepare_args",  # local/prepare_data.sh's record of its arguments
                   ".backup"}  # what fix-data-dir removed


def _check_replaceable(data_dir: Path) -> None:
    """prepare writes into a new, empty or sertool-prepared directory only: it replaces the
    whole directory, so anything else in it (a project folder, exp/, the user's files) would be
    lost. Refuse, naming what is there."""
    if not data_dir.exists():
        return
    if not data_dir.is_dir():
        raise PrepareError(f"{data_dir}: exists and is not a directory")
    present = sorted(p.name + ("/" if p.is_dir() else "") for p in data_dir.iterdir())
    if not present:
        return
    if not (data_dir / "prepare.json").is_file():
        raise PrepareError(f"{data_dir}: not empty and not made by sertool prepare (it holds "
                           f"{_listing(present)}); give a new or empty DATA_DIR")
    foreign = [n for n in present if n.rstrip("/") not in PREPARE_OUTPUTS]
    if foreign:
        raise PrepareError(f"{data_dir}: made by sertool prepare but also holds "
                           f"{_listing(foreign)}, which a rerun would delete; move them out or "
                           "give another DATA_DIR")


def _listing(names: list[str]) -> str:
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def _expected_counts(module: ModuleType, result: PrepareResult, exp: int) -> list[str]:
    """Compare a complete real corpus with its published counts."""
    notes = []
    # the full release has 10039 evaluated turns; smaller trees (tests, the demo) get no note
    if module is iemocap and result.n_utts + sum(result.excluded.values()) >= 10000:
        want = iemocap.EXPECTED[exp]
        verdict = "matches" if result.n_utts == want else "DIFFERS FROM"
        notes.append(f"{result.n_utts} utterances {verdict} the paper's Exp {exp} count {want}")
        if exp == 3 and result.protocol and result.protocol["name"] == "leave-one-session-out":
            got = {result.protocol["test_groups"][f][0]: te
                   for f, (_, te) in result.fold_sizes.items()}
            if got != iemocap.EXPECTED_TEST_SESSIONS_EXP3:
                notes.append(f"test sessions hold {got}; the paper's are "
                             f"{iemocap.EXPECTED_TEST_SESSIONS_EXP3}")
    if module is ravdess and result.n_speakers == 24 and result.n_utts != 1440:
        notes.append(f"{result.n_utts} utterances; the full RAVDESS speech set has 1440")
    return notes
