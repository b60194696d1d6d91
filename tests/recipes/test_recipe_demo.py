"""recipes/demo/run.sh from scratch, killed during the transfer stage, rerun from that stage:
the final report exists, says speaker-independent, and compares transfer with --init none."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recipe_run import copy_recipe, run_recipe


def _short_confs(recipe: Path) -> list[str]:
    """The demo's own configurations with fewer epochs, so the test stays short."""
    options = []
    for name, option, epochs in (("train_speaker", "--speaker-conf", 3),
                                 ("train_emotion", "--emotion-conf", 2)):
        text = (recipe / "conf" / f"{name}.toml").read_text()
        lines = [f"epochs = {epochs}" if line.startswith("epochs =") else line
                 for line in text.splitlines()]
        path = recipe / "conf" / f"{name}_short.toml"
        path.write_text("\n".join(lines) + "\n")
        options += [option, str(path)]
    return options


@pytest.mark.slow
def test_demo_recipe_killed_in_stage_4_then_resumed(tmp_path):
    recipe = copy_recipe("demo", tmp_path)
    options = _short_confs(recipe)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1")
    proc = subprocess.Popen([str(recipe / "run.sh"), *options], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    # Kill the whole recipe once the transfer stage has finished its first fold.
    first_fold = recipe / "exp" / "emotion" / "transfer" / "fold_1" / "posteriors.tsv"
    deadline = time.time() + 400
    while not first_fold.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (recipe / "exp" / "emotion" / "compare.md").exists()
    stages = (recipe / "exp" / "stage_times").read_text()
    assert "stage 3" in stages and "stage 4" not in stages

    resumed = run_recipe(recipe, "--stage", "4", *options)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    report = (recipe / "exp" / "emotion" / "transfer" / "report.md").read_text()
    assert report.splitlines()[0].startswith("SPEAKER-INDEPENDENT")
    compare = (recipe / "exp" / "emotion" / "compare.md").read_text()
    assert "transfer" in compare and "no_transfer" in compare
    assert "INCOMPLETE" not in report
    for fold in range(1, 6):
        assert (recipe / "exp" / "emotion" / "no_transfer" / f"fold_{fold}" /
                "posteriors.tsv").is_file()
    assert "SPEAKER-INDEPENDENT" in resumed.stdout  # the run ends by printing the report


@pytest.mark.slow  # ~12 s: the demo corpus is synthesised
def test_each_stage_is_also_logged_to_exp_log(tmp_path):
    recipe = copy_recipe("demo", tmp_path)
    first = run_recipe(recipe, "--stop-stage", "0")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "synthetic demo corpus (seed 0)" in first.stdout  # still on the terminal ...
    log = (recipe / "exp" / "log" / "stage0.log").read_text().splitlines()  # ... and kept
    assert log[0].startswith("==== stage 0: synthesise the demo corpus (")
    assert "corpus: synthetic demo corpus (seed 0): 360 emotion utterances" in log[1]
    assert log[2].startswith("==== stage 0 done in ")
    assert run_recipe(recipe, "--stop-stage", "0").returncode == 0  # a rerun appends
    log = (recipe / "exp" / "log" / "stage0.log").read_text()
    assert log.count("==== stage 0: ") == 2 and not (recipe / "exp" / "log" / "stage1.log").exists()
