"""sertool.jobs: the split, the local job runner (markers, logs, reruns) and the identity
check; --nj capped at the number of work items in both parallel stages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sertool.jobs import (
    Job,
    JobError,
    check_identity,
    differing_keys,
    digest,
    is_done,
    run_jobs,
    split,
)

FAIL_ENV = "SERTOOL_TEST_FAIL_JOB"


def write_items(index: int, items: list, out_dir: str, *, log, progress) -> int:
    """A job for the runner: writes its items to part.N, fails when FAIL_ENV names it."""
    log.write(f"job {index} pid {os.getpid()}\n")
    if str(index) in os.environ.get(FAIL_ENV, "").split(","):
        raise ValueError(f"job {index} told to fail")
    (Path(out_dir) / f"part.{index}").write_text(" ".join(map(str, items)))
    progress(len(items))
    return len(items)


def make_jobs(items: list, nj: int) -> list[Job]:
    return [Job(i, part, digest(part), (f"part.{i}",))
            for i, part in enumerate(split(items, nj), start=1)]


def test_split_is_contiguous_balanced_and_capped():
    items = list(range(10))
    parts = split(items, 4)
    assert [x for p in parts for x in p] == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert len(split(items[:3], 50)) == 3  # never more jobs than items
    assert split([], 4) == [[]]


def test_split_keeps_groups_together():
    groups = ["a", "a", "a", "b", "c", "c", "c", "c", "d", "d"]
    parts = split(list(range(10)), 3, groups)
    assert [x for p in parts for x in p] == list(range(10))
    seen = [{groups[i] for i in p} for p in parts]
    assert all(not (a & b) for k, a in enumerate(seen) for b in seen[k + 1:])


def test_rerun_redoes_only_failed_jobs(tmp_path, monkeypatch):
    jobs = make_jobs(list(range(12)), 4)
    args = (str(tmp_path),)
    monkeypatch.setenv(FAIL_ENV, "2,3")
    with pytest.raises(JobError) as failed:
        run_jobs("toy", tmp_path, write_items, jobs, args, progress=False)
    assert str(tmp_path / "log" / "toy.2.log") in str(failed.value)
    assert "told to fail" in (tmp_path / "log" / "toy.2.log").read_text()  # the traceback
    assert [is_done(tmp_path, j) for j in jobs] == [True, False, False, True]
    kept = {j: (tmp_path / f"part.{j}").stat().st_mtime_ns for j in (1, 4)}

    monkeypatch.delenv(FAIL_ENV)
    result = run_jobs("toy", tmp_path, write_items, jobs, args, progress=False)
    assert (result.skipped, result.ran) == ([1, 4], [2, 3])
    assert {j: (tmp_path / f"part.{j}").stat().st_mtime_ns for j in (1, 4)} == kept
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == \
        [f"toy.{j}.log" for j in range(1, 5)]
    # a removed output makes its job unfinished even though its marker is there
    (tmp_path / "part.4").unlink()
    monkeypatch.setenv(FAIL_ENV, "4")  # one pending job runs in this process: same error
    with pytest.raises(JobError, match=r"job 4 failed: job 4 told to fail; see .*toy\.4\.log"):
        run_jobs("toy", tmp_path, write_items, jobs, args, progress=False)
    monkeypatch.delenv(FAIL_ENV)
    assert run_jobs("toy", tmp_path, write_items, jobs, args, progress=False).ran == [4]
    # other inputs (another digest) redo the job
    jobs[0] = Job(1, [0, 1, 99], digest([0, 1, 99]), ("part.1",))
    assert run_jobs("toy", tmp_path, write_items, jobs, args, progress=False).ran == [1]
    assert (tmp_path / "part.1").read_text() == "0 1 99"


def test_pool_false_runs_jobs_in_this_process_one_after_another(tmp_path, monkeypatch):
    """finetune's folds: each uses every core, so they run here in order, not side by side;
    the first failure stops the run and names its log, the rerun does the rest."""
    jobs = make_jobs(list(range(6)), 3)
    args = (str(tmp_path),)
    monkeypatch.setenv(FAIL_ENV, "2")
    with pytest.raises(JobError, match=r"job 2 failed: job 2 told to fail; see .*toy\.2\.log"):
        run_jobs("toy", tmp_path, write_items, jobs, args, progress=False, pool=False)
    assert [is_done(tmp_path, j) for j in jobs] == [True, False, False]
    assert not (tmp_path / "log" / "toy.3.log").exists()  # never started
    monkeypatch.delenv(FAIL_ENV)
    result = run_jobs("toy", tmp_path, write_items, jobs, args, progress=False, pool=False)
    assert (result.skipped, result.ran, result.results) == ([1], [2, 3], {2: 2, 3: 2})
    for j in (1, 2, 3):  # in this process, not a pool worker
        assert (tmp_path / "log" / f"toy.{j}.log").read_text() == f"job {j} pid {os.getpid()}\n"


def test_identity_check_names_the_keys_that_differ(tmp_path):
    record = tmp_path / "made.json"
    assert check_identity(tmp_path, record, {"a": 1}) is None  # nothing recorded yet
    record.write_text('{"a": 1, "vad": {"hangover_ms": 500, "mode": "sohn"}, "note": "x"}')
    same = {"a": 1, "vad": {"hangover_ms": 500, "mode": "sohn"}, "note": "y"}
    assert check_identity(tmp_path, record, same, keys=["a", "vad"])["note"] == "x"
    other = {"a": 2, "vad": {"hangover_ms": 300, "mode": "sohn"}, "note": "x"}
    with pytest.raises(ValueError, match=r"a, vad\.hangover_ms differ; see .*made\.json"):
        check_identity(tmp_path, record, other)
    assert differing_keys({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == ["a.c"]


def test_extract_embeddings_nj_is_capped_at_the_utterances(tmp_path):
    import torch
    from train_helpers import make_feats

    from sertool.config import CONF_DIR
    from sertool.models import build_model, load_model_conf
    from sertool.nnet.checkpoint import save_checkpoint
    from sertool.transfer.embeddings import extract_embeddings

    feat_dir, _ = make_feats(tmp_path, n_spk=1, n_utt=3, frames=40, dim=20)
    torch.manual_seed(0)
    model = build_model(load_model_conf(CONF_DIR / "model_resnet_tiny.toml"), 2, 20)
    save_checkpoint(tmp_path / "model.pt", model, with_rng=False)
    result = extract_embeddings(feat_dir, tmp_path / "model.pt", tmp_path / "emb", copies=0,
                                policy="none", nj=50, progress=False)
    assert result.meta["nj"] == 3
    assert sorted(p.name for p in (tmp_path / "emb" / "log").iterdir()) == \
        [f"extract-embeddings.{j}.log" for j in (1, 2, 3)]
    assert len((tmp_path / "emb" / "emb.scp").read_text().splitlines()) == 3


def test_extract_feats_nj_is_capped_at_the_utterances(tmp_path):
    from corpora import make_corpus

    from sertool.frontend.extract import extract_feats

    data = make_corpus(tmp_path, n=2)
    result = extract_feats(data, tmp_path / "feats", nj=50, progress=False)
    assert result.n_extracted == 2
    assert sorted(p.name for p in (tmp_path / "feats").glob("feats.*.ark")) == \
        ["feats.1.ark", "feats.2.ark"]


def test_cli_slurm_options_need_cmd_slurm(tmp_path):
    from click.testing import CliRunner

    from sertool.cli import main

    for command in ("extract-feats", "extract-embeddings"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert "--cmd [local|slurm]" in result.output and "--slurm-mem" in result.output
    args = [str(tmp_path / "data"), str(tmp_path / "feats"), "--slurm-mem", "4G"]
    result = CliRunner().invoke(main, ["extract-feats", *args])
    assert result.exit_code == 1 and "need --cmd slurm" in result.stderr
    assert not (tmp_path / "feats").exists()
