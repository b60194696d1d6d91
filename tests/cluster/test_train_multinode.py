"""Two "nodes" on this host: torchrun --nnodes 2 (one process each, c10d rendezvous, gloo)
running ``sertool train``, as the README's sbatch script does across real nodes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from slurm_cluster import free_port
from train_helpers import make_feats

from sertool.nnet.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[2]
HELPERS = ROOT / "tests" / "helpers"


@pytest.mark.slow
def test_two_nodes_train_one_model(tmp_path):
    feat_dir, data_dir = make_feats(tmp_path, n_utt=6)
    exp, ranks = tmp_path / "exp", tmp_path / "ranks"
    ranks.mkdir()
    conf = tmp_path / "train.toml"
    conf.write_text('seed = 1\nepochs = 2\nbatch_size = 4\nchunk_frames = [20, 30]\n'
                    'heldout_fraction = 0.34\nheldout_min_frames = 20\nnum_workers = 0\n'
                    'lr = 0.05\n')
    endpoint = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": os.pathsep.join([str(HELPERS), str(ROOT),
                                          os.environ.get("PYTHONPATH", "")])}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank",
         str(node), "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint",
         endpoint, "--rdzv_id", "sertool-test", str(HELPERS / "multinode_rank.py"),
         str(ranks), "train", "--task", "speaker", str(feat_dir), str(data_dir), str(exp),
         "--conf", str(conf), "--model-conf", str(ROOT / "conf" / "model_resnet_tiny.toml"),
         "--device", "cpu", "--no-progress"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for node in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, stderr[-3000:]

    # one set of checkpoints and one log, written by rank 0 alone
    assert sorted(p.name for p in exp.iterdir() if p.suffix == ".pt") == \
        ["final.pt", "model_1.pt", "model_2.pt"]
    assert not list(exp.glob("*.tmp")) and not list(exp.glob(".*.tmp"))
    assert len((exp / "train_log.csv").read_text().splitlines()) == 3  # header + 2 epochs
    # both ranks trained: gradients were averaged, so the two nodes hold the same weights,
    # and final.pt is that model (batch-norm running statistics are rank 0's own)
    model, meta = load_model(exp / "final.pt")
    assert meta["epoch"] == 2
    states = [torch.load(ranks / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    params = {name for name, _ in model.named_parameters()}
    assert params
    for name in params:
        assert torch.equal(states[0][name], states[1][name]), name
    for name, value in model.state_dict().items():
        assert torch.equal(states[0][name], value), name
