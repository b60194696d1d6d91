"""A toy experiment for the scoring tests: a data dir of 4 speakers x 6 utterances (labels a/b/c
cycling) with folds, and an experiment whose fold k makes a known number of wrong decisions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from sertool.datadir import DataDir, read_folds, write_folds
from sertool.expdir import write_posteriors
from sertool.folds import leave_one_speaker_out

CLASSES = ["a", "b", "c"]
# 4 speakers x 6 utterances, labels a/b/c cycling
UTT2SPK = {f"s{s}-{i}": f"s{s}" for s in range(1, 5) for i in range(6)}
UTT2LABEL = {u: CLASSES[int(u[-1]) % 3] for u in UTT2SPK}


def _data_dir(root: Path, protocol=leave_one_speaker_out) -> Path:
    wav = {}
    for i, utt in enumerate(sorted(UTT2SPK)):
        path = root / "audio" / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        noise = 0.1 * np.random.default_rng(i).standard_normal(800)
        sf.write(path, noise.astype("float32"), 16000, subtype="PCM_16")
        wav[utt] = str(path)
    data = root / "data"
    DataDir(wav, dict(UTT2SPK), dict(UTT2LABEL)).save(data)
    write_folds(data, *protocol(UTT2SPK))
    return data


def _experiment(root: Path, data: Path, name: str = "exp", init: str = "none",
                errors: dict[str, int] | None = None) -> Path:
    """Fold k gets ``errors[k]`` wrong decisions (default k-1): its WA is known exactly."""
    folds, protocol = read_folds(data)
    exp = root / name
    exp.mkdir(parents=True)
    meta = {"corpus": "toy", "data_dir": str(data), "feat_dir": str(root / "feats"),
            "classes": CLASSES, "class_map": {"x": "a"}, "protocol": protocol,
            "frontend": {"kind": "logmel", "dims": 128, "normalisation": "segment"},
            "model": {"type": "resnet", "depth": 34, "pooling": "stats"}, "init": init,
            "augmentation": {"policy": "conservative", "copies": 2}, "unfreeze": False,
            "command": f"sertool finetune feats data {name}", "seed": 0}
    (exp / "experiment.json").write_text(json.dumps(meta))
    for k, fold in enumerate(folds):
        n_wrong = (errors or {}).get(fold.name, k)
        labels = [UTT2LABEL[u] for u in fold.test]
        preds = [CLASSES[(CLASSES.index(lab) + (i < n_wrong)) % 3]
                 for i, lab in enumerate(labels)]
        probs = np.array([[0.8 if c == p else 0.1 for c in CLASSES] for p in preds])
        write_posteriors(exp / f"fold_{fold.name}" / "posteriors.tsv", fold.test, labels,
                         CLASSES, probs)
    return exp


def capture_figures(monkeypatch) -> dict:
    """The figures `sertool score` saves, by file name (still written to disk)."""
    from sertool import scoring

    figures: dict = {}
    save = scoring._save_figure

    def keep(fig, out_png):
        figures[Path(out_png).name] = fig
        save(fig, out_png)

    monkeypatch.setattr(scoring, "_save_figure", keep)
    return figures
