"""local/prepare_data.sh, the wrapper the recipes call: prepares once, reruns are no-ops,
the check-folds verdict is printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "local" / "prepare_data.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_prepare_data_wrapper_is_idempotent(tmp_path):
    rng = np.random.default_rng(0)
    for spk in ("03", "08"):
        for name in (f"{spk}a01Wa", f"{spk}a01Na", f"{spk}a02Ta"):
            path = tmp_path / "emodb" / "wav" / f"{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, (0.1 * rng.standard_normal(800)).astype("float32"), 16000)
    data = tmp_path / "data"
    first = _run("emodb", str(tmp_path / "emodb"), str(data))
    assert first.returncode == 0, first.stderr
    assert "emodb: 6 utterances, 2 speakers" in first.stdout
    assert first.stdout.splitlines()[-1] == ("SPEAKER-INDEPENDENT: no speaker and no identical "
                                             "recording on both sides of any of 2 folds")
    second = _run("emodb", str(tmp_path / "emodb") + "/", str(data))
    assert second.returncode == 0 and "already prepared" in second.stderr
    assert "6 utterances" not in second.stdout
    third = _run("--protocol", "kfold-random", "--folds", "2", "emodb", str(tmp_path / "emodb"),
                 str(data))
    assert third.returncode == 0, third.stderr
    assert third.stdout.splitlines()[-1].startswith("NOT SPEAKER-INDEPENDENT: 2 speakers")
    bad = _run("emodb", str(tmp_path / "nowhere"), str(tmp_path / "d2"))
    assert bad.returncode != 0 and "nowhere: not found" in bad.stderr
    missing_parent = _run("emodb", str(tmp_path / "a" / "b"), str(tmp_path / "d3"))
    assert missing_parent.returncode != 0 and "b: not found" in missing_parent.stderr


def test_prepare_data_wrapper_passes_the_label_map(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["path,label,speaker"]
    for spk in ("s1", "s2"):
        for n, label in enumerate(("happy", "sad")):
            sf.write(tmp_path / f"{spk}_{n}.wav", (0.1 * rng.standard_normal(800)), 16000)
            rows.append(f"{spk}_{n}.wav,{label},{spk}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("happy hap\n")
    data = tmp_path / "data"
    first = _run("--labels", str(labels), "manifest", str(tmp_path / "list.csv"), str(data))
    assert first.returncode == 0, first.stderr
    assert "labels: hap 2, sad 2" in first.stdout
    again = _run("--labels", str(labels), "manifest", str(tmp_path / "list.csv"), str(data))
    assert again.returncode == 0 and "already prepared" in again.stderr
    labels.write_text("happy sad\n")  # an edited map prepares again
    edited = _run("--labels", str(labels), "manifest", str(tmp_path / "list.csv"), str(data))
    assert edited.returncode == 0 and "labels: sad 4" in edited.stdout
