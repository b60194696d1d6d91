"""The bad-input battery's machinery (tests/stages/test_bad_input.py and the files that add rows
to it): the inputs made once per module, what a row is, how a row is run and checked."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from scoring_experiment import _data_dir, _experiment
from train_helpers import make_feats

from sertool.cli import main
from sertool.config import CONF_DIR

REPO = Path(__file__).resolve().parents[2]
SR = 16000


def _tone(path: Path, seconds: float = 1.0, f0: float = 220.0) -> Path:
    t = np.arange(int(SR * seconds)) / SR
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * f0 * t)).astype("float32"), SR, subtype="PCM_16")
    return path


@dataclass
class Shared:
    root: Path
    audio: Path        # two 1 s tones
    feats: Path        # 20-dim synthetic features of 12 utterances (train_helpers.make_feats)
    feats_data: Path   # their data dir (utt2spk, utt2emo)
    bundle: Path       # a model bundle of an untrained tiny ResNet
    exp: Path          # a scored-looking experiment (posteriors of 4 folds)


# Registered as ``shared``: a module that imports ``shared_inputs`` gets its own copy, made once.
@pytest.fixture(scope="module", name="shared")
def shared_inputs(tmp_path_factory) -> Shared:
    """The inputs every row may read: two tones, synthetic features with their data dir, an
    untrained tiny bundle and a scored-looking experiment."""
    from sertool.frontend.pipeline import resolve_conf
    from sertool.io_utils import atomic_write_json
    from sertool.models import build_model, load_model_conf
    from sertool.predict import export_bundle

    root = tmp_path_factory.mktemp("bad_input")
    audio = root / "audio"
    _tone(audio / "a.wav")
    _tone(audio / "b.wav", f0=330.0)
    feats, feats_data = make_feats(root / "train", emotion=True)
    torch.manual_seed(0)
    model_conf = load_model_conf(CONF_DIR / "model_resnet_tiny.toml")
    model = build_model(model_conf, 2, 128).eval()
    atomic_write_json(root / "frontend.json", resolve_conf())
    bundle = export_bundle(root / "bundle", model, classes=["ang", "neu"], model_conf=model_conf,
                           feat_dim=128, frontend_json=root / "frontend.json",
                           provenance={"corpus": "test", "fold": "none", "command": "test"})
    (root / "frontend.json").unlink()
    score_root = root / "scoring"
    exp = _experiment(score_root, _data_dir(score_root))
    return Shared(root, audio, feats, feats_data, Path(bundle), exp)


@dataclass
class Row:
    """``make(tmp, shared)`` writes the bad input under ``tmp`` and returns the command's
    arguments; ``error`` is a regex the stderr must match, in which ``{tmp}`` and ``{shared}``
    stand for those folders. ``may_create``: globs (relative to ``tmp``) of outputs a failed
    run may leave (logs and the like); nothing else may appear."""

    id: str
    make: Callable[[Path, Shared], list]
    error: str
    code: int = 1
    may_create: tuple[str, ...] = ()
    process: bool = False  # run as a real process (exit status and stderr of the process)
    never: str | None = None  # a regex the stderr must not match
    needs: Callable[[], str | None] = field(default=lambda: None)  # a reason to skip


def _train(tmp: Path, shared: Shared, *more: object) -> list:
    return ["train", shared.feats, shared.feats_data, tmp / "exp", "--model-conf",
            "model_resnet_tiny.toml", "--no-progress", *more]


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every file under ``roots``: path -> SHA-256 (directories -> 'dir')."""
    seen = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_dir():
                seen[str(path)] = "dir"
            elif path.is_file():
                seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def _run(args: list[str], process: bool, cwd: Path) -> tuple[int, str]:
    """(exit status, stderr) of ``sertool ARGS``; in-process runs report an uncaught exception
    as the traceback a real process would print."""
    if process:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "-m", "sertool", *args], capture_output=True,
                              text=True, cwd=cwd, env=env, timeout=300)
        return done.returncode, done.stderr
    result = CliRunner().invoke(main, args)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(result.exception))
    return result.exit_code, stderr


def check_row(row: Row, shared: Shared, tmp_path: Path) -> None:
    """Run one row of the battery and check it: the exit status, the error matching the
    row's regex, no traceback, inputs byte-identical and nothing left behind."""
    reason = row.needs()
    if reason:
        pytest.skip(reason)
    args = [str(a) for a in row.make(tmp_path, shared)]
    before = _snapshot(tmp_path, shared.root)
    code, stderr = _run(args, row.process, tmp_path)
    pattern = row.error.format(tmp=re.escape(str(tmp_path)), shared=re.escape(str(shared.root)))
    assert "Traceback" not in stderr, stderr
    assert code == row.code, stderr
    assert re.search(pattern, stderr), f"{pattern!r} not in:\n{stderr}"
    assert row.never is None or not re.search(row.never, stderr), stderr
    if row.code == 1:
        assert len(stderr.strip().splitlines()[-1]) > len("sertool: error: ")
        assert stderr.count("sertool: error:") == 1, stderr
    after = _snapshot(tmp_path, shared.root)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"changed or removed: {changed}"
    new = [os.path.relpath(p, tmp_path) for p in after if p not in before]
    unexpected = [p for p in new if not any(fnmatch.fnmatch(p, g) or p == g.rsplit("/", 1)[0]
                                            for g in row.may_create)]
    assert not unexpected, f"left behind: {unexpected}"
    assert not [p for p in after if p.endswith(".tmp")]
