"""Threads and processes are capped at the CPUs this process may use (affinity, cgroup CPU quota,
SLURM_CPUS_PER_TASK), and small models (the frozen-trunk head) train on one thread unless more
are asked for (issue 23, defects 10 and 11)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from finetune_inputs import _inputs
from train_helpers import make_feats, tiny_bundle, tiny_conf

from sertool import threads
from sertool.cli import main
from sertool.config import CONF_DIR

REPO = Path(__file__).resolve().parents[2]
CAP_LINE = ("sertool: warning: {what}: more than the {n} CPU(s) this process may use "
            "({why}); {then}")


@pytest.fixture()
def machine(tmp_path, monkeypatch):
    """A faked machine: 64 CPUs of affinity, a cgroup tree under tmp_path, no Slurm."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(threads, "CGROUP_ROOT", tmp_path / "cgroup")
    monkeypatch.setattr(threads, "PROC_CGROUP", tmp_path / "proc_self_cgroup")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(threads, "_warned", set())
    (tmp_path / "cgroup").mkdir()
    (tmp_path / "proc_self_cgroup").write_text("0::/\n")

    def put(relative: str, text: str) -> Path:
        path = tmp_path / "cgroup" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return put


def test_the_cap_is_the_affinity_without_quota_or_slurm(machine):
    machine("cpu.max", "max 100000\n")  # v2 without a quota
    assert threads.available_cpus() == threads.CpuLimit(64, "CPU affinity")


def test_a_cgroup_v2_quota_caps_rounded_down_and_its_parents_count(machine, tmp_path):
    (tmp_path / "proc_self_cgroup").write_text("0::/slurm/job42/step0\n")
    machine("slurm/job42/step0/cpu.max", "max 100000\n")
    quota = machine("slurm/job42/cpu.max", "250000 100000\n")  # 2.5 CPUs: the job's
    machine("cpu.max", "800000 100000\n")
    assert threads.available_cpus() == threads.CpuLimit(2, f"CPU quota 2.5 in {quota}")


def test_a_container_sees_its_own_cgroup_as_the_root(machine):
    quota = machine("cpu.max", "50000 100000\n")  # half a CPU: still one thread
    assert threads.available_cpus() == threads.CpuLimit(1, f"CPU quota 0.5 in {quota}")


def test_a_cgroup_v1_quota_caps(machine, tmp_path):
    (tmp_path / "proc_self_cgroup").write_text(
        "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    quota = machine("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "300000\n")
    machine("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    machine("cpu,cpuacct/cpu.cfs_quota_us", "-1\n")  # the root: no quota
    machine("cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert threads.available_cpus() == threads.CpuLimit(3, f"CPU quota 3 in {quota}")


def test_slurm_cpus_per_task_caps(machine, monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert threads.available_cpus() == threads.CpuLimit(6, "SLURM_CPUS_PER_TASK=6")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "junk")  # not a count: ignored
    assert threads.available_cpus().cpus == 64


def test_an_over_large_request_is_capped_with_one_warning(machine, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert threads.capped(3, "--threads 3") == 3
    assert threads.capped(100000, "--threads 100000") == 4
    assert threads.capped(100000, "--threads 100000") == 4  # said once
    line = CAP_LINE.format(what="--threads 100000", n=4, why="SLURM_CPUS_PER_TASK=4",
                           then="using 4")
    assert capsys.readouterr().err == line + "\n"


def _probe_predict(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`sertool predict ARGS` in a real process pinned to one CPU; it prints the torch threads
    the command runs with and the process's thread count at the end (/proc/self/status). A
    request of more than 64 threads reaching torch ends it at once (exit status 3): torch
    starts that many threads as soon as it is told, and the machine is shared."""
    bundle = tiny_bundle(tmp_path)
    wav = tmp_path / "a.wav"
    t = np.arange(16000) / 16000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t)).astype("float32"), 16000)
    script = f"""
import os, sys
os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})  # one CPU, before torch starts
import torch
real_set = torch.set_num_threads
def guarded(number):  # torch starts its thread pools' threads when told the number
    if number > 64:
        print("torch.set_num_threads", number, file=sys.stderr, flush=True)
        os._exit(3)  # uncapped: stop before 100000 threads start
    real_set(number)
torch.set_num_threads = guarded
import sertool.cli as cli
real = cli.load_bundle
def probe(*args, **kwargs):  # what the command runs with
    print("torch threads", torch.get_num_threads(), file=sys.stderr, flush=True)
    return real(*args, **kwargs)
cli.load_bundle = probe
try:
    cli.main({["predict", str(bundle), str(wav), *args]!r})
finally:
    status = open("/proc/self/status").read()
    print("process threads", status.split("Threads:")[1].split()[0], file=sys.stderr)
"""
    helpers = REPO / "tests" / "helpers"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(helpers)])}
    env.pop("SLURM_CPUS_PER_TASK", None)
    env.pop(threads.THREADS_ENV, None)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)


def test_predict_threads_100000_runs_on_the_cpus_it_may_use(tmp_path):
    run = _probe_predict(tmp_path, "--threads", "100000")
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines[0] == CAP_LINE.format(what="--threads 100000", n=1, why="CPU affinity",
                                       then="using 1")
    assert lines[1] == "torch threads 1"
    assert int(lines[-1].split()[-1]) <= 8  # the process's threads: a handful, not 100000
    assert "Traceback" not in run.stderr
    assert run.stdout.splitlines()[0].startswith("file,pred,")


def test_predict_without_threads_uses_the_default_capped(tmp_path, monkeypatch):
    """SERTOOL_THREADS is the option's environment variable: the same cap applies."""
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    seen = []
    real = __import__("sertool.cli", fromlist=["load_bundle"]).load_bundle

    def probe(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr("sertool.cli.load_bundle", probe)
    monkeypatch.setattr(threads, "_warned", set())
    bundle = tiny_bundle(tmp_path)
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, dtype="float32"), 16000)
    before = torch.get_num_threads()
    result = CliRunner(env={threads.THREADS_ENV: "3"}).invoke(main, ["predict", str(bundle),
                                                                      str(wav)])
    assert result.exit_code == 0, result.output
    assert seen == [1]
    assert CAP_LINE.format(what="--threads 3", n=1, why="SLURM_CPUS_PER_TASK=1",
                           then="using 1") in result.stderr.splitlines()
    assert torch.get_num_threads() == before  # the command's setting does not outlive it


def _finetune_head_threads(monkeypatch, feat_dir: Path, data: Path, exp: Path,
                           *extra: str) -> tuple[list[int], str]:
    """Run the frozen-trunk finetune (one fold, random trunk); the torch threads each head
    trained with, and the fold's posteriors."""
    import sertool.transfer.head as head_module
    from sertool.nnet.loop import fit as real_fit

    seen: list[int] = []

    def fit(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(head_module, "fit", fit)
    result = CliRunner().invoke(main, [str(a) for a in (
        "finetune", feat_dir, data, exp, "--init", "random", "--model-conf",
        CONF_DIR / "model_resnet_tiny.toml", "--set", "heldout_speakers=1",
        "--set", "head.epochs=2", "--set", "head.batch_size=4", "--set", "augment.copies=1",
        *extra)])
    assert result.exit_code == 0, result.output
    return seen, (exp / "fold_0" / "posteriors.tsv").read_text()


def test_the_head_trains_on_one_thread_unless_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    if threads.available_cpus().cpus < 2:
        pytest.skip("needs 2 CPUs to tell 1 thread from 2")
    feat_dir, data = _inputs(tmp_path, folds="0")
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # PyTorch's default on a 2-core machine
    try:
        one, posteriors_one = _finetune_head_threads(monkeypatch, feat_dir, data,
                                                     tmp_path / "exp1")
        two, posteriors_two = _finetune_head_threads(monkeypatch, feat_dir, data,
                                                     tmp_path / "exp2", "--threads", "2")
        assert torch.get_num_threads() == 2  # restored after each command
    finally:
        torch.set_num_threads(before)
    assert one == [1] and two == [2]
    assert posteriors_one and posteriors_two
    # threads are no configuration key: the experiment's records are the same bytes (the
    # trained weights may differ in their last bits: docs/RESULTS.md)
    for name in ("experiment.json", "fold_0/split.json"):
        assert ((tmp_path / "exp1" / name).read_bytes().replace(b"exp1", b"exp2")
                == (tmp_path / "exp2" / name).read_bytes())


def test_a_big_head_keeps_its_threads():
    """Small is an MLP under SMALL_MODEL_PARAMS parameters; a ResNet is never small."""
    from sertool.models import build_model, load_model_conf
    from sertool.models.resnet import fc_head

    assert threads.is_small(fc_head(512, 256, 2, 8))  # the paper's head: 0.2 M
    assert not threads.is_small(fc_head(4096, 2048, 2, 8))  # 12.6 M
    tiny = build_model(load_model_conf(CONF_DIR / "model_resnet_tiny.toml"), 4, 20)
    assert not threads.is_small(tiny)


def _tones(root: Path, n: int) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    t = np.arange(8000) / 16000
    for i in range(n):
        sf.write(root / f"u{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(
            "float32"), 16000, subtype="PCM_16")
    (data / "wav.scp").write_text("".join(f"s1-u{i} {root / f'u{i}.wav'}\n" for i in range(n)))
    (data / "utt2spk").write_text("".join(f"s1-u{i} s1\n" for i in range(n)))
    (data / "spk2utt").write_text("s1 " + " ".join(f"s1-u{i}" for i in range(n)) + "\n")
    return data


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("feats.*.ark"))}


def test_nj_runs_at_most_one_job_per_cpu_with_the_same_outputs(tmp_path, monkeypatch):
    data = _tones(tmp_path, 3)
    monkeypatch.setattr(threads, "_warned", set())
    runner = CliRunner()
    free = runner.invoke(main, ["extract-feats", str(data), str(tmp_path / "free"),
                                "--nj", "3", "--no-progress"])
    assert free.exit_code == 0, free.output
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    capped = runner.invoke(main, ["extract-feats", str(data), str(tmp_path / "capped"),
                                  "--nj", "3", "--no-progress"])
    assert capped.exit_code == 0, capped.output
    assert CAP_LINE.format(what="3 extract jobs (--nj)", n=1,
                           why="SLURM_CPUS_PER_TASK=1",
                           then="running 1 at a time, the others wait") in capped.stderr
    assert len(_digest(tmp_path / "capped")) == 3  # one archive a job, as asked
    assert _digest(tmp_path / "capped") == _digest(tmp_path / "free")


def test_num_workers_is_capped(tmp_path, monkeypatch):
    import json

    feat_dir, data = make_feats(tmp_path, n_spk=2, n_utt=3, frames=60, dim=20)
    conf = tmp_path / "train.toml"
    conf.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in tiny_conf(
        epochs=1, num_workers=5).items() if k != "model"))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    monkeypatch.setattr(threads, "_warned", set())
    result = CliRunner().invoke(main, [
        "train", str(feat_dir), str(data), str(tmp_path / "exp"), "--conf", str(conf),
        "--model-conf", str(CONF_DIR / "model_resnet_tiny.toml"), "--device", "cpu",
        "--no-progress"])
    assert result.exit_code == 0, result.output
    assert CAP_LINE.format(what="num_workers 5", n=1, why="SLURM_CPUS_PER_TASK=1",
                           then="using 1") in result.stderr.splitlines()
    recorded = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert recorded["conf"]["num_workers"] == 5  # the configuration is what was asked
