"""Seconds per utterance of embedding extraction with sertool's self-supervised encoders.

Base-sized random-weight transformers Wav2Vec2Model, HubertModel and WavLMModel (their
configuration classes' defaults: 12 layers of 768, the 7-layer convolutional feature encoder;
no weights of the published models can be had here), saved with ``save_pretrained`` and
imported with ``sertool import-speaker-model hf``. For each of 3 RAVDESS files (those of the
parity tests) it times what extract-embeddings computes per utterance (every hidden state's
mean || std, the trunk's ``pooled_layers`` on the waveform features) beside transformers' own
model with ``output_hidden_states=True`` on the same normalised waveform, same thread count,
and prints the largest difference of any hidden state beside the largest value.

    python -m bench.bench_ssl        (SERTOOL_BENCH_THREADS, default 1)
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

THREADS = int(os.environ.get("SERTOOL_BENCH_THREADS", "1"))
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(THREADS)

REPO = Path(__file__).resolve().parent.parent
RAVDESS = Path(os.environ.get("SERTOOL_SHARED_DATA", REPO.parent / "shared" / "data")) / "ravdess"
OUT = REPO / "bench" / "out"
FILES = ["Actor_01/03-01-01-01-01-01-01.flac", "Actor_12/03-01-05-02-02-01-12.flac",
         "Actor_23/03-01-08-02-01-02-23.flac"]
MODELS = {"wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
          "hubert": ("HubertConfig", "HubertModel"), "wavlm": ("WavLMConfig", "WavLMModel")}
REPEATS = 2


def _best_of(run, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> dict:
    import torch
    import transformers

    from sertool.frontend.audio import load_audio
    from sertool.frontend.pipeline import Frontend
    from sertool.models.ssl import normalise_wave
    from sertool.nnet.checkpoint import load_model
    from sertool.transfer.import_ssl import import_ssl

    torch.set_num_threads(THREADS)
    frontend = Frontend({"kind": "waveform"})
    waves = [frontend.process(load_audio(RAVDESS / "Audio_Speech_Actors_01-24" / name))[0]
             for name in FILES]
    seconds = sum(len(w) for w in waves) / 16000 / len(waves)
    results = {"threads": THREADS, "files": len(waves), "mean_audio_s": round(seconds, 2),
               "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "transformers": transformers.__version__}
    for name, (config_name, model_name) in MODELS.items():
        torch.manual_seed(0)
        hf = getattr(transformers, model_name)(getattr(transformers, config_name)()).eval()
        with tempfile.TemporaryDirectory() as tmp:
            hf.save_pretrained(Path(tmp) / "hf")
            import_ssl(Path(tmp) / "hf", Path(tmp) / "out")
            model, _ = load_model(Path(tmp) / "out" / "model.pt")
        model.eval()
        ours = theirs = worst = peak = 0.0
        for wave in waves:
            x = torch.from_numpy(wave)[None]
            values = normalise_wave(x[..., 0])
            with torch.inference_mode():
                mine = model.trunk.hidden_frames(x)
                other = hf(values, output_hidden_states=True).hidden_states
                ours += _best_of(lambda x=x, m=model: m.trunk.pooled_layers(x))
                theirs += _best_of(lambda v=values, m=hf: m(v, output_hidden_states=True))
            worst = max(worst, max(float((a - b).abs().max()) for a, b in zip(mine, other,
                                                                                strict=True)))
            peak = max(peak, max(float(b.abs().max()) for b in other))
        results[name] = {"sertool_s_per_utt": round(ours / len(waves), 3),
                         "transformers_s_per_utt": round(theirs / len(waves), 3),
                         "ratio": round(ours / theirs, 2), "max_abs_diff": worst,
                         "hidden_max_abs": peak}
        print(f"{name:>9}: sertool {ours / len(waves):.3f} s/utt (every layer pooled), "
              f"transformers {theirs / len(waves):.3f} s/utt ({ours / theirs:.2f}x), "
              f"{len(waves)} files of {seconds:.2f} s on average, {THREADS} thread(s); max "
              f"|diff| {worst:.3g} of max |hidden state| {peak:.3g}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ssl.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
