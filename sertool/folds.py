"""Every split of sertool: who is on which side.

- evaluation protocols (:data:`PROTOCOLS`, :func:`make_folds` and the fold makers);
- the held-out TRAINING speakers that pick a fold's model (:func:`split_heldout`);
- the speaker held-out set of speaker-recognition training (:func:`speaker_heldout`);
- the train/test leakage check (:func:`check_folds`).

Every maker returns ``(folds, protocol)``; ``datadir.write_folds`` stores them as
``folds/<k>/{train,test}`` plus ``folds/protocol.json`` with the fields ``name``,
``description``, ``speaker_independent`` (what the protocol *claims*), ``folds`` and, for
group-based protocols, ``test_groups`` (fold name -> held-out sessions / speakers).

``check_folds`` verifies the claim on the files: a speaker, or an identical recording
(same decoded samples, whatever the container), on both sides of a fold is reported. Scoring
and reports put its ``verdict`` on their first line.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sertool.datadir import (
    DataDir,
    DataDirError,
    Fold,
    is_pipe,
    read_folds,
    utterance_problem,
    wav_scp_lines,
)
from sertool.errors import SertoolError

# The protocol names the CLI offers; "auto" is the corpus's default, "none" makes no folds.
PROTOCOLS = ("auto", "leave-one-session-out", "leave-one-speaker-out", "speaker-groups",
             "speaker-kfold", "kfold-random", "random-split", "none")


class SplitError(SertoolError, ValueError):
    """A split that cannot be made from the given utterances (the message says why)."""

# ---------------------------------------------------------------------------- protocols


def _fold_name(index: int) -> str:
    return str(index + 1)


def leave_one_group_out(
    utt2group: Mapping[str, str],
    *,
    name: str,
    description: str,
    speaker_independent: bool,
    order: Sequence[str] | None = None,
) -> tuple[list[Fold], dict]:
    """One fold per group (session, speaker, ...): that group is the test set."""
    groups = list(order) if order is not None else sorted(set(utt2group.values()))
    unknown = set(utt2group.values()) - set(groups)
    if unknown:  # ``order`` comes from code, not from the user: a bug keeps its traceback
        raise ValueError(f"groups not in the fold order: {sorted(unknown)}")
    if len(groups) < 2:
        raise SplitError(f"{name}: need at least 2 groups, found {len(groups)}: {groups}")
    folds, test_groups = [], {}
    for index, group in enumerate(groups):
        test = sorted(u for u, g in utt2group.items() if g == group)
        train = sorted(u for u, g in utt2group.items() if g != group)
        if not test:  # only an ``order`` (code) can name an empty group: a bug, as above
            raise ValueError(f"{name}: group {group!r} has no utterances")
        folds.append(Fold(_fold_name(index), train, test))
        test_groups[_fold_name(index)] = [group]
    protocol = {"name": name, "description": description,
                "speaker_independent": speaker_independent, "test_groups": test_groups}
    return folds, protocol


def leave_one_session_out(
    utt2session: Mapping[str, str], order: Sequence[str] | None = None
) -> tuple[list[Fold], dict]:
    """IEMOCAP's protocol: each session (two speakers of their own) is the test set once."""
    return leave_one_group_out(
        utt2session, name="leave-one-session-out", speaker_independent=True, order=order,
        description="one fold per session; the test session's speakers never occur in training",
    )


def leave_one_speaker_out(utt2spk: Mapping[str, str]) -> tuple[list[Fold], dict]:
    return leave_one_group_out(
        utt2spk, name="leave-one-speaker-out", speaker_independent=True,
        description="one fold per speaker; the test speaker never occurs in training",
    )


def speaker_groups(
    utt2spk: Mapping[str, str], groups: Sequence[Sequence[str]], *, name: str = "speaker-groups",
    description: str | None = None,
) -> tuple[list[Fold], dict]:
    """Explicit test-speaker groups (e.g. RAVDESS's six EmoBox actor groups).

    Every speaker of the data must be in exactly one group, and every listed speaker must exist:
    a typo would otherwise silently move a speaker into every training set.
    """
    seen: dict[str, int] = {}
    for index, group in enumerate(groups):
        for spk in group:
            if spk in seen:
                raise SplitError(f"speaker {spk!r} is in groups {seen[spk] + 1} and {index + 1}")
            seen[spk] = index
    speakers = set(utt2spk.values())
    if set(seen) - speakers:
        raise SplitError(
            f"speakers in the groups but not in the data: {sorted(set(seen) - speakers)}")
    if speakers - set(seen):
        raise SplitError(f"speakers of the data in no group: {sorted(speakers - set(seen))}")
    folds, protocol = leave_one_group_out(
        {u: str(seen[s]) for u, s in utt2spk.items()}, name=name, speaker_independent=True,
        order=[str(i) for i in range(len(groups))],
        description=description or "fixed groups of test speakers; a test group's speakers "
        "never occur in training",
    )
    protocol["test_groups"] = {_fold_name(i): sorted(g) for i, g in enumerate(groups)}
    return folds, protocol


def speaker_kfold(
    utt2spk: Mapping[str, str], k: int = 5, seed: int = 0
) -> tuple[list[Fold], dict]:
    """Speakers in ``k`` test groups balanced by utterance count; speaker-independent.

    Speakers are shuffled (seeded), then, most utterances first, each joins the group with the
    fewest utterances so far: with speakers of very different sizes (2 to 80 utterances) a
    random deal can leave a test fold with a few percent of the data.
    """
    speakers = sorted(set(utt2spk.values()))
    if not 2 <= k <= len(speakers):
        raise SplitError(f"speaker k-fold needs 2 <= k <= {len(speakers)} speakers, got k={k}")
    random.Random(seed).shuffle(speakers)
    count: dict[str, int] = {}
    for spk in utt2spk.values():
        count[spk] = count.get(spk, 0) + 1
    groups: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for spk in sorted(speakers, key=lambda s: -count[s]):  # stable: ties keep the seeded order
        target = min(range(k), key=lambda g: (sizes[g], len(groups[g]), g))
        groups[target].append(spk)
        sizes[target] += count[spk]
    groups = [sorted(g) for g in groups]
    folds, protocol = speaker_groups(
        utt2spk, groups, name="speaker-kfold",
        description=f"speakers shuffled (seed {seed}) and dealt into {k} test groups balanced "
        "by utterance count; a test group's speakers never occur in training")
    protocol.update(k=k, seed=seed)
    return folds, protocol


def _stratified_shuffle(
    utt2label: Mapping[str, str], seed: int
) -> dict[str, list[str]]:
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for utt in sorted(utt2label):
        by_label.setdefault(utt2label[utt], []).append(utt)
    for utts in by_label.values():
        rng.shuffle(utts)
    return dict(sorted(by_label.items()))


def kfold_random(
    utt2label: Mapping[str, str], k: int = 5, seed: int = 0
) -> tuple[list[Fold], dict]:
    """Random k-fold CV over utterances, stratified by label (the paper's ablation).

    NOT speaker-independent: a speaker's utterances fall on both sides of every fold.
    """
    if k < 2:
        raise SplitError(f"k-fold needs k >= 2, got {k}")
    if len(utt2label) < k:
        raise SplitError(f"k-fold with k={k} needs at least {k} utterances, got {len(utt2label)}")
    assign: dict[str, int] = {}
    offset = 0
    for utts in _stratified_shuffle(utt2label, seed).values():
        # continue the round-robin across labels so fold sizes differ by at most one
        for i, utt in enumerate(utts):
            assign[utt] = (offset + i) % k
        offset = (offset + len(utts)) % k
    folds = [
        Fold(_fold_name(f), sorted(u for u, a in assign.items() if a != f),
             sorted(u for u, a in assign.items() if a == f))
        for f in range(k)
    ]
    protocol = {"name": "kfold-random", "speaker_independent": False, "k": k, "seed": seed,
                "description": f"random {k}-fold cross-validation over utterances, stratified "
                "by label; NOT speaker-independent (speakers occur on both sides)"}
    return folds, protocol


def random_split(
    utt2label: Mapping[str, str], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Fold], dict]:
    """One random utterance-level train/test split (the second paper's 80/20), per label.

    NOT speaker-independent; kept only to reproduce published numbers.
    """
    if not 0 < test_fraction < 1:
        raise SplitError(f"test fraction must be in (0, 1), got {test_fraction}")
    by_label = _stratified_shuffle(utt2label, seed)
    # test size round(N * fraction), shared among labels by largest remainder
    n_test = round(len(utt2label) * test_fraction)
    exact = {lab: len(utts) * n_test / len(utt2label) for lab, utts in by_label.items()}
    quota = {lab: int(x) for lab, x in exact.items()}
    by_remainder = sorted(exact, key=lambda lab: (quota[lab] - exact[lab], lab))
    for lab in by_remainder[: n_test - sum(quota.values())]:
        quota[lab] += 1
    test: list[str] = []
    for lab, utts in by_label.items():
        test += utts[: quota[lab]]
    test_set = set(test)
    train = sorted(u for u in utt2label if u not in test_set)
    if not test or not train:
        raise SplitError(f"random split of {len(utt2label)} utterances leaves a side empty")
    pct = round(test_fraction * 100)
    protocol = {"name": "random-split", "speaker_independent": False, "seed": seed,
                "test_fraction": test_fraction,
                "description": f"one random {100 - pct}/{pct} utterance split, stratified by "
                "label; NOT speaker-independent (speakers occur on both sides)"}
    return [Fold("1", train, sorted(test))], protocol


def make_folds(protocol: str, utt2spk: Mapping[str, str], *,
               utt2label: Mapping[str, str] | None = None,
               utt2session: Mapping[str, str] | None = None,
               speaker_groups_: Sequence[Sequence[str]] | None = None,
               k: int = 5, seed: int = 0, corpus: str = "this corpus"
               ) -> tuple[list[Fold], dict] | None:
    """Folds of ``protocol`` (one of :data:`PROTOCOLS` but ``auto``); ``None`` for ``none``.

    ``utt2session`` is needed by leave-one-session-out, ``speaker_groups_`` by speaker-groups,
    ``utt2label`` (every utterance) by the two label-stratified random protocols.
    """
    utt2label = utt2label or {}
    if protocol == "none":
        return None
    if protocol == "leave-one-session-out":
        if utt2session is None:
            raise SplitError(f"{corpus} has no sessions; use leave-one-speaker-out or "
                             "speaker-groups")
        return leave_one_session_out(utt2session)
    if protocol == "leave-one-speaker-out":
        return leave_one_speaker_out(utt2spk)
    if protocol == "speaker-groups":
        if speaker_groups_ is None:
            raise SplitError(f"{corpus} defines no speaker groups; use speaker-kfold")
        return speaker_groups(utt2spk, speaker_groups_)
    if protocol == "speaker-kfold":
        return speaker_kfold(utt2spk, k=min(k, len(set(utt2spk.values()))), seed=seed)
    if protocol in ("kfold-random", "random-split"):
        if len(utt2label) != len(utt2spk):
            raise SplitError(f"{protocol} is stratified by label; {corpus} has no labels")
        if protocol == "kfold-random":
            return kfold_random(utt2label, k=k, seed=seed)
        return random_split(utt2label, test_fraction=0.2, seed=seed)
    raise SplitError(f"unknown protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")


# ---------------------------------------------------------------------------- held-out sets


@dataclass
class HeldoutSplit:
    """A fold's training list split into training and held-out (model selection) parts."""

    train: list[str]
    heldout: list[str]
    method: str  # "speakers" or "utterances"
    heldout_speakers: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict:
        return {"method": self.method, "heldout_speakers": self.heldout_speakers,
                "n_train": len(self.train), "n_heldout": len(self.heldout), "note": self.note,
                "heldout": sorted(self.heldout)}


def fold_seed(seed: int, name: str) -> int:
    """A 64-bit seed of (seed, fold name): each fold draws independently of the others."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def split_heldout(train_utts: Sequence[str], utt2spk: Mapping[str, str],
                  utt2label: Mapping[str, str], *, n_speakers: int, fraction: float,
                  seed: int, fold: str) -> HeldoutSplit:
    """Split a fold's training list into training and held-out (model selection) parts.

    Only ``train_utts`` are used: the test side is never looked at. Whole speakers are held out
    when the fold has at least ``n_speakers + 1`` training speakers; among the seeded draws,
    the first whose held-out set covers every label of the training list is preferred (UA
    needs every class). Otherwise a label-stratified ``fraction`` of the utterances is held out.
    """
    rng = random.Random(fold_seed(seed, fold))
    utts = sorted(train_utts)
    speakers = sorted({utt2spk[u] for u in utts})
    labels = {utt2label[u] for u in utts}
    if n_speakers >= 1 and len(speakers) > n_speakers:
        by_spk: dict[str, list[str]] = {}
        for utt in utts:
            by_spk.setdefault(utt2spk[utt], []).append(utt)
        chosen = None
        for _ in range(50):
            draw = sorted(rng.sample(speakers, n_speakers))
            if {utt2label[u] for s in draw for u in by_spk[s]} == labels:
                chosen = draw
                break
            chosen = chosen or draw
        held = set(chosen)
        return HeldoutSplit([u for u in utts if utt2spk[u] not in held],
                            [u for u in utts if utt2spk[u] in held], "speakers", chosen)
    by_label: dict[str, list[str]] = {}
    for utt in utts:
        by_label.setdefault(utt2label[utt], []).append(utt)
    heldout: set[str] = set()
    for label in sorted(by_label):
        group = by_label[label]
        n = min(len(group) - 1, max(1, round(fraction * len(group)))) if len(group) > 1 else 0
        heldout.update(rng.sample(group, n))
    if not heldout:
        raise SplitError(f"fold {fold}: {len(utts)} training utterances are too few to hold "
                         "any out for model selection")
    note = (f"only {len(speakers)} training speaker(s): held out {len(heldout)} training "
            "utterances stratified by label (speakers shared with training, never with test)")
    return HeldoutSplit([u for u in utts if u not in heldout], sorted(heldout), "utterances",
                        [], note)


def inner_speaker_folds(train_utts: Sequence[str], utt2spk: Mapping[str, str], *, k: int,
                        seed: int) -> list[tuple[list[str], list[str]]]:
    """(inner training, inner validation) lists of ``min(k, speakers)`` speaker groups of a
    fold's TRAINING utterances (balanced by utterance count, seeded), for model selection by
    cross-validation: every training speaker validates once, no test speaker is ever used."""
    utts = sorted(train_utts)
    sub = {u: utt2spk[u] for u in utts}
    n_spk = len(set(sub.values()))
    if n_spk < 2:
        raise SplitError(f"{len(utts)} training utterances of {n_spk} speaker(s): inner "
                         "cross-validation needs at least 2 training speakers")
    folds, _ = speaker_kfold(sub, k=min(k, n_spk), seed=seed)
    return [(sorted(f.train), sorted(f.test)) for f in folds]


def speaker_heldout(utts: Sequence[str], utt2spk: Mapping[str, str],
                    num_frames: Mapping[str, int], fraction: float, seed: int,
                    min_frames: int = 100) -> tuple[list[tuple[str, int, int]],
                                                    list[tuple[str, int, int]]]:
    """Split into (train regions, held-out regions) per speaker.

    A speaker with several utterances gives round(fraction * n) (at least one) of them,
    drawn at random, to the held-out set. A speaker with a single utterance (LibriSpeech
    train-clean-100 here) cannot: its utterance is cut in time, the last ``fraction`` of its
    frames (at least ``min_frames``) held out, the rest trained on - held-out chunks are then
    other stretches of the same recording, not other recordings. ``fraction`` 0: no held-out.
    """
    rng = np.random.default_rng(seed)
    by_spk: dict[str, list[str]] = {}
    for u in sorted(utts):
        by_spk.setdefault(utt2spk[u], []).append(u)
    train, held = [], []
    for spk in sorted(by_spk):
        mine = by_spk[spk]
        if fraction <= 0:
            train += [(u, 0, num_frames[u]) for u in mine]
        elif len(mine) >= 2:
            n_held = min(len(mine) - 1, max(1, round(fraction * len(mine))))
            chosen = set(rng.choice(len(mine), size=n_held, replace=False).tolist())
            for i, u in enumerate(mine):
                (held if i in chosen else train).append((u, 0, num_frames[u]))
        else:
            u, n = mine[0], num_frames[mine[0]]
            cut = n - max(min_frames, int(round(fraction * n)))
            if cut < min_frames:  # too short to split: train only
                train.append((u, 0, n))
            else:
                train.append((u, 0, cut))
                held.append((u, cut, n))
    return train, held


# ---------------------------------------------------------------------------- the check


@dataclass
class FoldResult:
    name: str
    n_train: int
    n_test: int
    shared_speakers: list[str] = field(default_factory=list)
    duplicate_audio: list[tuple[str, str]] = field(default_factory=list)  # (train, test)

    @property
    def clean(self) -> bool:
        return not self.shared_speakers and not self.duplicate_audio


@dataclass
class FoldCheck:
    """What ``check_folds`` found. ``verdict`` is one line for the top of a report."""

    data_dir: str
    protocol: dict
    folds: list[FoldResult]
    audio_checked: bool
    # utterances whose audio was not read -> why ("DATA/wav.scp:LINE: utterance U (AUDIO): ...")
    unhashed: dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return all(f.clean for f in self.folds)

    @property
    def verdict(self) -> str:
        n = len(self.folds)
        spk_folds = [f for f in self.folds if f.shared_speakers]
        dup_folds = [f for f in self.folds if f.duplicate_audio]
        claim = self.protocol.get("name", "?")
        if not spk_folds and not dup_folds:
            what = "no speaker" + (" and no identical recording" if self.audio_checked else "")
            tail = "" if self.audio_checked else " (audio not compared)"
            if self.unhashed:
                tail += f" ({len(self.unhashed)} utterances not readable, not compared)"
            return f"SPEAKER-INDEPENDENT: {what} on both sides of any of {n} folds{tail}"
        parts = []
        if spk_folds:
            worst = max(spk_folds, key=lambda f: len(f.shared_speakers))
            shown = ", ".join(worst.shared_speakers[:3])
            more = ", ..." if len(worst.shared_speakers) > 3 else ""
            parts.append(f"{len(worst.shared_speakers)} speakers on both sides of fold "
                         f"{worst.name} ({shown}{more})"
                         + (f", speakers shared in {len(spk_folds)} of {n} folds"
                            if len(spk_folds) > 1 else ""))
        if dup_folds:
            pairs = sum(len(f.duplicate_audio) for f in dup_folds)
            train_utt, test_utt = dup_folds[0].duplicate_audio[0]
            parts.append(f"{pairs} identical recordings on both sides in {len(dup_folds)} of "
                         f"{n} folds (e.g. fold {dup_folds[0].name}: {train_utt} = {test_utt})")
        head = "NOT SPEAKER-INDEPENDENT" if spk_folds else "LEAKING (identical audio)"
        claimed = " claims speaker-independent!" if self.protocol.get("speaker_independent") \
            else ""
        return f"{head}: " + "; ".join(parts) + f" [protocol {claim}{claimed}]"

    def to_dict(self) -> dict:
        return {
            "data_dir": self.data_dir,
            "verdict": self.verdict,
            "clean": self.clean,
            "protocol": self.protocol,
            "audio_checked": self.audio_checked,
            "unhashed": sorted(self.unhashed),
            "unhashed_reasons": dict(sorted(self.unhashed.items())),
            "folds": [{**asdict(f), "clean": f.clean,
                       "duplicate_audio": [list(p) for p in f.duplicate_audio]}
                      for f in self.folds],
        }


_CACHE_NAME = ".audio_hashes.json"


def audio_hash(
    path: str | os.PathLike, start: float | None = None, end: float | None = None
) -> str:
    """SHA-1 of the decoded 16-bit samples (plus rate and channels) of a file or segment.

    Hashing samples rather than bytes makes a ``.wav`` and a ``.flac`` of the same audio equal.
    """
    import numpy as np

    from sertool.frontend.audio import open_audio, span

    with open_audio(str(path)) as snd:  # the checks of every reader: a FIFO, a damaged header
        rate, channels = snd.samplerate, snd.channels
        first, last = span(snd, str(path), start, end)
        snd.seek(first)
        samples = snd.read(last - first, dtype="int16", always_2d=True)
    digest = hashlib.sha1(f"{rate}:{channels}:".encode())
    digest.update(np.ascontiguousarray(samples).tobytes())
    return digest.hexdigest()


def hash_utterances(data: DataDir, utts: Iterable[str], cache_path: Path | None = None,
                    progress: bool = True) -> tuple[dict[str, str], dict[str, str]]:
    """Content hashes of utterances, cached by (path, size, mtime, start, end), and the
    utterances that could not be hashed -> why, naming their wav.scp line (see
    :func:`sertool.datadir.utterance_problem`)."""
    from sertool.frontend.audio import AudioError, file_problem
    from sertool.progress import progress_bar

    cache: dict[str, list] = {}
    if cache_path is not None and cache_path.is_file():
        try:
            cache = json.loads(cache_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cache = {}  # a broken cache is only a cache: recompute
    hashes: dict[str, str] = {}
    unhashed: dict[str, str] = {}
    lines: dict[str, str] | None = None  # utt -> DATA/wav.scp:LINE, read at the first failure
    changed = False
    utts = sorted(utts)

    def cannot(utt: str, audio: str, reason: str) -> None:
        nonlocal lines
        if lines is None:
            lines = wav_scp_lines(data.path, missing_ok=True)
        unhashed[utt] = utterance_problem(lines.get(utt, ""), utt, audio, reason)

    for utt in progress_bar(utts, desc="hashing audio", unit="utt",
                            disable=not progress or len(utts) < 200):
        audio, start, end = data.audio_of(utt)
        if is_pipe(audio):
            # a check runs no command a (downloaded) data directory names
            cannot(utt, audio, "a pipe command: not run for the audio comparison")
            continue
        path = Path(audio)  # relative wav.scp paths: made absolute by DataDir.load
        if problem := file_problem(path):  # stat only: a FIFO never blocks the check
            cannot(utt, audio, problem)
            continue
        try:
            stat = path.stat()
        except OSError as err:
            cannot(utt, audio, f"cannot read the audio file ({err.strerror or err})")
            continue
        key = f"{path.resolve()}|{start}|{end}"
        entry = cache.get(key)
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            hashes[utt] = entry[2]
            continue
        try:
            value = audio_hash(path, start, end)
        except AudioError as err:  # its message is "AUDIO: reason"
            cannot(utt, audio, str(err).removeprefix(f"{path}: "))
            continue
        except Exception as err:  # noqa: BLE001 - unreadable audio is reported, not fatal here
            cannot(utt, audio, f"cannot decode audio ({type(err).__name__}: {err})")
            continue
        hashes[utt] = value
        cache[key] = [stat.st_size, stat.st_mtime_ns, value]
        changed = True
    if changed and cache_path is not None:
        from sertool.io_utils import atomic_write_json

        try:
            atomic_write_json(cache_path, cache)
        except OSError:
            pass  # read-only data directory: the check still works, only slower next time
    return hashes, unhashed


def check_folds(data_dir: str | os.PathLike, *, audio: bool = True,
                progress: bool = True) -> FoldCheck:
    """Report speakers and identical recordings on both sides of each fold of ``data_dir``."""
    data_dir = Path(data_dir)
    data = DataDir.load(data_dir)
    folds, protocol = read_folds(data_dir)
    used = sorted({u for f in folds for u in (*f.train, *f.test)})
    missing = [u for u in used if u not in data.utt2spk]
    if missing:  # name the first list and line that has one
        fold, part, line = next((f, part, i) for f in folds for part in ("train", "test")
                                for i, u in enumerate(getattr(f, part), start=1)
                                if u not in data.utt2spk)
        raise DataDirError(data_dir / "folds" / fold.name / part, line,
                           f"{getattr(fold, part)[line - 1]!r} is not in utt2spk "
                           f"({len(missing)} fold utterance(s) are not)")
    hashes: dict[str, str] = {}
    unhashed: dict[str, str] = {}
    if audio:
        hashes, unhashed = hash_utterances(data, used, data_dir / _CACHE_NAME, progress)
    results = []
    for fold in folds:
        train_spk = {data.utt2spk[u] for u in fold.train}
        shared = sorted(train_spk & {data.utt2spk[u] for u in fold.test})
        by_hash: dict[str, list[str]] = {}
        for utt in fold.train:
            if utt in hashes:
                by_hash.setdefault(hashes[utt], []).append(utt)
        dups = sorted((tr, te) for te in fold.test if te in hashes
                      for tr in by_hash.get(hashes[te], []))
        results.append(FoldResult(fold.name, len(fold.train), len(fold.test), shared, dups))
    return FoldCheck(str(data_dir), protocol, results, audio, unhashed)


def format_check(check: FoldCheck) -> str:
    """Human-readable report: the verdict line first, then one block per fold."""
    lines = [check.verdict,
             f"protocol: {check.protocol.get('name', '?')} (claims speaker-independent: "
             f"{check.protocol.get('speaker_independent', '?')})"]
    for fold in check.folds:
        status = "clean" if fold.clean else "LEAK"
        lines.append(f"fold {fold.name}: train {fold.n_train}, test {fold.n_test}: {status}")
        if fold.shared_speakers:
            lines.append(f"  {len(fold.shared_speakers)} speakers on both sides: "
                         + " ".join(fold.shared_speakers))
        for train_utt, test_utt in fold.duplicate_audio[:20]:
            lines.append(f"  identical audio: train {train_utt} = test {test_utt}")
        if len(fold.duplicate_audio) > 20:
            lines.append(f"  ... and {len(fold.duplicate_audio) - 20} more identical pairs")
    if check.unhashed:
        lines.append(f"{len(check.unhashed)} utterances could not be read for the audio "
                     "comparison (not compared):")
        reasons = [check.unhashed[utt] for utt in sorted(check.unhashed)]
        lines += [f"  {why}" for why in reasons[:20]]
        if len(reasons) > 20:
            lines.append(f"  ... and {len(reasons) - 20} more (check-folds --json lists all)")
    return "\n".join(lines)
