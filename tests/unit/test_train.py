"""The trainer on synthetic features: outputs, learning, config guard, schedule, freezing,
checkpoint loading errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from train_helpers import make_feats, tiny_conf

from sertool.config import CONF_DIR
from sertool.folds import speaker_heldout
from sertool.models import build_model, load_model_conf
from sertool.nnet.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    load_state_into,
    save_checkpoint,
)
from sertool.nnet.data import ChunkBatchSampler, repeat_pad
from sertool.nnet.schedule import lr_factor
from sertool.nnet.trainer import TrainError, train


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_writes_outputs_and_learns(tmp_path):
    feat_dir, data_dir = make_feats(tmp_path)
    exp = tmp_path / "exp"
    result = train(feat_dir, data_dir, exp, tiny_conf(), progress=False)
    for name in ("config.json", "model_1.pt", "model_3.pt", "final.pt", "train_log.csv",
                 "curves.png"):
        assert (exp / name).is_file(), name
    assert not (exp / "partial.pt").exists()
    rows = list(csv.DictReader(open(exp / "train_log.csv")))
    assert [float(r["lr"]) for r in rows] == [0.05, 0.025, 0.0125]
    assert list(rows[0])[-2:] == ["data_wait_s", "step_s"]  # added after time_s, at the end
    assert all(float(r["data_wait_s"]) >= 0 and float(r["step_s"]) > 0 for r in rows)
    assert "waiting for data" in (exp / "train.log").read_text()
    # 4 speakers x 3 utterances: one utterance per speaker held out (fraction 0.34)
    assert result.labels == ["spk0", "spk1", "spk2", "spk3"]
    assert result.history[-1]["valid_acc"] >= 0.75  # chance 0.25
    model, meta = load_model(result.final_model)
    assert meta["labels"] == result.labels and meta["epoch"] == 3
    assert json.loads((exp / "config.json").read_text())["task"] == "speaker"
    # rerun: nothing left to do, same answer
    again = train(feat_dir, data_dir, exp, tiny_conf(), progress=False)
    assert again.resumed_from.endswith("model_3.pt") and len(again.history) == 3
    with pytest.raises(TrainError, match="another configuration.*lr|differs in conf"):
        train(feat_dir, data_dir, exp, tiny_conf(lr=0.1), progress=False)


def test_paper_lr_schedule():
    # constant for 8 epochs, then halved every other epoch
    assert [lr_factor(e, 8, 2) for e in range(1, 13)] == [1] * 8 + [0.5, 0.5, 0.25, 0.25]


def test_sampler_t_per_batch_and_ranks_disjoint():
    a = list(ChunkBatchSampler(100, 8, [150, 200, 250, 300], seed=1, epoch=2))
    assert len(a) == 12 and all(len(b) == 8 for b in a)
    for batch in a:
        assert len({t for _, t, _ in batch}) == 1 and batch[0][1] in (150, 200, 250, 300)
    assert len({b[0][1] for b in a}) > 1
    r0 = [i for b in ChunkBatchSampler(100, 8, [200], 1, 2, rank=0, world=2) for i, _, _ in b]
    r1 = [i for b in ChunkBatchSampler(100, 8, [200], 1, 2, rank=1, world=2) for i, _, _ in b]
    assert len(r0) == len(r1) == 48 and not set(r0) & set(r1)
    skipped = list(ChunkBatchSampler(100, 8, [150, 200], 1, 2, skip=5))
    assert skipped == list(ChunkBatchSampler(100, 8, [150, 200], 1, 2))[5:]


def test_repeat_pad_and_single_utterance_heldout():
    import numpy as np

    m = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert repeat_pad(m, 7)[:, 0].tolist() == [0, 2, 4, 0, 2, 4, 0]
    train_r, held_r = speaker_heldout(["a1", "b1", "b2", "b3"],
                                      {"a1": "A", "b1": "B", "b2": "B", "b3": "B"},
                                      {"a1": 1000, "b1": 50, "b2": 50, "b3": 50}, 0.1, 0, 100)
    # A has one utterance: its last 100 frames held out; B gives one whole utterance
    assert ("a1", 0, 900) in train_r and ("a1", 900, 1000) in held_r
    assert len([r for r in held_r if r[0].startswith("b")]) == 1


def test_frozen_trunk_and_emotion_task(tmp_path):
    feat_dir, data_dir = make_feats(tmp_path, emotion=True)
    spk = train(feat_dir, data_dir, tmp_path / "spk", tiny_conf(epochs=1), progress=False)
    utts = sorted(u.split()[0] for u in open(data_dir / "utt2spk"))
    valid = [u for u in utts if u.startswith(("spk0", "spk1")) and u.endswith("u0")]
    tr = [u for u in utts if u not in valid]
    emo = train(feat_dir, data_dir, tmp_path / "emo", tiny_conf(epochs=2, train_trunk=False),
                task="emotion", train_utts=tr, valid_utts=valid, init_model=spk.final_model,
                progress=False)
    assert emo.labels == ["ang", "neu"]
    a = load_checkpoint(spk.final_model)["model"]
    b = load_checkpoint(emo.final_model)["model"]
    for k in a:
        if k.startswith("trunk."):
            assert torch.equal(a[k], b[k]), k  # frozen: weights and BN statistics unchanged
    assert not torch.equal(a["head.0.weight"], b["head.0.weight"])


def test_checkpoint_errors(tmp_path):
    model = build_model(load_model_conf(CONF_DIR / "model_resnet_tiny.toml"), 3, 20)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, labels=["a", "b", "c"])
    loaded, meta = load_model(path)
    assert meta["feat_dim"] == 20 and loaded.num_classes == 3
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_model(truncated)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a sertool checkpoint"):
        load_model(tmp_path / "other.pt")
    cnn = build_model(load_model_conf(CONF_DIR / "model_cnn1d.toml"), 3, 20)
    with pytest.raises(CheckpointError, match="m.pt: weights do not fit"):
        load_state_into(path, cnn, trunk_only=True)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_checkpoint_bytes_depend_on_the_contents_only(tmp_path):
    # torch.save given a path names the zip's folder after the (temporary) file: the same model
    # saved twice gave other bytes, and a bundle other SHA-256s, from one run to the next.
    model = build_model(load_model_conf(CONF_DIR / "model_resnet_tiny.toml"), 3, 20)
    save_checkpoint(tmp_path / "a.pt", model, with_rng=False)
    save_checkpoint(tmp_path / "b.pt", model, with_rng=False)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]


def test_cnn1d_trains_through_the_same_trainer(tmp_path):
    feat_dir, data_dir = make_feats(tmp_path, dim=13)
    conf = tiny_conf(epochs=2, model=load_model_conf(CONF_DIR / "model_cnn1d.toml",
                                                     ["channels=32", "dense=16"]),
                     augment={"policy": "conservative", "copies": 2})
    result = train(feat_dir, data_dir, tmp_path / "exp", conf, progress=False)
    assert len(result.history) == 2
    assert load_model(result.final_model)[1]["model_conf"]["type"] == "cnn1d_attention"


def test_amp_option_checked_and_bf16_refused_on_cpu(tmp_path):
    from sertool.config import ConfigError
    from sertool.nnet.trainer import load_train_conf

    assert load_train_conf()["amp"] == "none"  # the default stays off
    assert load_train_conf(overrides=["amp=bf16"])["amp"] == "bf16"
    with pytest.raises(ConfigError, match="amp = 'fp16'.*none, bf16"):
        load_train_conf(overrides=["amp=fp16"])
    feat_dir, data_dir = make_feats(tmp_path)
    with pytest.raises(TrainError, match="needs a CUDA device"):
        train(feat_dir, data_dir, tmp_path / "exp", tiny_conf(amp="bf16"), device="cpu",
              progress=False)
    assert not (tmp_path / "exp").exists()  # refused before anything is written


def test_balance_options_reach_the_trainer(tmp_path):
    feat_dir, data_dir = make_feats(tmp_path, emotion=True)
    runs = {}
    for name, sets in {"plain": {}, "balanced": {"class_weights": "balanced",
                                                  "sampler": "balanced"}}.items():
        runs[name] = train(feat_dir, data_dir, tmp_path / name, tiny_conf(epochs=1, **sets),
                           task="emotion", progress=False)
    config = json.loads((tmp_path / "balanced" / "config.json").read_text())
    assert config["conf"]["class_weights"] == "balanced" and config["conf"]["sampler"] == "balanced"
    a = load_checkpoint(runs["plain"].final_model)["model"]
    b = load_checkpoint(runs["balanced"].final_model)["model"]
    assert not torch.equal(a["head.0.weight"], b["head.0.weight"])  # other draws, other loss
    from sertool.config import ConfigError
    from sertool.nnet.trainer import load_train_conf

    with pytest.raises(ConfigError, match="sampler = 'bogus' .* is not one of shuffle, balanced"):
        load_train_conf(None, ["sampler=bogus"])
