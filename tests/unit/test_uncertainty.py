"""Per-utterance uncertainty (sertool.uncertainty): normalised entropy, the coverage table,
posteriors.tsv old and new, the score report's table and predict's low-confidence flag."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sertool.expdir import read_posteriors, write_posteriors
from sertool.uncertainty import coverage_table, max_probability, normalised_entropy


def test_normalised_entropy_known_values():
    probs = np.array([[1.0, 0.0, 0.0, 0.0],      # certain: 0
                      [0.25, 0.25, 0.25, 0.25],  # uniform: 1
                      [0.5, 0.5, 0.0, 0.0]])     # ln 2 / ln 4 = 0.5
    np.testing.assert_allclose(normalised_entropy(probs), [0.0, 1.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(max_probability(probs), [1.0, 0.25, 0.5])
    two = normalised_entropy(np.array([[0.9, 0.1]]))[0]
    assert two == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2))


def test_coverage_table_by_hand():
    # 10 utterances, 2 classes; entropy falls with the max probability, so the order of
    # uncertainty is by p: rows 0..9 have max prob .50 .55 ... .95 (row 0 most uncertain)
    top = np.linspace(0.5, 0.95, 10)
    preds = np.array([1, 1, 0, 0, 1, 0, 1, 1, 0, 0])
    probs = np.stack([np.where(preds == 0, top, 1 - top), np.where(preds == 1, top, 1 - top)],
                     axis=1)
    labels = np.array([0, 0, 1, 0, 1, 0, 1, 0, 0, 1])  # correct: rows 3 4 5 6 8
    rows = coverage_table(labels, preds, probs, 2, (0, 10, 20, 30, 50))
    assert [r["kept"] for r in rows] == [10, 9, 8, 7, 5]
    # all 10: class 0 (rows 0 1 3 5 7 8) recall 3/6, class 1 (2 4 6 9) 2/4: UA .5, WA .5
    # 10 % aside (row 0): class 0 rows 1 3 5 7 8 -> 3/5, class 1 2/4: UA .55, WA 5/9
    # 20 % (rows 0 1): class 0 rows 3 5 7 8 -> 3/4, class 1 2/4: UA .625, WA 5/8
    # 30 % (0 1 2): class 0 3/4, class 1 rows 4 6 9 -> 2/3: UA 17/24, WA 5/7
    # 50 % (0..4): class 0 rows 5 7 8 -> 2/3, class 1 rows 6 9 -> 1/2: UA 7/12, WA 3/5
    np.testing.assert_allclose([r["ua"] for r in rows], [0.5, 0.55, 0.625, 17 / 24, 7 / 12])
    np.testing.assert_allclose([r["wa"] for r in rows], [0.5, 5 / 9, 5 / 8, 5 / 7, 3 / 5])
    np.testing.assert_allclose([r["coverage"] for r in rows], [1, 0.9, 0.8, 0.7, 0.5])


def test_an_old_posteriors_file_without_the_columns_still_reads(tmp_path):
    old = tmp_path / "posteriors.tsv"
    old.write_text("utt\tlabel\tpred\ta\tb\nu1\ta\ta\t0.5\t0.5\nu2\tb\tb\t0.0\t1.0\n")
    post = read_posteriors(old, ["a", "b"])
    assert post.classes == ["a", "b"] and post.preds.tolist() == [0, 1]
    np.testing.assert_allclose(post.entropy, [1.0, 0.0])
    with pytest.raises(ValueError, match="a class may not be named entropy"):
        write_posteriors(tmp_path / "x.tsv", ["u"], ["a"], ["a", "entropy"],
                         np.array([[0.5, 0.5]]))


def test_the_score_report_carries_the_coverage_table(tmp_path):
    from sertool.scoring import score_experiment, write_report

    _tiny_experiment(tmp_path)
    score = score_experiment(tmp_path / "exp", audio_check=False, bootstrap=0)
    write_report(score, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["coverage"]["ordering"].startswith("normalised entropy")
    rows = report["coverage"]["rows"]
    # 4 utterances pooled over two folds (an old-format file and a new one); by entropy:
    # s1-u1 (p .5, the one error), s2-u4 (.7), s2-u3 (.8), s1-u2 (.9); set aside
    # round(4 p / 100): 0, 0, 1, 1, 2 -> WA 3/4, 3/4, 1, 1, 1
    assert [r["kept"] for r in rows] == [4, 4, 3, 3, 2]
    assert rows[0]["wa"] == pytest.approx(0.75) and rows[2]["wa"] == pytest.approx(1.0)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| 20 % | 3 | 75.0 % | 100.00 | 100.00 |" in md
    assert (tmp_path / "out" / "coverage.png").stat().st_size > 1000


def _tiny_experiment(root):
    data = root / "data"
    (data / "folds" / "f1").mkdir(parents=True)
    (data / "folds" / "f2").mkdir(parents=True)
    utts = {"s1-u1": "a", "s1-u2": "b", "s2-u3": "a", "s2-u4": "b"}
    (data / "utt2spk").write_text("".join(f"{u} {u[:2]}\n" for u in utts))
    (data / "utt2emo").write_text("".join(f"{u} {e}\n" for u, e in utts.items()))
    (data / "wav.scp").write_text("".join(f"{u} /x/{u}.wav\n" for u in utts))
    (data / "spk2utt").write_text("s1 s1-u1 s1-u2\ns2 s2-u3 s2-u4\n")
    (data / "folds" / "f1" / "train").write_text("s2-u3\ns2-u4\n")
    (data / "folds" / "f1" / "test").write_text("s1-u1\ns1-u2\n")
    (data / "folds" / "f2" / "train").write_text("s1-u1\ns1-u2\n")
    (data / "folds" / "f2" / "test").write_text("s2-u3\ns2-u4\n")
    (data / "folds" / "protocol.json").write_text(json.dumps(
        {"name": "test", "folds": ["f1", "f2"], "speaker_independent": True}))
    exp = root / "exp"
    (exp / "fold_f1").mkdir(parents=True)
    (exp / "fold_f2").mkdir(parents=True)
    meta = {"corpus": "t", "data_dir": str(data), "feat_dir": "f", "classes": ["a", "b"],
            "class_map": {}, "protocol": {"name": "test", "folds": ["f1", "f2"]},
            "frontend": {}, "model": {}, "init": "none", "augmentation": {},
            "unfreeze": False, "command": "test", "seed": 0}
    (exp / "experiment.json").write_text(json.dumps(meta))
    # an old file (no entropy column): u1 wrong at p .5, u2 right at .9
    (exp / "fold_f1" / "posteriors.tsv").write_text(
        "utt\tlabel\tpred\ta\tb\ns1-u1\ta\tb\t0.5\t0.5\ns1-u2\tb\tb\t0.1\t0.9\n")
    write_posteriors(exp / "fold_f2" / "posteriors.tsv", ["s2-u3", "s2-u4"], ["a", "b"],
                     ["a", "b"], np.array([[0.8, 0.2], [0.3, 0.7]]))


def test_low_confidence_is_flagged_and_kept():
    from sertool.predict import Prediction, flag_low_confidence, predictions_csv

    sure = Prediction("x.wav", {"a": 0.9, "b": 0.1}, 1.0)
    unsure = Prediction("y.wav", {"a": 0.55, "b": 0.45}, 1.0, warnings={"clipped": "c"})
    for p in (sure, unsure):
        flag_low_confidence(p, 0.6)
    assert sure.warnings == {}
    assert unsure.warnings == {"clipped": "c",
                               "low_confidence": "max probability 0.550 below 0.6"}
    text = predictions_csv([sure, unsure], ["a", "b"]).splitlines()
    assert text[0] == "file,pred,a,b,entropy,max_prob,duration_s,error,warning"
    h = -(0.55 * math.log(0.55) + 0.45 * math.log(0.45)) / math.log(2)
    assert text[2] == f"y.wav,a,0.550000,0.450000,{h:.6f},0.550000,1.000,,clipped;low_confidence"
    assert unsure.to_dict()["max_prob"] == 0.55
    assert flag_low_confidence(Prediction("z.wav", error="bad"), 0.6).warnings == {}
