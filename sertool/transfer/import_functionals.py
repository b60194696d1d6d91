"""``sertool import-speaker-model functionals OUT --feature-set SET``: the classical baseline's
"trunk" as a sertool model folder, so it runs through the same stages as every imported model.

There is nothing to import: the ``functionals`` trunk (:mod:`sertool.models.functionals`) has no
parameters; its pooled output is the utterance's openSMILE functionals vector. What the folder
fixes is the pairing a user should not have to write by hand: the model (``model.pt``, type
``functionals``, num_classes 0, its front-end recorded in ``extra["frontend"]`` so features of
another feature set are refused) and its front-end (``frontend.toml``, kind ``opensmile`` with
the feature set). It goes through the importers' one writer
(:func:`sertool.transfer.import_model.write_import`), so OUT is what every import makes and the
recipes treat it as one more ``--speaker-model``. The system is then::

    sertool extract-feats DATA FEAT --conf OUT/frontend.toml
    sertool finetune FEAT DATA EXP --init OUT/model.pt --set head.kind=linear \\
        --set augment.policy=none

(standardised functionals, L2 logistic regression with C chosen on held-out training speakers;
``head.kind = fc`` puts the paper's FC head on them instead).
"""

from __future__ import annotations

import os
from pathlib import Path

from sertool.frontend.functionals import FEATURE_SETS, import_opensmile
from sertool.frontend.pipeline import resolve_conf
from sertool.models import build_model, resolve_model_conf
from sertool.transfer.import_model import (
    FRONTEND_FILE,
    ImportResult,
    SpeakerImportError,
    write_import,
)


def make_functionals(out_dir: str | os.PathLike, feature_set: str = "eGeMAPSv02"
                     ) -> ImportResult:
    """OUT/model.pt, frontend.toml and import.json of the functionals system on
    ``feature_set`` (eGeMAPSv02: 88 values per utterance, ComParE_2016: 6373)."""
    if feature_set not in FEATURE_SETS:
        raise SpeakerImportError(f"--feature-set must be one of {', '.join(FEATURE_SETS)}, got "
                                 f"{feature_set!r}")
    opensmile = import_opensmile()  # a missing package said now, not at extract-feats
    out_dir = Path(out_dir)
    model_conf = resolve_model_conf({"type": "functionals"})
    frontend = resolve_conf({"kind": "opensmile", "feature_set": feature_set})
    dim = FEATURE_SETS[feature_set]
    model = build_model(model_conf, 0, dim)
    source = {"source": "functionals", "feature_set": feature_set, "dims": dim,
              "opensmile_version": opensmile.__version__}
    write_import(out_dir, model, model_conf, dim, frontend, source, [],
                 f"openSMILE {feature_set} functionals ({dim} values per utterance, the whole\n"
                 "signal at 16 kHz, no VAD, no CMVN), the front-end of the functionals system.\n"
                 f"Use: sertool extract-feats DATA FEAT --conf {out_dir / FRONTEND_FILE}")
    return ImportResult(out_dir, f"openSMILE {feature_set} functionals ({dim} values, "
                                 "no parameters)", verb="made")
