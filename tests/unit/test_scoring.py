"""Metrics against hand-computed cases, reports, comparisons and plots (`sertool score`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scoring_experiment import CLASSES, UTT2LABEL, _data_dir, _experiment

from sertool import scoring
from sertool.cli import main
from sertool.datadir import read_folds, write_folds
from sertool.expdir import ExperimentError, read_posteriors, write_posteriors
from sertool.folds import speaker_kfold
from sertool.metrics import (
    confusion_matrix,
    macro_f1,
    mean_std,
    per_class_f1,
    row_normalise,
    unweighted_accuracy,
    weighted_accuracy,
)
from sertool.scoring import (
    ScoringError,
    compare,
    plot_ablation,
    report_markdown,
    score_experiment,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ metrics, by hand


def test_ua_and_wa_on_an_imbalanced_confusion():
    cm = np.array([[90, 10, 0],   # a: 100 utterances, recall 0.9
                   [8, 2, 0],     # b: 10, recall 0.2
                   [5, 0, 5]])    # c: 10, recall 0.5
    assert weighted_accuracy(cm) == pytest.approx(97 / 120)  # 0.8083: dominated by class a
    assert unweighted_accuracy(cm) == pytest.approx((0.9 + 0.2 + 0.5) / 3)  # 0.5333
    # F1 = 2TP / (support + predicted): a 180/203, b 4/22, c 10/15
    assert macro_f1(cm) == pytest.approx((180 / 203 + 4 / 22 + 10 / 15) / 3)
    assert row_normalise(cm)[1].tolist() == pytest.approx([0.8, 0.2, 0.0])


def test_confusion_from_label_indices():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_class_never_predicted_counts_with_recall_and_f1_zero():
    cm = np.array([[3, 1, 0], [1, 2, 0], [1, 1, 0]])  # c is in the reference, never decided
    assert unweighted_accuracy(cm) == pytest.approx((3 / 4 + 2 / 3 + 0) / 3)
    assert per_class_f1(cm).tolist() == pytest.approx([6 / 9, 4 / 7, 0.0])
    assert macro_f1(cm) == pytest.approx((6 / 9 + 4 / 7) / 3)
    assert weighted_accuracy(cm) == pytest.approx(5 / 9)


def test_class_absent_from_reference_is_left_out_of_ua_but_not_f1():
    cm = np.array([[2, 0, 1], [0, 3, 1], [0, 0, 0]])  # c decided twice, never in the reference
    assert unweighted_accuracy(cm) == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert macro_f1(cm) == pytest.approx((4 / 5 + 6 / 7 + 0) / 3)
    # a class in neither reference nor decisions is left out of both
    cm4 = np.zeros((4, 4), dtype=int)
    cm4[:3, :3] = cm
    assert unweighted_accuracy(cm4) == pytest.approx(unweighted_accuracy(cm))
    assert macro_f1(cm4) == pytest.approx(macro_f1(cm))
    assert row_normalise(cm4)[3].tolist() == [0, 0, 0, 0]


def test_mean_and_sample_std_over_folds():
    mean, std = mean_std([0.5, 0.7, 0.6])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)  # ddof=1
    assert mean_std([0.4]) == (0.4, None)


# ------------------------------------------------------------------ posteriors files


def test_posteriors_round_trip(tmp_path):
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    path = tmp_path / "posteriors.tsv"
    write_posteriors(path, ["u1", "u2"], ["a", "b"], CLASSES, probs)
    # entropy over log 3: -(.7 ln .7 + .2 ln .2 + .1 ln .1) / ln 3 = 0.729847; max_prob 0.7
    assert path.read_text().splitlines()[:2] == [
        "utt\tlabel\tpred\ta\tb\tc\tentropy\tmax_prob",
        "u1\ta\ta\t0.700000\t0.200000\t0.100000\t0.729847\t0.700000"]
    post = read_posteriors(path, CLASSES)
    np.testing.assert_allclose(post.entropy, [0.729847, 0.581672], atol=1e-6)
    assert post.utts == ["u1", "u2"] and post.labels.tolist() == [0, 1]
    assert post.preds.tolist() == [0, 2] and np.allclose(post.probs, probs)


@pytest.mark.parametrize("row, message", [
    ("u2\tz\ta\t0.5\t0.5\t0", r"posteriors.tsv:3: unknown label 'z' for u2"),
    ("u2\ta\tq\t0.5\t0.5\t0", r"posteriors.tsv:3: unknown decision 'q' for u2"),
    ("u2\ta\ta\t0.5\t0.4\t0", r"posteriors.tsv:3: probabilities of u2 sum to 0.900000, not 1"),
    ("u2\ta\ta\t0.5\t0.5", r"posteriors.tsv:3: 5 fields, the header has 6"),
    ("u2\ta\ta\t0.5\tx\t0.5", r"posteriors.tsv:3: bad probability for u2"),
    ("u2\ta\ta\t1.5\t-0.5\t0", r"posteriors.tsv:3: probabilities of u2 must lie in \[0, 1\]"),
    ("u1\ta\ta\t0.5\t0.5\t0", r"posteriors.tsv:3: utterance u1 repeated \(first on line 2\)"),
])
def test_bad_posteriors_rows_give_file_and_line(tmp_path, row, message):
    path = tmp_path / "posteriors.tsv"
    path.write_text(f"utt\tlabel\tpred\ta\tb\tc\nu1\ta\ta\t1\t0\t0\n{row}\n")
    with pytest.raises(ExperimentError, match=message):
        read_posteriors(path, CLASSES)


def test_posteriors_header_must_match_classes(tmp_path):
    path = tmp_path / "posteriors.tsv"
    path.write_text("utt\tlabel\tpred\tb\ta\tc\nu1\ta\ta\t1\t0\t0\n")
    with pytest.raises(ExperimentError, match=r"posteriors.tsv:1: class columns \['b', 'a', 'c'\] "
                       r"differ from the experiment's classes"):
        read_posteriors(path, CLASSES)
    path.write_text("utt\tlab\tpred\ta\tb\tc\n")
    with pytest.raises(ExperimentError, match="posteriors.tsv:1: header must be"):
        read_posteriors(path)


# ------------------------------------------------------------------ experiments and reports


def _is_png(path: Path) -> tuple[int, ...]:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    return matplotlib.image.imread(path).shape


def test_report_of_a_clean_experiment(tmp_path):
    data = _data_dir(tmp_path)
    exp = _experiment(tmp_path, data)
    score = score_experiment(exp)
    written = write_report(score)
    assert [p.name for p in written] == ["report.md", "report.json", "confusion_all.png",
                                         "confusion_1.png", "confusion_2.png", "confusion_3.png",
                                         "confusion_4.png", "coverage.png"]
    report = (exp / "report.md").read_text().splitlines()
    assert report[0] == ("SPEAKER-INDEPENDENT: no speaker and no identical recording on both "
                         "sides of any of 4 folds")
    text = "\n".join(report)
    for needle in ("| corpus | toy |", "| class map | x=a |",
                   "segment-level mean and variance (default)", "pooling=stats",
                   "none (random initialisation, no transfer)", "policy=conservative, copies=2",
                   "| command | `sertool finetune feats data exp` |",
                   "| 2 | 6 | 83.33 |", "| **mean ± std (4 of 4 folds)** | 24 | 75.00 ± 21.52 |"):
        assert needle in text
    assert "INCOMPLETE" not in text
    result = json.loads((exp / "report.json").read_text())
    assert result["speaker_independent"] is True and result["complete"] is True
    assert [f["wa"] for f in result["folds"]] == pytest.approx([1, 5 / 6, 4 / 6, 3 / 6])
    assert result["mean"]["wa"] == pytest.approx(0.75)
    assert result["std"]["wa"] == pytest.approx(np.sqrt(5 / 3) / 6)  # sample std of 6,5,4,3 /6
    # pooled: 6 errors of 24; each error moves a reference to the next class
    assert result["pooled"]["wa"] == pytest.approx(18 / 24)
    assert np.array(result["pooled"]["confusion"]).sum() == 24
    assert result["folds"][0]["confusion"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    shape = _is_png(exp / "confusion_all.png")
    assert len(shape) == 3 and shape[0] > 100 and shape[1] > 200
    _is_png(exp / "confusion_3.png")


def test_a_score_killed_before_its_plots_leaves_no_report_md(tmp_path, monkeypatch):
    data = _data_dir(tmp_path)
    exp = _experiment(tmp_path, data)
    write_report(score_experiment(exp))  # an earlier, complete report
    calls = []

    def plot_then_die(*args):
        calls.append(args[-1])
        if len(calls) == 3:  # as if killed while plotting fold 2
            raise KeyboardInterrupt
        plot(*args)

    plot = scoring.plot_confusion
    monkeypatch.setattr(scoring, "plot_confusion", plot_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_report(score_experiment(exp))
    assert not (exp / "report.md").exists()  # not a complete-looking report without its PNGs
    monkeypatch.setattr(scoring, "plot_confusion", plot)
    write_report(score_experiment(exp))
    assert (exp / "report.md").read_text().startswith("SPEAKER-INDEPENDENT")


def test_leaking_folds_are_marked_in_line_one_and_missing_folds_listed(tmp_path):
    data = _data_dir(tmp_path)
    folds, protocol = read_folds(data)
    folds[1].train.remove("s1-0")  # s1 now on both sides of fold 2
    folds[1].test.append("s1-0")
    folds[0].test.remove("s1-0")  # tested once: overlapping test lists are refused
    write_folds(data, folds, protocol)
    exp = _experiment(tmp_path, data)
    (exp / "fold_4" / "posteriors.tsv").unlink()
    write_report(score_experiment(exp), tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.startswith("NOT SPEAKER-INDEPENDENT: 1 speakers on both sides of fold 2 (s1)")
    assert ("INCOMPLETE: 1 of 4 folds have no posteriors (missing: 4); the mean ± std below "
            "is over the 3 present folds only.") in report
    assert "| 4 | missing | - | - | - |" in report
    result = json.loads((tmp_path / "out" / "report.json").read_text())
    assert result["speaker_independent"] is False and result["folds_missing"] == ["4"]
    assert result["mean"]["wa"] == pytest.approx((1 + 6 / 7 + 4 / 6) / 3)  # fold 2 has 7 utts
    assert not (tmp_path / "out" / "confusion_4.png").exists()


def test_decisions_that_are_not_the_argmax_are_noted(tmp_path):
    data = _data_dir(tmp_path)
    exp = _experiment(tmp_path, data)
    path = exp / "fold_1" / "posteriors.tsv"
    lines = path.read_text().splitlines()
    # decides b while a is the most probable (entropy and max_prob: not read, recomputed)
    lines[1] = "s1-0\ta\tb\t0.8\t0.1\t0.1\t0.5\t0.8"
    path.write_text("\n".join(lines) + "\n")
    score = score_experiment(exp, audio_check=False)
    assert score.notes == [f"fold 1: 1 of 6 decisions are not the most probable class in "
                           f"{path}; the decisions are scored"]
    assert score.folds[0].wa == pytest.approx(5 / 6)
    assert f"**Note:** {score.notes[0]}" in report_markdown(score)


def test_posteriors_must_cover_the_test_list(tmp_path):
    data = _data_dir(tmp_path)
    exp = _experiment(tmp_path, data)
    path = exp / "fold_1" / "posteriors.tsv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ScoringError, match=r"fold_1/posteriors.tsv: rows do not match .*"
                       r"folds/1/test: 0 not in the test list, 1 test utterances missing "
                       r"\(e.g. s1-5\)"):
        score_experiment(exp)


def test_unverifiable_folds_are_not_called_speaker_independent(tmp_path):
    data = _data_dir(tmp_path)
    exp = _experiment(tmp_path, data)
    (data / "wav.scp").unlink()
    score = score_experiment(exp)
    assert score.verdict.startswith("SPEAKER INDEPENDENCE NOT VERIFIED: cannot check the "
                                    "folds of")
    assert len(score.folds) == 4


def test_side_by_side_table_and_refusal_on_different_folds(tmp_path):
    data = _data_dir(tmp_path / "d1")
    base = score_experiment(_experiment(tmp_path, data, "baseline"))
    transfer = score_experiment(_experiment(tmp_path, data, "transfer", init="spk/model.pt",
                                            errors={"1": 0, "2": 0, "3": 0, "4": 1}))
    table, as_json = compare([base, transfer])
    lines = table.splitlines()
    assert lines[0].startswith("| experiment | init | augmentation | pooling | model |")
    # macro-F1 per fold by hand: 1; (2/3 + 4/5 + 1)/3; (2/3 + 1/2 + 4/5)/3; 1/2
    # -> mean 74.44, sample std 21.53. Interval: one speaker per fold, so the 4 folds are
    # drawn with replacement; 2.5 and 97.5 percentiles of the mean of 4 draws of
    # (100, 83.33, 66.67, 50): (50 + 50 + 66.67 + 66.67) / 4 and (100 + 100 + 83.33 + 83.33) / 4
    assert lines[2] == ("| baseline | none | conservative (+2 copies) | stats | resnet | yes | "
                        "4/4 | 75.00 ± 21.52 [58.33, 91.67] | 75.00 ± 21.52 [58.33, 91.67] | "
                        "74.44 ± 21.53 [57.78, 91.39] |")
    assert lines[3].startswith("| transfer | speaker | conservative (+2 copies) | stats | "
                               "resnet | yes | 4/4 | 95.83 ± 8.33 [87.50, 100.00] | "
                               "95.83 ± 8.33 [87.50, 100.00] |")
    assert as_json["same_folds"] is True
    assert as_json["experiments"][1]["ua_mean"] == pytest.approx(23 / 24)
    # transfer is better on 3 speakers (folds 2-4) and the same on fold 1: of the 16 swaps of
    # 4 speakers, 2 reach the observed difference (8 distinct swaps, 2 of them extreme)
    paired = as_json["paired"]["systems"][1]["paired"]
    assert paired["difference"] == pytest.approx(23 / 24 - 18 / 24)
    assert paired["exact"] and paired["permutations"] == 16
    assert paired["p_value"] == pytest.approx(4 / 16)
    assert "| transfer | 1 | 95.83 [87.50, 100.00] | +20.83 [+8.33, +33.33] | 0.25 (exact, " \
           "16 swaps) |" in lines

    other = _data_dir(tmp_path / "d2", protocol=lambda u: speaker_kfold(u, k=2, seed=0))
    other_score = score_experiment(_experiment(tmp_path, other, "other"))
    with pytest.raises(ScoringError, match=r"not evaluated on the same folds(.|\n)*other: "
                       r"protocol speaker-kfold but baseline: leave-one-speaker-out"):
        compare([base, other_score])
    table, as_json = compare([base, other_score], allow_different_folds=True)
    assert "**WARNING: the experiments were NOT evaluated on the same folds:**" in table
    assert as_json["same_folds"] is False


def test_ablation_chart_is_a_png(tmp_path):
    rows = [{"experiment": "TL+Aug+SP", "ua_mean": 0.62, "ua_std": 0.02, "wa_mean": 0.64,
             "wa_std": 0.03},
            {"experiment": "no TL", "ua_mean": 0.55, "ua_std": None, "wa_mean": 0.57,
             "wa_std": 0.01}]
    plot_ablation(rows, tmp_path / "ablation.png")
    shape = _is_png(tmp_path / "ablation.png")
    assert shape[2] in (3, 4) and shape[1] > shape[0] > 200  # landscape, not empty


def test_cli_score_one_and_several(tmp_path):
    data = _data_dir(tmp_path / "d")
    a = _experiment(tmp_path, data, "a")
    b = _experiment(tmp_path, data, "b", init="spk.pt")
    runner = CliRunner()
    result = runner.invoke(main, ["score", str(a)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("SPEAKER-INDEPENDENT")
    out = tmp_path / "cmp.md"
    result = runner.invoke(main, ["score", str(a), str(b), "--compare-out", str(out),
                                  "--ablation-png", str(tmp_path / "abl.png"),
                                  "-o", str(tmp_path / "reports")])
    assert result.exit_code == 0, result.output
    assert "| b | speaker |" in result.stdout and out.read_text().startswith("| experiment |")
    assert json.loads(out.with_suffix(".json").read_text())["experiments"][0]["experiment"] == "a"
    assert (tmp_path / "reports" / "b" / "report.md").is_file()
    _is_png(tmp_path / "abl.png")
    other = _experiment(tmp_path, _data_dir(tmp_path / "d2", protocol=lambda u: speaker_kfold(
        u, k=2, seed=0)), "c")
    result = runner.invoke(main, ["score", str(a), str(other)])
    assert result.exit_code == 1 and "not evaluated on the same folds" in result.stderr
    result = runner.invoke(main, ["score", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "experiment.json: not found" in result.stderr


def test_single_random_split_fold_has_no_std_and_says_so(tmp_path):
    from sertool.folds import random_split

    data = _data_dir(tmp_path, protocol=lambda u: random_split(UTT2LABEL, seed=0))
    exp = _experiment(tmp_path, data, errors={"1": 0})
    meta = json.loads((exp / "experiment.json").read_text())
    meta["frontend"]["normalisation"] = "conversation"
    meta["command"] = "sertool finetune a b | tee log"
    (exp / "experiment.json").write_text(json.dumps(meta))
    score = score_experiment(exp, audio_check=False)
    write_report(score)
    report = (exp / "report.md").read_text()
    assert report.startswith("NOT SPEAKER-INDEPENDENT: ")
    assert "| **mean ± std (1 of 1 folds)** | 5 | 100.00 (1 fold, no std) |" in report
    assert "conversation-level mean and variance (NOT the default" in report
    assert "Note:" not in report
    assert "`sertool finetune a b \\| tee log`" in report  # a | would end the table cell
    assert json.loads((exp / "report.json").read_text())["std"]["ua"] is None


def test_experiment_json_must_have_the_contract_keys(tmp_path):
    data = _data_dir(tmp_path)
    exp = _experiment(tmp_path, data)
    meta = json.loads((exp / "experiment.json").read_text())
    del meta["init"], meta["seed"]
    (exp / "experiment.json").write_text(json.dumps(meta))
    with pytest.raises(ExperimentError, match=r"experiment.json: missing key\(s\) init, seed"):
        score_experiment(exp)
