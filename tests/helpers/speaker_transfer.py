"""Imported speaker models: the RAVDESS files their parity references were computed on, the
check that an imported model transfers like a speaker model of our own, and a small RAVDESS data
dir for end-to-end runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from sertool.nnet.checkpoint import load_model, save_checkpoint

RAVDESS_FILES = ["Actor_01/03-01-01-01-01-01-01.flac", "Actor_12/03-01-05-02-02-01-12.flac",
                 "Actor_23/03-01-08-02-01-02-23.flac"]


def _transfers_like_a_speaker_model(model_path: Path, feats: np.ndarray, tmp_path: Path) -> None:
    """What finetune's frozen-trunk mode does with --init: pooled vectors, replace_head, train
    and save the fold model, load it back (sertool.transfer.driver)."""
    model, meta = load_model(model_path)
    x = torch.tensor(feats)[None]
    with torch.no_grad():
        pooled = model.pooled(x)
        assert pooled.shape == (1, model.pooled_dim)
        model.replace_head(4)
        model.eval()  # as the driver does: the new head's batch norm in eval mode
        logits = model.head_forward(pooled)
    assert logits.shape == (1, 4)
    save_checkpoint(tmp_path / "fold.pt", model, model_conf=meta["model_conf"], num_classes=4,
                    feat_dim=meta["feat_dim"], labels=list("abcd"))
    again, _ = load_model(tmp_path / "fold.pt")
    with torch.no_grad():
        torch.testing.assert_close(again(x), model.eval()(x))


EMOTIONS = {"01": "neu", "03": "hap", "04": "sad", "05": "ang"}


def _ravdess_subset(ravdess_dir: Path, root: Path) -> Path:
    """A data dir of 4 actors x 6 utterances of four emotions, two speaker-independent folds."""
    audio = ravdess_dir / "Audio_Speech_Actors_01-24"
    rows = []
    for actor in ("01", "02", "03", "04"):
        files = sorted((audio / f"Actor_{actor}").glob("03-01-*.flac"))
        chosen = [f for f in files if f.name.split("-")[2] in EMOTIONS][::4][:6]
        rows += [(f"a{actor}-{f.stem}", f, f"a{actor}", EMOTIONS[f.name.split("-")[2]])
                 for f in chosen]
    rows.sort()
    data = root / "data"
    (data / "folds").mkdir(parents=True)
    for name, column in (("wav.scp", 1), ("utt2spk", 2), ("utt2emo", 3)):
        (data / name).write_text("".join(f"{r[0]} {r[column]}\n" for r in rows))
    for fold, test in (("1", ("a01", "a02")), ("2", ("a03", "a04"))):
        (data / "folds" / fold).mkdir()
        (data / "folds" / fold / "test").write_text(
            "".join(f"{r[0]}\n" for r in rows if r[2] in test))
        (data / "folds" / fold / "train").write_text(
            "".join(f"{r[0]}\n" for r in rows if r[2] not in test))
    (data / "folds" / "protocol.json").write_text(json.dumps(
        {"name": "by hand", "speaker_independent": True, "folds": ["1", "2"]}))
    return data
