"""sertool.stats against known answers: coverage, p-values, resampling by speaker, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sertool import metrics, stats
from sertool.metrics import unweighted_accuracy

K = 4  # classes


def _speaker_effect_corpus(rng: np.random.Generator, folds: int = 6, speakers: int = 8,
                           per_class: int = 5, mean: float = 0.6, spread: float = 6.0
                           ) -> tuple[list[stats.FoldUnits], list[stats.FoldUnits]]:
    """A system whose accuracy varies by speaker (a_s ~ Beta with mean ``mean``); every speaker
    has ``per_class`` utterances of every class, so a fold's UA is the mean of its speakers'
    accuracies and the expected UA is exactly ``mean``. Returns the fold units by speaker and
    the same decisions with every utterance its own unit."""
    by_speaker, by_utt = [], []
    for f in range(folds):
        labels, preds, spks = [], [], []
        for s in range(speakers):
            acc = rng.beta(mean * spread, (1 - mean) * spread)
            for c in range(K):
                right = rng.random(per_class) < acc
                labels += [c] * per_class
                preds += [c if r else (c + 1) % K for r in right]
                spks += [f"f{f}s{s}"] * per_class
        utts = [f"{spk}-{i}" for i, spk in enumerate(spks)]
        by_speaker.append(stats.fold_units(str(f), labels, preds, spks, K))
        by_utt.append(stats.fold_units(str(f), labels, preds, utts, K))
    return by_speaker, by_utt


def _interval(folds: list[stats.FoldUnits], resamples: int = 400, seed: int = 0
              ) -> tuple[float, float]:
    plan = stats.Resampling.draw([len(f.units) for f in folds], resamples, seed)
    return stats.bootstrap_interval([folds], unweighted_accuracy, plan)


def test_speaker_bootstrap_interval_covers_the_true_ua_at_about_the_stated_rate():
    rng = np.random.default_rng(20)
    repeats, utt_repeats = 200, 60
    hits_speaker = hits_utt = 0
    for r in range(repeats):
        by_speaker, by_utt = _speaker_effect_corpus(rng)
        low, high = _interval(by_speaker, seed=r)
        hits_speaker += low <= 0.6 <= high
        if r < utt_repeats:
            low, high = _interval(by_utt, 200, seed=r)
            hits_utt += low <= 0.6 <= high
    # 95 % nominal; with 8 speakers per fold the percentile bootstrap's variance is short by
    # 7/8 (about 93 % expected); 200 repeats: binomial sd 1.5 points
    assert 0.88 <= hits_speaker / repeats <= 0.99
    # the same decisions resampled by utterance ignore the speaker effect and undercover
    # (about 70 %; 60 repeats: sd 6 points)
    assert hits_utt / utt_repeats < 0.85


def test_resampling_is_by_speaker_all_right_or_all_wrong_speakers():
    # 6 folds x 4 speakers; each speaker is all right or all wrong (40 utterances each)
    rng = np.random.default_rng(3)
    by_speaker, by_utt = [], []
    for f in range(6):
        right = np.array([1, 0, 1, 0]) if f % 2 else rng.permutation([1, 1, 1, 0])
        labels = np.tile(np.arange(K), 40)  # 160 utterances, 40 per speaker, balanced
        spk = np.repeat([f"f{f}s{s}" for s in range(4)], 40)
        ok = np.repeat(right, 40).astype(bool)
        preds = np.where(ok, labels, (labels + 1) % K)
        by_speaker.append(stats.fold_units(str(f), labels, preds, spk, K))
        by_utt.append(stats.fold_units(str(f), labels, preds, [str(i) for i in range(160)],
                                       K))
    assert [len(f.units) for f in by_speaker] == [4] * 6
    assert [len(f.units) for f in by_utt] == [160] * 6
    point = stats.point_estimate([by_speaker], unweighted_accuracy)
    assert point == pytest.approx(stats.point_estimate([by_utt], unweighted_accuracy))
    spk_low, spk_high = _interval(by_speaker, 1000)
    utt_low, utt_high = _interval(by_utt, 1000)
    assert spk_low <= point <= spk_high and utt_low <= point <= utt_high
    # speaker resampling: every draw moves a quarter of a fold; utterance resampling averages
    # 160 near-independent draws: much narrower (about 6x here)
    assert (spk_high - spk_low) > 4 * (utt_high - utt_low)


def _two_systems(rng: np.random.Generator, folds: int = 6, speakers: int = 4,
                 utts: int = 12, better: bool = True) -> tuple[list, list]:
    """A makes 1 error per speaker; B makes 4 (better) or the same decisions (not better)."""
    a_folds, b_folds = [], []
    for f in range(folds):
        labels = np.tile(np.arange(K), speakers * utts // K)
        spk = np.repeat([f"f{f}s{s}" for s in range(speakers)], utts)
        pos = np.tile(np.arange(utts), speakers)
        a = np.where(pos < 1, (labels + 1) % K, labels)
        b = np.where(pos < 4, (labels + 1) % K, labels) if better else a.copy()
        a_folds.append(stats.fold_units(str(f), labels, a, spk, K))
        b_folds.append(stats.fold_units(str(f), labels, b, spk, K))
    return a_folds, b_folds


def test_p_value_small_when_better_on_every_speaker_and_one_when_identical():
    a, b = _two_systems(np.random.default_rng(0))
    plan = stats.Resampling.draw([4] * 6, 1000, 0)
    result = stats.paired_comparison([a], [b], unweighted_accuracy, plan)
    assert result.difference == pytest.approx(3 / 12)  # 11/12 against 8/12 on every speaker
    assert result.low == pytest.approx(0.25) and result.high == pytest.approx(0.25)
    # 24 speakers: 2^24 swaps, 1000 drawn; only the identity and its mirror reach |0.25|
    assert not result.exact and result.permutations == 1000
    assert result.p_value < 0.01
    same = stats.paired_comparison([a], [a], unweighted_accuracy, plan)
    assert same.difference == 0 and (same.low, same.high) == (0, 0)
    assert same.p_value == 1.0
    # the reverse direction: the same p, the difference negated
    back = stats.paired_comparison([b], [a], unweighted_accuracy, plan)
    assert back.difference == pytest.approx(-0.25) and back.p_value == result.p_value


def test_few_speakers_enumerate_every_swap_for_an_exact_p():
    a, b = _two_systems(np.random.default_rng(0), folds=2, speakers=2)
    p, n, exact = stats.sign_flip_p_value([a], [b], unweighted_accuracy, 1000, 0)
    # 4 speakers: 16 swaps, of which the identity and the full swap reach the observed |d|
    assert exact and n == 16 and p == pytest.approx(2 / 16)


def test_sign_flip_p_values_are_calibrated_under_the_null():
    rng = np.random.default_rng(7)
    rejections, repeats = 0, 150
    for r in range(repeats):
        # two systems drawn from the same speaker-effect process on the same speakers
        a_folds, b_folds = [], []
        for f in range(3):
            labels = np.tile(np.arange(K), 12)  # 4 speakers x 12
            spk = np.repeat([f"s{s}" for s in range(4)], 12)
            acc = np.repeat(rng.beta(6, 4, size=4), 12)  # the speaker effect both share
            a = np.where(rng.random(48) < acc, labels, (labels + 1) % K)
            b = np.where(rng.random(48) < acc, labels, (labels + 1) % K)
            a_folds.append(stats.fold_units(str(f), labels, a, spk, K))
            b_folds.append(stats.fold_units(str(f), labels, b, spk, K))
        p, _, _ = stats.sign_flip_p_value([a_folds], [b_folds], unweighted_accuracy, 200, r)
        rejections += p < 0.05
    assert rejections / repeats < 0.12  # nominal 5 %; 150 repeats: sd 1.8 points


def test_unequal_runs_give_an_interval_but_no_p_value():
    a, b = _two_systems(np.random.default_rng(0))
    plan = stats.Resampling.draw([4] * 6, 200, 0)
    result = stats.paired_comparison([a, a], [b], unweighted_accuracy, plan)
    assert result.difference == pytest.approx(0.25)
    assert result.p_value is None and "2 runs against 1" in result.note


def test_a_system_of_several_runs_averages_over_folds_and_runs():
    a, b = _two_systems(np.random.default_rng(0))
    both = [a, b]
    assert stats.point_estimate(both, unweighted_accuracy) == pytest.approx((11 / 12 + 8 / 12)
                                                                            / 2)
    plan = stats.Resampling.draw([4] * 6, 200, 0)
    low, high = stats.bootstrap_interval(both, unweighted_accuracy, plan)
    assert low == pytest.approx(19 / 24) and high == pytest.approx(19 / 24)  # no speaker varies
    with pytest.raises(ValueError, match="same folds and test units"):
        stats.point_estimate([a, a[:3]], unweighted_accuracy)


def test_leave_one_speaker_out_resamples_the_folds():
    folds = [stats.fold_units(str(f), [0, 1, 0, 1], [0, 1, 1 - (f % 2), 1], [f"s{f}"] * 4, 2)
             for f in range(5)]
    plan = stats.Resampling.draw([1] * 5, 1000, 0)
    assert plan.mode == stats.FOLDS and plan.single_unit_folds(folds) == []
    # fold UAs: 1, .75, 1, .75, 1 -> mean .9; the interval lies between the extremes
    low, high = stats.bootstrap_interval([folds], unweighted_accuracy, plan)
    assert 0.75 <= low < 0.9 < high <= 1.0
    # one fold of one speaker among larger ones: resampled within folds, and named as a fold
    # that cannot vary (the report notes it narrows the interval)
    mixed = [folds[0], stats.fold_units("x", [0, 1, 1], [0, 1, 0], ["a", "b", "c"], 2)]
    within = stats.Resampling.draw([1, 3], 10, 0)
    assert within.mode == stats.WITHIN_FOLDS and within.single_unit_folds(mixed) == ["0"]


def test_draws_are_seeded_and_multinomial():
    one = stats.Resampling.draw([4, 5], 100, 3)
    two = stats.Resampling.draw([4, 5], 100, 3)
    assert all(np.array_equal(x, y) for x, y in zip(one.weights, two.weights, strict=True))
    assert not np.array_equal(one.weights[0], stats.Resampling.draw([4, 5], 100, 4).weights[0])
    assert one.weights[0].shape == (100, 4) and (one.weights[1].sum(axis=1) == 5).all()
    with pytest.raises(ValueError, match="at least 1"):
        stats.Resampling.draw([4], 0)


def test_every_metric_takes_a_stack_and_gives_what_it_gives_one_matrix():
    rng = np.random.default_rng(1)
    cms = rng.integers(0, 4, size=(50, K, K))
    cms[:10, 2] = 0  # class 2 absent from the reference
    cms[:5, :, 3] = 0
    cms[:5, 3] = 0  # class 3 in neither
    for m in metrics.METRICS:
        looped = np.array([m.function(c) for c in cms])
        assert np.allclose(stats.metric_values(m.function, cms), looped), m.key
        assert isinstance(m.function(cms[0]), float)
    # a metric written for one matrix only still works, by a loop
    def one_only(cm):
        return float(cm[0, 0] / cm.sum())

    assert np.allclose(stats.metric_values(one_only, cms), [one_only(c) for c in cms])


def test_fold_units_sum_to_the_fold_confusion_and_reorder_classes():
    units = stats.fold_units("1", [0, 1, 2, 0], [0, 2, 2, 1], ["b", "a", "b", "a"], 3)
    assert units.units == ("a", "b")
    assert units.confusion.tolist() == metrics.confusion_matrix([0, 1, 2, 0], [0, 2, 2, 1],
                                                                3).tolist()
    assert units.counts[0].tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 0]]  # a: 1->2, 0->1
    swapped = units.reorder([2, 1, 0])
    assert swapped.confusion[0, 0] == units.confusion[2, 2]
    assert swapped.confusion[2, 1] == units.confusion[0, 1]


def test_speed_1440_utterances_1000_resamples_every_metric_well_under_a_second():
    rng = np.random.default_rng(0)
    folds = []
    for f in range(6):  # RAVDESS-sized: 6 folds x 4 actors x 60 utterances, 8 classes
        labels = rng.integers(0, 8, 240)
        preds = np.where(rng.random(240) < 0.5, labels, rng.integers(0, 8, 240))
        folds.append(stats.fold_units(str(f), labels, preds,
                                      np.repeat([f"{f}{s}" for s in range(4)], 60), 8))
    start = time.perf_counter()
    plan = stats.Resampling.draw([4] * 6, 1000, 0)
    for m in metrics.METRICS:
        stats.bootstrap_interval([folds], m.function, plan)
    stats.paired_comparison([folds], [folds], unweighted_accuracy, plan)
    assert time.perf_counter() - start < 1.0
