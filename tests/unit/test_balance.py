"""Class balance (sertool.nnet.balance): balanced weights from the training labels, the
balanced sampler, their effect on a small head trained on unbalanced data, and the
configuration identity of runs at the defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sertool.nnet.balance import (
    BalanceError,
    balanced_class_weights,
    balanced_probabilities,
    loss_weights,
    without_defaults,
)


def test_balanced_weights_of_a_known_unbalanced_label_list():
    # 10 items: 6 of class 0, 3 of class 1, 1 of class 2 -> 10 / (3 * n_c)
    labels = [0] * 6 + [1] * 3 + [2]
    np.testing.assert_allclose(balanced_class_weights(labels, 3),
                               [10 / 18, 10 / 9, 10 / 3])
    # weighted counts are equal per class: every class weighs n / K in the loss
    np.testing.assert_allclose(balanced_class_weights(labels, 3) * [6, 3, 1], [10 / 3] * 3)
    assert loss_weights("none", labels, 3) is None
    np.testing.assert_allclose(balanced_class_weights([0, 1, 1, 0], 2), [1.0, 1.0])
    with pytest.raises(BalanceError, match=r"class index\(es\) \[2\] have no training item"):
        balanced_class_weights([0, 1], 3)
    with pytest.raises(BalanceError, match="class_weights must be one of none, balanced"):
        loss_weights("inverse", labels, 3)


def test_the_balanced_sampler_draws_every_class_equally():
    labels = np.array([0] * 6 + [1] * 3 + [2])
    p = balanced_probabilities(labels)
    np.testing.assert_allclose(p, [1 / 18] * 6 + [1 / 9] * 3 + [1 / 3])
    np.testing.assert_allclose([p[labels == c].sum() for c in range(3)], [1 / 3] * 3)
    from sertool.nnet.data import ChunkBatchSampler

    drawn = [i for b in ChunkBatchSampler(len(labels), 5, [150], 1, 2, draw=p) for i, _, _ in b]
    assert drawn == [i for b in ChunkBatchSampler(len(labels), 5, [150], 1, 2, draw=p)
                     for i, _, _ in b]  # a function of (seed, epoch): resume holds
    many = np.random.default_rng(0).choice(len(labels), 30000, p=p)
    share = np.bincount(labels[many], minlength=3) / len(many)
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.01)


def _unbalanced(seed: int, n_major: int, n_minor: int):
    """Two overlapping Gaussian classes in 2-D: class 0 frequent, class 1 rare."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n_major, 2, generator=gen)
    x1 = torch.randn(n_minor, 2, generator=gen) + torch.tensor([1.5, 1.5])
    return torch.cat([x0, x1]), torch.cat([torch.zeros(n_major, dtype=torch.long),
                                           torch.ones(n_minor, dtype=torch.long)])


def _ua(logits: torch.Tensor, y: torch.Tensor) -> float:
    pred = logits.argmax(1)
    return float(np.mean([(pred[y == c] == c).float().mean() for c in (0, 1)]))


def test_class_weights_raise_ua_of_a_head_trained_on_unbalanced_data():
    from sertool.transfer.head import train_head
    from sertool.transfer.plan import DEFAULTS

    x, y = _unbalanced(0, 950, 50)
    x_test, y_test = _unbalanced(1, 500, 500)  # balanced test: UA is what balance buys
    uas = {}
    for name, sets in {"plain": {}, "weights": {"class_weights": "balanced"},
                       "sampler": {"sampler": "balanced"}}.items():
        torch.manual_seed(0)
        head = torch.nn.Linear(2, 2)
        conf = {**DEFAULTS["head"], "epochs": 5, **sets}
        train_head(head, x, y, None, None, conf, n_classes=2, seed=0, keep="last")
        with torch.no_grad():
            uas[name] = _ua(head(x_test), y_test)
    # unweighted: the rare class is mostly missed (UA near 0.6); balanced: near the Bayes
    # rule of equal priors (~0.86 for means 1.5*sqrt(2) apart)
    assert uas["plain"] < 0.70, uas
    assert uas["weights"] > uas["plain"] + 0.10, uas
    assert uas["sampler"] > uas["plain"] + 0.10, uas


def test_balanced_weights_in_the_linear_head():
    from sertool.models.heads import Standardise
    from sertool.transfer.linear import fit_linear

    x, y = _unbalanced(0, 950, 50)
    x_test, y_test = _unbalanced(1, 500, 500)
    uas = {}
    for mode in ("none", "balanced"):
        head = torch.nn.Sequential(Standardise(2), torch.nn.Linear(2, 2))
        fit_linear(head, x, y, 1.0, class_weights=mode)
        with torch.no_grad():
            uas[mode] = _ua(head(x_test), y_test)
    assert uas["none"] < 0.70 and uas["balanced"] > uas["none"] + 0.10, uas


def test_options_at_their_defaults_stay_out_of_the_identities():
    from sertool.nnet.trainer import DEFAULTS as TRAIN
    from sertool.nnet.trainer import _identity
    from sertool.transfer.plan import DEFAULTS, _identity_conf

    head = _identity_conf(DEFAULTS)["head"]
    assert "class_weights" not in head and "sampler" not in head
    changed = _identity_conf({**DEFAULTS, "head": {**DEFAULTS["head"],
                                                   "class_weights": "balanced"}})["head"]
    assert changed["class_weights"] == "balanced" and "sampler" not in changed
    ident = _identity({"conf": dict(TRAIN)})["conf"]
    assert not {"class_weights", "sampler", "amp"} & set(ident)
    assert _identity({"conf": {**TRAIN, "sampler": "balanced"}})["conf"]["sampler"] == "balanced"
    assert without_defaults({"lr": 1, "class_weights": "none", "sampler": "balanced"}) == {
        "lr": 1, "sampler": "balanced"}
