"""One selection metric (issue 21, item 3): every emotion model keeps the epoch with the best
held-out UA (sertool.metrics.best_epoch), the frozen-trunk head and ``sertool train`` alike (the
unfreeze and scratch rows of an ablation); speaker training keeps selecting on accuracy."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from train_helpers import make_feats, tiny_conf

import sertool.nnet.trainer as trainer
from sertool import metrics
from sertool.frontend.featdir import FeatDir
from sertool.metrics import confusion_matrix, unweighted_accuracy
from sertool.nnet.data import Item

# A held-out log whose best-accuracy epoch (2) is not its best-UA epoch (3): a minority class
# recognised at epoch 3 costs accuracy and gains UA.
HELD_OUT_LOG = [
    {"valid_loss": 1.0, "valid_acc": 0.50, "valid_ua": 0.50},
    {"valid_loss": 0.9, "valid_acc": 0.80, "valid_ua": 0.40},
    {"valid_loss": 0.8, "valid_acc": 0.60, "valid_ua": 0.70},
    {"valid_loss": 0.7, "valid_acc": 0.70, "valid_ua": 0.60},
]


@pytest.fixture
def one_thread():
    """Eight tiny steps: on cores shared with other work one thread is several times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _scripted_training(tmp_path, monkeypatch, task: str) -> trainer.TrainResult:
    """The real trainer on tiny features, its held-out evaluation replaced by HELD_OUT_LOG
    (one row per epoch), keeping one checkpoint besides the best (keep_checkpoints = 1)."""
    rows = iter(HELD_OUT_LOG)
    monkeypatch.setattr(trainer, "evaluate", lambda *args, **kwargs: dict(next(rows)))
    feat_dir, data_dir = make_feats(tmp_path, emotion=True)
    utts = sorted(FeatDir.open(feat_dir).feats)
    valid = [u for u in utts if u.endswith("-u0")]  # one utterance of each of the 4 speakers
    train = [u for u in utts if u not in valid]
    conf = tiny_conf(epochs=len(HELD_OUT_LOG), keep_checkpoints=1, checkpoint_every_steps=0)
    return trainer.train(feat_dir, data_dir, tmp_path / "exp", conf, task=task,
                         train_utts=train, valid_utts=valid, device="cpu", progress=False)


def test_emotion_training_keeps_the_best_ua_epoch_not_the_best_accuracy(tmp_path, monkeypatch,
                                                                         one_thread):
    result = _scripted_training(tmp_path, monkeypatch, "emotion")
    assert result.best["epoch"] == 3 and result.best["valid_ua"] == 0.70
    assert result.best_model == tmp_path / "exp" / "model_3.pt"
    # pruning keeps the selected epoch (and the newest), not the best-accuracy one
    assert sorted(p.name for p in (tmp_path / "exp").glob("model_*.pt")) == [
        "model_3.pt", "model_4.pt"]
    assert "best held-out UA 0.700 at epoch 3" in result.summary()
    with open(tmp_path / "exp" / "train_log.csv") as log:  # the selection metric is logged
        assert [float(r["valid_ua"]) for r in csv.DictReader(log)] == [0.5, 0.4, 0.7, 0.6]


def test_speaker_training_keeps_selecting_on_accuracy(tmp_path, monkeypatch, one_thread):
    result = _scripted_training(tmp_path, monkeypatch, "speaker")
    assert result.best["epoch"] == 2
    assert result.best_model == tmp_path / "exp" / "model_2.pt"
    assert "best held-out accuracy 0.800 at epoch 2" in result.summary()


class _AlwaysFirstClass(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[2.0, 0.0]]).expand(len(x), 2)


def test_held_out_evaluation_reports_ua_through_sertool_metrics(tmp_path):
    feat_dir, _ = make_feats(tmp_path)
    feats = FeatDir.open(feat_dir).feats
    # three utterances of class 0 and one of class 1, all decided as class 0
    items = [Item(u, label, 0, 50) for u, label in
             zip(sorted(feats)[:4], (0, 0, 0, 1), strict=True)]
    scores = trainer.evaluate(_AlwaysFirstClass(), items, feats, "cpu", 2)
    assert scores["valid_acc"] == 0.75
    assert scores["valid_ua"] == unweighted_accuracy(confusion_matrix([0, 0, 0, 1],
                                                                      [0, 0, 0, 0], 2)) == 0.5
    assert math.isfinite(scores["valid_loss"])


def test_best_epoch_ties_nan_and_a_run_logged_before_ua():
    rows = [{"epoch": 1, "valid_loss": 0.5, "valid_ua": 0.6},
            {"epoch": 2, "valid_loss": 0.4, "valid_ua": 0.6},   # same UA, lower loss: kept
            {"epoch": 3, "valid_loss": 0.4, "valid_ua": 0.6},   # a full tie: the earlier stays
            {"epoch": 4, "valid_loss": math.nan, "valid_ua": math.nan}]
    assert metrics.best_epoch(rows)["epoch"] == 2
    assert metrics.best_epoch([{"epoch": 1, "valid_loss": math.nan, "valid_ua": math.nan}]
                              ) is None
    # a held-out set the model overflowed on (a NaN or infinite loss or metric): no candidate,
    # however high its UA (it was chosen before: its decisions are argmaxes of NaN logits)
    overflowed = [{"epoch": 1, "valid_loss": 0.9, "valid_ua": 0.5},
                  {"epoch": 2, "valid_loss": math.nan, "valid_ua": 0.9},
                  {"epoch": 3, "valid_loss": math.inf, "valid_ua": 0.8},
                  {"epoch": 4, "valid_loss": 0.8, "valid_ua": math.inf}]
    assert metrics.best_epoch(overflowed)["epoch"] == 1
    assert trainer.selection_metric("emotion", rows) == "valid_ua"
    assert trainer.selection_metric("speaker", rows) == "valid_acc"
    # epochs checkpointed before UA was logged: the resumed run keeps comparing accuracies
    assert trainer.selection_metric("emotion", [{"epoch": 1, "valid_acc": 0.5}, *rows]) == \
        "valid_acc"


@pytest.mark.parametrize("module", ["sertool.transfer.head", "sertool.nnet.trainer"])
def test_both_trainers_select_through_the_one_definition(module):
    """No second copy of the rule: both emotion trainers import sertool.metrics.best_epoch."""
    import importlib

    assert importlib.import_module(module).best_epoch is metrics.best_epoch
