"""The smallest finetune inputs: synthetic features of a tiny emotion corpus, the tiny ResNet and
head settings that make a fold take a second."""

from __future__ import annotations

from pathlib import Path

from sertool.config import CONF_DIR
from sertool.datadir import Fold, read_table, write_folds

TINY = CONF_DIR / "model_resnet_tiny.toml"
FAST = ["heldout_speakers=1", "head.epochs=1", "head.batch_size=4", "augment.copies=1",
        "train.epochs=1", "train.batch_size=4", "train.num_workers=0", "train.chunk_frames=[20]"]


def _inputs(tmp_path: Path, folds: str = "01") -> tuple[Path, Path]:
    """4 speakers x 3 utterances of 20-dim features (classes ang and neu), a
    leave-one-speaker-out fold for each speaker in ``folds`` (default: 0 and 1)."""
    from train_helpers import make_feats

    feat_dir, data = make_feats(tmp_path, n_spk=4, n_utt=3, frames=40, dim=20, emotion=True)
    (feat_dir / "frontend.json").write_text('{"kind": "logmel"}')
    utts = sorted(read_table(data / "utt2spk"))
    write_folds(data, [Fold(s, [u for u in utts if not u.startswith(f"spk{s}-")],
                            [u for u in utts if u.startswith(f"spk{s}-")]) for s in folds],
                {"name": "leave-one-speaker-out", "speaker_independent": True})
    return feat_dir, data
