"""Documentation tests: the README's command table and walk-through agree with the CLI.

The walk-through block is run exactly as written (in a fresh folder, with this environment's
``sertool`` first on PATH); the table's commands and long options must exist in the CLI, and
every command in the table must appear in the walk-through, so the two cannot drift apart.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sertool.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def _walkthrough() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if b.startswith("# walk-through\n")]
    return block


def _table_rows() -> list[str]:
    """The invocations in the README's command table (first cell of each row)."""
    rows = re.findall(r"^\| `(sertool [^`]+)` \|", README.read_text(), flags=re.M)
    assert len(rows) >= 10, "the README's command table was not found"
    return [row.replace("\\|", "|") for row in rows]


def test_command_table_names_real_commands_and_options():
    documented = set()
    for row in _table_rows():
        name = row.split()[1]
        assert name in main.commands, f"README table: no command {name!r}: {row}"
        documented.add(name)
        command = main.commands[name]
        known = {opt for param in command.params for opt in param.opts}
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-z])\b", row):
            assert option in known, f"README table: {name} has no option {option}: {row}"
    assert documented == set(main.commands), "commands missing from the README's table: " \
        f"{sorted(set(main.commands) - documented)}"


def test_every_table_command_is_in_the_walkthrough():
    walk = _walkthrough()
    for name in {row.split()[1] for row in _table_rows()}:
        assert f"sertool {name} " in walk, f"the walk-through never runs `sertool {name}`"
    # both forms of extract-feats, and the loose-file form the way --help spells it
    assert "sertool extract-feats -o " in walk and "--wave-augment" in walk
    from click.testing import CliRunner

    usage = CliRunner().invoke(main, ["extract-feats", "--help"]).output
    assert "DATA_DIR FEAT_DIR | -o OUT FILE..." in usage
    assert "sertool extract-feats -o OUT FILE..." in README.read_text()


@pytest.mark.slow
def test_walkthrough_runs_as_written(tmp_path):
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    script = tmp_path / "walkthrough.sh"
    script.write_text("set -euo pipefail\n" + _walkthrough())
    run = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # what each step promises is there
    assert len((tmp_path / "feats/loose/feats.scp").read_text().splitlines()) == 2
    n_emotion = len((tmp_path / "data/emotion/wav.scp").read_text().splitlines())
    wave_aug = (tmp_path / "feats/mfcc/wave_aug.scp").read_text().splitlines()
    assert len(wave_aug) == 3 * n_emotion
    assert (tmp_path / "exp/speaker/final.pt").is_file()
    assert len((tmp_path / "emb/emb.scp").read_text().splitlines()) == n_emotion
    report = (tmp_path / "exp/emotion/report.md").read_text()
    assert report.splitlines()[0].startswith("SPEAKER-INDEPENDENT")
    with open(tmp_path / "predictions.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["pred"] in {"ang", "hap", "neu", "sad"} and not row["error"]
    assert abs(sum(float(row[c]) for c in ("ang", "hap", "neu", "sad")) - 1) < 1e-3
