"""What a training run leaves beside its checkpoints: train_log.csv, curves.png and train.log.

Kept out of the loop (sertool.nnet.loop), which only reports rows: the loop logs each epoch to
the ``sertool.train`` logger, and :func:`log_to_file` sends that logger to EXP_DIR/train.log
while tqdm keeps the terminal.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from sertool.io_utils import atomic_open, output_errors

# data_wait_s and step_s (where the epoch's step time went, sertool.nnet.loop) came later: last;
# valid_ua (what emotion training selects on, sertool.metrics.best_epoch) beside valid_acc
CSV_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "valid_loss", "valid_acc", "valid_ua",
               "time_s", "data_wait_s", "step_s"]


def write_csv(path: Path, history: list[dict]) -> None:
    with atomic_open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow({c: row.get(c) for c in CSV_COLUMNS})


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, training chunks and held-out segments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, name in ((axes[0], "loss", "cross-entropy"), (axes[1], "acc", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train (chunks)")
        ax.plot(epochs, [h[f"valid_{key}"] for h in history], "s-",
                label="held-out (whole segments)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    try:
        with output_errors(path, tmp):
            fig.savefig(tmp, dpi=100)
            os.replace(tmp, path)
    finally:
        plt.close(fig)


def write_history(exp_dir: Path, history: list[dict]) -> None:
    """train_log.csv and curves.png of the epochs so far."""
    write_csv(exp_dir / "train_log.csv", history)
    plot_curves(history, exp_dir / "curves.png")


@contextlib.contextmanager
def log_to_file(path: Path, enabled: bool = True) -> Iterator[None]:
    """Append the ``sertool.train`` log (one line per epoch, with time stamps) to ``path``."""
    if not enabled:
        yield
        return
    logger = logging.getLogger("sertool.train")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()
