"""--cmd slurm on a real single-node Slurm cluster (tests/slurm_cluster.py): the same bytes as
a local run, and a rerun that resubmits only the jobs that did not finish."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import slurm  # noqa: F401 - the session fixture

from sertool.corpora import prepare
from sertool.demo_corpus import make_demo_corpus
from sertool.jobs import HOLD_ENV

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
                          env={**os.environ, **(env or {})})


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
    first = subprocess.Popen([*SERTOOL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, HOLD_ENV: "3"})
    deadline = time.monotonic() + 300
    while not all((feats / f".done.{j}").exists() for j in (1, 2, 4)):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.5)
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
