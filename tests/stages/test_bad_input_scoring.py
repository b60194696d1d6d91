"""Comparisons over different class sets (issue 23, defect 8), through `sertool score`.

Two experiments on the same utterances and folds, one over 3 classes (a b c) and one over 4
(a b c d: a class the test folds never hold). Their UAs are not comparable: the comparison is
refused, naming both experiments and their class sets, before any report is written; with
--allow-different-classes it is made and marked in every row, below the table and in the chart.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from scoring_experiment import CLASSES, _data_dir, _experiment, capture_figures

from sertool.cli import main
from sertool.expdir import read_posteriors, write_posteriors


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _with_a_fourth_class(exp: Path) -> Path:
    """The same decisions, over classes a b c d (d: probability 0, never in the reference)."""
    meta = json.loads((exp / "experiment.json").read_text())
    classes = [*CLASSES, "d"]
    meta["classes"] = classes
    (exp / "experiment.json").write_text(json.dumps(meta))
    for path in sorted(exp.glob("fold_*/posteriors.tsv")):
        post = read_posteriors(path, CLASSES)
        probs = np.hstack([post.probs, np.zeros((len(post.utts), 1))])
        write_posteriors(path, post.utts, [CLASSES[i] for i in post.labels], classes, probs)
    return exp


def _three_and_four(root: Path) -> tuple[Path, Path]:
    data = _data_dir(root / "d")
    return (_experiment(root, data, "three"),
            _with_a_fourth_class(_experiment(root, data, "four", init="spk.pt")))


def test_different_class_sets_are_refused_naming_both_and_nothing_is_written(tmp_path):
    three, four = _three_and_four(tmp_path)
    before = _tree(tmp_path)
    result = CliRunner().invoke(main, [
        "score", str(three), str(four), "--no-audio", "-o", str(tmp_path / "reports"),
        "--compare-out", str(tmp_path / "cmp.md"), "--ablation-png", str(tmp_path / "abl.png")])
    assert result.exit_code == 1
    assert result.stderr == (
        "sertool: error: the experiments do not have the same classes, so their UA, WA and "
        f"macro-F1 are not comparable (--allow-different-classes to compare anyway, marked in "
        f"the table): four ({four}) has 4 classes (a b c d) but three ({three}) has 3 classes "
        f"(a b c)\n")
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert _tree(tmp_path) == before  # inputs byte-identical, no report, table or chart

    # without -o the reports would go into each EXP_DIR: none there either
    result = CliRunner().invoke(main, ["score", str(three), str(four), "--no-audio"])
    assert result.exit_code == 1 and "do not have the same classes" in result.stderr
    assert _tree(tmp_path) == before


def test_allowed_different_class_sets_are_marked_in_table_json_and_chart(tmp_path, monkeypatch):
    figures = capture_figures(monkeypatch)
    three, four = _three_and_four(tmp_path)
    inputs = _tree(tmp_path)
    result = CliRunner().invoke(main, [
        "score", str(three), str(four), "--no-audio", "--allow-different-classes",
        "--compare-out", str(tmp_path / "cmp.md"), "--ablation-png", str(tmp_path / "abl.png")])
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()
    assert table[2].startswith("| three (3 classes) | none |")
    assert table[3].startswith("| four (4 classes) | speaker |")
    assert table[5:] == [
        "mean ± sample std (ddof=1) over folds, then [its 95 % interval]. 95 % intervals: "
        "percentile bootstrap over the 4 test speakers (1000 resamples, seed 0); every fold has "
        "a single test speaker, so the folds (the speakers) are drawn with replacement and "
        "their per-fold metrics averaged, as the mean above.", "",
        "**WARNING: the experiments do NOT have the same classes, so their UA, WA and macro-F1 "
        "are not comparable:**",
        "- three: 3 classes (a b c)",
        "- four: 4 classes (a b c d)", "",
        # no paired test over different class sets: UA over 3 and over 4 classes differ in kind
        "## Paired comparison against three (UA, same test speakers)", "",
        "Not computed: the systems do not have the same classes."]
    assert (tmp_path / "cmp.md").read_text() == result.stdout
    as_json = json.loads((tmp_path / "cmp.json").read_text())
    assert as_json["same_classes"] is False
    assert as_json["class_differences"] == [
        f"four ({four}) has 4 classes (a b c d) but three ({three}) has 3 classes (a b c)"]
    assert [r["classes"] for r in as_json["experiments"]] == [CLASSES, [*CLASSES, "d"]]
    (ax,) = figures["abl.png"].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["three\n(3 classes)",
                                                            "four\n(4 classes)"]
    # the reports are written; what was there before is unchanged
    assert (three / "report.md").is_file() and (four / "report.md").is_file()
    after = _tree(tmp_path)
    assert {k: after[k] for k in inputs} == inputs


def test_the_comparison_shows_the_shared_class_set(tmp_path):
    data = _data_dir(tmp_path / "d")
    a, b = _experiment(tmp_path, data, "a"), _experiment(tmp_path, data, "b", init="spk.pt")
    result = CliRunner().invoke(main, ["score", str(a), str(b), "--no-audio"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    # the class set right below the table's footnote, before the paired comparison
    at = lines.index("Classes: a b c (the same in every experiment).")
    assert lines[at - 1] == "" and lines[at - 2].startswith("mean ± sample std (ddof=1)")
    assert lines[at + 1:at + 3] == ["", "## Paired comparison against a (UA, same test "
                                        "speakers)"]
    assert "WARNING" not in result.stdout


def test_a_comparison_refused_for_its_folds_writes_no_report_either(tmp_path):
    from sertool.folds import speaker_kfold

    a = _experiment(tmp_path, _data_dir(tmp_path / "d"), "a")
    other = _experiment(tmp_path, _data_dir(tmp_path / "d2", protocol=lambda u: speaker_kfold(
        u, k=2, seed=0)), "other")
    before = _tree(tmp_path)
    result = CliRunner().invoke(main, ["score", str(a), str(other), "--no-audio"])
    assert result.exit_code == 1 and "not evaluated on the same folds" in result.stderr
    assert "Traceback" not in result.output
    assert _tree(tmp_path) == before  # no report.md in either EXP_DIR
