"""torchrun with two CPU processes, and with one (gloo): DDP training writes one set of
checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from train_helpers import make_feats

from sertool.nnet.checkpoint import load_model


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [2, 1])  # 1: DDP of one process, as on one GPU
def test_torchrun_cpu_processes(tmp_path, nproc):
    feat_dir, data_dir = make_feats(tmp_path, n_utt=6)
    exp = tmp_path / "exp"
    conf = tmp_path / "train.toml"
    conf.write_text('seed = 1\nepochs = 2\nbatch_size = 4\nchunk_frames = [20, 30]\n'
                    'heldout_fraction = 0.34\nheldout_min_frames = 20\nnum_workers = 0\n'
                    'lr = 0.05\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "sertool", "train", "--task", "speaker",
           str(feat_dir), str(data_dir), str(exp),
           "--conf", str(conf), "--model-conf", "conf/model_resnet_tiny.toml",
           "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in exp.glob("*.pt")) == ["final.pt", "model_1.pt", "model_2.pt"]
    lines = (exp / "train_log.csv").read_text().splitlines()
    assert len(lines) == 3  # header + 2 epochs, written once (rank 0)
    model, meta = load_model(exp / "final.pt")
    assert meta["epoch"] == 2 and meta["labels"] == ["spk0", "spk1", "spk2", "spk3"]
    # one line of summary from each rank is fine; every rank finished
    assert proc.stdout.count("2 epochs") == nproc
    assert f"DDP: {nproc} process(es), backend gloo" in (exp / "train.log").read_text()
