"""The one training loop: epochs of SGD steps with cross-entropy, evaluation after each epoch,
and the LR schedule stepped per epoch.

Both ``sertool train`` (random chunks from feature archives, checkpoints, DDP) and the new FC
layers of the frozen-trunk transfer (stored embeddings) run through :func:`fit`; what differs
between them - where batches come from, how a model is evaluated, what is saved after a step or
an epoch - is passed in as functions.

Each epoch's row also says where its time went: ``data_wait_s`` is the time blocked in
``next(batches)`` (loading, DataLoader workers falling behind), ``step_s`` the rest of the steps
(copy to the device, forward, backward, update, step hooks). ``loss.item()`` synchronises the
device every step, so on a GPU the two add up to the wall time of the steps.

``autocast`` (a dtype, e.g. ``torch.bfloat16``) runs the forward pass and the loss under
``torch.autocast``; ``None`` (the default) leaves the maths untouched.

A loss that is NaN or infinite (checked every step, before its backward pass) or weights that are
(parameters and batch-norm statistics: checked after each epoch's steps, before the epoch is
evaluated or saved, and by ``train`` before each partial.pt) stop the run with
:class:`DivergedError`, naming the epoch and step: nothing of the diverged model is saved, so the
checkpoints before it stay the newest and a rerun resumes from them. So does a held-out
evaluation that is NaN or infinite while the weights are finite (held-out inputs that overflow
the model): the epoch is neither logged, saved nor a candidate for the best epoch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sertool.errors import SertoolError
from sertool.progress import progress_bar

log = logging.getLogger("sertool.train")


class DivergedError(SertoolError, RuntimeError):
    """Training produced a NaN or infinite loss, parameters or held-out evaluation (the message
    says where)."""


def diverged(desc: str, epoch: int, step: int, what: str,
             optimizer: torch.optim.Optimizer) -> DivergedError:
    """The error of a run that diverged at ``epoch``, ``step`` (``what`` went non-finite)."""
    lr = optimizer.param_groups[-1]["lr"]
    return DivergedError(f"{desc + ': ' if desc else ''}training diverged at epoch {epoch}, "
                         f"step {step}: {what}; stopped before saving any of it: lower the "
                         f"learning rate (it is {lr:.3g})")


def check_finite_weights(net: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                         desc: str, epoch: int, step: int) -> None:
    """DivergedError unless every parameter and floating-point buffer (batch-norm statistics)
    of ``net`` is finite: checked before the weights are evaluated or saved."""
    for kind, named in (("parameter", net.named_parameters()), ("buffer", net.named_buffers())):
        for name, tensor in named:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise diverged(desc, epoch, step, f"{kind} {name} is no longer finite",
                               optimizer)


def check_finite_held_out(metrics: Mapping[str, float], *, desc: str, epoch: int) -> None:
    """DivergedError when a number of ``epoch``'s held-out evaluation is NaN or infinite. An
    evaluation whose every number is NaN is no held-out set (an empty one: as
    :func:`sertool.metrics.best_epoch` reads it), not a failure."""
    values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    if not values or all(math.isnan(v) for v in values.values()):
        return
    bad = [f"{k} is {v}" for k, v in values.items() if not math.isfinite(v)]
    if bad:
        # the weights were checked just before: finite weights giving a non-finite held-out
        # number means held-out inputs the model overflows on (finite but huge features)
        raise DivergedError(f"{desc + ': ' if desc else ''}the held-out evaluation of epoch "
                            f"{epoch} is not finite: {', '.join(bad)}, with finite weights "
                            f"(held-out inputs too large for the model?); stopped before "
                            f"saving epoch {epoch}: check the held-out features")


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


@dataclass
class StepTimes:
    """Seconds of one epoch's steps: blocked waiting for the next batch, and the rest."""

    data_wait_s: float = 0.0
    step_s: float = 0.0

    @property
    def data_wait_share(self) -> float:
        total = self.data_wait_s + self.step_s
        return self.data_wait_s / total if total > 0 else 0.0


def train_steps(net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                epoch: EpochBatches, device: str | torch.device, *, number: int,
                on_step: StepHook | None = None, bar: Any = None,
                times: StepTimes | None = None,
                autocast: torch.dtype | None = None, desc: str = "",
                class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """SGD steps over one epoch's batches; returns (loss sum, correct, count) as float64.
    ``class_weight`` (one per class, or None) weights the cross-entropy
    (sertool.nnet.balance).
    ``times`` (if given) accumulates the seconds spent waiting for batches and stepping.
    A NaN or infinite loss raises DivergedError before its step is taken."""
    sums = torch.zeros(3, dtype=torch.float64)
    if epoch.sums is not None:
        sums += torch.tensor(epoch.sums, dtype=torch.float64)
    times = StepTimes() if times is None else times
    device_type = torch.device(device).type
    batches = iter(epoch.batches)
    step = epoch.done
    weight = None if class_weight is None else class_weight.to(device)
    while True:
        waited = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            break
        started = time.perf_counter()
        times.data_wait_s += started - waited
        step += 1
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type, dtype=autocast, enabled=autocast is not None):
            logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits, y, weight=weight)
        # one transfer from the device for both numbers, before the backward pass: DDP
        # processes hold the same weights, so when they diverge all stop at the same step
        # instead of one waiting for the others in the gradients' all-reduce
        value, correct = torch.stack([loss.detach().float(),
                                      (logits.argmax(1) == y).sum().float()]).tolist()
        if not math.isfinite(value):
            raise diverged(desc, number, step, f"the loss is {value}", optimizer)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += torch.tensor([value * len(y), correct, len(y)], dtype=torch.float64)
        if bar is not None:
            bar.update(1)
        if on_step is not None:
            on_step(number, step, sums)
        times.step_s += time.perf_counter() - started
    return sums


def fit(net: torch.nn.Module, optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler, *, epochs: int,
        batches: Callable[[int], EpochBatches], evaluate: Callable[[], dict],
        device: str | torch.device = "cpu", start_epoch: int = 1,
        history: list[dict] | None = None, train_mode: Callable[[], None] | None = None,
        reduce: Callable[[torch.Tensor], None] | None = None,
        on_step: StepHook | None = None, on_epoch: EpochHook | None = None,
        progress: bool = False, desc: str = "",
        autocast: torch.dtype | None = None,
        class_weight: torch.Tensor | None = None) -> list[dict]:
    """Train epochs ``start_epoch``..``epochs``; return the history, one row per epoch:
    epoch, lr, train_loss, train_acc, what ``evaluate`` returns, time_s, data_wait_s, step_s.

    ``batches(epoch)`` gives the epoch's batches; ``train_mode()`` puts the network in training
    mode (default ``net.train()``; a frozen trunk keeps its batch-norm statistics);
    ``reduce(sums)`` sums the statistics over processes (DDP); ``evaluate()`` scores the
    held-out set in eval mode. ``on_epoch`` runs after the scheduler stepped (checkpoints).
    ``class_weight`` weights the training cross-entropy (held-out losses stay unweighted).
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
        with progress_bar(total=epoch.total, initial=epoch.done, desc=label, unit="step",
                          disable=not progress, leave=False) as bar:
            times = StepTimes()
            sums = train_steps(net, optimizer, epoch, device, number=number, on_step=on_step,
                               bar=bar, times=times, autocast=autocast, desc=desc,
                               class_weight=class_weight)
        check_finite_weights(net, optimizer, desc=desc, epoch=number, step=epoch.total)
        if reduce is not None:
            reduce(sums)
        row = {"epoch": number, "lr": optimizer.param_groups[-1]["lr"],
               "train_loss": float(sums[0] / sums[2]) if sums[2] else float("nan"),
               "train_acc": float(sums[1] / sums[2]) if sums[2] else float("nan")}
        held_out = evaluate()
        check_finite_held_out(held_out, desc=desc, epoch=number)
        row.update(held_out)
        row["time_s"] = round(time.time() - started, 3)
        row["data_wait_s"] = round(times.data_wait_s, 3)
        row["step_s"] = round(times.step_s, 3)
        history.append(row)
        scheduler.step()
        log.info("%s", row_text(row, epochs, desc))
        if on_epoch is not None:
            on_epoch(row, history)
    return history


def row_text(row: dict, epochs: int | None = None, desc: str = "") -> str:
    """One epoch's row as a log line: "fold 3 epoch 2/4: lr ... | train loss ..." (``desc``
    names the run, e.g. its fold: a log of several runs must say which one an epoch is of)."""
    of = f"/{epochs}" if epochs else ""
    parts = [f"{desc} epoch {row['epoch']}{of}: lr {row['lr']:.3g}".lstrip(),
             f"train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}"]
    held = [f"{k[len('valid_'):]} {v:.3f}" for k, v in row.items() if k.startswith("valid_")]
    if held:
        parts.append("held-out " + " ".join(held))
    parts.append(f"{row.get('time_s', 0.0):.1f} s")
    if "data_wait_s" in row:
        times = StepTimes(row["data_wait_s"], row["step_s"])
        parts.append(f"waiting for data {times.data_wait_s:.1f} s of "
                     f"{times.data_wait_s + times.step_s:.1f} s of steps "
                     f"({100 * times.data_wait_share:.0f}%)")
    return " | ".join(parts)
