"""The experiment directory: the contract between transfer (its writer) and scoring (its
reader).

Experiment directory contract (``finetune`` writes it, ``sertool score`` reads it)
---------------------------------------------------------------------------------
``EXP_DIR/experiment.json`` holds at least (see :data:`REQUIRED_KEYS`):

``corpus``        corpus name (``iemocap``, ``ravdess``, ...)
``data_dir``      the emotion data directory whose ``folds/`` were used (absolute path; a relative
                  one is tried against the working directory, then against EXP_DIR)
``feat_dir``      the feature directory
``classes``       label list in model output index order, e.g. ``["ang", "hap", "neu", "sad"]``
``class_map``     how corpus labels were mapped onto ``classes`` (free-form dict or string)
``protocol``      a copy of ``data_dir/folds/protocol.json`` at training time
``frontend``      dict: ``kind`` (``logmel``/``mfcc``), ``dims``, ``normalisation``
                  (``"segment"`` or ``"conversation"``)
``model``         dict: ``type`` plus key parameters, including ``pooling``
``init``          ``"none"`` or the speaker model path the trunk came from
``augmentation``  dict: ``policy`` (``none``/``conservative``/``aggressive``/...) and ``copies``
``unfreeze``      bool: whether the trunk was fine-tuned too
``command``       the command line that made the experiment
``seed``          the random seed

and one ``EXP_DIR/fold_<name>/posteriors.tsv`` per fold of the protocol (written with
:func:`write_posteriors`): a header ``utt<TAB>label<TAB>pred<TAB><class1><TAB>...`` with the
class columns exactly ``classes`` in order, then one row per test utterance of the fold with the
reference label, the decision (normally the argmax) and the class probabilities (each in [0, 1],
summing to 1 within :data:`SUM_TOLERANCE`), then :data:`UNCERTAINTY_COLUMNS`: ``entropy`` (the
posterior's entropy over log K, 0..1) and ``max_prob`` (sertool.uncertainty). The rows must be
exactly the fold's test list. A file without the two trailing columns (written before them)
reads the same: they are recomputed from the probabilities, never trusted from the file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sertool.errors import SertoolError
from sertool.io_utils import atomic_open, atomic_write_json, read_json_object

EXPERIMENT_JSON = "experiment.json"
POSTERIORS = "posteriors.tsv"
REQUIRED_KEYS = ("corpus", "data_dir", "feat_dir", "classes", "class_map", "protocol",
                 "frontend", "model", "init", "augmentation", "unfreeze", "command", "seed")
UNCERTAINTY_COLUMNS = ("entropy", "max_prob")  # reserved: no class may be named so
SUM_TOLERANCE = 1e-3  # rows are written with 6 decimals per class: rounding stays far below


class ExperimentError(SertoolError, ValueError):
    """A malformed experiment directory or posteriors file (the message names file and line)."""


# ----------------------------------------------------------------------------- posteriors


@dataclass
class Posteriors:
    """One fold's posteriors: ``labels``/``preds`` are class indices into ``classes``."""

    utts: list[str]
    labels: np.ndarray
    preds: np.ndarray
    classes: list[str]
    probs: np.ndarray  # (n_utts, n_classes)

    @property
    def entropy(self) -> np.ndarray:
        """Each utterance's posterior entropy over log K (0..1; sertool.uncertainty)."""
        from sertool.uncertainty import normalised_entropy

        return normalised_entropy(self.probs)


def write_posteriors(path: str | os.PathLike, utts: Sequence[str], labels: Sequence[str],
                     classes: Sequence[str], probs: np.ndarray,
                     preds: Sequence[str] | None = None) -> None:
    """Write ``posteriors.tsv`` atomically; ``preds`` defaults to the argmax of ``probs``."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(utts), len(classes)) or len(labels) != len(utts):
        raise ValueError(f"{path}: {len(utts)} utts, {len(labels)} labels and probabilities of "
                         f"shape {probs.shape} for {len(classes)} classes do not agree")
    if preds is None:
        preds = [classes[i] for i in probs.argmax(axis=1)] if len(utts) else []
    finite = np.isfinite(probs).all(axis=1)
    if not finite.all():  # a diverged model or overflowing logits: never scored as results
        row = int(np.argmin(finite))
        raise ExperimentError(f"{path}: not written: the posteriors of utterance {utts[row]} "
                              f"are not finite ({', '.join(f'{p:g}' for p in probs[row])}); "
                              f"{int((~finite).sum())} of {len(utts)} utterances have NaN or "
                              "infinite posteriors")
    known = set(classes)
    for utt, label, pred in zip(utts, labels, preds, strict=True):
        if label not in known or pred not in known:
            raise ValueError(f"{path}: utterance {utt}: label {label!r} or decision {pred!r} "
                             f"is not one of the classes {list(classes)}")
    reserved = set(UNCERTAINTY_COLUMNS) & known
    if reserved:
        raise ValueError(f"{path}: a class may not be named {' or '.join(sorted(reserved))} "
                         "(a column of posteriors.tsv)")
    from sertool.uncertainty import max_probability, normalised_entropy

    entropy = normalised_entropy(probs) if len(utts) else []
    top = max_probability(probs) if len(utts) else []
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write("\t".join(["utt", "label", "pred", *classes, *UNCERTAINTY_COLUMNS]) + "\n")
        for utt, label, pred, row, h, m in zip(utts, labels, preds, probs, entropy, top,
                                               strict=True):
            handle.write("\t".join([utt, label, pred, *(f"{p:.6f}" for p in row),
                                    f"{h:.6f}", f"{m:.6f}"]) + "\n")


def read_posteriors(path: str | os.PathLike,
                    classes: Sequence[str] | None = None) -> Posteriors:
    """Read and check a ``posteriors.tsv``; every problem raises ExperimentError with file:line.

    ``classes`` (from experiment.json) must then equal the header's class columns.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ExperimentError(f"{path}: cannot read: {err}") from err
    if not lines:
        raise ExperimentError(f"{path}:1: empty file (expected a header utt, label, pred, classes)")
    header = lines[0].split("\t")
    if header[:3] != ["utt", "label", "pred"] or len(header) < 5:
        raise ExperimentError(f"{path}:1: header must be utt<TAB>label<TAB>pred<TAB><class>... "
                           f"with at least 2 classes, got {lines[0]!r}")
    # the trailing uncertainty columns (absent in older files) are derived: not read
    extra = len(UNCERTAINTY_COLUMNS) if tuple(header[-2:]) == UNCERTAINTY_COLUMNS else 0
    file_classes = header[3:len(header) - extra]
    if len(file_classes) < 2:
        raise ExperimentError(f"{path}:1: at least 2 class columns are needed, got "
                              f"{file_classes}")
    if len(set(file_classes)) != len(file_classes):
        raise ExperimentError(f"{path}:1: repeated class column in {file_classes}")
    if classes is not None and list(classes) != file_classes:
        raise ExperimentError(f"{path}:1: class columns {file_classes} differ from the "
                           f"experiment's classes {list(classes)}")
    index = {c: i for i, c in enumerate(file_classes)}
    utts: list[str] = []
    labels: list[int] = []
    preds: list[int] = []
    rows: list[list[float]] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise ExperimentError(f"{path}:{lineno}: empty line")
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ExperimentError(f"{path}:{lineno}: {len(fields)} fields, the header has "
                               f"{len(header)}")
        utt, label, pred = fields[:3]
        if utt in seen:
            raise ExperimentError(f"{path}:{lineno}: utterance {utt} repeated (first on line "
                               f"{seen[utt]})")
        seen[utt] = lineno
        for what, value in (("label", label), ("decision", pred)):
            if value not in index:
                raise ExperimentError(f"{path}:{lineno}: unknown {what} {value!r} for {utt} "
                                   f"(classes: {' '.join(file_classes)})")
        try:
            row = [float(x) for x in fields[3:len(fields) - extra]]
        except ValueError as err:
            raise ExperimentError(f"{path}:{lineno}: bad probability for {utt}: {err}") from err
        if not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in row):
            raise ExperimentError(f"{path}:{lineno}: probabilities of {utt} must lie in [0, 1]: "
                               f"{fields[3:len(fields) - extra]}")
        total = sum(row)
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ExperimentError(f"{path}:{lineno}: probabilities of {utt} sum to {total:.6f}, "
                               f"not 1 (tolerance {SUM_TOLERANCE})")
        utts.append(utt)
        labels.append(index[label])
        preds.append(index[pred])
        rows.append(row)
    if not utts:
        raise ExperimentError(f"{path}:2: no utterances after the header")
    return Posteriors(utts, np.array(labels, dtype=np.int64), np.array(preds, dtype=np.int64),
                      file_classes, np.array(rows, dtype=np.float64))


def fold_dir(exp_dir: str | os.PathLike, fold: str) -> Path:
    """``EXP_DIR/fold_<fold>``, refused (ExperimentError) unless it stays inside EXP_DIR: the
    fold names come from a data dir's protocol.json, and every writer and reader of an
    experiment's folds goes through here, so no name (or symlinked folder) can lead outside."""
    from sertool.datadir import fold_name_problem  # lazy: datadir is a heavier module

    root = Path(exp_dir)
    problem = fold_name_problem(fold)
    if problem:
        raise ExperimentError(f"{root}: fold name {fold!r} {problem}")
    path = root / f"fold_{fold}"
    inside = os.path.realpath(root)
    if os.path.commonpath([inside, os.path.realpath(path)]) != inside:
        raise ExperimentError(f"{path}: leads outside the experiment directory {root} "
                              f"(to {os.path.realpath(path)}); remove it or choose another "
                              "EXP_DIR")
    return path


def load_experiment(exp_dir: str | os.PathLike) -> dict:
    """Read and check ``EXP_DIR/experiment.json`` (see the module docstring)."""
    path = Path(exp_dir) / EXPERIMENT_JSON
    meta = read_json_object(path, ExperimentError, f"is {exp_dir} an experiment directory "
                            "made by sertool finetune?")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ExperimentError(f"{path}: missing key(s) {', '.join(missing)}")
    classes = meta["classes"]
    if (not isinstance(classes, list) or len(classes) < 2
            or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)):
        raise ExperimentError(f"{path}: 'classes' must be a list of at least 2 distinct labels, "
                           f"got {classes!r}")
    return meta


def write_experiment(exp_dir: Path, experiment: dict, command: str) -> None:
    """Write EXP_DIR/experiment.json; a rerun keeps the command that made the experiment and
    lists its own under ``reruns``."""
    path = exp_dir / EXPERIMENT_JSON
    if path.is_file():
        first = json.loads(path.read_text(encoding="utf-8"))
        experiment = {**experiment, "command": first.get("command", command),
                      "reruns": [*first.get("reruns", []), command]}
    atomic_write_json(path, experiment)
