"""One metric table (issue 21, item 4): report.md, report.json, the comparison and the ablation
chart are all generated from ``sertool.metrics.METRICS``.

The golden files in tests/stages/golden/metric_table/ were written by the code before the table
existed (the temporary folder is replaced by ``<tmp>``), and rewritten once, diff reviewed, when
the speaker-bootstrap intervals and the paired comparison were added (issue 20); the outputs must
stay byte-identical to them. After a deliberate change of a format, rewrite them with
``SERTOOL_WRITE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from matplotlib.colors import to_hex
from scoring_experiment import _data_dir, _experiment

from sertool import metrics, scoring
from sertool.cli import main

GOLDEN = Path(__file__).parent / "golden" / "metric_table"
WRITE_GOLDEN = os.environ.get("SERTOOL_WRITE_GOLDEN") == "1"


def _score_two(tmp_path: Path, monkeypatch) -> tuple[dict[str, str], dict]:
    """`sertool score a b` with every output; the text of each output (tmp path replaced) and
    the ablation chart's content as data (bars, error bars, labels, colours, legend)."""
    figures = {}
    save = scoring._save_figure

    def keep_figure(fig, out_png):
        figures[Path(out_png).name] = fig
        save(fig, out_png)

    monkeypatch.setattr(scoring, "_save_figure", keep_figure)
    data = _data_dir(tmp_path / "d")
    a = _experiment(tmp_path, data, "a")
    b = _experiment(tmp_path, data, "b", init="spk.pt", errors={"1": 0, "2": 0, "3": 0, "4": 1})
    result = CliRunner().invoke(main, [
        "score", str(a), str(b), "--compare-out", str(tmp_path / "cmp.md"),
        "--ablation-png", str(tmp_path / "abl.png"), "-o", str(tmp_path / "reports")])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    outputs = {"stdout.txt": result.stdout, "cmp.md": (tmp_path / "cmp.md").read_text(),
               "cmp.json": (tmp_path / "cmp.json").read_text()}
    for exp in ("a", "b"):
        for name in ("report.md", "report.json"):
            outputs[f"{exp}.{name}"] = (tmp_path / "reports" / exp / name).read_text()
    outputs = {k: v.replace(str(tmp_path), "<tmp>") for k, v in outputs.items()}
    return outputs, _chart(figures["abl.png"])


def _chart(fig) -> dict:
    (ax,) = fig.axes
    bars = [c for c in ax.containers if hasattr(c, "patches")]
    errors = [c for c in ax.containers if hasattr(c, "has_yerr")]
    return {
        "bars": [{"label": c.get_label(),
                  "x": [round(p.get_x() + p.get_width() / 2, 4) for p in c.patches],
                  "height": [round(p.get_height(), 4) for p in c.patches],
                  "colour": sorted({to_hex(p.get_facecolor()) for p in c.patches})}
                 for c in bars],
        "yerr": [[round(float(s[1][1] - s[0][1]) / 2, 4) for s in c.lines[2][0].get_segments()]
                 for c in errors],
        "texts": [t.get_text() for t in ax.texts],
        "legend": [t.get_text() for t in ax.get_legend().get_texts()],
        "xticks": [t.get_text() for t in ax.get_xticklabels()],
        "ylim": [round(v, 4) for v in ax.get_ylim()], "ylabel": ax.get_ylabel(),
        "title": ax.get_title(),
    }


def test_reports_comparison_and_chart_are_byte_identical_to_before_the_table(tmp_path,
                                                                             monkeypatch):
    outputs, chart = _score_two(tmp_path, monkeypatch)
    outputs["chart.json"] = json.dumps(chart, indent=1) + "\n"
    if WRITE_GOLDEN:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in outputs.items():
            (GOLDEN / name).write_text(text, encoding="utf-8")
    for name, text in outputs.items():
        assert text == (GOLDEN / name).read_text(encoding="utf-8"), name
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(outputs)


def test_one_entry_in_the_table_adds_the_metric_to_every_output(tmp_path, monkeypatch):
    error_rate = metrics.Metric("err", "error rate", lambda cm: 1 - metrics.weighted_accuracy(cm),
                                "error rate = 1 - WA", chart=True)
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, error_rate))
    outputs, chart = _score_two(tmp_path, monkeypatch)
    # fold k of experiment a has k-1 errors in 6; 6 errors in 24 pooled
    report = outputs["a.report.md"].splitlines()
    for line in ("| fold | n test | WA | UA | macro-F1 | error rate |",
                 "| --- | ---: | ---: | ---: | ---: | ---: |",
                 "| 1 | 6 | 100.00 | 100.00 | 100.00 | 0.00 |",
                 "| 4 | 6 | 50.00 | 50.00 | 50.00 | 50.00 |",
                 "| **mean ± std (4 of 4 folds)** | 24 | 75.00 ± 21.52 | 75.00 ± 21.52 | "
                 "74.44 ± 21.53 | 25.00 ± 21.52 |",
                 "| pooled confusion (all scored folds) | 24 | 75.00 | 75.00 | 74.79 | 25.00 |",
                 # its interval too: 1 - WA's, whose bounds are means of 4 drawn folds
                 "| **95 % interval of the mean** (bootstrap over test speakers) |  | "
                 "[58.33, 91.67] | [58.33, 91.67] | [57.78, 91.39] | [8.33, 41.67] |"):
        assert line in report
    assert ("(a 0/0 counts as 0); error rate = 1 - WA; ± is the sample std over folds "
            "(ddof=1).") in outputs["a.report.md"]
    result = json.loads(outputs["a.report.json"])
    assert [f["err"] for f in result["folds"]] == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6])
    assert result["mean"]["err"] == pytest.approx(0.25)
    assert result["std"]["err"] == pytest.approx(result["std"]["wa"])
    assert result["pooled"]["err"] == pytest.approx(6 / 24)
    assert result["interval"]["err"] == pytest.approx([1 - result["interval"]["wa"][1],
                                                       1 - result["interval"]["wa"][0]])
    table = outputs["cmp.md"].splitlines()
    assert table[0].endswith("| folds | UA % | WA % | macro-F1 % | error rate % |")
    assert table[1].endswith("| ---: | ---: | ---: | ---: | ---: |")
    assert table[2].endswith("| 74.44 ± 21.53 [57.78, 91.39] | 25.00 ± 21.52 [8.33, 41.67] |")
    assert table[3].endswith("| 95.56 ± 8.89 [86.67, 100.00] | 4.17 ± 8.33 [0.00, 12.50] |")
    assert outputs["stdout.txt"] == outputs["cmp.md"]
    rows = json.loads(outputs["cmp.json"])["experiments"]
    assert [r["err_mean"] for r in rows] == pytest.approx([0.25, 1 / 24])
    assert chart["legend"] == ["UA", "WA", "error rate"]
    assert chart["bars"][2]["height"] == pytest.approx([25.0, 4.1667])
    assert chart["bars"][2]["colour"] == ["#55a868"]
    assert chart["title"] == "UA, WA and error rate, mean over folds, 95 % bootstrap interval"
    # error bars span the intervals (half widths: a [8.33, 41.67], b [0, 12.50])
    assert chart["yerr"][2] == pytest.approx([16.6667, 6.25])
