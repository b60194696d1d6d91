"""IEMOCAP full release: ``Session{1..5}/sentences/wav/<dialog>/<utt>.wav`` and
``Session{n}/dialog/EmoEvaluation/<dialog>.txt``.

Each turn's summary line in EmoEvaluation reads
``[start - end]<TAB>utt_id<TAB>label<TAB>[V, A, D]``; ``label`` is the consensus of the
annotators (at least two of three agree) or ``xxx`` when there is none. The lines below it
(``C-E1:``, ``A-E2:``, ...) are the individual annotations and are not used.

Class maps (Padi et al. 2021): Exp 1 ang/hap/neu/sad; Exp 2 ang/exc/neu/sad; Exp 3 ang,
hap (= hap + exc), neu, sad. Speaker = session + gender of the *utterance* (the F/M of its
last field: ``Ses01F_impro01_M003`` is spoken by ``Ses01M``), 10 speakers; utterance ids that
do not start with their speaker are re-keyed as ``<spk>-<native id>``. Default folds:
leave-one-session-out. ``utt2conv`` maps each utterance to its dialog.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertool.corpora.base import AUDIO_EXTENSIONS, PrepareError, Scan, Utt, is_hidden

NAME = "iemocap"
EMOTION = True
DEFAULT_PROTOCOL = "leave-one-session-out"
LAYOUT = ("[IEMOCAP_full_release/]Session{1..5}/sentences/wav/<dialog>/<utt>.wav and "
          "Session{n}/dialog/EmoEvaluation/<dialog>.txt")
KNOWN_LABELS = ("ang", "hap", "exc", "neu", "sad", "fru", "sur", "fea", "dis", "oth", "xxx")
CLASS_MAPS = {
    1: {"ang": "ang", "hap": "hap", "neu": "neu", "sad": "sad"},
    2: {"ang": "ang", "exc": "exc", "neu": "neu", "sad": "sad"},
    3: {"ang": "ang", "hap": "hap", "exc": "hap", "neu": "neu", "sad": "sad"},
}
# Counts on the real corpus (DESIGN.md, the paper): prepare warns when a full corpus differs.
EXPECTED = {1: 4490, 2: 4936, 3: 5531}
EXPECTED_TEST_SESSIONS_EXP3 = {"Session1": 1085, "Session2": 1023, "Session3": 1151,
                               "Session4": 1031, "Session5": 1241}

_SUMMARY = re.compile(r"^\[(\d+(?:\.\d+)?) - (\d+(?:\.\d+)?)\]\t(\S+)\t(\S+)\t\[([^\]]*)\]$")
_UTT = re.compile(r"^(Ses\d\d)[FM]_[A-Za-z0-9_]+_([FM])\d{3}$")


def speaker_of(utt: str) -> str | None:
    """``Ses01F_impro01_M003`` -> ``Ses01M`` (session + gender of the utterance)."""
    match = _UTT.match(utt)
    return f"{match.group(1)}{match.group(2)}" if match else None


def read_emo_evaluation(path: Path, scan: Scan) -> dict[str, tuple[str | None, int]]:
    """Summary lines of one EmoEvaluation file: utt -> (label, line number).

    The label is None for a line already listed as a skip (unknown label).

    A line that starts like a summary line (``[``) but does not parse (e.g. a file cut off in
    the middle) is a listed skip with its line; annotator lines are ignored.
    """
    labels: dict[str, tuple[str | None, int]] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.startswith("["):
                continue  # header (%), blank, and the per-annotator lines C-E1:, A-E2:, ...
            match = _SUMMARY.match(line)
            if not match:
                scan.skip(f"{path}:{lineno}", f"malformed summary line (truncated file?): "
                          f"{line[:60]!r}")
                continue
            _, _, utt, label, _ = match.groups()
            if label not in KNOWN_LABELS:
                scan.skip(f"{path}:{lineno}", f"unknown label {label!r} for {utt} "
                          f"(known: {' '.join(KNOWN_LABELS)})")
                labels[utt] = (None, lineno)  # listed once, here; its audio is not listed again
                continue
            if utt in labels:
                scan.skip(f"{path}:{lineno}", f"{utt} already labelled on line {labels[utt][1]}")
                continue
            labels[utt] = (label, lineno)
    return labels


def find_root(src: Path) -> Path:
    for candidate in (src, src / "IEMOCAP_full_release", src / "IEMOCAP"):
        if any((candidate / f"Session{n}").is_dir() for n in range(1, 6)):
            return candidate
    raise PrepareError(f"{src}: no Session1..Session5 directories (expected layout: {LAYOUT})")


def scan(src: Path, *, exp: int = 1, **_options) -> Scan:
    if exp not in CLASS_MAPS:
        raise PrepareError(f"IEMOCAP --exp must be 1, 2 or 3, got {exp}")
    class_map = CLASS_MAPS[exp]
    root = find_root(src)
    scan = Scan()
    for session in sorted(p for p in root.glob("Session*") if p.is_dir()):
        wav_root = session / "sentences" / "wav"
        eval_root = session / "dialog" / "EmoEvaluation"
        if not wav_root.is_dir():
            raise PrepareError(f"{wav_root}: missing (expected layout: {LAYOUT})")
        dialogs = {p.name for p in wav_root.iterdir() if p.is_dir()}
        for orphan in sorted(eval_root.glob("*.txt")) if eval_root.is_dir() else []:
            if orphan.stem not in dialogs and not is_hidden(orphan):
                scan.skip(orphan, f"labels without audio: no directory {wav_root / orphan.stem}")
        for dialog in sorted(p for p in wav_root.iterdir() if p.is_dir()):
            eval_file = eval_root / f"{dialog.name}.txt"
            audio = {}
            for path in sorted(dialog.iterdir()):
                if path.suffix.lower() not in AUDIO_EXTENSIONS:
                    continue
                if is_hidden(path):
                    scan.skip(path, "hidden file (e.g. a macOS ._ resource fork), not read")
                elif path.stem in audio:
                    scan.skip(path, f"same utterance also as {audio[path.stem].name}; "
                              "that one is used")
                else:
                    audio[path.stem] = path
            if not eval_file.is_file():
                for path in audio.values():
                    scan.skip(path, f"no labels: EmoEvaluation file {eval_file} is missing")
                continue
            labels = read_emo_evaluation(eval_file, scan)
            for utt in sorted(set(labels) - set(audio)):
                scan.skip(f"{eval_file}:{labels[utt][1]}",
                          f"{utt} is labelled but has no audio file in {dialog}")
            for stem, path in audio.items():
                spk = speaker_of(stem)
                if spk is None or not stem.startswith(f"{dialog.name}_"):
                    scan.skip(path, f"file name does not follow <dialog>_[FM]NNN "
                              f"(expected {dialog.name}_F000 and the like)")
                    continue
                if stem not in labels:
                    scan.skip(path, f"no summary line for {stem} in {eval_file} "
                              "(truncated file?)")
                    continue
                label = labels[stem][0]
                if label is None:
                    continue  # listed above with the line of its unknown label
                if label not in class_map:
                    scan.excluded[label] = scan.excluded.get(label, 0) + 1
                    continue
                utt = stem if stem.startswith(spk) else f"{spk}-{stem}"
                scan.utts.append(Utt(utt, spk, path, class_map[label], group=session.name,
                                     conv=dialog.name))
    return scan
