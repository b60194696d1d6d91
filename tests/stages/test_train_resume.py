"""A training run SIGKILLed mid-epoch resumes from partial.pt and ends exactly where an
uninterrupted run with the same seed ends (CPU)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from train_helpers import make_feats, tiny_conf

from sertool.faults import KILL_ENV
from sertool.nnet.checkpoint import load_checkpoint
from sertool.nnet.trainer import train

SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from train_helpers import tiny_conf
    from sertool.nnet.trainer import train
    train({feat!r}, {data!r}, {exp!r}, tiny_conf(num_workers={workers}), progress=False)
""")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_kill_mid_epoch_then_resume_is_exact(tmp_path, workers):
    torch.set_num_threads(1)
    # 4 speakers x 6 utterances, 2 each held out: 16 training items = 4 batches of 4 per epoch
    feat_dir, data_dir = make_feats(tmp_path, n_utt=6)
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    conf = tiny_conf(num_workers=workers)
    ref = train(feat_dir, data_dir, ref_dir, conf, progress=False)

    helpers = os.path.join(os.path.dirname(os.path.dirname(__file__)), "helpers")
    script = SCRIPT.format(tests=helpers, feat=str(feat_dir),
                           data=str(data_dir), exp=str(cut_dir), workers=workers)
    # partial.pt every 2 steps; global step 7 = epoch 2, batch 3: killed after the partial
    # checkpoint of batch 2, so batch 3's update is lost and must be redone identically
    env = {**os.environ, KILL_ENV: "train:after-step:7"}  # the child's 7th step
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (cut_dir / "model_1.pt").is_file() and not (cut_dir / "model_2.pt").exists()
    partial = load_checkpoint(cut_dir / "partial.pt")
    assert (partial["epoch"], partial["step"]) == (2, 2)

    resumed = train(feat_dir, data_dir, cut_dir, conf, progress=False)
    assert resumed.resumed_from.endswith("partial.pt")
    a, b = load_checkpoint(ref.final_model), load_checkpoint(resumed.final_model)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["scheduler"] == b["scheduler"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(),
                      strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    log_a = list(csv.DictReader(open(ref_dir / "train_log.csv")))
    log_b = list(csv.DictReader(open(cut_dir / "train_log.csv")))
    timing = {"time_s", "data_wait_s", "step_s"}  # seconds differ between any two runs
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa
    assert strip(log_a) == strip(log_b)
