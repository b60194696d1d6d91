"""Synthetic feature directories for the trainer tests (class-dependent spectral shapes)."""

from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np

from sertool.config import CONF_DIR
from sertool.models import load_model_conf


def make_feats(root: Path, n_spk: int = 4, n_utt: int = 3, frames: int = 120, dim: int = 20,
               seed: int = 0, emotion: bool = False) -> tuple[Path, Path]:
    """FEAT_DIR with feats.scp + utt2num_frames and DATA_DIR with utt2spk (and utt2emo)."""
    rng = np.random.default_rng(seed)
    feat_dir, data_dir = root / "feats", root / "data"
    feat_dir.mkdir(parents=True)
    data_dir.mkdir(parents=True)
    shapes = rng.normal(0, 1.0, size=(n_spk, dim))
    utt2spk, nframes = {}, {}
    with kaldiio.WriteHelper(f"ark,scp:{feat_dir}/feats.1.ark,{feat_dir}/feats.scp") as w:
        for s in range(n_spk):
            for u in range(n_utt):
                utt = f"spk{s}-u{u}"
                n = frames + int(rng.integers(-20, 20))
                mat = shapes[s] + rng.normal(0, 1.0, size=(n, dim))
                w(utt, mat.astype(np.float32))
                utt2spk[utt] = f"spk{s}"
                nframes[utt] = n
    (feat_dir / "utt2num_frames").write_text("".join(f"{u} {n}\n" for u, n in nframes.items()))
    (data_dir / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utt2spk.items()))
    if emotion:
        (data_dir / "utt2emo").write_text(
            "".join(f"{u} {'ang' if int(s[3:]) % 2 else 'neu'}\n" for u, s in utt2spk.items()))
    return feat_dir, data_dir


def tiny_conf(**changes) -> dict:
    """Trainer conf for seconds-long CPU runs with the tiny ResNet."""
    conf = {"seed": 3, "epochs": 3, "batch_size": 4, "lr": 0.05, "chunk_frames": [20, 30],
            "lr_constant_epochs": 1, "lr_halve_every": 1, "heldout_fraction": 0.34,
            "heldout_min_frames": 20, "num_workers": 0, "checkpoint_every_steps": 2,
            "model": load_model_conf(CONF_DIR / "model_resnet_tiny.toml")}
    conf.update(changes)
    return conf


def tiny_bundle(root: Path, classes: tuple[str, ...] = ("ang", "hap", "neu", "sad")) -> Path:
    """A model bundle of the tiny ResNet (random weights, seed 0) on the shipped log-mels."""
    import torch

    from sertool.frontend.pipeline import resolve_conf
    from sertool.io_utils import atomic_write_json
    from sertool.models import build_model
    from sertool.predict import export_bundle

    torch.manual_seed(0)
    model_conf = load_model_conf(CONF_DIR / "model_resnet_tiny.toml")
    model = build_model(model_conf, len(classes), 128).eval()
    atomic_write_json(root / "frontend.json", resolve_conf())
    return export_bundle(root / "bundle", model, classes=list(classes), model_conf=model_conf,
                         feat_dim=128, frontend_json=root / "frontend.json",
                         provenance={"corpus": "test", "fold": "none", "command": "test"})
