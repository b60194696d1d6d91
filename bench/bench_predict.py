"""Benchmark `sertool predict`: latency of one file (the whole command, start-up included) and
throughput on 100 files (files/s and times real time), for the paper's ResNet34 (128 log-mels)
and the tiny test network. The weights are random: the cost does not depend on their values.

Run: .venv/bin/python -m bench.run_all predict  (`make bench` runs every bench_*.py); the
numbers go to bench/out/predict.json and are quoted in docs/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERTOOL = Path(sys.executable).parent / "sertool"
MODELS = {"ResNet34 (paper, 128 mels)": "model_resnet34.toml",
          "tiny (tests)": "model_resnet_tiny.toml"}
THREADS = (1, 2)  # --threads: one per core vs one (better when other work shares the cores)


def _bundle(root: Path, model_file: str) -> Path:
    import torch

    from sertool.config import CONF_DIR
    from sertool.frontend.pipeline import resolve_conf
    from sertool.io_utils import atomic_write_json
    from sertool.models import build_model, load_model_conf
    from sertool.predict import export_bundle

    torch.manual_seed(0)
    model_conf = load_model_conf(CONF_DIR / model_file)
    model = build_model(model_conf, 4, 128).eval()
    atomic_write_json(root / "frontend.json", resolve_conf())
    return export_bundle(root / Path(model_file).stem, model,
                         classes=["ang", "hap", "neu", "sad"], model_conf=model_conf,
                         feat_dim=128, frontend_json=root / "frontend.json",
                         provenance={"corpus": "benchmark", "fold": "none"})


def _run(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([str(SERTOOL), *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> dict:
    import soundfile as sf

    from sertool.demo_corpus import make_demo_corpus

    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                                f"{platform.python_implementation()} {platform.python_version()}",
                     "load_average_at_start": round(os.getloadavg()[0], 1),
                     "date": time.strftime("%Y-%m-%d", time.gmtime())}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_demo_corpus(root / "corpus", seed=0)
        wavs = sorted((root / "corpus").rglob("Ses*.wav"))[:100]
        audio_s = sum(sf.info(w).duration for w in wavs)
        results["files"] = {"n": len(wavs), "audio_s": round(audio_s, 1),
                            "source": "sertool make-demo-corpus (16 kHz mono WAV)"}
        for name, model_file in MODELS.items():
            bundle = _bundle(root, model_file)
            for threads in THREADS:
                opt = ["--threads", str(threads)]
                one = [_run(["predict", str(bundle), str(wavs[0]), *opt]) for _ in range(3)]
                many = _run(["predict", str(bundle), *map(str, wavs), "-o",
                             str(root / "p.csv"), *opt])
                key = f"{name}, {threads} thread(s)"
                results[key] = {
                    "latency_one_file_s": round(statistics.median(one), 2),
                    "hundred_files_s": round(many, 2),
                    "files_per_s": round(len(wavs) / many, 1),
                    "x_real_time": round(audio_s / many, 1),
                }
                print(f"predict {key}: one file {results[key]['latency_one_file_s']} s "
                      f"(median of 3, whole command); {len(wavs)} files ({audio_s:.0f} s of "
                      f"audio) in {many:.1f} s = {results[key]['files_per_s']} files/s, "
                      f"{results[key]['x_real_time']}x real time", flush=True)
    out = REPO / "bench" / "out" / "predict.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
