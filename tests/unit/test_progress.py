"""Progress that suits where it goes (issue 14): plain periodic lines when stderr is a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from corpora import make_corpus

from sertool.progress import LineProgress, elapsed

REPO = Path(__file__).resolve().parents[2]


def test_line_progress_prints_count_share_and_time(capsys, monkeypatch):
    clock = iter([0.0, 10.0, 31.0, 40.0, 75.0, 80.0])
    monkeypatch.setattr("sertool.progress.time.monotonic", lambda: next(clock))
    bar = LineProgress(total=5000, desc="extract-feats feats", unit="utt")
    for n in (600, 600, 1000, 1000):  # at 10 s, 31 s, 40 s and 75 s
        bar.update(n)
    bar.close()  # at 80 s: the closing line
    assert capsys.readouterr().err.splitlines() == [
        "extract-feats feats: 1200/5000 utt (24%), 31s",
        "extract-feats feats: 3200/5000 utt (64%), 1m15s",
        "extract-feats feats: 3200/5000 utt (64%), 1m20s",
    ]
    assert elapsed(3725) == "1h02m05s"


def test_extract_feats_into_a_log_file_writes_lines_not_a_bar(tmp_path):
    data = make_corpus(tmp_path, n=4)
    log = tmp_path / "stage2.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    with open(log, "w") as handle:  # stderr is a file, as under a recipe's tee
        subprocess.run([sys.executable, "-m", "sertool", "extract-feats", str(data),
                        str(tmp_path / "feats")], stderr=handle, check=True, env=env)
    text = log.read_text()
    assert "\r" not in text
    assert text.splitlines()[-1].startswith("extract-feats feats: 4/4 utt (100%), ")
