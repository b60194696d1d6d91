"""Configuration from one source: the code holds each schema with its defaults; the shipped and
recipe TOML files hold only what they change, so no default is written twice."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from sertool.config import CONF_DIR, load_toml
from sertool.frontend.pipeline import DEFAULTS as FRONTEND
from sertool.frontend.pipeline import OPENSMILE_DEFAULTS
from sertool.frontend.wave_augment import WAVE_AUGMENT_DEFAULTS
from sertool.nnet.trainer import DEFAULTS as TRAINER
from sertool.transfer.driver import DEFAULTS as FINETUNE

REPO = Path(__file__).resolve().parents[2]
# a front-end of kind opensmile: its kind against the front-end default (logmel), the rest
# against the kind's own defaults (resolve_conf fills them from DEFAULTS_BY_KIND)
OPENSMILE = {**OPENSMILE_DEFAULTS, "kind": FRONTEND["kind"]}
SCHEMAS = {"frontend": FRONTEND, "mfcc": FRONTEND, "finetune": FINETUNE,
           "wave_augment": WAVE_AUGMENT_DEFAULTS, "train": TRAINER,
           "opensmile_egemaps": OPENSMILE, "opensmile_compare": OPENSMILE}


def _schema(path: Path) -> Mapping:
    stem = path.stem
    return SCHEMAS["train" if stem.startswith("train_") else stem]


def _repeated_defaults(given: Mapping, defaults: Mapping, prefix: str = "") -> list[str]:
    out = []
    for key, value in given.items():
        assert key in defaults, f"unknown key {prefix}{key}"
        if isinstance(value, Mapping) and isinstance(defaults[key], Mapping):
            out += _repeated_defaults(value, defaults[key], f"{prefix}{key}.")
        elif value == defaults[key]:
            out.append(f"{prefix}{key}")
    return out


CONFIG_FILES = sorted(p for p in [*CONF_DIR.glob("*.toml"), *REPO.glob("recipes/*/conf/*.toml")]
                      if not p.name.startswith("model_"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_config_files_hold_only_what_they_change(path):
    repeated = _repeated_defaults(load_toml(path), _schema(path))
    assert not repeated, f"{path}: repeats the default of {', '.join(repeated)}"


def test_every_config_file_is_checked_and_none_is_dead():
    names = {p.name for p in CONF_DIR.glob("*.toml")}
    assert "specaug.toml" not in names  # the policy table lives in sertool.nnet.specaugment
    assert {"frontend.toml", "mfcc.toml", "finetune.toml", "train_speaker.toml",
            "train_cnn1d.toml", "wave_augment.toml"} <= {p.name for p in CONFIG_FILES}
