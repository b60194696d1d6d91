"""Training throughput: ``python -m bench.bench_train`` (or ``python -m bench.run_all train``).

The full ResNet34 (128 log-mels) and the 1D-CNN (40 MFCCs) trained on 200-frame chunks, batch
32, through the trainer's own data path (ChunkDataset + ChunkBatchSampler + DataLoader with 2
workers reading a kaldiio archive). Reports segments/s and the share of step time spent
waiting for the next batch. Writes bench/out/train.json.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np
import torch

from sertool.config import CONF_DIR
from sertool.models import build_model, count_parameters, load_model_conf
from sertool.nnet.data import ChunkBatchSampler, ChunkDataset, Item, collate

BATCH, FRAMES, WORKERS = 32, 200, 2


def _archive(root: Path, dim: int, n_utts: int = 256, frames: int = 600) -> dict[str, str]:
    rng = np.random.default_rng(0)
    with kaldiio.WriteHelper(f"ark,scp:{root}/feats.ark,{root}/feats.scp") as w:
        for i in range(n_utts):
            w(f"u{i:04d}", rng.standard_normal((frames, dim)).astype(np.float32))
    return {line.split()[0]: line.split()[1] for line in open(root / "feats.scp")}


def bench_model(name: str, model_conf: dict, dim: int, steps: int, warmup: int,
                device: str = "cpu") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        feats = _archive(Path(tmp), dim, n_utts=max(256, BATCH * (warmup + steps)))
        items = [Item(u, i % 100, 0, 600) for i, u in enumerate(sorted(feats))]
        model = build_model(model_conf, 100, dim).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        sampler = ChunkBatchSampler(len(items), BATCH, [FRAMES], seed=0, epoch=1)
        loader = torch.utils.data.DataLoader(ChunkDataset(items, feats), batch_sampler=sampler,
                                             collate_fn=collate, num_workers=WORKERS)
        it = iter(loader)
        wait = total = 0.0
        for step in range(warmup + steps):
            t0 = time.perf_counter()
            x, y = next(it)
            t1 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            if step >= warmup:
                wait += t1 - t0
                total += t2 - t0
        del it
    return {"model": name, "params": count_parameters(model), "feat_dim": dim,
            "batch": BATCH, "frames": FRAMES, "steps": steps, "workers": WORKERS,
            "segments_per_s": round(steps * BATCH / total, 2),
            "step_s": round(total / steps, 3), "data_wait_share": round(wait / total, 4)}


def main() -> dict:
    threads = torch.get_num_threads()
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
                   f" ({threads} threads)",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "runs": [
            bench_model("ResNet34 (stats pooling)",
                        load_model_conf(CONF_DIR / "model_resnet34.toml"), 128,
                        steps=int(os.environ.get("BENCH_TRAIN_RESNET_STEPS", "3")), warmup=1),
            bench_model("1D-CNN attention", load_model_conf(CONF_DIR / "model_cnn1d.toml"), 40,
                        steps=20, warmup=2),
        ],
    }
    for run in results["runs"]:
        print(f"{run['model']}: {run['segments_per_s']} segments/s, {run['step_s']} s/step, "
              f"data wait {100 * run['data_wait_share']:.2f}% of step time")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "train.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
