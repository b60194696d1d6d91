"""Tiny trees of the emotion corpora in their distributed layouts and file-name conventions (each
with one file that breaks them), and what preparing each must give."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import soundfile as sf


def _audio(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))  # distinct audio per file
    sf.write(path, (0.1 * rng.standard_normal(800)).astype("float32"), 16000)


# corpus -> (files relative to SRC, a file breaking the convention, expected utt -> (spk, label),
#            default protocol name, number of folds)
CASES = {
    "ravdess": (
        [f"Audio_Speech_Actors_01-24/Actor_{a}/03-01-{e}-01-01-0{r}-{a}.wav"
         for a in ("01", "02", "04", "11") for e in ("01", "05") for r in (1, 2)]
        + ["Audio_Speech_Actors_01-24/Actor_04/03-01-03-02-02-01-04.flac"],
        "Audio_Speech_Actors_01-24/Actor_02/03-01-05-01-01-01.wav",
        {"ravdess01-03-01-05-01-01-02-01": ("ravdess01", "ang"),
         "ravdess11-03-01-01-01-01-01-11": ("ravdess11", "neu"),
         "ravdess04-03-01-03-02-02-01-04": ("ravdess04", "hap")},
        "speaker-groups", 3,  # actors 01+11 (fold 1), 04 (fold 2), 02 (fold 5)
    ),
    "emodb": (
        [f"wav/{s}a0{t}{e}a.wav" for s in ("03", "08", "16") for t in (1, 2) for e in "WNT"]
        + ["wav/03b10Lc.flac"],
        "wav/03a01Fa_copy.wav",
        {"emodb03-03a01Wa": ("emodb03", "ang"), "emodb16-16a02Ta": ("emodb16", "sad"),
         "emodb03-03b10Lc": ("emodb03", "bor")},
        "leave-one-speaker-out", 3,
    ),
    "cremad": (
        [f"AudioWAV/{a}_{s}_{e}_XX.wav" for a in ("1001", "1002", "1003", "1004", "1005",
                                                   "1091") for s in ("DFA", "IEO")
         for e in ("ANG", "NEU")] + ["AudioWAV/1001_IEO_HAP_HI.wav"],
        "AudioWAV/1001_DFA_ANG.wav",
        {"cremad1091-1091_IEO_NEU_XX": ("cremad1091", "neu"),
         "cremad1001-1001_IEO_HAP_HI": ("cremad1001", "hap")},
        "speaker-kfold", 5,
    ),
    "tess": (
        [f"{spk}_{emo}/{spk}_{w}_{emo}.wav" for spk in ("OAF", "YAF") for w in ("back", "bar")
         for emo in ("angry", "neutral", "ps")] + ["OAF_Sad/OA_bite_sad.wav"],
        "OAF_angry/OAF_back.wav",
        {"tessOAF-back_ang": ("tessOAF", "ang"), "tessYAF-bar_sur": ("tessYAF", "sur"),
         "tessOAF-bite_sad": ("tessOAF", "sad")},
        "leave-one-speaker-out", 2,
    ),
    "savee": (
        [f"AudioData/{s}/{e}0{n}.wav" for s in ("DC", "JE", "JK") for e in ("a", "sa", "n")
         for n in (1, 2)] + ["KL_su01.wav", "KL_h03.wav"],
        "AudioData/DC/x01.wav",
        {"saveeDC-sa02": ("saveeDC", "sad"), "saveeKL-su01": ("saveeKL", "sur"),
         "saveeJE-a01": ("saveeJE", "ang")},
        "leave-one-speaker-out", 4,
    ),
    "emovo": (
        [f"{s}/{e}-{s}-{t}.wav" for s in ("f1", "m2", "m3") for e in ("rab", "tri", "gio")
         for t in ("b1", "n3")],
        "f1/rab-f1.wav",
        {"emovof1-rab-f1-b1": ("emovof1", "ang"), "emovom3-gio-m3-n3": ("emovom3", "hap")},
        "leave-one-speaker-out", 3,
    ),
}
