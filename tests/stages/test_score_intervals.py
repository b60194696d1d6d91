"""Intervals and paired significance through `sertool score` (issue 20, items 1 and 2).

A toy corpus of 12 speakers x 12 utterances (labels a/b/c cycling) in 3 speaker folds (4 test
speakers each), and experiments whose wrong decisions are chosen per speaker, so what a
speaker bootstrap and a paired test must give is known.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from scoring_experiment import capture_figures

from sertool import scoring, stats
from sertool.cli import main
from sertool.datadir import DataDir, read_folds, read_table, write_folds
from sertool.expdir import write_posteriors
from sertool.folds import speaker_kfold
from sertool.metrics import unweighted_accuracy

CLASSES = ["a", "b", "c"]
UTT2SPK = {f"s{s:02d}-{i:02d}": f"s{s:02d}" for s in range(12) for i in range(12)}
UTT2LABEL = {u: CLASSES[int(u[-2:]) % 3] for u in UTT2SPK}


def _corpus(root: Path) -> Path:
    wav = {}
    for i, utt in enumerate(sorted(UTT2SPK)):
        path = root / "audio" / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * np.random.default_rng(i).standard_normal(400)).astype("float32"),
                 16000, subtype="PCM_16")
        wav[utt] = str(path)
    data = root / "data"
    DataDir(wav, dict(UTT2SPK), dict(UTT2LABEL)).save(data)
    write_folds(data, *speaker_kfold(UTT2SPK, k=3, seed=0))
    return data


def _run(root: Path, data: Path, name: str, wrong: Callable[[int, int], bool],
         seed: int = 0) -> Path:
    """An experiment deciding the next class wherever ``wrong(speaker, index)``."""
    folds, protocol = read_folds(data)
    exp = root / name
    exp.mkdir(parents=True)
    meta = {"corpus": "toy", "data_dir": str(data), "feat_dir": "feats", "classes": CLASSES,
            "class_map": {}, "protocol": protocol,
            "frontend": {"kind": "logmel", "normalisation": "segment"},
            "model": {"type": "resnet", "pooling": "stats"}, "init": "none",
            "augmentation": {"policy": "none"}, "unfreeze": False,
            "command": f"sertool finetune {name}", "seed": seed}
    (exp / "experiment.json").write_text(json.dumps(meta))
    for fold in folds:
        labels = [UTT2LABEL[u] for u in fold.test]
        preds = [CLASSES[(CLASSES.index(lab) + wrong(int(u[1:3]), int(u[-2:]))) % 3]
                 for u, lab in zip(fold.test, labels, strict=True)]
        probs = np.array([[0.8 if c == p else 0.1 for c in CLASSES] for p in preds])
        write_posteriors(exp / f"fold_{fold.name}" / "posteriors.tsv", fold.test, labels,
                         CLASSES, probs)
    return exp


@pytest.fixture(autouse=True)
def _no_confusion_pngs(monkeypatch):
    """The confusion PNGs (tested elsewhere) take most of a score's time: not drawn here."""
    monkeypatch.setattr(scoring, "plot_confusion", lambda *args: None)


def _score(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["score", "--no-audio", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stdout, result.stderr


def _units(data: Path, exp: Path, by: str = "speaker") -> list[stats.FoldUnits]:
    """The fold units of an experiment built by hand from posteriors and utt2spk."""
    from sertool.expdir import read_posteriors

    utt2spk = read_table(data / "utt2spk")
    folds, _ = read_folds(data)
    out = []
    for fold in folds:
        post = read_posteriors(exp / f"fold_{fold.name}" / "posteriors.tsv", CLASSES)
        groups = [utt2spk[u] for u in post.utts] if by == "speaker" else post.utts
        out.append(stats.fold_units(fold.name, post.labels, post.preds, groups, 3))
    return out


def test_report_gives_speaker_bootstrap_intervals_seeded_and_switchable(tmp_path):
    data = _corpus(tmp_path / "d")
    exp = _run(tmp_path, data, "exp", lambda spk, i: i < spk % 4)  # 0..3 errors per speaker
    code, out, err = _score(str(exp))
    assert code == 0, err
    report = (exp / "report.md").read_text()
    assert out.rstrip("\n") == report.rstrip("\n")
    result = json.loads((exp / "report.json").read_text())
    interval = result["interval"]
    assert interval["resampled"] == "speaker" and interval["resamples"] == 1000
    assert interval["seed"] == 0 and interval["level"] == 0.95
    assert interval["mode"] == stats.WITHIN_FOLDS
    # exactly the bootstrap of the headline (mean over folds) over the 4 speakers of each fold
    units = _units(data, exp)
    plan = stats.Resampling.draw([4, 4, 4], 1000, 0)
    low, high = stats.bootstrap_interval([units], unweighted_accuracy, plan)
    assert interval["ua"] == pytest.approx([low, high])
    assert low < result["mean"]["ua"] < high
    assert high - low > 0.05  # speakers differ by 0..3 errors in 12: the interval is not thin
    for key in ("wa", "f1"):
        assert interval[key][0] < result["mean"][key] < interval[key][1]
    row = (f"| **95 % interval of the mean** (bootstrap over test speakers) |  | "
           f"[{100 * interval['wa'][0]:.2f}, {100 * interval['wa'][1]:.2f}] | "
           f"[{100 * low:.2f}, {100 * high:.2f}] |")
    assert row in report
    assert ("95 % intervals: percentile bootstrap over the 12 test speakers (1000 resamples, "
            "seed 0): in each resample the test speakers of every fold are drawn with "
            "replacement (as many as the fold has), each metric is computed per fold on the "
            "drawn speakers' utterances and averaged over folds, as the mean above.") in report
    # deterministic: the same command, the same bytes
    assert _score(str(exp))[0] == 0 and (exp / "report.md").read_text() == report
    # another seed and count are used and stated; 0 switches the intervals off
    assert _score(str(exp), "--bootstrap", "200", "--bootstrap-seed", "5")[0] == 0
    other = json.loads((exp / "report.json").read_text())["interval"]
    assert (other["resamples"], other["seed"]) == (200, 5) and other["ua"] != interval["ua"]
    assert "(200 resamples, seed 5)" in (exp / "report.md").read_text()
    assert _score(str(exp), "--bootstrap", "0")[0] == 0
    assert json.loads((exp / "report.json").read_text())["interval"] is None
    assert "interval" not in (exp / "report.md").read_text()


def test_speakers_not_utterances_are_resampled_and_the_fallback_says_so(tmp_path):
    data = _corpus(tmp_path / "d")
    # every other speaker all wrong, the rest all right
    exp = _run(tmp_path, data, "exp", lambda spk, i: spk % 2 == 1)
    assert _score(str(exp))[0] == 0
    by_speaker = json.loads((exp / "report.json").read_text())["interval"]["ua"]
    plan = stats.Resampling.draw([144 // 3] * 3, 1000, 0)
    by_utt = stats.bootstrap_interval([_units(data, exp, by="utterance")], unweighted_accuracy,
                                      plan)
    assert (by_speaker[1] - by_speaker[0]) > 2.5 * (by_utt[1] - by_utt[0])

    # without utt2spk the utterances are resampled, and report.md says so plainly
    (data / "utt2spk").unlink()
    assert _score(str(exp))[0] == 0
    result = json.loads((exp / "report.json").read_text())
    assert result["interval"]["resampled"] == "utterance"
    assert result["interval"]["ua"] == pytest.approx(list(by_utt))
    report = (exp / "report.md").read_text()
    assert "(bootstrap over test utterances)" in report
    assert ("95 % intervals: percentile bootstrap over the 144 test UTTERANCES (1000 "
            "resamples, seed 0), because the test speakers are unknown") in report
    assert any(n.startswith("the test speakers are unknown (") and "utt2spk" in n
               and n.endswith("the intervals resample utterances instead, which makes them "
                              "too narrow") for n in result["notes"])


def test_groups_of_seeds_reference_and_paired_test(tmp_path, monkeypatch):
    figures = capture_figures(monkeypatch)
    data = _corpus(tmp_path / "d")
    for seed in (0, 1):  # good: 1 or 2 errors per speaker; bad: 4 or 5
        _run(tmp_path, data, f"good_seed{seed}", lambda spk, i, s=seed: i < 1 + (spk + s) % 2,
             seed)
        _run(tmp_path, data, f"bad_seed{seed}", lambda spk, i, s=seed: i < 4 + (spk + s) % 2,
             seed)
    bad = f"{tmp_path}/bad_seed0,{tmp_path}/bad_seed1"
    code, out, err = _score(
        "--group", f"good={tmp_path}/good_seed*", "--group", f"bad={bad}",
        "--group", f"bad_again={bad}", "--reference", "bad",
        "--compare-out", str(tmp_path / "cmp.md"), "--ablation-png", str(tmp_path / "abl.png"),
        "-o", str(tmp_path / "reports"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "bad_seed0", "bad_seed1", "good_seed0", "good_seed1"]  # each run once, its own report
    as_json = json.loads((tmp_path / "cmp.json").read_text())
    systems = {s["experiment"]: s for s in as_json["systems"]}
    # good: UA over folds x seeds = 1 - (1.5 errors in 12)
    assert systems["good"]["ua_mean"] == pytest.approx(1 - 1.5 / 12)
    assert systems["good"]["runs"] == ["good_seed0", "good_seed1"]
    assert systems["bad"]["ua_mean"] == pytest.approx(1 - 4.5 / 12)
    paired = as_json["paired"]
    assert paired["reference"] == "bad" and paired["resampled"] == "speaker"
    rows = {r["system"]: r for r in paired["systems"]}
    assert "paired" not in rows["bad"]
    good = rows["good"]["paired"]
    assert good["difference"] == pytest.approx(3 / 12)  # better by 3 of 12 on every speaker
    assert good["interval"] == pytest.approx([3 / 12, 3 / 12])
    assert good["p_value"] < 0.01 and not good["exact"] and good["permutations"] == 1000
    same = rows["bad_again"]["paired"]
    assert same["difference"] == 0 and same["p_value"] == 1.0
    table = (tmp_path / "cmp.md").read_text()
    assert out == table
    assert "## Paired comparison against bad (UA, same test speakers)" in table
    assert (f"| good | 2 | 87.50 [87.50, 87.50] | +25.00 [+25.00, +25.00] | "
            f"{good['p_value']:.3g} |") in table
    assert "| bad | 2 | 62.50 [62.50, 62.50] | reference | - |" in table
    assert "p: two-sided sign-flip permutation test over test speakers" in table
    assert "mean over folds × runs" in table
    # the chart: one bar per system, error bars from the intervals
    (ax,) = figures["abl.png"].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["good", "bad", "bad_again"]
    assert ax.get_title() == "UA and WA, mean over folds, 95 % bootstrap interval"

    code, _, err = _score("--group", f"good={tmp_path}/good_seed*", "--group", f"bad={bad}",
                          "--reference", "nope")
    assert code == 1 and "--reference nope: no system of that name (the systems are good, " \
                         "bad)" in err
    code, _, err = _score("--group", f"x={tmp_path}/nothing*")
    assert code == 1 and "matches no directory" in err
    code, _, err = _score("--group", "x")
    assert code == 1 and "expected NAME=DIR" in err
