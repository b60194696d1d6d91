"""Kill and resume (issue 14): each stage SIGKILLed at named points (sertool.faults), rerun, and
compared with its uninterrupted run.

One tiny pipeline runs once through the real CLI (6 speakers x 3 one-second utterances, 24 mels,
the tiny ResNet for 2 epochs, a frozen-trunk finetune on 3 speaker folds, score, predict); those
are the uninterrupted outputs. Each test moves one stage's output aside, runs the same command
with ``SERTOOL_KILL_AT`` (it must die by SIGKILL at that point), runs it again without, and
compares the two output directories file by file: the same names (so no temporary or partial
file is left), the same bytes, except for what holds wall-clock time (WALL_CLOCK_* below) and
checkpoints, whose tensors are compared with torch.equal.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from corpora import TRAIN_TOML, _make_corpus

from sertool.config import CONF_DIR
from sertool.faults import KILL_ENV, KILL_POINTS
from sertool.io_utils import atomic_dir, atomic_write_text

# Excluded from the comparison, and why:
# - job logs (log/*.log) and train.log: they carry time stamps, and a resumed run's log says
#   what was resumed (train.log is appended to);
# - in checkpoints, JSON and CSV files, the per-epoch timing fields: seconds differ between any
#   two runs. Everything else in them must be equal;
# - a model bundle's export date (bundle.json provenance "date", its line in the bundle's
#   README.md), and the held-out epoch's timings that its README quotes;
# - experiment.json's "reruns": by design a rerun adds its command line there (provenance).
WALL_CLOCK_FILES = {"train.log"}
WALL_CLOCK_DIRS = {"log"}
WALL_CLOCK_KEYS = {"time_s", "data_wait_s", "step_s", "date"}
WALL_CLOCK_TEXT = re.compile(rb'^\| date \| [^|]* \|\n|"(?:time_s|data_wait_s|step_s)": [0-9.e+-]+',
                             re.MULTILINE)
RERUN_KEYS = {"reruns"}


# stage -> (its output, relative to the workspace; the command, {W} = the workspace)
STAGES: dict[str, tuple[str, list[str]]] = {
    "prepare": ("data", ["prepare", "manifest", "{W}/corpus/manifest.csv", "{W}/data",
                         "--protocol", "speaker-kfold", "--folds", "3"]),
    "extract-feats": ("feats", ["extract-feats", "{W}/data", "{W}/feats", "--no-progress",
                                "--set", "mel.num_bins=24"]),
    "train": ("spk", ["train", "--task", "speaker", "{W}/feats", "{W}/data", "{W}/spk",
                      "--conf", "{W}/train.toml", "--model-conf",
                      str(CONF_DIR / "model_resnet_tiny.toml"), "--device", "cpu",
                      "--no-progress"]),
    "extract-embeddings": ("emb", ["extract-embeddings", "{W}/feats", "{W}/spk/final.pt",
                                   "{W}/emb", "--copies", "1"]),
    "finetune": ("ft", ["finetune", "{W}/feats", "{W}/data", "{W}/ft", "--init",
                        "{W}/spk/final.pt", "--set", "head.epochs=4", "--set",
                        "augment.copies=1", "--set", "heldout_speakers=1"]),
    "score": ("score", ["score", "{W}/ft", "-o", "{W}/score"]),
    "predict": ("pred", ["predict", "{W}/ft/fold_1/bundle", "{W}/corpus/s1_0.wav",
                         "{W}/corpus/s2_1.wav", "{W}/corpus/s3_2.wav", "-o",
                         "{W}/pred/predictions.csv"]),
}

# (stage, kill point[:N], run over the stage's existing output first)
CASES = [
    ("prepare", "prepare:after-data-files", False),
    ("prepare", "atomic:before-rename:2", False),
    ("prepare", "atomic-dir:between-renames", True),  # a rerun that replaces DATA_DIR
    ("extract-feats", "extract-feats:after-utt:7", False),
    ("extract-feats", "extract-feats:after-ark", False),
    ("extract-feats", "job:before-marker", False),
    ("extract-feats", "extract-feats:after-feats-scp", False),
    ("extract-feats", "atomic:before-rename:3", False),
    ("train", "train:after-step:3", False),  # epoch 1, after partial.pt of step 2
    ("train", "checkpoint:before-rename:2", False),
    ("train", "train:after-epoch-checkpoint:2", False),  # the last epoch's model, no log
    ("train", "train:before-final", False),
    ("extract-embeddings", "extract-embeddings:after-utt:9", False),
    ("extract-embeddings", "extract-embeddings:after-ark", False),
    ("extract-embeddings", "job:before-marker", False),
    ("extract-embeddings", "extract-embeddings:before-emb-scp", False),
    ("finetune", "extract-embeddings:after-utt:5", False),
    ("finetune", "finetune:head-epoch:3", False),
    ("finetune", "finetune:after-model:2", False),
    ("finetune", "finetune:before-posteriors", False),
    ("finetune", "finetune:before-fold:2", False),
    # killed twice: first before a fold's posteriors, then while its rerun replaces the bundle
    ("finetune", "finetune:before-posteriors,atomic-dir:between-renames", False),
    ("score", "score:after-png:2", False),
    ("score", "atomic:before-rename:2", False),
    ("predict", "predict:before-file:3", False),
    ("predict", "atomic:before-rename", False),
]


def _env(kill_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    # one thread everywhere: training is bit-exact only for one thread count
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    if kill_at:
        env[KILL_ENV] = kill_at
    return env


def _sertool(args: list[str], work: Path, kill_at: str | None = None):
    cmd = [sys.executable, "-m", "sertool", *(a.replace("{W}", str(work)) for a in args)]
    return subprocess.run(cmd, env=_env(kill_at), capture_output=True, text=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The workspace with every stage's uninterrupted output, and a copy of each as its stage
    left it in ``uninterrupted/`` (later stages add caches: score adds .audio_hashes.json to
    DATA_DIR)."""
    work = tmp_path_factory.mktemp("kill")
    _make_corpus(work)
    (work / "train.toml").write_text(TRAIN_TOML)
    for stage, (out, args) in STAGES.items():
        done = _sertool(args, work)
        assert done.returncode == 0, f"{stage}: {done.stderr[-3000:]}"
        shutil.copytree(work / out, work / "uninterrupted" / out, symlinks=True)
    return work


def run_killed_then_resumed(args: list[str], point: str, out: Path, work: Path,
                            reference: Path, over_existing: bool = False) -> None:
    """Run the CLI command ``args`` with SERTOOL_KILL_AT=``point``: it must die by SIGKILL at that
    point (``A,B``: killed at A, then its rerun at B). Rerun it without; ``out`` must then equal
    ``reference``, the uninterrupted output. What was at ``out`` is moved aside meanwhile and put
    back at the end. ``over_existing``: the killed run starts over a copy of ``reference`` (a
    rerun that replaces it)."""
    aside = out.with_name(out.name + "-aside")
    os.replace(out, aside)
    try:
        if over_existing:
            shutil.copytree(reference, out, symlinks=True)
        for each in point.split(","):
            killed = _sertool(args, work, each)
            assert killed.returncode == -9, (
                f"expected death by SIGKILL at {each}, got exit {killed.returncode}: "
                f"{killed.stderr[-3000:]}")
            assert f"sertool: kill point {each}\n" in killed.stderr  # not another death
        resumed = _sertool(args, work)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert_same_outputs(reference, out)
        beside = sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))
        assert not beside, f"left beside {out}: {beside}"
    finally:
        shutil.rmtree(out, ignore_errors=True)
        os.replace(aside, out)


def assert_same_outputs(reference: Path, out: Path) -> None:
    """Same file names (hidden ones too), same contents but for WALL_CLOCK_*."""
    def listing(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob("*") if p.is_file() or p.is_symlink()}

    want, got = listing(reference), listing(out)
    assert got == want, f"extra: {sorted(map(str, got - want))}, missing: " \
                        f"{sorted(map(str, want - got))}"
    for rel in sorted(want):
        if rel.name in WALL_CLOCK_FILES or rel.parts[0] in WALL_CLOCK_DIRS:
            continue
        a, b = reference / rel, out / rel
        if rel.suffix == ".pt":
            _assert_same_tree(torch.load(a, weights_only=True), torch.load(b, weights_only=True),
                              str(rel))
        elif rel.suffix == ".json":
            _assert_same_tree(json.loads(a.read_text()), json.loads(b.read_text()), str(rel))
        elif rel.suffix == ".csv" and any(k in a.read_text().split("\n")[0]
                                          for k in WALL_CLOCK_KEYS):
            _assert_same_tree(list(csv.DictReader(open(a))), list(csv.DictReader(open(b))),
                              str(rel))
        else:
            strip = WALL_CLOCK_TEXT.sub if rel.suffix == ".md" else (lambda _, text: text)
            want, got = strip(b"", a.read_bytes()), strip(b"", b.read_bytes())
            if want != got:
                diff = difflib.unified_diff(want.decode(errors="replace").splitlines(),
                                            got.decode(errors="replace").splitlines(), lineterm="")
                pytest.fail(f"{rel} differs:\n" + "\n".join(list(diff)[:20]))


def _assert_same_tree(a, b, where: str) -> None:
    if isinstance(a, dict):
        keys = set(a) - WALL_CLOCK_KEYS - RERUN_KEYS
        assert isinstance(b, dict) and set(b) - WALL_CLOCK_KEYS - RERUN_KEYS == keys, \
            f"{where}: keys {set(a) ^ set(b)}"
        for key in keys:
            _assert_same_tree(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{where}: length"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{where}: tensors differ"
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r:.200} != {b!r:.200}"  # NaN ok


@pytest.mark.slow  # ~2.5 min on a busy 2-core machine, the whole parametrized set
@pytest.mark.parametrize(("stage", "point", "over_existing"), CASES,
                         ids=[f"{s}:{p}" for s, p, _ in CASES])
def test_killed_then_resumed_equals_uninterrupted(work, stage, point, over_existing):
    out, args = STAGES[stage]
    run_killed_then_resumed(args, point, work / out, work, work / "uninterrupted" / out,
                            over_existing)


def test_every_kill_point_is_exercised():
    used = {each.rsplit(":", 1)[0] if each.rsplit(":", 1)[-1].isdigit() else each
            for _, point, _ in CASES for each in point.split(",")}
    assert used == set(KILL_POINTS)
    assert len(CASES) >= 20


@pytest.mark.parametrize(("kill_at", "printed"), [("x:a:2", "1\n"), ("x:a", ""), ("", "1\n2\n3\n"),
                                                  ("x:b", "1\n2\n3\n")])
def test_kill_point_dies_at_its_nth_hit_only(kill_at, printed):
    code = ("from sertool.faults import kill_point\n"
            "for i in (1, 2, 3):\n"
            "    kill_point('x:a')\n"
            "    print(i, flush=True)\n")
    env = {**os.environ, KILL_ENV: kill_at}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout == printed
    if printed == "1\n2\n3\n":
        assert run.returncode == 0 and "kill point" not in run.stderr
    else:
        assert run.returncode == -9
        assert run.stderr == f"sertool: kill point {kill_at}\n"


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)  # that process has ended
    stale_file = tmp_path / f".out.txt.{pid}.k3j2.tmp"
    stale_dir = tmp_path / f".data.{pid}.x9.tmp"
    stale_old = tmp_path / f".data.{pid}.old.tmp"
    live = tmp_path / f".out.txt.{os.getpid()}.zz.tmp"  # a write in progress here: kept
    other = tmp_path / ".other.txt.1.tmp"  # another output's
    for path in (stale_file, live, other):
        path.write_text("half")
    for path in (stale_dir, stale_old):
        path.mkdir()
        (path / "wav.scp").write_text("half")
    atomic_write_text(tmp_path / "out.txt", "whole\n")
    with atomic_dir(tmp_path / "data") as tmp:
        (tmp / "wav.scp").write_text("whole\n")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([live.name, other.name, "data", "out.txt"])
    assert (tmp_path / "data" / "wav.scp").read_text() == "whole\n"
