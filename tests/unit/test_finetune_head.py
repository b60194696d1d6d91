"""Held-out split, LR schedule and the embedding-head trainer of `sertool finetune` (fast)."""

from __future__ import annotations

import pytest
import torch

from sertool.config import CONF_DIR, load_toml
from sertool.folds import SplitError, split_heldout
from sertool.nnet.schedule import lr_factor
from sertool.transfer.driver import DEFAULTS, resolve_configs
from sertool.transfer.head import train_head

UTT2SPK = {f"s{s}-{i:02d}": f"s{s}" for s in range(1, 9) for i in range(12)}
UTT2LABEL = {u: "abc"[int(u[-2:]) % 3] for u in UTT2SPK}


def test_conf_file_gives_the_defaults():
    assert load_toml(CONF_DIR / "finetune.toml") == {}  # the paper's settings are the defaults
    assert resolve_configs(None, None, None)[0] == DEFAULTS


def test_heldout_is_whole_training_speakers_only():
    train = [u for u in UTT2SPK if UTT2SPK[u] not in ("s7", "s8")]  # s7, s8 are the test side
    split = split_heldout(train, UTT2SPK, UTT2LABEL, n_speakers=2, fraction=0.15, seed=0,
                          fold="1")
    assert split.method == "speakers"
    assert len(split.heldout_speakers) == 2
    assert set(split.heldout_speakers) <= {"s1", "s2", "s3", "s4", "s5", "s6"}
    assert sorted(split.train + split.heldout) == sorted(train)
    assert {UTT2SPK[u] for u in split.heldout} == set(split.heldout_speakers)
    assert not {UTT2SPK[u] for u in split.heldout} & {UTT2SPK[u] for u in split.train}
    assert len(split.heldout) == 24
    # deterministic per (seed, fold), different across folds or seeds
    again = split_heldout(train, UTT2SPK, UTT2LABEL, n_speakers=2, fraction=0.15, seed=0,
                          fold="1")
    assert again.heldout == split.heldout
    draws = {tuple(split_heldout(train, UTT2SPK, UTT2LABEL, n_speakers=2, fraction=0.15,
                                 seed=0, fold=str(f)).heldout_speakers) for f in range(1, 9)}
    assert len(draws) > 1


def test_heldout_prefers_speakers_covering_every_label():
    # s1..s4 only say "a" and "b"; s5 alone has "c": a held-out set without s5 has no "c"
    utt2label = {u: ("c" if UTT2SPK[u] == "s5" else "ab"[int(u[-2:]) % 2]) for u in UTT2SPK}
    train = [u for u in UTT2SPK if UTT2SPK[u] in ("s1", "s2", "s3", "s4", "s5")]
    split = split_heldout(train, UTT2SPK, utt2label, n_speakers=2, fraction=0.15, seed=0,
                          fold="x")
    assert "s5" in split.heldout_speakers


def test_heldout_falls_back_to_stratified_utterances_with_one_speaker():
    train = [u for u in UTT2SPK if UTT2SPK[u] == "s1"]  # 12 utts, 4 per label
    split = split_heldout(train, UTT2SPK, UTT2LABEL, n_speakers=2, fraction=0.25, seed=0,
                          fold="1")
    assert split.method == "utterances"
    assert "only 1 training speaker" in split.note
    assert sorted(UTT2LABEL[u] for u in split.heldout) == ["a", "b", "c"]  # 1 of 4 per label
    assert not set(split.heldout) & set(split.train)
    with pytest.raises(SplitError, match="too few"):
        split_heldout(["s1-00"], UTT2SPK, UTT2LABEL, n_speakers=2, fraction=0.2, seed=0,
                      fold="1")


def test_lr_schedule_is_the_papers():
    conf = DEFAULTS["head"]
    lrs = [conf["lr"] * lr_factor(e, conf["lr_constant_epochs"], conf["lr_halve_every"])
           for e in range(1, 15)]
    assert lrs[:8] == [0.01] * 8
    assert lrs[8:14] == pytest.approx([0.005, 0.005, 0.0025, 0.0025, 0.00125, 0.00125])


def _clusters(n_per_class: int, dim: int, seed: int, shift: float):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, dim, generator=torch.Generator().manual_seed(99)) * 2
    x = torch.cat([centres[c] + shift + torch.randn(n_per_class, dim, generator=gen)
                   for c in range(3)])
    y = torch.arange(3).repeat_interleave(n_per_class)
    return x, y


def _head(dim: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.BatchNorm1d(16),
                               torch.nn.ReLU(), torch.nn.Linear(16, 3))


def test_head_trainer_learns_and_keeps_the_best_heldout_epoch():
    x, y = _clusters(40, 8, seed=1, shift=0.0)
    xv, yv = _clusters(15, 8, seed=2, shift=0.3)
    conf = {**DEFAULTS["head"], "epochs": 12}
    head = _head(8)
    result = train_head(head, x, y, xv, yv, conf, n_classes=3, seed=0)
    uas = [h["valid_ua"] for h in result.history]
    assert len(result.history) == 12
    assert result.best["valid_ua"] == max(uas) > 0.9
    assert uas[result.best_epoch - 1] == max(uas)
    assert result.best == result.history[result.best_epoch - 1]
    # the head is left at the best epoch: its held-out UA is the recorded one
    head.eval()
    with torch.no_grad():
        preds = head(xv).argmax(1)
    recall = [(preds[yv == c] == c).float().mean().item() for c in range(3)]
    assert sum(recall) / 3 == pytest.approx(result.best["valid_ua"])
    # deterministic for a seed
    again = train_head(_head(8), x, y, xv, yv, conf, n_classes=3, seed=0)
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in result.history]


def test_a_heldout_set_the_head_overflows_on_stops_training_at_its_epoch():
    """Finite held-out vectors so large that the head's logits overflow (inf - inf: a NaN loss)
    while its weights stay finite: the run stops at the first epoch, naming it and the number,
    instead of keeping an epoch chosen on a NaN loss (train_head returned normally before)."""
    from sertool.nnet.loop import DivergedError

    x, y = _clusters(40, 8, seed=1, shift=0.0)
    xv, yv = _clusters(15, 8, seed=2, shift=0.0)
    xv = xv.sign() * 3e38  # the largest float32 magnitudes: finite, as the feature checks ask
    assert torch.isfinite(xv).all()
    with pytest.raises(DivergedError) as caught:
        train_head(_head(8), x, y, xv, yv, {**DEFAULTS["head"], "epochs": 3}, n_classes=3,
                   seed=0, desc="fold 1")
    assert str(caught.value) == (
        "fold 1: the held-out evaluation of epoch 1 is not finite: valid_loss is nan, with "
        "finite weights (held-out inputs too large for the model?); stopped before saving "
        "epoch 1: check the held-out features")


def test_no_heldout_set_is_no_failure():
    """keep="last" trains without a held-out set (evaluate gives nothing): not refused."""
    x, y = _clusters(40, 8, seed=1, shift=0.0)
    result = train_head(_head(8), x, y, None, None, {**DEFAULTS["head"], "epochs": 2},
                        n_classes=3, seed=0, keep="last")
    assert [h["epoch"] for h in result.history] == [1, 2] and result.best_epoch == 2
