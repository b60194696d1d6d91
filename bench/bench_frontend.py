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

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare("ravdess", RAVDESS, work / "data", progress=False)
        start = time.perf_counter()
        extract_feats(work / "data", work / "feats", nj=1, progress=False)
        ours = time.perf_counter() - start

        start = time.perf_counter()
        for w in waves:
            torchaudio.compliance.kaldi.fbank(torch.from_numpy(w)[None] * 32768,
                                              num_mel_bins=128, sample_frequency=16000)
        kaldi = time.perf_counter() - start

        mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, win_length=400,
                                                   hop_length=160, n_mels=128)
        start = time.perf_counter()
        with torch.no_grad():
            for w in waves:
                torch.log(mel(torch.from_numpy(w)) + 1e-6)
        melspec = time.perf_counter() - start

        # Like for like with fbank alone: our features from the same decoded audio (spectrum,
        # VAD, log-mels of the kept frames, CMVN), no decode and no archive.
        from sertool.frontend.features import log_mel, power_spectrum
        from sertool.frontend.pipeline import Frontend
        from sertool.frontend.vad import detect_speech

        frontend = Frontend()
        start = time.perf_counter()
        for w in waves:
            frontend.process(w)
        t_process = time.perf_counter() - start

        # Where our time goes, stage by stage, on the same audio.
        start = time.perf_counter()
        for f in files:
            load_audio(f)
        t_load = time.perf_counter() - start
        start = time.perf_counter()
        spectra = [power_spectrum(w, frontend.spectrum, frontend.n_fft) for w in waves]
        t_fft = time.perf_counter() - start
        start = time.perf_counter()
        for p in spectra:
            log_mel(p, frontend.bank)
        t_mel = time.perf_counter() - start
        start = time.perf_counter()
        for p in spectra:
            detect_speech(p, frontend.vad)
        t_vad = time.perf_counter() - start
        del spectra

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
