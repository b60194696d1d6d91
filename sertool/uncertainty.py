"""Per-utterance uncertainty of a posterior and accuracy when the most uncertain are set aside.

``entropy`` is the Shannon entropy of the class posterior divided by ``log K`` (K classes), so
it reads 0..1 whatever the number of classes: 0 when one class has probability 1, 1 for the
uniform posterior. ``max_prob`` is the largest class probability (1/K..1). The coverage table
orders the utterances by entropy (most uncertain first, ties by their position: the order is
deterministic) and sets aside the first ``round(n * p / 100)`` for each percentage p, scoring
the rest; pooled over folds, as the decisions are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sertool.metrics import confusion_matrix, unweighted_accuracy, weighted_accuracy

SET_ASIDE = (0, 10, 20, 30, 50)  # percentages of the coverage table
ORDERING = "normalised entropy of the posterior, most uncertain set aside first"


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy of each row of ``probs`` (N, K) over ``log K``: 0 (certain) .. 1 (uniform)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"posteriors must be (N, K) with K >= 2, got shape {probs.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, -probs * np.log(probs), 0.0)  # 0 log 0 = 0
    return np.clip(terms.sum(axis=1) / np.log(probs.shape[1]), 0.0, 1.0)


def max_probability(probs: np.ndarray) -> np.ndarray:
    return np.asarray(probs, dtype=np.float64).max(axis=1)


def coverage_table(labels: Sequence[int], preds: Sequence[int], probs: np.ndarray,
                   n_classes: int, set_aside: Sequence[int] = SET_ASIDE) -> list[dict]:
    """One row per percentage: ``set_aside_pct``, ``kept`` (utterances scored), ``coverage``
    (kept / n), ``ua`` and ``wa`` (fractions) of the kept ones."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    order = np.argsort(-normalised_entropy(probs), kind="stable")  # most uncertain first
    rows = []
    for pct in set_aside:
        if not 0 <= pct < 100:
            raise ValueError(f"a share set aside must lie in 0..99 %, got {pct}")
        drop = int(round(len(labels) * pct / 100))
        kept = order[drop:]
        cm = confusion_matrix(labels[kept], preds[kept], n_classes)
        rows.append({"set_aside_pct": int(pct), "kept": int(len(kept)),
                     "coverage": len(kept) / len(labels),
                     "ua": float(unweighted_accuracy(cm)), "wa": float(weighted_accuracy(cm))})
    return rows
