"""Class balance for training on unbalanced corpora: class weights in the loss and a
class-balanced sampler (``class_weights`` / ``sampler`` of the head and the trainer).

Both are computed from the TRAINING labels only (a fold's training part, never its test or
held-out part): ``balanced`` weights are scikit-learn's ``class_weight="balanced"``,
``n_samples / (n_classes * n_c)``, so on a balanced training set every weight is 1 and the
loss is the plain mean cross-entropy. The balanced sampler draws each item of an epoch with
probability proportional to ``1 / n_c`` of its class (with replacement), so every class is
drawn with the same probability, ``1 / n_classes``, and an epoch holds as many draws as there
are items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLASS_WEIGHTS = ("none", "balanced")
SAMPLERS = ("shuffle", "balanced")
# the options' defaults: configurations holding them are recorded without them (they were
# added after experiments were made, which keep their identity and resume)
DEFAULTS = {"class_weights": "none", "sampler": "shuffle"}


def without_defaults(conf: dict) -> dict:
    """``conf`` without the balance options that hold their defaults (a new dict)."""
    return {k: v for k, v in conf.items() if not (k in DEFAULTS and v == DEFAULTS[k])}


class BalanceError(ValueError):
    """Class weights or balanced sampling asked of labels that cannot give them."""


def class_counts(labels: Sequence[int] | np.ndarray, n_classes: int) -> np.ndarray:
    """How many items of each class index 0..n_classes-1 ``labels`` holds."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise BalanceError(f"class indices must lie in 0..{n_classes - 1}, got "
                           f"{int(labels.min())}..{int(labels.max())}")
    return np.bincount(labels, minlength=n_classes)


def balanced_class_weights(labels: Sequence[int] | np.ndarray, n_classes: int) -> np.ndarray:
    """``n_samples / (n_classes * n_c)`` per class (float64, shape (n_classes,)); a class
    without any training item is refused (its weight would be infinite)."""
    counts = class_counts(labels, n_classes)
    if (counts == 0).any():
        missing = [int(i) for i in np.flatnonzero(counts == 0)]
        raise BalanceError(f"balanced class weights: class index(es) {missing} have no "
                           "training item")
    return counts.sum() / (n_classes * counts.astype(np.float64))


def loss_weights(mode: str, labels: Sequence[int] | np.ndarray,
                 n_classes: int) -> np.ndarray | None:
    """The cross-entropy's class weights for ``class_weights = mode`` (None: unweighted)."""
    if mode not in CLASS_WEIGHTS:
        raise BalanceError(f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, got "
                           f"{mode!r}")
    return balanced_class_weights(labels, n_classes) if mode == "balanced" else None


def balanced_probabilities(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Each item's probability of being drawn by the balanced sampler: ``1 / (K * n_c)`` for
    an item of class c, K the classes present (so each present class totals ``1 / K``)."""
    labels = np.asarray(labels, dtype=np.int64)
    if not labels.size:
        raise BalanceError("balanced sampling of an empty training set")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / (len(counts) * counts[inverse].astype(np.float64))


def check_sampler(mode: str) -> None:
    if mode not in SAMPLERS:
        raise BalanceError(f"sampler must be one of {', '.join(SAMPLERS)}, got {mode!r}")
