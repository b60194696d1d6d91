"""How sure the reported numbers are: bootstrap intervals and paired tests over test speakers.

The one home of sertool's statistics (numpy only). ``sertool score`` uses it for the 95 %
intervals of every metric in ``sertool.metrics.METRICS`` and for the paired comparison of
systems; the README's "Reading the intervals and the paired test" says how to read them.

Why speakers. In a speaker-independent protocol the test utterances of one speaker are not
independent (same voice, same microphone, same acting style): a model tends to be right or wrong
on a speaker as a whole. Resampling utterances one by one treats 240 utterances of 4 speakers as
240 independent draws and gives intervals that are far too narrow; the unit of resampling is
therefore the test speaker (utterances only when the data dir has no usable utt2spk, and the
report then says so).

The statistic is the headline of the report, recomputed in every resample exactly as the report
computes it: each metric per fold (from the fold's confusion matrix, by the metric's own
function), then the mean over folds (and over seeds, for a system of several runs).

* Interval: percentile bootstrap. In each resample the test speakers of every fold are drawn
  with replacement, as many as the fold has (stratified by fold: every fold keeps its size in
  speakers, folds are not mixed). A protocol whose folds each hold a single speaker
  (leave-one-speaker-out) cannot vary within a fold, so there the folds, i.e. the speakers, are
  drawn instead and their per-fold metrics averaged.
* Paired difference (system minus reference): the same bootstrap with the same draws for both
  systems (paired), so what the speakers have in common cancels out.
* p-value: a two-sided sign-flip permutation test over test speakers. Under the null hypothesis
  the two systems are exchangeable on every speaker, so swapping the two systems' outputs on any
  set of speakers gives an equally likely difference; p is the share of swaps whose |difference|
  reaches the observed one. Chosen over a bootstrap p-value because it is exact at any number
  of speakers (with few speakers a bootstrap test is anti-conservative), needs no shift of the
  bootstrap distribution to the null, and UA, a ratio, is recomputed from the swapped confusion
  counts rather than assumed additive. With at most ``log2(n)`` speakers every swap is
  enumerated (an exact p); otherwise ``n`` random swaps, p = (1 + hits) / (1 + n).

Speed: each fold's test set is stored as per-speaker confusion counts (U, K, K); a resample is a
vector of draw counts per speaker, so all resampled confusions of a fold are one matrix product
(B, U) @ (U, K*K), and each metric one vectorised call over the (B, K, K) stack.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
LEVEL = 0.95
WITHIN_FOLDS = "speakers within each fold"
FOLDS = "folds (one test speaker each)"

MetricFunction = Callable[[np.ndarray], "float | np.ndarray"]


@dataclass(frozen=True)
class FoldUnits:
    """One fold's test set as resampling units (speakers; utterances in the fallback):
    ``counts[u]`` is the confusion matrix of unit ``units[u]``, the fold's confusion their sum."""

    name: str
    units: tuple[str, ...]
    counts: np.ndarray  # (U, K, K) int64, rows = reference, columns = decision

    @property
    def confusion(self) -> np.ndarray:
        return self.counts.sum(axis=0)

    def reorder(self, order: Sequence[int]) -> FoldUnits:
        """The same counts with the classes in ``order`` (indices into the current classes)."""
        idx = np.asarray(order, dtype=np.int64)
        return FoldUnits(self.name, self.units, self.counts[:, idx][:, :, idx])


# A run: one experiment's folds, in protocol order. A system: its runs (seeds), all on the
# same folds and test speakers.
Run = Sequence[FoldUnits]
System = Sequence[Run]


def fold_units(name: str, labels: Sequence[int], preds: Sequence[int], groups: Sequence[str],
               n_classes: int) -> FoldUnits:
    """Per-unit confusion counts of one fold; ``groups[i]`` is utterance i's unit (speaker)."""
    units, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    counts = np.zeros((len(units), n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (inverse.ravel(), np.asarray(labels, dtype=np.int64),
                       np.asarray(preds, dtype=np.int64)), 1)
    return FoldUnits(name, tuple(str(u) for u in units), counts)


def metric_values(function: MetricFunction, cms: np.ndarray) -> np.ndarray:
    """``function`` on every confusion of a (..., K, K) stack: one call when the function takes
    stacks (every metric of sertool.metrics does), else a loop over the stack."""
    cms = np.asarray(cms)
    flat = cms.reshape(-1, *cms.shape[-2:])
    try:
        out = np.asarray(function(flat), dtype=np.float64)
        # a function written for one matrix may return something of another shape, or the
        # right shape by chance: its first value must be what it gives for the first matrix
        if out.shape == flat.shape[:1] and np.allclose(out[0], function(flat[0]),
                                                       equal_nan=True):
            return out.reshape(cms.shape[:-2])
    except (TypeError, ValueError, IndexError):
        pass
    return np.array([function(c) for c in flat], dtype=np.float64).reshape(cms.shape[:-2])


def _check_system(system: System) -> None:
    if not system or not system[0]:
        raise ValueError("a system needs at least one run with at least one fold")
    first = system[0]
    for run in system[1:]:
        if [(f.name, f.units) for f in run] != [(f.name, f.units) for f in first]:
            raise ValueError("the runs of a system must have the same folds and test units")


def point_estimate(system: System, function: MetricFunction) -> float:
    """The headline: the metric per fold and run, averaged over folds and runs."""
    _check_system(system)
    return float(np.mean([[function(f.confusion) for f in run] for run in system]))


def _draw_counts(rng: np.random.Generator, units: int, resamples: int) -> np.ndarray:
    """(resamples, units): how often each unit is drawn in ``units`` draws with replacement
    (counted with one bincount: faster than rng.multinomial at hundreds of units)."""
    drawn = rng.integers(0, units, size=(resamples, units))
    drawn += units * np.arange(resamples)[:, None]
    return np.bincount(drawn.ravel(), minlength=resamples * units).reshape(resamples, units)


@dataclass(frozen=True)
class Resampling:
    """The draws of one bootstrap. The same draws serve every system evaluated on the same
    folds, which is what makes a difference of two systems paired."""

    mode: str  # WITHIN_FOLDS or FOLDS
    weights: tuple[np.ndarray, ...]  # WITHIN_FOLDS: per fold (B, U_f); FOLDS: one (B, F)
    resamples: int
    seed: int
    unit_sizes: tuple[int, ...]  # units per fold, what the draws were made for

    @classmethod
    def draw(cls, unit_sizes: Sequence[int], resamples: int = DEFAULT_RESAMPLES,
             seed: int = DEFAULT_SEED) -> Resampling:
        """Draw counts per unit (resampling U units with replacement: multinomial(U, 1/U))."""
        if resamples < 1:
            raise ValueError(f"resamples must be at least 1, got {resamples}")
        sizes = tuple(int(u) for u in unit_sizes)
        if not sizes or min(sizes) < 1:
            raise ValueError(f"every fold needs at least one unit, got {sizes}")
        rng = np.random.default_rng(seed)
        if len(sizes) > 1 and max(sizes) == 1:
            return cls(FOLDS, (_draw_counts(rng, len(sizes), resamples),), resamples, seed,
                       sizes)
        weights = tuple(_draw_counts(rng, u, resamples) for u in sizes)
        return cls(WITHIN_FOLDS, weights, resamples, seed, sizes)

    def single_unit_folds(self, run: Run) -> list[str]:
        """Folds that cannot vary under WITHIN_FOLDS (one test unit): they narrow the interval."""
        return [f.name for f in run if len(f.units) == 1] if self.mode == WITHIN_FOLDS else []


def resampled(system: System, function: MetricFunction, plan: Resampling) -> np.ndarray:
    """The headline in every resample, shape (B,)."""
    _check_system(system)
    if tuple(len(f.units) for f in system[0]) != plan.unit_sizes:
        raise ValueError(f"the draws were made for {plan.unit_sizes} units per fold, the system "
                         f"has {tuple(len(f.units) for f in system[0])}")
    if plan.mode == FOLDS:
        per_fold = np.mean([[function(f.confusion) for f in run] for run in system], axis=0)
        (weights,) = plan.weights
        return weights @ per_fold / len(per_fold)
    total = np.zeros(plan.resamples)
    for run in system:
        for fold, weights in zip(run, plan.weights, strict=True):
            k = fold.counts.shape[-1]
            cms = (weights.astype(np.float64) @ fold.counts.reshape(len(fold.units), -1))
            total += metric_values(function, cms.reshape(-1, k, k))
    return total / (len(system) * len(plan.weights))


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` share of the resampled values."""
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def bootstrap_interval(system: System, function: MetricFunction, plan: Resampling,
                       level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the headline over the resampled test units."""
    return percentile_interval(resampled(system, function, plan), level)


@dataclass(frozen=True)
class PairedResult:
    """System minus reference on the same test speakers."""

    difference: float  # headline(system) - headline(reference)
    low: float
    high: float  # paired bootstrap interval of the difference
    p_value: float | None  # sign-flip permutation test; None when the runs cannot be paired
    permutations: int  # swaps evaluated (every one when exact)
    exact: bool  # every possible swap enumerated
    note: str = ""  # why there is no p-value

    def to_dict(self) -> dict:
        return {"difference": self.difference, "interval": [self.low, self.high],
                "p_value": self.p_value, "permutations": self.permutations,
                "exact": self.exact, "note": self.note}


def _flip_patterns(n_units: int, permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """(n, n_units) 0/1 swaps: every pattern when there are at most ``permutations``, else
    ``permutations`` random ones."""
    if n_units <= 20 and 2 ** n_units <= permutations:
        return np.array(list(itertools.product((0, 1), repeat=n_units)), dtype=np.float64), True
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, size=(permutations, n_units)).astype(np.float64), False


def sign_flip_p_value(system: System, reference: System, function: MetricFunction,
                      permutations: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
                      ) -> tuple[float, int, bool]:
    """Two-sided p-value of headline(system) - headline(reference), swapping the two systems'
    outputs per test unit (all seeds at once: run i of one system is paired with run i of the
    other). Returns (p, swaps evaluated, exact)."""
    _check_system(system)
    _check_system(reference)
    if len(system) != len(reference):
        raise ValueError(f"sign flips pair runs: {len(system)} runs against {len(reference)}")
    observed = point_estimate(system, function) - point_estimate(reference, function)
    sizes = [len(f.units) for f in system[0]]
    flips, exact = _flip_patterns(sum(sizes), permutations, seed)
    starts = np.cumsum([0, *sizes])
    diff = np.zeros(len(flips))
    for run_a, run_b in zip(system, reference, strict=True):
        for f, (fold_a, fold_b) in enumerate(zip(run_a, run_b, strict=True)):
            k = fold_a.counts.shape[-1]
            flat_a = fold_a.counts.reshape(sizes[f], -1).astype(np.float64)
            flat_b = fold_b.counts.reshape(sizes[f], -1).astype(np.float64)
            moved = flips[:, starts[f]:starts[f + 1]] @ (flat_b - flat_a)  # what the swaps move
            swapped_a = (flat_a.sum(axis=0) + moved).reshape(-1, k, k)
            swapped_b = (flat_b.sum(axis=0) - moved).reshape(-1, k, k)
            diff += metric_values(function, swapped_a) - metric_values(function, swapped_b)
    diff /= len(system) * len(sizes)
    hits = int(np.sum(np.abs(diff) >= abs(observed) - 1e-12))  # float noise: ties count
    if exact:
        return hits / len(flips), len(flips), True
    return (1 + hits) / (1 + len(flips)), len(flips), False


def paired_comparison(system: System, reference: System, function: MetricFunction,
                      plan: Resampling, level: float = LEVEL) -> PairedResult:
    """Difference, its paired bootstrap interval (the same draws for both) and the sign-flip
    p-value (as many swaps as resamples, the same seed)."""
    difference = point_estimate(system, function) - point_estimate(reference, function)
    low, high = percentile_interval(
        resampled(system, function, plan) - resampled(reference, function, plan), level)
    if len(system) != len(reference):
        return PairedResult(difference, low, high, None, 0, False,
                            f"no p-value: the sign flips pair the runs one to one, and there "
                            f"are {len(system)} runs against {len(reference)}")
    p, n, exact = sign_flip_p_value(system, reference, function, plan.resamples, plan.seed)
    return PairedResult(difference, low, high, p, n, exact)


def describe_interval(unit: str, mode: str, resamples: int, seed: int,
                      level: float = LEVEL, n_units: int | None = None) -> str:
    """The method of the intervals in words (for report.md and the comparison)."""
    pct = f"{100 * level:g} %"
    count = f"{n_units} " if n_units is not None else ""
    settings = f"({resamples} resamples, seed {seed})"
    if unit != "speaker":
        return (f"{pct} intervals: percentile bootstrap over the {count}test UTTERANCES "
                f"{settings}, because the test speakers are unknown: this treats the "
                f"utterances of one speaker as independent, so the intervals are narrower than "
                f"a speaker bootstrap's would be. Each metric is computed per fold on the drawn "
                f"utterances and averaged over folds, as the mean above.")
    if mode == FOLDS:
        return (f"{pct} intervals: percentile bootstrap over the {count}test speakers "
                f"{settings}; every fold has a single test speaker, so the folds (the "
                f"speakers) are drawn with replacement and their per-fold metrics averaged, as "
                f"the mean above.")
    return (f"{pct} intervals: percentile bootstrap over the {count}test speakers {settings}: "
            f"in each resample the test speakers of every fold are drawn with replacement (as "
            f"many as the fold has), each metric is computed per fold on the drawn speakers' "
            f"utterances and averaged over folds, as the mean above.")


def describe_test(level: float = LEVEL) -> str:
    """The paired comparison's method in words."""
    return (f"Δ = system minus reference, in points of the headline (mean over folds, and over "
            f"seeds for a system of several runs); its {100 * level:g} % interval is a paired "
            f"bootstrap over the same test speakers (the same draws for both systems). p: "
            f"two-sided sign-flip permutation test over test speakers (the two systems' "
            f"outputs swapped on random sets of speakers, run i of each system paired; "
            f"\"exact\" when every swap was enumerated). A small p (say below 0.05) says the "
            f"difference is unlikely to come from which speakers happened to be tested; it "
            f"does not cover training noise beyond the seeds given.")
