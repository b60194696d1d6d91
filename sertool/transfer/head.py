"""New FC layers on a frozen trunk's stored embeddings (the paper's default transfer).

The head is trained through the one training loop (sertool.nnet.loop.fit) with the paper's
schedule; the epoch with the best held-out UA (sertool.metrics, ties: lower held-out loss) is
kept. Batches are a seeded permutation of the stored vectors per epoch, or with
``sampler = "balanced"`` as many seeded draws with class-equal probability; ``class_weights =
"balanced"`` weights the cross-entropy by the training vectors' class counts
(sertool.nnet.balance).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from sertool.faults import kill_point
from sertool.metrics import (
    best_epoch,
    confusion_matrix,
    unweighted_accuracy,
    weighted_accuracy,
)
from sertool.nnet.balance import balanced_probabilities, check_sampler, loss_weights
from sertool.nnet.loop import EpochBatches, fit
from sertool.nnet.schedule import paper_scheduler
from sertool.threads import training_threads


@dataclass
class HeadResult:
    """The best epoch of :func:`train_head` and the history of every epoch."""

    state: dict  # the head's state_dict at the best epoch
    best_epoch: int
    best: dict  # held-out metrics at the best epoch
    history: list[dict]


def train_head(head: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
               x_valid: torch.Tensor | None, y_valid: torch.Tensor | None, conf: Mapping, *,
               n_classes: int, seed: int = 0, progress: bool = False, desc: str = "head",
               keep: str = "best") -> HeadResult:
    """Train ``head`` (pooled embedding -> logits) with SGD and cross-entropy; keep the epoch
    with the best held-out UA (ties: lower held-out loss), or with ``keep="last"`` the last
    epoch (then no held-out set is needed: ``x_valid`` None).

    ``x_*`` are float tensors (N, D), ``y_*`` long tensors (N,). ``conf`` is the ``head``
    section of the finetune configuration. Deterministic for a given seed. Threads: see
    sertool.threads.training_threads.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout inside the head
    optimizer = torch.optim.SGD(head.parameters(), lr=float(conf["lr"]),
                                momentum=float(conf["momentum"]),
                                weight_decay=float(conf["weight_decay"]))
    scheduler = paper_scheduler(optimizer, int(conf["lr_constant_epochs"]),
                                int(conf["lr_halve_every"]))
    size = int(conf["batch_size"])
    # later options: a head section without them trains as before
    weights = loss_weights(str(conf.get("class_weights", "none")), y_train.numpy(), n_classes)
    class_weight = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    sampler = str(conf.get("sampler", "shuffle"))
    check_sampler(sampler)
    draw = (torch.as_tensor(balanced_probabilities(y_train.numpy()))
            if sampler == "balanced" else None)

    def batches(_epoch: int) -> EpochBatches:
        kill_point("finetune:head-epoch")  # a fold's head half-trained (only in memory)
        order = (torch.randperm(len(x_train), generator=gen) if draw is None else
                 torch.multinomial(draw, len(x_train), replacement=True, generator=gen))
        # a batch of one breaks batch norm in the head: dropped (unless it is all there is)
        chunks = [order[i:i + size] for i in range(0, len(order), size)
                  if len(order[i:i + size]) >= 2 or len(order) == 1]
        return EpochBatches(((x_train[idx], y_train[idx]) for idx in chunks), len(chunks))

    def evaluate() -> dict:
        if x_valid is None:
            return {}
        head.eval()
        with torch.no_grad():
            logits = head(x_valid)
            loss = float(torch.nn.functional.cross_entropy(logits, y_valid))
        preds, labels = logits.argmax(dim=1).numpy(), y_valid.numpy()
        cm = confusion_matrix(labels, preds, n_classes)
        return {"valid_loss": loss, "valid_ua": unweighted_accuracy(cm),
                "valid_wa": weighted_accuracy(cm)}

    best: dict = {}

    def keep_best(row: dict, history: list[dict]) -> None:
        chosen = best_epoch(history)
        if not best or (chosen is not None and chosen["epoch"] == row["epoch"]):
            best.update(epoch=row["epoch"],
                        state={k: v.detach().clone() for k, v in head.state_dict().items()})

    with training_threads(head):  # a small head: one thread unless more were asked for
        history = fit(head, optimizer, scheduler, epochs=int(conf["epochs"]), batches=batches,
                      evaluate=evaluate, on_epoch=keep_best if keep == "best" else None,
                      progress=progress, desc=desc, class_weight=class_weight)
    if keep != "best":  # the last epoch's weights are the head as it stands
        best.update(epoch=history[-1]["epoch"],
                    state={k: v.detach().clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best["state"])
    return HeadResult(best["state"], best["epoch"], history[best["epoch"] - 1], history)
