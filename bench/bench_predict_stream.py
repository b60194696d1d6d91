"""Benchmark `sertool predict` on long recordings (issue 22, item 2): peak memory
(`/usr/bin/time -v`, maximum resident set size) and wall time of the whole-file mode and of
`--segments vad` on a 10-minute and a 60-minute file, tiny test ResNet, `--threads 1`; and
`--segments vad` with the same bundle's model.onnx (onnxruntime, no torch).

The files are RAVDESS utterances (../shared/data/ravdess, 16 kHz FLAC) joined in a fixed
shuffled order with 0.5-3 s of low noise between them, written as 16 kHz 16-bit WAV to a
temporary directory (never into the repository).

Run: .venv/bin/python -m bench.run_all predict_stream  (MINUTES=10,60 by default; set
BENCH_STREAM_MINUTES=1,5 for a quick look); numbers to bench/out/predict_stream.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RAVDESS = REPO.parent / "shared" / "data" / "ravdess" / "Audio_Speech_Actors_01-24"
SR = 16000


def make_long_file(path: Path, minutes: float, seed: int = 0) -> float:
    """Write ``minutes`` of joined RAVDESS speech to ``path`` block by block; its seconds."""
    import numpy as np
    import soundfile as sf

    files = sorted(RAVDESS.rglob("*.flac"))
    if not files:
        raise FileNotFoundError(f"{RAVDESS}: no RAVDESS FLAC files")
    rng = np.random.default_rng(seed)
    target, written = int(minutes * 60 * SR), 0
    with sf.SoundFile(path, "w", SR, 1, "PCM_16") as out:
        while written < target:
            wave, rate = sf.read(files[int(rng.integers(len(files)))], dtype="float32")
            if wave.ndim > 1:
                wave = wave.mean(axis=1)
            gap = rng.normal(0, 1e-3, int(rng.uniform(0.5, 3.0) * SR)).astype(np.float32)
            piece = np.concatenate([wave, gap])[:target - written]
            out.write(piece)
            written += len(piece)
    return written / SR


def _bundle(root: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "helpers"))
    from train_helpers import tiny_bundle

    return tiny_bundle(root)


def time_v(args: list[str]) -> dict:
    """Peak RSS (MB) and wall seconds of ``sertool ARGS`` under /usr/bin/time -v."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "sertool", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return {"peak_rss_mb": round(rss / 1024, 1), "wall_s": round(wall, 1),
            "command": " ".join(["/usr/bin/time", "-v", "sertool", *args])}


def main() -> dict:
    minutes = [float(m) for m in os.environ.get("BENCH_STREAM_MINUTES", "10,60").split(",")]
    results: dict = {"date": time.strftime("%Y-%m-%d", time.gmtime()),
                     "load_average_at_start": round(os.getloadavg()[0], 1), "runs": []}
    with tempfile.TemporaryDirectory(prefix="sertool-bench-stream-", dir="/tmp") as tmp:
        root = Path(tmp)
        bundle = _bundle(root)
        # the same bundle with model.onnx: --segments vad then runs without torch
        onnx = root / "bundle_onnx"
        subprocess.run([sys.executable, "-m", "sertool", "export-onnx", str(bundle), "-o",
                        str(onnx)], check=True, capture_output=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
        for m in minutes:
            wav = root / f"long_{m:g}min.wav"
            seconds = make_long_file(wav, m)
            for mode, model, extra in (("whole file", bundle, []),
                                       ("--segments vad", bundle, ["--segments", "vad"]),
                                       ("--segments vad, ONNX", onnx, ["--segments", "vad"])):
                out = root / "out.csv"
                run = time_v(["predict", str(model), str(wav), "--threads", "1", "-o",
                              str(out), *extra])
                run.update(minutes=m, mode=mode,
                           s_per_hour_of_audio=round(run["wall_s"] * 3600 / seconds, 1))
                results["runs"].append(run)
                print(f"{mode}, {m:g} min: peak RSS {run['peak_rss_mb']} MB, "
                      f"{run['wall_s']} s ({run['s_per_hour_of_audio']} s per hour of audio)",
                      flush=True)
    out = REPO / "bench" / "out" / "predict_stream.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
