"""The joined-RAVDESS recording of docs/img/timeline_ravdess.png: eight utterances of eight
different emotions by the TEST actors of EmoBox fold 1 (01, 11, 20, 21: never seen in training
by the fold-1 bundles), joined with 2 s of digital silence, written as 16 kHz WAV outside the
repo; prints each utterance's span and true emotion (a Kaldi segments-like table).

    python -m bench.make_timeline_audio /tmp/joined.wav
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ravdess"
# RAVDESS names: modality-channel-EMOTION-intensity-statement-repetition-ACTOR; emotion codes
# 01 neutral .. 08 surprised. Strong intensity (02) where the emotion has one.
UTTERANCES = ["03-01-05-02-01-01-01", "03-01-02-02-01-01-11", "03-01-07-02-02-01-20",
              "03-01-06-02-01-02-21", "03-01-03-02-02-01-01", "03-01-01-01-01-01-11",
              "03-01-04-02-01-01-20", "03-01-08-02-02-02-21"]
EMOTION = {"01": "neu", "02": "cal", "03": "hap", "04": "sad", "05": "ang", "06": "fea",
           "07": "dis", "08": "sur"}
GAP_S = 2.0
RATE = 16000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the WAV to write (not inside the repo)")
    parser.add_argument("--ravdess", type=Path, default=SHARED)
    args = parser.parse_args(argv)
    parts, t = [], 0.0
    print("utterance start end true_emotion")
    for i, name in enumerate(UTTERANCES):
        actor = name.split("-")[-1]
        wave, rate = sf.read(args.ravdess / "Audio_Speech_Actors_01-24" / f"Actor_{actor}"
                             / f"{name}.flac", dtype="float32")
        if rate != RATE:
            raise SystemExit(f"{name}: {rate} Hz, expected {RATE}")
        if i:
            parts.append(np.zeros(int(GAP_S * RATE), np.float32))
            t += GAP_S
        parts.append(wave)
        print(f"{name} {t:.2f} {t + len(wave) / RATE:.2f} {EMOTION[name.split('-')[2]]}")
        t += len(wave) / RATE
    sf.write(args.out, np.concatenate(parts), RATE, subtype="PCM_16")
    return 0


if __name__ == "__main__":
    sys.exit(main())
