"""Transfer to emotion, fold by fold: ``sertool finetune``.

For every fold of ``DATA_DIR/folds`` (or one, ``--fold``):

1. A held-out set for model selection is taken from the fold's TRAINING speakers only
   (:func:`split_heldout`): ``heldout_speakers`` whole speakers, drawn with a seed that depends
   on the fold name, are moved from training to held-out. The test list is never looked at
   until the chosen model scores it. A fold whose training data has too few speakers falls
   back to a label-stratified utterance split of the training list and says so in
   ``fold_<k>/split.json`` (the held-out set then shares speakers with training, not with test).
2. A model is trained and the epoch with the best held-out UA (ties: lower held-out loss) kept:

   * default (paper): the speaker model's trunk is frozen; its FC layers are replaced by new,
     randomly initialised ones (``SERModel.replace_head``) which are trained with SGD on the
     trunk's pooled statistics of the original segments plus their SpecAugment-ed copies
     (``sertool extract-embeddings``; the trunk runs once per utterance and copy, not once per
     epoch and fold). The trunk is in eval mode, as it is when it scores whole segments, so
     training the head on stored embeddings is exactly training the whole frozen-trunk network;
   * ``unfreeze``: everything fine-tuned through :func:`sertool.train.train` with the trunk's LR
     scaled by ``trunk_lr_factor``;
   * ``init = none`` (no-transfer baseline) and the 1D-CNN attention model: trained from scratch
     through :func:`sertool.train.train`.
3. The fold's test list is scored with whole segments (variable length, eval mode) and written
   to ``fold_<k>/posteriors.tsv`` (the :mod:`sertool.scoring` contract), after the fold model
   (``fold_<k>/model.pt``) and its model bundle (``fold_<k>/bundle``, see
   :mod:`sertool.predict`). Posteriors are written last: a fold that has them is finished and a
   rerun skips it; a killed fold is redone (the trainer resumes from its own checkpoints).

``EXP_DIR/experiment.json`` describes the experiment for ``sertool score``; a rerun with another
configuration is refused instead of mixing two experiments in one directory.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# Defaults of conf/finetune.toml (tests check that the two agree).
DEFAULTS: dict = {
    "seed": 0,
    # whole training speakers held out per fold for model selection (never test speakers)
    "heldout_speakers": 2,
    # fallback when the fold's training list has fewer than heldout_speakers + 1 speakers:
    # this fraction of the training utterances, stratified by label
    "heldout_fraction": 0.15,
    "augment": {"policy": "conservative", "copies": 2},
    # frozen trunk: the new FC layers trained on pooled embeddings (paper section 4.2)
    "head": {
        "epochs": 30,
        "batch_size": 32,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "lr_constant_epochs": 8,
        "lr_halve_every": 2,
    },
    # --unfreeze: the trunk's learning rate is the trainer's LR times this factor
    "unfreeze": {"trunk_lr_factor": 0.1},
}


class FinetuneError(ValueError):
    """A problem with the inputs of ``finetune`` (the message names the file or fold)."""


# ----------------------------------------------------------------------------- held-out split


@dataclass
class HeldoutSplit:
    train: list[str]
    heldout: list[str]
    method: str  # "speakers" or "utterances"
    heldout_speakers: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict:
        return {"method": self.method, "heldout_speakers": self.heldout_speakers,
                "n_train": len(self.train), "n_heldout": len(self.heldout), "note": self.note,
                "heldout": sorted(self.heldout)}


def _fold_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def split_heldout(train_utts: Sequence[str], utt2spk: Mapping[str, str],
                  utt2label: Mapping[str, str], *, n_speakers: int, fraction: float,
                  seed: int, fold: str) -> HeldoutSplit:
    """Split a fold's training list into training and held-out (model selection) parts.

    Only ``train_utts`` are used. Whole speakers are held out when the fold has at least
    ``n_speakers + 1`` training speakers; among the seeded draws, the first whose held-out set
    covers every label of the training list is preferred (UA needs every class). Otherwise a
    label-stratified ``fraction`` of the utterances is held out.
    """
    rng = random.Random(_fold_seed(seed, fold))
    utts = sorted(train_utts)
    speakers = sorted({utt2spk[u] for u in utts})
    labels = {utt2label[u] for u in utts}
    if n_speakers >= 1 and len(speakers) > n_speakers:
        by_spk: dict[str, list[str]] = {}
        for utt in utts:
            by_spk.setdefault(utt2spk[utt], []).append(utt)
        chosen = None
        for _ in range(50):
            draw = sorted(rng.sample(speakers, n_speakers))
            if {utt2label[u] for s in draw for u in by_spk[s]} == labels:
                chosen = draw
                break
            chosen = chosen or draw
        held = set(chosen)
        return HeldoutSplit([u for u in utts if utt2spk[u] not in held],
                            [u for u in utts if utt2spk[u] in held], "speakers", chosen)
    by_label: dict[str, list[str]] = {}
    for utt in utts:
        by_label.setdefault(utt2label[utt], []).append(utt)
    heldout: set[str] = set()
    for label in sorted(by_label):
        group = by_label[label]
        k = min(len(group) - 1, max(1, round(fraction * len(group)))) if len(group) > 1 else 0
        heldout.update(rng.sample(group, k))
    if not heldout:
        raise FinetuneError(f"fold {fold}: {len(utts)} training utterances are too few to hold "
                            "any out for model selection")
    note = (f"only {len(speakers)} training speaker(s): held out {len(heldout)} training "
            "utterances stratified by label (speakers shared with training, never with test)")
    return HeldoutSplit([u for u in utts if u not in heldout], sorted(heldout), "utterances",
                        [], note)


# ----------------------------------------------------------------------------- head training


@dataclass
class HeadResult:
    """The best epoch of :func:`train_head` and the history of every epoch."""

    state: dict  # the head's state_dict at the best epoch
    best_epoch: int
    best: dict  # held-out metrics at the best epoch
    history: list[dict]


def _ua(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> float:
    recalls = [float((preds[labels == c] == c).mean()) for c in range(n_classes)
               if (labels == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def lr_at(epoch: int, conf: Mapping) -> float:
    """Paper schedule: constant for ``lr_constant_epochs`` epochs, then halved every
    ``lr_halve_every`` epochs (``epoch`` counts from 1)."""
    extra = max(0, epoch - int(conf["lr_constant_epochs"]))
    steps = (extra + int(conf["lr_halve_every"]) - 1) // int(conf["lr_halve_every"])
    return float(conf["lr"]) * 0.5 ** steps


def train_head(head, x_train, y_train, x_valid, y_valid, conf: Mapping, *, n_classes: int,
               seed: int = 0, progress: bool = False, desc: str = "head") -> HeadResult:
    """Train ``head`` (pooled embedding -> logits) with SGD and cross-entropy; keep the epoch
    with the best held-out UA (ties: lower held-out loss).

    ``x_*`` are float tensors (N, D), ``y_*`` long tensors (N,). ``conf`` is the ``head``
    section of :data:`DEFAULTS`. Deterministic for a given seed.
    """
    import torch
    from tqdm import tqdm

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout inside the head
    opt = torch.optim.SGD(head.parameters(), lr=float(conf["lr"]),
                          momentum=float(conf["momentum"]),
                          weight_decay=float(conf["weight_decay"]))
    loss_fn = torch.nn.CrossEntropyLoss()
    batch = int(conf["batch_size"])
    y_valid_np = y_valid.numpy()
    history: list[dict] = []
    best_key, best_state, best_epoch = None, None, 0
    epochs = range(1, int(conf["epochs"]) + 1)
    for epoch in tqdm(epochs, desc=desc, disable=not progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch, conf)
        head.train()
        order = torch.randperm(len(x_train), generator=gen)
        total, seen = 0.0, 0
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            if len(idx) < 2 and len(order) > 1:
                continue  # a batch of one breaks batch norm in the head
            opt.zero_grad()
            loss = loss_fn(head(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        head.eval()
        with torch.no_grad():
            logits = head(x_valid)
            valid_loss = float(loss_fn(logits, y_valid))
        preds = logits.argmax(dim=1).numpy()
        record = {"epoch": epoch, "lr": lr_at(epoch, conf), "train_loss": total / max(seen, 1),
                  "valid_loss": valid_loss, "valid_ua": _ua(y_valid_np, preds, n_classes),
                  "valid_wa": float((preds == y_valid_np).mean())}
        history.append(record)
        key = (record["valid_ua"], -valid_loss)
        if best_key is None or key > best_key:
            best_key, best_epoch = key, epoch
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return HeadResult(best_state, best_epoch, history[best_epoch - 1], history)
