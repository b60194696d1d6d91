"""The train x test matrix of UA over cross-corpus runs (``sertool score --matrix``).

Each cross-corpus run (sertool.transfer.crosscorpus) is one cell: the row is the corpus it was
trained on, the column the one it was tested on, the value its UA on the test corpus (the
classes the two share). An ordinary fold run is the diagonal cell of its corpus: its mean UA over
its folds, speaker-independent when its report's first line says so (the fold runs' UA is over
its own class set, which may be larger than a cross cell's: the table lists each cell's classes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sertool.io_utils import atomic_write_json, atomic_write_text
from sertool.scoring import ExperimentScore, ScoringError, _save_figure


def _cell(score: ExperimentScore) -> dict:
    cross = score.meta.get("cross_corpus")
    ua_mean = score.summary()["ua"][0]
    interval = score.intervals.get("ua")
    cell = {"experiment": score.name, "exp_dir": str(score.exp_dir), "ua": ua_mean,
            "interval": list(interval) if interval else None, "classes": score.classes,
            "n_test": sum(f.n for f in score.folds), "folds": len(score.folds)}
    if isinstance(cross, dict):
        return {**cell, "train": str(cross["train_corpus"]), "test": str(cross["test_corpus"]),
                "kind": "cross-corpus", "only_in_train": cross.get("only_in_train", {}),
                "only_in_test": cross.get("only_in_test", {})}
    corpus = str(score.meta["corpus"])
    return {**cell, "train": corpus, "test": corpus, "kind": "within-corpus folds",
            "speaker_independent": (score.fold_check or {}).get("clean"),
            "verdict": score.verdict, "complete": score.complete}


def cross_matrix(scores: Sequence[ExperimentScore]) -> dict:
    """report.json of the matrix: the corpora (rows: trained on, columns: tested on) and one
    cell per run; two runs for one cell are refused, naming both."""
    cells: dict[tuple[str, str], dict] = {}
    for score in scores:
        cell = _cell(score)
        key = (cell["train"], cell["test"])
        if key in cells:
            raise ScoringError(f"{cells[key]['exp_dir']} and {score.exp_dir} are both the cell "
                               f"train {key[0]} x test {key[1]}: give one run per cell")
        cells[key] = cell
    if not any(c["kind"] == "cross-corpus" for c in cells.values()):
        raise ScoringError("--matrix needs at least one cross-corpus run (finetune "
                           "--test-data)")
    corpora = sorted({c for key in cells for c in key})
    matrix = [[cells[(r, c)]["ua"] if (r, c) in cells else None for c in corpora]
              for r in corpora]
    return {"metric": "ua", "rows": "trained on", "columns": "tested on", "corpora": corpora,
            "ua": matrix, "cells": [cells[k] for k in sorted(cells)],
            "diagonal": "the within-corpus runs' mean UA over their speaker-independent folds "
                        "(when their fold check says clean)"}


def matrix_markdown(matrix: dict) -> str:
    """report.md of the matrix: the table, then each cell's run, classes and left-out ones."""
    corpora = matrix["corpora"]
    lines = ["CROSS-CORPUS MATRIX: UA (%) of each run, rows trained on, columns tested on",
             "", "# Cross-corpus matrix (UA %)", "",
             "| trained on \\ tested on | " + " | ".join(corpora) + " |",
             "| --- |" + " ---: |" * len(corpora)]
    for name, row in zip(corpora, matrix["ua"], strict=True):
        lines.append(f"| **{name}** | " + " | ".join(
            "-" if v is None else f"{100 * v:.2f}" for v in row) + " |")
    lines += ["", "Off the diagonal: a cross-corpus run (trained on every utterance of the row's "
              "corpus, model selection on its held-out training speakers; tested on every "
              "utterance of the column's corpus, on the classes the two share). On the "
              "diagonal: an ordinary run's mean UA over its speaker-independent folds (its own "
              "class set). '-': no run.", "", "| train | test | kind | UA | 95 % interval | "
              "n test | classes | left out | experiment |",
              "| --- | --- | --- | ---: | --- | ---: | --- | --- | --- |"]
    for c in matrix["cells"]:
        left = "; ".join(f"only in {c[side]}: " + ", ".join(
            f"{k} ({n})" for k, n in sorted(c.get(f"only_in_{side}", {}).items()))
            for side in ("train", "test") if c.get(f"only_in_{side}"))
        if c["kind"] != "cross-corpus":
            left = "-" if c.get("speaker_independent") else f"NOTE: {c['verdict']}"
        interval = ("-" if not c["interval"] else
                    f"[{100 * c['interval'][0]:.2f}, {100 * c['interval'][1]:.2f}]")
        lines.append(f"| {c['train']} | {c['test']} | {c['kind']} | {100 * c['ua']:.2f} | "
                     f"{interval} | {c['n_test']} | {' '.join(c['classes'])} | {left or '-'} | "
                     f"{c['experiment']} |")
    return "\n".join(lines)


def plot_matrix(matrix: dict, out_png: str | os.PathLike) -> None:
    """The heatmap: UA per cell, annotated ('-' where no run)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    corpora = matrix["corpora"]
    values = np.array([[np.nan if v is None else 100 * v for v in row]
                       for row in matrix["ua"]], dtype=float)
    size = 2.0 + 1.1 * len(corpora)
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100)
    for i in range(len(corpora)):
        for j in range(len(corpora)):
            v = values[i, j]
            ax.text(j, i, "-" if np.isnan(v) else f"{v:.1f}", ha="center", va="center",
                    color="white" if not np.isnan(v) and v < 60 else "black")
    ax.set_xticks(range(len(corpora)), corpora, rotation=30)
    ax.set_yticks(range(len(corpora)), corpora)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    fig.colorbar(image, ax=ax, label="UA (%)")
    ax.set_title("cross-corpus UA (%)", fontsize=10)
    _save_figure(fig, out_png)


def write_matrix(scores: Sequence[ExperimentScore], out_dir: str | os.PathLike) -> list[Path]:
    """OUT_DIR/matrix.png, report.json and report.md (last; returned first)."""
    matrix = cross_matrix(scores)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").unlink(missing_ok=True)
    plot_matrix(matrix, out / "matrix.png")
    atomic_write_json(out / "report.json", matrix)
    atomic_write_text(out / "report.md", matrix_markdown(matrix) + "\n")
    return [out / "report.md", out / "report.json", out / "matrix.png"]
