"""Scoring of emotion experiments: metrics per fold and over folds, reports, comparisons.

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
summing to 1 within :data:`SUM_TOLERANCE`). The rows must be exactly the fold's test list.

Metric conventions (numpy only; they match scikit-learn)
---------------------------------------------------------
* Confusion matrix: rows = reference, columns = decision, over all ``classes``.
  Row-normalised: each row divided by its sum (an all-zero row stays zero).
* WA (weighted accuracy) = accuracy = trace / total.
* UA (unweighted accuracy) = mean per-class recall over the classes **present in the fold's
  reference**; a class absent from the reference has no recall and is left out of the mean (as
  ``sklearn.metrics.balanced_accuracy_score``); a class present in the reference but never
  predicted has recall 0 and counts.
* Macro-F1 = mean of per-class F1 over the classes present in the reference **or** the
  decisions (``sklearn.metrics.f1_score(average="macro", zero_division=0)``): a 0/0 precision or
  recall counts as 0, so a class never predicted, or predicted but never in the reference, has
  F1 = 0 and counts; a class in neither is left out.
* Over folds: mean and **sample** standard deviation (ddof=1, as EmoBox and most SER papers
  report) of the per-fold values; with fewer than 2 folds the std is not defined and is
  reported as such. The pooled confusion (sum over folds) and its metrics are given as well.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sertool.errors import SertoolError
from sertool.io_utils import atomic_open, atomic_write_json, atomic_write_text

EXPERIMENT_JSON = "experiment.json"
POSTERIORS = "posteriors.tsv"
REQUIRED_KEYS = ("corpus", "data_dir", "feat_dir", "classes", "class_map", "protocol",
                 "frontend", "model", "init", "augmentation", "unfreeze", "command", "seed")
SUM_TOLERANCE = 1e-3  # rows are written with 6 decimals per class: rounding stays far below
METRICS = ("wa", "ua", "f1")
METRIC_NAMES = {"wa": "WA", "ua": "UA", "f1": "macro-F1"}


class ScoringError(SertoolError, ValueError):
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
    known = set(classes)
    for utt, label, pred in zip(utts, labels, preds, strict=True):
        if label not in known or pred not in known:
            raise ValueError(f"{path}: utterance {utt}: label {label!r} or decision {pred!r} "
                             f"is not one of the classes {list(classes)}")
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write("\t".join(["utt", "label", "pred", *classes]) + "\n")
        for utt, label, pred, row in zip(utts, labels, preds, probs, strict=True):
            handle.write("\t".join([utt, label, pred, *(f"{p:.6f}" for p in row)]) + "\n")


def read_posteriors(path: str | os.PathLike,
                    classes: Sequence[str] | None = None) -> Posteriors:
    """Read and check a ``posteriors.tsv``; every problem raises ScoringError with file:line.

    ``classes`` (from experiment.json) must then equal the header's class columns.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ScoringError(f"{path}: cannot read: {err}") from err
    if not lines:
        raise ScoringError(f"{path}:1: empty file (expected a header utt, label, pred, classes)")
    header = lines[0].split("\t")
    if header[:3] != ["utt", "label", "pred"] or len(header) < 5:
        raise ScoringError(f"{path}:1: header must be utt<TAB>label<TAB>pred<TAB><class>... "
                           f"with at least 2 classes, got {lines[0]!r}")
    file_classes = header[3:]
    if len(set(file_classes)) != len(file_classes):
        raise ScoringError(f"{path}:1: repeated class column in {file_classes}")
    if classes is not None and list(classes) != file_classes:
        raise ScoringError(f"{path}:1: class columns {file_classes} differ from the "
                           f"experiment's classes {list(classes)}")
    index = {c: i for i, c in enumerate(file_classes)}
    utts: list[str] = []
    labels: list[int] = []
    preds: list[int] = []
    rows: list[list[float]] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise ScoringError(f"{path}:{lineno}: empty line")
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ScoringError(f"{path}:{lineno}: {len(fields)} fields, the header has "
                               f"{len(header)}")
        utt, label, pred = fields[:3]
        if utt in seen:
            raise ScoringError(f"{path}:{lineno}: utterance {utt} repeated (first on line "
                               f"{seen[utt]})")
        seen[utt] = lineno
        for what, value in (("label", label), ("decision", pred)):
            if value not in index:
                raise ScoringError(f"{path}:{lineno}: unknown {what} {value!r} for {utt} "
                                   f"(classes: {' '.join(file_classes)})")
        try:
            row = [float(x) for x in fields[3:]]
        except ValueError as err:
            raise ScoringError(f"{path}:{lineno}: bad probability for {utt}: {err}") from err
        if not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in row):
            raise ScoringError(f"{path}:{lineno}: probabilities of {utt} must lie in [0, 1]: "
                               f"{fields[3:]}")
        total = sum(row)
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ScoringError(f"{path}:{lineno}: probabilities of {utt} sum to {total:.6f}, "
                               f"not 1 (tolerance {SUM_TOLERANCE})")
        utts.append(utt)
        labels.append(index[label])
        preds.append(index[pred])
        rows.append(row)
    if not utts:
        raise ScoringError(f"{path}:2: no utterances after the header")
    return Posteriors(utts, np.array(labels, dtype=np.int64), np.array(preds, dtype=np.int64),
                      file_classes, np.array(rows, dtype=np.float64))


# ----------------------------------------------------------------------------- metrics


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts with rows = reference class index, columns = decided class index."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm


def row_normalise(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; rows of classes absent from the reference stay 0."""
    cm = np.asarray(cm, dtype=np.float64)
    sums = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)


def weighted_accuracy(cm: np.ndarray) -> float:
    """WA: accuracy over all utterances."""
    cm = np.asarray(cm)
    return float(np.trace(cm) / cm.sum())


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall per class; NaN for a class absent from the reference."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=1)
    return np.divide(np.diag(cm), support, out=np.full(len(cm), np.nan), where=support > 0)


def unweighted_accuracy(cm: np.ndarray) -> float:
    """UA: mean recall over the classes present in the reference (see module docstring)."""
    return float(np.nanmean(per_class_recall(cm)))


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 per class with zero_division=0; NaN for a class in neither reference nor decisions."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    denom = support + predicted  # F1 = 2TP / (2TP + FP + FN) = 2TP / (support + predicted)
    f1 = np.divide(2 * tp, denom, out=np.zeros(len(cm)), where=denom > 0)
    f1[denom == 0] = np.nan
    return f1


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes present in the reference or the decisions."""
    return float(np.nanmean(per_class_f1(cm)))


@dataclass
class FoldMetrics:
    """Metrics of one fold (or of the pooled confusion over all folds)."""

    name: str
    confusion: np.ndarray
    wa: float
    ua: float
    f1: float

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @classmethod
    def from_confusion(cls, name: str, cm: np.ndarray) -> FoldMetrics:
        cm = np.asarray(cm, dtype=np.int64)
        if cm.sum() == 0:
            raise ValueError(f"fold {name}: no utterances to score")
        return cls(name, cm, weighted_accuracy(cm), unweighted_accuracy(cm), macro_f1(cm))

    def to_dict(self, classes: Sequence[str]) -> dict:
        recall, f1 = per_class_recall(self.confusion), per_class_f1(self.confusion)
        return {
            "fold": self.name, "n": self.n, "wa": self.wa, "ua": self.ua, "f1": self.f1,
            "confusion": self.confusion.tolist(),
            "confusion_normalised": row_normalise(self.confusion).round(6).tolist(),
            "per_class": {c: {"support": int(self.confusion[i].sum()),
                              "recall": None if np.isnan(recall[i]) else float(recall[i]),
                              "f1": None if np.isnan(f1[i]) else float(f1[i])}
                          for i, c in enumerate(classes)},
        }


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample std (ddof=1) over folds; std is None with fewer than 2 values."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return math.nan, None
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size >= 2 else None)


# ----------------------------------------------------------------------------- experiments


def load_experiment(exp_dir: str | os.PathLike) -> dict:
    """Read and check ``EXP_DIR/experiment.json`` (see the module docstring)."""
    path = Path(exp_dir) / EXPERIMENT_JSON
    if not path.is_file():
        raise ScoringError(f"{path}: not found (is {exp_dir} an experiment directory made by "
                           "sertool finetune?)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ScoringError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ScoringError(f"{path}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ScoringError(f"{path}: missing key(s) {', '.join(missing)}")
    classes = meta["classes"]
    if (not isinstance(classes, list) or len(classes) < 2
            or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)):
        raise ScoringError(f"{path}: 'classes' must be a list of at least 2 distinct labels, "
                           f"got {classes!r}")
    return meta


def _resolve_data_dir(exp_dir: Path, data_dir: str) -> Path:
    path = Path(data_dir)
    if path.is_absolute() or path.is_dir():
        return path
    return exp_dir / path if (exp_dir / path).is_dir() else path


def _fold_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@dataclass
class ExperimentScore:
    """Everything ``score_experiment`` found; ``write_report`` turns it into files."""

    exp_dir: Path
    name: str
    meta: dict
    classes: list[str]
    verdict: str
    fold_check: dict | None  # FoldCheck.to_dict(), None when the folds could not be checked
    fold_names: list[str]  # every fold of the protocol, in order
    folds: list[FoldMetrics]  # the folds with posteriors
    missing: list[str]  # folds without posteriors
    test_lists: dict[str, list[str]]  # fold -> sorted test utterances (for comparisons)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def pooled(self) -> FoldMetrics:
        return FoldMetrics.from_confusion("all", sum(f.confusion for f in self.folds))

    def summary(self) -> dict[str, tuple[float, float | None]]:
        return {m: mean_std([getattr(f, m) for f in self.folds]) for m in METRICS}

    def to_dict(self) -> dict:
        summary = self.summary()
        pooled = self.pooled
        return {
            "experiment": self.name,
            "exp_dir": str(self.exp_dir),
            "verdict": self.verdict,
            "speaker_independent": (self.fold_check or {}).get("clean"),
            "fold_check": self.fold_check,
            "classes": self.classes,
            "complete": self.complete,
            "folds_expected": self.fold_names,
            "folds_missing": self.missing,
            "folds": [f.to_dict(self.classes) for f in self.folds],
            "mean": {m: summary[m][0] for m in METRICS},
            "std": {m: summary[m][1] for m in METRICS},
            "std_convention": "sample std over folds (ddof=1); null with fewer than 2 folds",
            "pooled": pooled.to_dict(self.classes),
            "notes": self.notes,
            "experiment_json": self.meta,
        }


def score_experiment(exp_dir: str | os.PathLike, *, audio_check: bool = True,
                     progress: bool = False) -> ExperimentScore:
    """Score every fold of an experiment; the folds are re-checked with ``check_folds`` now.

    ``audio_check`` also compares the audio content of train and test (cached in the data dir).
    """
    from sertool.datadir import DataDirError, read_folds
    from sertool.folds import check_folds  # lazy: it pulls in the audio hashing

    exp_dir = Path(exp_dir)
    meta = load_experiment(exp_dir)
    classes = list(meta["classes"])
    name = str(meta.get("name") or exp_dir.resolve().name)
    data_dir = _resolve_data_dir(exp_dir, str(meta["data_dir"]))
    notes: list[str] = []
    fold_check = None
    try:
        check = check_folds(data_dir, audio=audio_check, progress=progress)
        verdict, fold_check = check.verdict, check.to_dict()
        folds, protocol = read_folds(data_dir)
        fold_names = [f.name for f in folds]
        test_lists: dict[str, list[str]] = {f.name: sorted(f.test) for f in folds}
        if protocol.get("folds") != meta["protocol"].get("folds") or protocol.get(
                "name") != meta["protocol"].get("name"):
            notes.append(f"the protocol in {data_dir}/folds/protocol.json "
                         f"({protocol.get('name')}, folds {protocol.get('folds')}) differs from "
                         f"the one recorded at training time ({meta['protocol'].get('name')}, "
                         f"folds {meta['protocol'].get('folds')})")
    except (DataDirError, ValueError, OSError, KeyError) as err:
        # No check, no claim: line 1 must not read as speaker-independent.
        verdict = f"SPEAKER INDEPENDENCE NOT VERIFIED: cannot check the folds of {data_dir}: {err}"
        fold_names = [str(f) for f in meta["protocol"].get("folds", [])]
        if not fold_names:
            fold_names = sorted(p.name[len("fold_"):] for p in exp_dir.glob("fold_*")
                                if (p / POSTERIORS).is_file())
        test_lists = {}
    scored: list[FoldMetrics] = []
    missing: list[str] = []
    for fold in fold_names:
        path = exp_dir / f"fold_{fold}" / POSTERIORS
        if not path.is_file():
            missing.append(fold)
            continue
        post = read_posteriors(path, classes)
        if fold in test_lists:
            expected, got = set(test_lists[fold]), set(post.utts)
            extra, absent = sorted(got - expected), sorted(expected - got)
            if extra or absent:
                raise ScoringError(
                    f"{path}: rows do not match {data_dir}/folds/{fold}/test: "
                    f"{len(extra)} not in the test list" + (f" (e.g. {extra[0]})" if extra else "")
                    + f", {len(absent)} test utterances missing"
                    + (f" (e.g. {absent[0]})" if absent else ""))
        else:
            test_lists[fold] = sorted(post.utts)
        # The decision column is what is scored; say so when it is not the argmax.
        chosen = post.probs[np.arange(len(post.utts)), post.preds]
        not_argmax = int(np.sum(chosen < post.probs.max(axis=1) - 1e-6))
        if not_argmax:
            notes.append(f"fold {fold}: {not_argmax} of {len(post.utts)} decisions are not "
                         f"the most probable class in {path}; the decisions are scored")
        cm = confusion_matrix(post.labels, post.preds, len(classes))
        scored.append(FoldMetrics.from_confusion(fold, cm))
    if not scored:
        raise ScoringError(f"{exp_dir}: no fold has a {POSTERIORS} (expected fold_<name>/"
                           f"{POSTERIORS} for folds {', '.join(fold_names) or '?'})")
    return ExperimentScore(exp_dir, name, meta, classes, verdict, fold_check, fold_names, scored,
                           missing, test_lists, notes)


# ----------------------------------------------------------------------------- reports


def _describe(value: object) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_describe(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    return str(value)


def _cell(value: object) -> str:
    """Text safe inside a markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _mean_std_text(mean: float, std: float | None) -> str:
    return f"{_pct(mean)} ± {_pct(std)}" if std is not None else f"{_pct(mean)} (1 fold, no std)"


def _frontend_text(frontend: object) -> str:
    if not isinstance(frontend, Mapping):
        return _describe(frontend)
    norm = frontend.get("normalisation", "?")
    rest = {k: v for k, v in frontend.items() if k != "normalisation"}
    norm_text = {"segment": "segment-level mean and variance (default)",
                 "conversation": "conversation-level mean and variance (NOT the default: "
                                 "statistics shared across the segments of a conversation)"}
    return f"{_describe(rest)}; normalisation: {norm_text.get(norm, norm)}"


def _pooling(meta: Mapping) -> str:
    model = meta.get("model")
    if isinstance(model, Mapping) and "pooling" in model:
        return str(model["pooling"])
    return str(meta.get("pooling", "?"))


def _model_type(meta: Mapping) -> str:
    model = meta.get("model")
    return str(model.get("type", "?")) if isinstance(model, Mapping) else str(model)


def _augmentation(meta: Mapping) -> str:
    aug = meta.get("augmentation")
    if isinstance(aug, Mapping):
        policy = aug.get("policy", "?")
        return f"{policy} (+{aug['copies']} copies)" if "copies" in aug else str(policy)
    return str(aug)


def _confusion_markdown(cm: np.ndarray, classes: Sequence[str]) -> list[str]:
    norm = row_normalise(cm)
    head = "| ref \\ decided | " + " | ".join(classes) + " | n |"
    sep = "| --- |" + " ---: |" * (len(classes) + 1)
    lines = ["Counts:", "", head, sep]
    for i, c in enumerate(classes):
        lines.append(f"| {c} | " + " | ".join(str(int(x)) for x in cm[i])
                     + f" | {int(cm[i].sum())} |")
    lines += ["", "Row-normalised (recall on the diagonal, %):", "", head, sep]
    for i, c in enumerate(classes):
        lines.append(f"| {c} | " + " | ".join(f"{100 * x:.1f}" for x in norm[i])
                     + f" | {int(cm[i].sum())} |")
    return lines


def report_markdown(score: ExperimentScore) -> str:
    """The text of report.md; its first line is the check_folds verdict."""
    meta, summary = score.meta, score.summary()
    protocol = meta["protocol"] if isinstance(meta["protocol"], Mapping) else {}
    claims = protocol.get("speaker_independent", "?")
    init = meta["init"]
    init_text = ("none (random initialisation, no transfer)" if str(init) == "none"
                 else f"{init}: no transfer" if str(init).startswith("random")
                 else f"transfer from speaker model {init}")
    init_text += "; trunk fine-tuned (unfrozen)" if meta["unfreeze"] else (
        "; trunk frozen" if str(init) != "none" else "")
    lines = [
        score.verdict,
        "",
        f"# Emotion recognition report: {score.name}",
        "",
        "| | |",
        "| --- | --- |",
        f"| corpus | {_cell(meta['corpus'])} |",
        f"| classes | {' '.join(score.classes)} |",
        f"| class map | {_cell(_describe(meta['class_map']))} |",
        f"| protocol | {_cell(protocol.get('name', '?'))}: "
        f"{_cell(protocol.get('description', ''))} ({len(score.fold_names)} folds) |",
        f"| speaker independence | {_cell(score.verdict)} (checked at scoring time on "
        f"{_cell(meta['data_dir'])}; the protocol claims speaker_independent={claims}) |",
        f"| front-end | {_cell(_frontend_text(meta['frontend']))} |",
        f"| model | {_cell(_describe(meta['model']))} |",
        f"| initialisation | {_cell(init_text)} |",
        f"| augmentation | {_cell(_describe(meta['augmentation']))} |",
        f"| seed | {meta['seed']} |",
        f"| command | `{_cell(meta['command'])}` |",
        "",
    ]
    for note in score.notes:
        lines += [f"**Note:** {note}", ""]
    n_done, n_all = len(score.folds), len(score.fold_names)
    if score.missing:
        lines += [f"**INCOMPLETE: {len(score.missing)} of {n_all} folds have no posteriors "
                  f"(missing: {', '.join(score.missing)}); the mean ± std below is over the "
                  f"{n_done} present folds only.**", ""]
    std_note = ("sample std over folds (ddof=1)" if n_done >= 2
                else "a single fold: no std")
    lines += ["## Results per fold (%)", "",
              "| fold | n test | WA | UA | macro-F1 |", "| --- | ---: | ---: | ---: | ---: |"]
    for fold in score.folds:
        lines.append(f"| {fold.name} | {fold.n} | {_pct(fold.wa)} | {_pct(fold.ua)} | "
                     f"{_pct(fold.f1)} |")
    for fold in score.missing:
        lines.append(f"| {fold} | missing | - | - | - |")
    label = f"mean ± std ({n_done} of {n_all} folds{', INCOMPLETE' if score.missing else ''})"
    lines.append(f"| **{label}** | {sum(f.n for f in score.folds)} | "
                 + " | ".join(_mean_std_text(*summary[m]) for m in METRICS) + " |")
    pooled = score.pooled
    lines.append(f"| pooled confusion (all scored folds) | {pooled.n} | {_pct(pooled.wa)} | "
                 f"{_pct(pooled.ua)} | {_pct(pooled.f1)} |")
    lines += ["",
              f"WA = accuracy; UA = mean recall over the classes present in a fold's reference; "
              f"macro-F1 over the classes in reference or decisions (a 0/0 counts as 0); "
              f"± is the {std_note}.", "",
              "## Confusion matrices (rows: reference, columns: decision)", "",
              "### All scored folds pooled", "", *_confusion_markdown(pooled.confusion,
                                                                       score.classes), ""]
    for fold in score.folds:
        lines += [f"### Fold {fold.name}", "", *_confusion_markdown(fold.confusion,
                                                                    score.classes), ""]
    return "\n".join(lines)


def _save_figure(fig, out_png: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    with atomic_open(out_png, "wb") as handle:
        handle.write(buf.getvalue())


def plot_confusion(cm: np.ndarray, classes: Sequence[str], title: str,
                   out_png: str | os.PathLike) -> None:
    """Counts and row-normalised confusion side by side, every cell annotated."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas

    cm = np.asarray(cm)
    norm = row_normalise(cm)
    size = 1.6 + 0.55 * len(classes)
    fig = Figure(figsize=(2 * size + 1.5, size + 0.6))
    for ax, values, what in zip(fig.subplots(1, 2), (cm, norm), ("counts", "row-normalised"),
                                strict=True):
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)  # colour by recall in both panels
        for i in range(len(classes)):
            for j in range(len(classes)):
                text = str(int(values[i, j])) if what == "counts" else f"{values[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("decision")
        ax.set_ylabel("reference")
        ax.set_title(what, fontsize=9)
    fig.suptitle(title, fontsize=10)
    _save_figure(fig, out_png)


def write_report(score: ExperimentScore, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write report.md, report.json, confusion_<fold>.png and confusion_all.png."""
    out = Path(out_dir) if out_dir is not None else score.exp_dir
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", report_markdown(score) + "\n")
    atomic_write_json(out / "report.json", score.to_dict())
    written = [out / "report.md", out / "report.json"]
    pooled = score.pooled
    plot_confusion(pooled.confusion, score.classes,
                   f"{score.name}: all folds pooled (n={pooled.n})", out / "confusion_all.png")
    written.append(out / "confusion_all.png")
    for fold in score.folds:
        png = out / f"confusion_{_fold_file_name(fold.name)}.png"
        plot_confusion(fold.confusion, score.classes, f"{score.name}: fold {fold.name} "
                       f"(n={fold.n})", png)
        written.append(png)
    return written


# ----------------------------------------------------------------------------- comparisons


def check_same_folds(scores: Sequence[ExperimentScore]) -> list[str]:
    """Problems that make the experiments' numbers incomparable (empty list: same folds)."""
    problems = []
    ref = scores[0]
    ref_protocol = ref.meta["protocol"].get("name") if isinstance(ref.meta["protocol"],
                                                                 Mapping) else None
    for other in scores[1:]:
        protocol = other.meta["protocol"].get("name") if isinstance(other.meta["protocol"],
                                                                   Mapping) else None
        if protocol != ref_protocol:
            problems.append(f"{other.name}: protocol {protocol} but {ref.name}: {ref_protocol}")
        if list(other.test_lists) != list(ref.test_lists):
            problems.append(f"{other.name}: folds {list(other.test_lists)} but {ref.name}: "
                            f"{list(ref.test_lists)}")
            continue
        for fold, utts in ref.test_lists.items():
            if other.test_lists[fold] != utts:
                diff = sorted(set(utts) ^ set(other.test_lists[fold]))
                problems.append(f"{other.name}: the test list of fold {fold} differs from "
                                f"{ref.name}'s ({len(diff)} utterances in only one, e.g. "
                                f"{diff[0] if diff else '(order)'})")
    return problems


def _short_verdict(score: ExperimentScore) -> str:
    if score.fold_check is None:
        return "unverified"
    return "yes" if score.fold_check.get("clean") else "NO"


def compare(scores: Sequence[ExperimentScore], *,
            allow_different_folds: bool = False) -> tuple[str, dict]:
    """Side-by-side markdown table and its JSON form; ScoringError if the folds differ."""
    problems = check_same_folds(scores) if len(scores) > 1 else []
    if problems and not allow_different_folds:
        raise ScoringError("the experiments were not evaluated on the same folds, so their "
                           "numbers are not comparable (--allow-different-folds to compare "
                           "anyway):\n  " + "\n  ".join(problems))
    rows = []
    for s in scores:
        summary = s.summary()
        rows.append({
            "experiment": s.name, "exp_dir": str(s.exp_dir), "init": str(s.meta["init"]),
            "unfreeze": bool(s.meta["unfreeze"]), "augmentation": _augmentation(s.meta),
            "pooling": _pooling(s.meta), "model": _model_type(s.meta),
            "speaker_independent": _short_verdict(s), "verdict": s.verdict,
            "folds": len(s.folds), "folds_expected": len(s.fold_names),
            **{f"{m}_mean": summary[m][0] for m in METRICS},
            **{f"{m}_std": summary[m][1] for m in METRICS},
        })
    lines = ["| experiment | init | augmentation | pooling | model | speaker-indep. | folds | "
             "UA % | WA % | macro-F1 % |",
             "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        init = ("none" if r["init"] == "none" else "random trunk (frozen)"
                if r["init"].startswith("random") else "speaker (unfrozen)" if r["unfreeze"]
                else "speaker")
        folds = f"{r['folds']}/{r['folds_expected']}" + (
            " INCOMPLETE" if r["folds"] < r["folds_expected"] else "")
        lines.append(f"| {_cell(r['experiment'])} | {init} | {_cell(r['augmentation'])} | "
                     f"{_cell(r['pooling'])} | {_cell(r['model'])} | "
                     f"{r['speaker_independent']} | {folds} | "
                     + " | ".join(_mean_std_text(r[f"{m}_mean"], r[f"{m}_std"])
                                  for m in ("ua", "wa", "f1")) + " |")
    lines += ["", "mean ± sample std (ddof=1) over folds."]
    if problems:
        lines += ["", "**WARNING: the experiments were NOT evaluated on the same folds:**"]
        lines += [f"- {p}" for p in problems]
    return "\n".join(lines), {"experiments": rows, "same_folds": not problems,
                              "fold_differences": problems}


def plot_ablation(results: Sequence[ExperimentScore | Mapping], out_png: str | os.PathLike,
                  title: str = "UA and WA, mean ± std over folds") -> None:
    """Bar chart of UA and WA (mean ± std over folds) per experiment, like the paper's Fig. 4.

    ``results``: ExperimentScore objects or mappings with ``experiment`` (or ``name``),
    ``ua_mean``, ``ua_std``, ``wa_mean``, ``wa_std`` (fractions; std may be None).
    """
    from matplotlib.figure import Figure

    names, means, stds = [], {"ua": [], "wa": []}, {"ua": [], "wa": []}
    for r in results:
        if isinstance(r, ExperimentScore):
            summary = r.summary()
            r = {"experiment": r.name, **{f"{m}_mean": summary[m][0] for m in METRICS},
                 **{f"{m}_std": summary[m][1] for m in METRICS}}
        names.append(str(r.get("experiment", r.get("name", "?"))))
        for m in ("ua", "wa"):
            means[m].append(100 * float(r[f"{m}_mean"]))
            stds[m].append(100 * float(r[f"{m}_std"] or 0.0))
    if not names:
        raise ValueError("plot_ablation: no results to plot")
    x = np.arange(len(names))
    width = 0.38
    fig = Figure(figsize=(max(5.0, 1.3 * len(names) + 1.5), 4.0))
    ax = fig.subplots()
    for offset, m, colour in ((-width / 2, "ua", "#4c72b0"), (width / 2, "wa", "#dd8452")):
        bars = ax.bar(x + offset, means[m], width, yerr=stds[m], capsize=4, color=colour,
                      label=METRIC_NAMES[m])
        # inside the bars: above them the labels would collide with the error bars
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in means[m]], label_type="center",
                     fontsize=8, color="white")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("%")
    top = max(m + s for m, s in zip(means["ua"] + means["wa"], stds["ua"] + stds["wa"],
                                    strict=True))
    ax.set_ylim(0, min(100.0, top * 1.15 + 1))
    ax.legend()
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _save_figure(fig, out_png)
