"""Metrics of emotion recognition, the one definition used by scoring and by model selection.

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

``METRICS`` is the one table of the metrics that are reported: report.md, report.json, the
side-by-side comparison and the ablation chart are generated from it, so a metric is added to
every report by adding one entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sertool.errors import SertoolError


class MetricsError(SertoolError, ValueError):
    """Nothing to score."""


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


def _scalar_or_stack(value: np.ndarray) -> float | np.ndarray:
    """A float for one confusion matrix, an array for a stack of them."""
    return float(value) if np.ndim(value) == 0 else value


# Every metric takes one confusion matrix (K, K) or a stack of them (..., K, K), so that the
# bootstrap (sertool.stats) computes thousands of resampled metrics by the same definition
# that the report uses, in one numpy call.


def weighted_accuracy(cm: np.ndarray) -> float | np.ndarray:
    """WA: accuracy over all utterances."""
    cm = np.asarray(cm, dtype=np.float64)
    return _scalar_or_stack(np.trace(cm, axis1=-2, axis2=-1) / cm.sum(axis=(-2, -1)))


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall per class; NaN for a class absent from the reference."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=-1)
    return np.divide(np.diagonal(cm, axis1=-2, axis2=-1), support,
                     out=np.full(support.shape, np.nan), where=support > 0)


def unweighted_accuracy(cm: np.ndarray) -> float | np.ndarray:
    """UA: mean recall over the classes present in the reference (see module docstring)."""
    return _scalar_or_stack(np.nanmean(per_class_recall(cm), axis=-1))


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 per class with zero_division=0; NaN for a class in neither reference nor decisions."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support, predicted = cm.sum(axis=-1), cm.sum(axis=-2)
    denom = support + predicted  # F1 = 2TP / (2TP + FP + FN) = 2TP / (support + predicted)
    f1 = np.divide(2 * tp, denom, out=np.zeros(denom.shape), where=denom > 0)
    f1[denom == 0] = np.nan
    return f1


def macro_f1(cm: np.ndarray) -> float | np.ndarray:
    """Mean F1 over the classes present in the reference or the decisions."""
    return _scalar_or_stack(np.nanmean(per_class_f1(cm), axis=-1))


@dataclass(frozen=True)
class Metric:
    """One entry of the metric table: how a metric is computed and shown."""

    key: str  # in report.json ("ua"), and ua_mean / ua_std in the comparison's JSON
    label: str  # column header and chart legend ("UA")
    # confusion matrix -> a fraction in [0, 1]; given a stack (..., K, K), ideally an array of
    # them (sertool.stats then needs one call per fold, else it loops over the stack)
    function: Callable[[np.ndarray], float | np.ndarray]
    definition: str  # its sentence under report.md's table of results
    format: str = ".2f"  # format spec of the percentage in tables
    chart: bool = False  # a bar in the ablation chart

    def show(self, value: float | None) -> str:
        """The value as a percentage; "n/a" when there is none."""
        return "n/a" if value is None or math.isnan(value) else f"{100 * value:{self.format}}"


METRICS: tuple[Metric, ...] = (
    Metric("wa", "WA", weighted_accuracy, "WA = accuracy", chart=True),
    Metric("ua", "UA", unweighted_accuracy,
           "UA = mean recall over the classes present in a fold's reference", chart=True),
    Metric("f1", "macro-F1", macro_f1,
           "macro-F1 over the classes in reference or decisions (a 0/0 counts as 0)"),
)
# UA is the headline of SER results (and what model selection keeps): the comparison's columns
# and the chart's bars lead with it; reports list the metrics in table order.
HEADLINE = "ua"


def headline_first() -> tuple[Metric, ...]:
    """The table with the headline metric first, the others in table order."""
    return tuple(sorted(METRICS, key=lambda m: m.key != HEADLINE))


@dataclass
class FoldMetrics:
    """Metrics of one fold (or of the pooled confusion over all folds)."""

    name: str
    confusion: np.ndarray
    values: dict[str, float]  # metric key -> value, for every entry of METRICS

    def __getattr__(self, key: str) -> float:
        """``fold.ua``: a metric's key reads as an attribute."""
        values = self.__dict__.get("values", {})
        if key in values:
            return values[key]
        raise AttributeError(f"{type(self).__name__} has no attribute or metric {key!r}")

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @classmethod
    def from_confusion(cls, name: str, cm: np.ndarray) -> FoldMetrics:
        cm = np.asarray(cm, dtype=np.int64)
        if cm.sum() == 0:
            raise MetricsError(f"fold {name}: no utterances to score")
        return cls(name, cm, {m.key: m.function(cm) for m in METRICS})

    def to_dict(self, classes: Sequence[str]) -> dict:
        recall, f1 = per_class_recall(self.confusion), per_class_f1(self.confusion)
        return {
            "fold": self.name, "n": self.n, **self.values,
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


# ----------------------------------------------------------------------------- model selection

# Emotion models keep the epoch with the best held-out UA, whichever trainer made them: the
# frozen-trunk head (sertool.transfer.head) and sertool train --task emotion (the unfreeze and
# scratch rows of an ablation), so every row of a table is selected on the metric it reports.
SELECTION_METRIC = "valid_ua"


def best_epoch(history: Sequence[Mapping[str, float]], metric: str = SELECTION_METRIC
               ) -> Mapping[str, float] | None:
    """The epoch row model selection keeps: the highest held-out ``metric``, ties broken by the
    lower held-out loss, then by the earlier epoch. Rows without the metric (or NaN: no held-out
    set) are not candidates, nor are rows whose metric or held-out loss is NaN or infinite (a
    held-out set the model overflowed on: its decisions mean nothing); None when no row is."""
    scored = [row for row in history if math.isfinite(row.get(metric, math.nan))
              and math.isfinite(row.get("valid_loss", math.nan))]
    return max(scored, key=lambda row: (row[metric], -row["valid_loss"]), default=None)
