"""Front-end throughput and memory on the real RAVDESS recordings, on one thread.

Measures, on the same audio: our whole front-end (load + log-mel + VAD + CMVN + ark write),
torchaudio's Kaldi-compatible fbank alone, torchaudio's MelSpectrogram alone (both on
already-decoded audio), our features alone from the same decoded audio (like for like with
fbank alone: spectrum + VAD + log-mel + CMVN), where our time goes stage by stage, and the
peak memory of a whole ``extract_feats`` run on 10% and on 100% of the corpus (fresh
processes, VmHWM).

    python -m bench.run_all frontend        (or: make bench)
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = "1"

REPO = Path(__file__).resolve().parent.parent
RAVDESS = Path(os.environ.get("SERTOOL_SHARED_DATA", REPO.parent / "shared" / "data")) / "ravdess"
OUT = REPO / "bench" / "out"
REPEATS = 3

# VmHWM (peak resident set of this address space) rather than ru_maxrss, which Linux carries
# over from the forking parent across exec.
_MEMORY_CHILD = """
import sys
from sertool.frontend.extract import extract_feats
result = extract_feats(sys.argv[1], sys.argv[2], nj=1, progress=False)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(result.n_extracted, hwm.split()[1])
"""


def _files() -> list[Path]:
    files = sorted((RAVDESS / "Audio_Speech_Actors_01-24").glob("*/*.*"))
    if not files:
        raise SystemExit(f"RAVDESS not found under {RAVDESS}")
    return files


def _peak_memory(data_dir: Path, n: int, work: Path) -> tuple[int, float]:
    from sertool.datadir import DataDir

    full = DataDir.load(data_dir)
    subset = full.subset(full.utts[:n])
    subset.save(work / f"data{n}")
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(work / f"data{n}"),
                          str(work / f"feats{n}")], capture_output=True, text=True, check=True)
    count, rss_kb = out.stdout.split()
    return int(count), int(rss_kb) / 1024


def main() -> dict:
    import torch
    import torchaudio

    from sertool.corpora import prepare
    from sertool.frontend.audio import load_audio
    from sertool.frontend.extract import extract_feats

    torch.set_num_threads(1)
    files = _files()
    waves = [load_audio(f) for f in files]
    seconds = sum(len(w) for w in waves) / 16000
    results: dict = {"files": len(files), "audio_seconds": round(seconds, 1),
                     "machine": f"{platform.processor() or platform.machine()}, "
                                f"{os.cpu_count()} cores, 1 thread",
                     "date": time.strftime("%Y-%m-%d")}

    from sertool.frontend.features import log_mel, power_spectrum
    from sertool.frontend.pipeline import Frontend
    from sertool.frontend.vad import detect_speech

    frontend = Frontend()
    spectra = [power_spectrum(w, frontend.spectrum, frontend.n_fft) for w in waves]
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, win_length=400,
                                               hop_length=160, n_mels=128)

    def kaldi_fbank() -> None:
        for w in waves:
            torchaudio.compliance.kaldi.fbank(torch.from_numpy(w)[None] * 32768,
                                              num_mel_bins=128, sample_frequency=16000)

    def mel_spectrogram() -> None:
        with torch.no_grad():
            for w in waves:
                torch.log(mel(torch.from_numpy(w)) + 1e-6)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare("ravdess", RAVDESS, work / "data", progress=False)
        extract_feats(work / "data", work / "warm-up", nj=1, progress=False)  # numba cache

        def whole_frontend() -> None:
            extract_feats(work / "data", work / "feats", nj=1, progress=False)
            shutil.rmtree(work / "feats")

        # Each measurement is the fastest of REPEATS rounds, the rounds interleaved so that a
        # slow spell of a shared machine does not fall on one row only.
        measured = {
            "ours": whole_frontend,
            "kaldi": kaldi_fbank,
            "melspec": mel_spectrogram,
            # like for like with fbank alone: our features from the same decoded audio
            # (spectrum, VAD, log-mels of the kept frames, CMVN), no decode, no archive
            "process": lambda: [frontend.process(w) for w in waves],
            # where our time goes, stage by stage
            "load": lambda: [load_audio(f) for f in files],
            "fft": lambda: [power_spectrum(w, frontend.spectrum, frontend.n_fft) for w in waves],
            "mel": lambda: [log_mel(p, frontend.bank) for p in spectra],
            "vad": lambda: [detect_speech(p, frontend.vad) for p in spectra],
        }
        best = dict.fromkeys(measured, float("inf"))
        for _ in range(REPEATS):
            for name, run in measured.items():
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
        ours, kaldi, melspec = best["ours"], best["kaldi"], best["melspec"]
        t_process, t_load, t_fft = best["process"], best["load"], best["fft"]
        t_mel, t_vad = best["mel"], best["vad"]
        spectra.clear()  # ~1 GB, before the memory runs

        n10 = len(files) // 10
        count10, rss10 = _peak_memory(work / "data", n10, work)
        count100, rss100 = _peak_memory(work / "data", len(files), work)

    results.update({
        "ours_whole_frontend_xRT": round(seconds / ours, 1),
        "torchaudio_kaldi_fbank_xRT": round(seconds / kaldi, 1),
        "torchaudio_melspectrogram_xRT": round(seconds / melspec, 1),
        "ours_vs_kaldi_fbank": round(kaldi / ours, 2),
        "ours_features_from_decoded_audio_xRT": round(seconds / t_process, 1),
        "ours_features_vs_kaldi_fbank": round(kaldi / t_process, 2),
        "stage_xRT": {"load_flac": round(seconds / t_load, 1),
                      "power_spectrum_1024": round(seconds / t_fft, 1),
                      "log_mel": round(seconds / t_mel, 1),
                      "vad": round(seconds / t_vad, 1)},
        "peak_rss_mb_10pct": round(rss10, 1), "utts_10pct": count10,
        "peak_rss_mb_100pct": round(rss100, 1), "utts_100pct": count100,
    })
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "frontend.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
