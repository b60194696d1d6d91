"""The prepared GPU check (bench/device_check.py, ``make device-check``) in its CPU mode: the
parts that need no GPU run on tiny sizes and report real numbers; the GPU parts are skipped and
both outputs say so."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not installed
from bench.device_check import GPU_SKIPPED, main  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU mode")
def test_device_check_cpu_mode(tmp_path, capsys):
    # a wide budget: on a busy 2-core machine the CPU parts took 3x their idle time
    assert main(["--quick", "--out", str(tmp_path), "--budget-s", "1200"]) == 0
    report = json.loads((tmp_path / "device_check.json").read_text())
    text = (tmp_path / "device_check.txt").read_text()
    assert str(tmp_path / "device_check.json") in capsys.readouterr().out  # path printed
    assert report["gpu_skipped"] is True and report["mode"] == "cpu" and report["ok"]
    assert GPU_SKIPPED in text and report["note"] == GPU_SKIPPED
    parts = report["parts"]
    assert list(parts) == ["throughput", "data_path", "amp", "torchrun", "resume",
                           "embeddings_predict"]
    assert parts["torchrun"]["status"] == parts["embeddings_predict"]["status"] == "skipped"
    assert all(parts[p]["status"] == "ok" for p in ("throughput", "data_path", "amp", "resume"))

    bare = parts["throughput"]["runs"]
    assert [r["precision"] for r in bare] == ["fp32"] and bare[0]["segments_per_s"] > 0
    assert bare[0]["peak_mem_mib"] is None  # no GPU memory to report
    runs = parts["data_path"]["runs"]
    assert [r["workers"] for r in runs] == [0, 1]
    for run in runs:
        assert run["segments_per_s"] > 0 and run["steps"] == 2
        assert 0.0 <= run["data_wait_share"] <= 1.0
        assert run["fraction_of_bare"] > 0
        assert run["data_wait_s"] >= 0 and run["step_s"] > 0

    assert parts["amp"]["cpu_bf16"]["refused"]
    assert "needs a CUDA device" in parts["amp"]["cpu_bf16"]["message"]
    resume = parts["resume"]
    assert resume["killed"] and resume["resumed_from"] == "partial.pt"
    assert resume["partial_at"] == [2, 2]
    assert resume["max_abs_diff"] == 0.0 and resume["exact"] and resume["tolerance"] == 0.0
    assert "resume [ok" in text and "result: 4 passed, 2 skipped, 0 failed" in text
