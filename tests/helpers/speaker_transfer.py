"""Imported speaker models: the RAVDESS files their parity references were computed on, and the
check that an imported model transfers like a speaker model of our own."""

from __future__ import annotations

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
