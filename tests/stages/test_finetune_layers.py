"""finetune on a trunk with several hidden layers (a small random Whisper encoder): layers.use
and head.kind, chosen on the training speakers, saved as models that score as the folds did."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from finetune_inputs import _inputs

from sertool.expdir import read_posteriors
from sertool.models import build_model
from sertool.nnet.checkpoint import load_model, save_checkpoint
from sertool.nnet.data import load_feats
from sertool.transfer.driver import finetune, resolve_configs
from sertool.transfer.plan import FinetuneError

SMALL_WHISPER = {"type": "whisper", "n_mels": 20, "n_ctx": 40, "d_model": 16, "n_heads": 2,
                 "n_layers": 2}
FAST = ["heldout_speakers=1", "head.epochs=2", "head.batch_size=4", "augment.copies=1"]


@pytest.fixture(scope="module")
def layered(tmp_path_factory):
    """Synthetic whisper_mel features of 4 speakers, two folds, and a random encoder."""
    root = tmp_path_factory.mktemp("layers")
    feat_dir, data = _inputs(root)
    (feat_dir / "frontend.json").write_text('{"kind": "whisper_mel"}')
    torch.manual_seed(0)
    save_checkpoint(root / "encoder.pt", build_model(SMALL_WHISPER, 0, 20), feat_dim=20,
                    with_rng=False)
    return root, feat_dir, data


def _finetune(root, feat_dir, data, name, *sets, init=None):
    conf, _, _ = resolve_configs(None, None, None, [*FAST, *sets])
    return finetune(feat_dir, data, root / name, init=init or root / "encoder.pt", conf=conf,
                    progress=False)


def _fold_scores_again(exp, feat_dir, fold="0"):
    """The fold's saved model on its test utterances' features, beside its posteriors."""
    model, meta = load_model(exp / f"fold_{fold}" / "model.pt")
    model.eval()
    rows = read_posteriors(exp / f"fold_{fold}" / "posteriors.tsv")
    from sertool.frontend.featdir import FeatDir

    feats = FeatDir.open(feat_dir).feats
    for utt, probs in zip(rows.utts, rows.probs, strict=True):
        x = torch.tensor(load_feats(feats[utt], utt))[None]
        with torch.no_grad():
            again = torch.softmax(model(x), dim=-1)[0].numpy()
        np.testing.assert_allclose(again, probs, atol=1e-5)
    return meta


def test_best_layer_is_chosen_on_the_training_speakers_and_saved_with_the_fold(layered):
    root, feat_dir, data = layered
    result = _finetune(root, feat_dir, data, "best", "layers.use=best")
    log = json.loads((root / "best" / "fold_0" / "train_log.json").read_text())
    tried = log["layers_tried"]
    assert list(tried) == ["layer 0", "layer 1", "layer 2"]  # every hidden state
    # the one selection rule: the best held-out UA, ties to the lower loss
    best = max(tried.values(), key=lambda r: (r["valid_ua"], -r["valid_loss"]))
    assert log["best"]["layer"] == int(log["layers"].split()[1])
    assert tried[log["layers"]] == {k: v for k, v in best.items()}
    meta = _fold_scores_again(root / "best", feat_dir)
    assert meta["model_conf"]["layer"] == log["best"]["layer"]
    assert "pool_layers" not in meta["model_conf"]
    emb = json.loads((root / "best" / "embeddings" / "emb.json").read_text())
    assert emb["layers"]["n"] == 3 and emb["pooled_dim"] == 3 * 32
    assert f"layer {log['best']['layer']}" in result.fold_lines()[0]


@pytest.mark.parametrize("use", ["weighted", "concat"])
def test_every_layer_mixed_or_concatenated_scores_as_the_fold_did(layered, use):
    root, feat_dir, data = layered
    _finetune(root, feat_dir, data, use, f"layers.use={use}")
    meta = _fold_scores_again(root / use, feat_dir)
    assert meta["model_conf"]["pool_layers"] == "all"
    assert meta["model_conf"]["layer_mix"] == use
    log = json.loads((root / use / "fold_0" / "train_log.json").read_text())
    if use == "weighted":
        weights = log["layer_weights"]
        assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)
        assert weights != pytest.approx([1 / 3] * 3, abs=1e-6)  # they were trained
    else:
        assert "layer_weights" not in log


def test_linear_head_picks_c_on_held_out_speakers_then_refits_on_all(layered):
    root, feat_dir, data = layered
    result = _finetune(root, feat_dir, data, "linear", "head.kind=linear",
                       "head.linear_c=[0.01, 1.0]", "layers.use=one", "layers.index=1")
    log = json.loads((root / "linear" / "fold_0" / "train_log.json").read_text())
    assert [row["c"] for row in log["history"]] == [0.01, 1.0]
    chosen = max(log["history"], key=lambda r: (r["valid_ua"], -r["valid_loss"]))
    assert log["best"]["c"] == chosen["c"] and log["best"]["layer"] == 1
    assert "epoch" not in log["best"] and "best_epoch" not in log
    meta = _fold_scores_again(root / "linear", feat_dir)
    assert meta["model_conf"]["head"] == "linear" and meta["model_conf"]["layer"] == 1
    assert f"c {chosen['c']:g}" in result.fold_lines()[0]
    # refitted on every training utterance: the held-out speaker is in its standardisation
    model, _ = load_model(root / "linear" / "fold_0" / "model.pt")
    split = json.loads((root / "linear" / "fold_0" / "split.json").read_text())
    assert split["n_heldout"] > 0
    assert model.head[0].mean.abs().sum() > 0


def test_the_defaults_leave_the_identity_of_existing_experiments_as_it_was(layered):
    root, feat_dir, data = layered
    _finetune(root, feat_dir, data, "default")
    identity = json.loads((root / "default" / "finetune.json").read_text())
    assert "layers" not in identity["conf"]
    assert set(identity["conf"]["head"]) == {"epochs", "batch_size", "lr", "momentum",
                                             "weight_decay", "lr_constant_epochs",
                                             "lr_halve_every"}
    emb = json.loads((root / "default" / "embeddings" / "emb.json").read_text())
    assert "layers" not in emb and emb["pooled_dim"] == 32  # the last layer only, as before


def test_layer_choices_need_a_layered_trunk_and_the_frozen_trunk(layered, tmp_path):
    root, feat_dir, data = layered
    resnet = tmp_path / "resnet.pt"
    save_checkpoint(resnet, build_model({"type": "resnet", "layers": [1], "channels": 2}, 0, 20),
                    feat_dim=20, with_rng=False)
    (feat_dir / "frontend.json").write_text('{"kind": "logmel"}')
    try:
        with pytest.raises(FinetuneError, match="layers.use = 'best' needs a trunk with several "
                           "hidden layers \\(whisper, ssl\\); the resnet trunk pools one output"):
            _finetune(root, feat_dir, data, "refused", "layers.use=best", init=resnet)
    finally:
        (feat_dir / "frontend.json").write_text('{"kind": "whisper_mel"}')
    with pytest.raises(FinetuneError, match="are for the frozen trunk's stored embeddings"):
        conf, _, _ = resolve_configs(None, None, None, [*FAST, "head.kind=linear"])
        finetune(feat_dir, data, root / "refused2", init=root / "encoder.pt", conf=conf,
                 unfreeze=True, progress=False)
    with pytest.raises(FinetuneError, match="layers.index = 3: the trunk has 3 hidden states"):
        _finetune(root, feat_dir, data, "refused3", "layers.use=one", "layers.index=3")


def test_a_whisper_trunk_refuses_features_of_another_kind(layered):
    root, feat_dir, data = layered
    (feat_dir / "frontend.json").write_text('{"kind": "logmel"}')
    try:
        with pytest.raises(Exception, match="features of kind 'logmel', the whisper trunk of "
                           ".*encoder.pt reads 'whisper_mel' features"):
            _finetune(root, feat_dir, data, "wrong_kind")
    finally:
        (feat_dir / "frontend.json").write_text('{"kind": "whisper_mel"}')
