"""The one training loop: epochs of SGD steps with cross-entropy, evaluation after each epoch,
and the LR schedule stepped per epoch.

Both ``sertool train`` (random chunks from feature archives, checkpoints, DDP) and the new FC
layers of the frozen-trunk transfer (stored embeddings) run through :func:`fit`; what differs
between them - where batches come from, how a model is evaluated, what is saved after a step or
an epoch - is passed in as functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from tqdm import tqdm

log = logging.getLogger("sertool.train")


@dataclass
class EpochBatches:
    """One epoch's batches: ``batches`` yields ``(x, y)``; ``total`` is the epoch's number of
    batches and ``done`` how many of them an interrupted run already took (resume)."""

    batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
    total: int
    done: int = 0
    sums: list[float] | None = None  # the done batches' (loss sum, correct, count)


StepHook = Callable[[int, int, torch.Tensor], None]  # (epoch, step, sums so far)
EpochHook = Callable[[dict, list[dict]], None]  # (this epoch's row, the whole history)


def train_steps(net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                epoch: EpochBatches, device: str | torch.device, *, number: int,
                on_step: StepHook | None = None, bar: tqdm | None = None) -> torch.Tensor:
    """SGD steps over one epoch's batches; returns (loss sum, correct, count) as float64."""
    sums = torch.zeros(3, dtype=torch.float64)
    if epoch.sums is not None:
        sums += torch.tensor(epoch.sums, dtype=torch.float64)
    for step, (x, y) in enumerate(epoch.batches, start=epoch.done + 1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += torch.tensor([loss.item() * len(y), (logits.argmax(1) == y).sum().item(),
                              len(y)], dtype=torch.float64)
        if bar is not None:
            bar.update(1)
        if on_step is not None:
            on_step(number, step, sums)
    return sums


def fit(net: torch.nn.Module, optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler, *, epochs: int,
        batches: Callable[[int], EpochBatches], evaluate: Callable[[], dict],
        device: str | torch.device = "cpu", start_epoch: int = 1,
        history: list[dict] | None = None, train_mode: Callable[[], None] | None = None,
        reduce: Callable[[torch.Tensor], None] | None = None,
        on_step: StepHook | None = None, on_epoch: EpochHook | None = None,
        progress: bool = False, desc: str = "") -> list[dict]:
    """Train epochs ``start_epoch``..``epochs``; return the history, one row per epoch:
    epoch, lr, train_loss, train_acc, what ``evaluate`` returns, time_s.

    ``batches(epoch)`` gives the epoch's batches; ``train_mode()`` puts the network in training
    mode (default ``net.train()``; a frozen trunk keeps its batch-norm statistics);
    ``reduce(sums)`` sums the statistics over processes (DDP); ``evaluate()`` scores the
    held-out set in eval mode. ``on_epoch`` runs after the scheduler stepped (checkpoints).
    """
    history = [] if history is None else history
    for number in range(start_epoch, epochs + 1):
        started = time.time()
        epoch = batches(number)
        if train_mode is not None:
            train_mode()
        else:
            net.train()
        label = f"{desc} epoch {number}/{epochs}".strip()
        with tqdm(total=epoch.total, initial=epoch.done, desc=label, disable=not progress,
                  leave=False) as bar:
            sums = train_steps(net, optimizer, epoch, device, number=number, on_step=on_step,
                               bar=bar)
        if reduce is not None:
            reduce(sums)
        row = {"epoch": number, "lr": optimizer.param_groups[-1]["lr"],
               "train_loss": float(sums[0] / sums[2]) if sums[2] else float("nan"),
               "train_acc": float(sums[1] / sums[2]) if sums[2] else float("nan")}
        row.update(evaluate())
        row["time_s"] = round(time.time() - started, 3)
        history.append(row)
        scheduler.step()
        log.info("%s%s", f"{desc}: " if desc else "", row_text(row))
        if on_epoch is not None:
            on_epoch(row, history)
    return history


def row_text(row: dict) -> str:
    """One epoch's row as a log line."""
    parts = [f"epoch {row['epoch']}: lr {row['lr']:.3g}",
             f"train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}"]
    held = [f"{k[len('valid_'):]} {v:.3f}" for k, v in row.items() if k.startswith("valid_")]
    if held:
        parts.append("held-out " + " ".join(held))
    parts.append(f"{row.get('time_s', 0.0):.1f} s")
    return " | ".join(parts)
