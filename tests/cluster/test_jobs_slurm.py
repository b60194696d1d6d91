"""--cmd slurm on a real single-node Slurm cluster (tests/helpers/slurm_cluster.py): the same
bytes as a local run, and a rerun that resubmits only the jobs that did not finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import slurm  # noqa: F401 - the session fixture

from sertool.corpora import prepare
from sertool.demo_corpus import make_demo_corpus
from sertool.faults import HOLD_ENV

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SERTOOL = [sys.executable, "-m", "sertool"]
SMALL = ["--set", "mel.num_bins=40", "--no-progress"]  # 40 mels keep the jobs short


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    make_demo_corpus(root / "corpus", seed=0)
    prepare("iemocap", root / "corpus" / "IEMOCAP_full_release", root / "data", exp=1)
    return root


def sertool(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SERTOOL, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)  # a hang fails


def start_held(args: list[str], hold: int) -> subprocess.Popen:
    """``sertool ARGS`` in the background, the array task of job ``hold`` held before it
    starts (sertool.faults.HOLD_ENV), so that a test can stop or cancel it."""
    return subprocess.Popen([*SERTOOL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, HOLD_ENV: str(hold)})


def wait_for_markers(proc: subprocess.Popen, out: Path, jobs: tuple[int, ...]) -> None:
    """Wait until the done markers of ``jobs`` are in ``out``; fail if ``proc`` ends first or
    after 300 s."""
    deadline = time.monotonic() + 300
    while not all((out / f".done.{j}").exists() for j in jobs):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.5)


def assert_same_outputs(a: Path, b: Path, pattern: str, index: str) -> None:
    """Every job archive byte-identical; the index identical up to the directory's name."""
    arks = sorted(p.name for p in a.glob(pattern))
    assert arks and arks == sorted(p.name for p in b.glob(pattern))
    for name in arks:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / index).read_text().replace(str(a), "DIR") == \
        (b / index).read_text().replace(str(b), "DIR")


def test_extract_feats_on_slurm_equals_local(slurm, demo, tmp_path):  # noqa: F811
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    run = sertool("extract-feats", str(demo / "data"), str(local), "--nj", "4", *SMALL)
    assert run.returncode == 0, run.stderr
    run = sertool("extract-feats", str(demo / "data"), str(cluster), "--nj", "4", "--cmd",
                  "slurm", *SMALL)
    assert run.returncode == 0, run.stderr
    assert_same_outputs(local, cluster, "feats.*.ark", "feats.scp")
    for name in ("utt2num_frames", "vad_stats", "failed", "frontend.json"):
        assert (local / name).read_bytes() == (cluster / name).read_bytes(), name
    assert sorted(p.name for p in (cluster / "log").glob("extract.*.log")) == \
        [f"extract.{j}.log" for j in range(1, 5)]


def test_scancelled_job_is_redone_and_finished_ones_are_not(slurm, demo, tmp_path):  # noqa: F811
    feats = tmp_path / "feats"
    args = ["extract-feats", str(demo / "data"), str(feats), "--nj", "4", "--cmd", "slurm",
            *SMALL]
    # job 3's array task waits before starting: cancel it once the other three are done
    first = start_held(args, hold=3)
    wait_for_markers(first, feats, (1, 2, 4))
    assert not (feats / ".done.3").exists()
    subprocess.run(["scancel", "--name=sertool-extract"], check=True)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode != 0
    assert str(feats / "log" / "extract.3.log") in stderr, stderr
    assert not (feats / "feats.scp").exists()

    finished = {p: p.stat().st_mtime_ns for j in (1, 2, 4)
                for p in (feats / f".done.{j}", feats / f"feats.{j}.ark",
                          feats / "log" / f"extract.{j}.log")}
    again = sertool(*args)
    assert again.returncode == 0, again.stderr
    assert "(3 job(s) already done)" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # nothing finished redone
    assert (feats / ".done.3").exists()

    reference = tmp_path / "local"
    run = sertool("extract-feats", str(demo / "data"), str(reference), "--nj", "4", *SMALL)
    assert run.returncode == 0, run.stderr
    assert_same_outputs(reference, feats, "feats.*.ark", "feats.scp")


def test_a_stopped_command_cancels_its_array(slurm, demo, tmp_path):  # noqa: F811
    feats = tmp_path / "feats"
    args = ["extract-feats", str(demo / "data"), str(feats), "--nj", "2", "--cmd", "slurm",
            *SMALL]
    # job 2's task waits forever: without a cancel it would outlive the command
    first = start_held(args, hold=2)
    wait_for_markers(first, feats, (1,))
    try:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=60)
        assert first.returncode != 0 and "Traceback" not in stderr, stderr
        deadline = time.monotonic() + 30
        while subprocess.run(["squeue", "-h", "--name=sertool-extract"], capture_output=True,
                             text=True).stdout.strip():
            assert time.monotonic() < deadline, "the array outlived the stopped command"
            time.sleep(0.5)
    finally:
        subprocess.run(["scancel", "--name=sertool-extract"], check=False)


def test_extract_embeddings_on_slurm_equals_local(slurm, demo, tmp_path):  # noqa: F811
    import torch

    from sertool.config import CONF_DIR
    from sertool.models import build_model, load_model_conf
    from sertool.nnet.checkpoint import save_checkpoint

    feats = tmp_path / "feats"
    run = sertool("extract-feats", str(demo / "data"), str(feats), "--nj", "2", *SMALL)
    assert run.returncode == 0, run.stderr
    torch.manual_seed(0)  # an untrained tiny trunk: the vectors only have to agree
    model = build_model(load_model_conf(CONF_DIR / "model_resnet_tiny.toml"), 4, 40)
    save_checkpoint(tmp_path / "model.pt", model, with_rng=False)
    local, cluster = tmp_path / "emb_local", tmp_path / "emb_slurm"
    common = [str(feats), str(tmp_path / "model.pt")]
    run = sertool("extract-embeddings", *common, str(local), "--nj", "3", "--copies", "1")
    assert run.returncode == 0, run.stderr
    run = sertool("extract-embeddings", *common, str(cluster), "--nj", "3", "--copies", "1",
                  "--cmd", "slurm")
    assert run.returncode == 0, run.stderr
    assert_same_outputs(local, cluster, "emb.*.ark", "emb.scp")


def test_finetune_folds_on_slurm_equal_local_and_a_cancelled_fold_is_redone(
        slurm, demo, tmp_path):  # noqa: F811
    """One array task per fold (the frozen random trunk's embeddings first, on Slurm too);
    fold 3's task is held and cancelled: the command names its log, the rerun redoes fold 3
    only, and every fold's posteriors.tsv is byte-identical to a --cmd local run's."""
    import torch

    from sertool.datadir import read_table, subset_data_dir
    from sertool.frontend.extract import extract_feats
    from sertool.nnet.checkpoint import load_model

    # three sessions (three folds: two array tasks run at once on this 2-CPU node, the third
    # is held), half of their utterances: 84
    utts = sorted(u for u in read_table(demo / "data" / "utt2spk") if u < "Ses04")
    (tmp_path / "keep").write_text("".join(u + "\n" for u in utts[::2]))
    subset_data_dir(demo / "data", tmp_path / "data", utt_list=tmp_path / "keep")
    extract_feats(tmp_path / "data", tmp_path / "feats", {"mel": {"num_bins": 40}}, nj=1,
                  progress=False)
    common = [str(tmp_path / "feats"), str(tmp_path / "data"), "--init", "random",
              "--model-conf", "model_resnet_tiny.toml", "--set", "augment.policy=none",
              "--set", "head.epochs=3"]
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    run = sertool("finetune", *common[:2], str(local), *common[2:])
    assert run.returncode == 0, run.stderr

    args = ["finetune", *common[:2], str(cluster), *common[2:], "--cmd", "slurm", "--nj", "2"]
    # job 3 is held in every stage: the embeddings have 2 jobs, so only fold 3's task waits
    first = start_held(args, hold=3)
    deadline = time.monotonic() + 300
    try:  # cancel the held task whatever happens: it would hold a CPU of the node forever
        while not all((cluster / f".done.{j}").exists() for j in (1, 2)):
            if first.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        subprocess.run(["scancel", "--name=sertool-finetune"], check=True)
    _, stderr = first.communicate(timeout=120)
    assert all((cluster / f".done.{j}").exists() for j in (1, 2)), stderr
    assert first.returncode != 0
    assert str(cluster / "log" / "finetune.3.log") in stderr, stderr
    assert not (cluster / "fold_3" / "posteriors.tsv").exists()
    # the embeddings were two array tasks, the folds one each
    assert sorted(p.name for p in (cluster / "embeddings" / "log").glob("*.log")) == \
        ["extract-embeddings.1.log", "extract-embeddings.2.log"]
    assert "fold 2:" in (cluster / "log" / "finetune.2.log").read_text()
    # the task spec holds paths and configurations (1.7 kB), not the vectors (2 x 109 kB here)
    assert (cluster / "log" / "finetune.slurm.pkl").stat().st_size < 10_000

    finished = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for j in (1, 2)
                for p in (cluster / f".done.{j}", cluster / "log" / f"finetune.{j}.log",
                          cluster / f"fold_{j}" / "posteriors.tsv",
                          cluster / f"fold_{j}" / "model.pt")}
    again = sertool(*args)
    assert again.returncode == 0, again.stderr
    assert [line for line in again.stderr.splitlines() if line.startswith("fold ")] == \
        ["fold 1: skipped", "fold 2: skipped", "fold 3: trained"]
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished} == finished

    # Byte-identical files: the same job function on the same float32 embeddings with the same
    # seeds and thread count is deterministic; and the heads' weights are exactly equal, so the
    # equality is not an artefact of the 6 decimals written.
    for k in range(1, 4):
        name = f"fold_{k}"
        assert (cluster / name / "posteriors.tsv").read_bytes() == \
            (local / name / "posteriors.tsv").read_bytes(), name
        a, _ = load_model(local / name / "model.pt")
        b, _ = load_model(cluster / name / "model.pt")
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                       b.state_dict().values(), strict=True))
