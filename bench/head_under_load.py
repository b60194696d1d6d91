"""Benchmark: the frozen-trunk head of one RAVDESS fold (Resemblyzer trunk) trained on this
machine with two CPU-burning processes beside it, with 2 threads (what PyTorch picked on a
2-core machine before issue 23, asked for here with --threads 2) and with the new default (a
small model trains on one thread). Also says whether the two give the same bytes.

Run: PYTHONPATH=. .venv/bin/python bench/head_under_load.py [--subset statement1|all]
     [--epochs 4] [--busy 2]
The data dir, features, Resemblyzer import and embeddings are made once under
bench/out/head_under_load/ (git-ignored) and reused: a rerun only times the heads. Results go
to bench/out/head_under_load.json and are quoted in docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out" / "head_under_load"
RAVDESS = REPO.parent / "shared" / "data" / "ravdess"
SERTOOL = [sys.executable, "-m", "sertool"]
BUSY_LIMIT_S = 900  # a burner ends by itself after this, and is killed in `finally` anyway
BURNER = f"import time\nend = time.time() + {BUSY_LIMIT_S}\nwhile time.time() < end: pass"


def _sertool(*args: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SERTOOL_THREADS"}
    run = subprocess.run([*SERTOOL, *map(str, args)], capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise SystemExit(f"sertool {' '.join(map(str, args))} failed:\n{run.stderr}")
    return run


def prepare(subset: str) -> tuple[Path, Path, Path]:
    """DATA, FEAT and the imported trunk (made once)."""
    OUT.mkdir(parents=True, exist_ok=True)
    full, data = OUT / "data_all", OUT / f"data_{subset}"
    if not (full / "utt2spk").is_file():
        _sertool("prepare", "ravdess", RAVDESS, full)
    if not (data / "utt2spk").is_file():
        if subset == "all":
            shutil.copytree(full, data)
        else:  # statement 1 of 2 ("Kids are talking by the door"): half the files
            keep = OUT / f"{subset}.utts"
            wav = dict(line.split(None, 1) for line in (full / "wav.scp").read_text()
                       .splitlines())
            keep.write_text("".join(f"{u}\n" for u, path in sorted(wav.items())
                                    if Path(path.strip()).name.split("-")[4] == "01"))
            _sertool("subset-data-dir", full, data, "--utt-list", keep)
    trunk = OUT / "resemblyzer"
    if not (trunk / "model.pt").is_file():
        _sertool("import-speaker-model", "resemblyzer", trunk)
    feats = OUT / f"feats_{subset}"
    if not (feats / "feats.scp").is_file():
        started = time.time()
        _sertool("extract-feats", data, feats, "--nj", "2", "--conf", trunk / "frontend.toml",
                 "--no-progress")
        print(f"features: {time.time() - started:.0f} s", file=sys.stderr)
    return data, feats, trunk / "model.pt"


class LoadSampler:
    """The 1-minute load average every 5 s while a run lasts."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            self._stop.wait(5)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def time_head(data: Path, feats: Path, trunk: Path, emb: Path, name: str, epochs: int,
              threads: int | None) -> dict:
    """One finetune of fold 1 (embeddings already made); the head's seconds from its log."""
    exp = OUT / "exp" / name
    shutil.rmtree(exp, ignore_errors=True)
    args = ["finetune", feats, data, exp, "--init", trunk, "--fold", "1", "--emb-dir", emb,
            "--set", f"head.epochs={epochs}"]
    if threads is not None:
        args += ["--threads", str(threads)]
    with LoadSampler() as load:
        started = time.perf_counter()
        _sertool(*args)
        wall = time.perf_counter() - started
    log = json.loads((exp / "fold_1" / "train_log.json").read_text())
    vectors = log["n_train_vectors"]  # batches of 32; a last batch of one is dropped
    steps_per_epoch = math.ceil(vectors / 32) - (vectors % 32 == 1)
    head_s = sum(row["time_s"] for row in log["history"])
    step_s = sum(row["step_s"] for row in log["history"])
    return {"threads": threads or "default (1: small model)", "epochs": epochs,
            "steps": steps_per_epoch * epochs, "train_vectors": log["n_train_vectors"],
            "command_s": round(wall, 1), "head_s": round(head_s, 2),
            "s_per_step": round(step_s / (steps_per_epoch * epochs), 4),
            "s_per_epoch": round(head_s / epochs, 3),
            "load_1min": {"min": min(load.samples), "mean": round(statistics.mean(
                load.samples), 2), "max": max(load.samples)},
            "best_epoch": log["best_epoch"], "heldout_ua": round(log["best"]["valid_ua"], 4),
            "posteriors_sha256": hashlib.sha256(
                (exp / "fold_1" / "posteriors.tsv").read_bytes()).hexdigest(),
            "model_sha256": hashlib.sha256((exp / "fold_1" / "model.pt").read_bytes())
            .hexdigest()}


def _max_diff(a: Path, b: Path) -> dict:
    """How far apart two runs' test posteriors are, and how many predictions differ."""
    def rows(exp: Path) -> list[list[str]]:
        text = (exp / "fold_1" / "posteriors.tsv").read_text().splitlines()
        return [line.split("\t") for line in text[1:]]

    first, second = rows(a), rows(b)
    diff = max(abs(float(x) - float(y)) for r, s in zip(first, second, strict=True)
               for x, y in zip(r[3:], s[3:], strict=True))
    return {"max_abs": round(diff, 6), "predictions_differing":
            sum(r[2] != s[2] for r, s in zip(first, second, strict=True)), "of": len(first)}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", choices=["statement1", "all"], default="statement1")
    parser.add_argument("--epochs", type=int, default=4, help="head epochs of each timed run")
    parser.add_argument("--busy", type=int, default=2, help="CPU-burning processes beside it")
    opts = parser.parse_args()
    data, feats, trunk = prepare(opts.subset)
    emb = OUT / f"emb_{opts.subset}"
    if not (emb / "emb.scp").is_file():  # the fold's embeddings, made by an untimed run
        started = time.time()
        time_head(data, feats, trunk, emb, "embeddings", 1, None)
        print(f"embeddings: {time.time() - started:.0f} s", file=sys.stderr)
    results: dict = {"machine": f"{os.cpu_count()} CPU cores, shared with other sessions",
                     "subset": opts.subset, "busy_processes": opts.busy,
                     "load_before": Path("/proc/loadavg").read_text().split()[:3]}
    burners = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(opts.busy)]
    try:
        time.sleep(5)  # let the burners take their share
        results["before_2_threads"] = time_head(data, feats, trunk, emb, "before", opts.epochs,
                                                2)
        results["after_default"] = time_head(data, feats, trunk, emb, "after", opts.epochs,
                                             None)
        results["after_default_30_epochs"] = time_head(data, feats, trunk, emb, "after30", 30,
                                                       None)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    before, after = results["before_2_threads"], results["after_default"]
    keys = ("posteriors_sha256", "model_sha256")
    results["same_bytes_1_vs_2_threads"] = {k: before[k] == after[k] for k in keys}
    # is each thread count reproducible? (again, without the burners: load does not matter)
    for name, threads, first in (("again_2", 2, before), ("again_1", None, after)):
        again = time_head(data, feats, trunk, emb, name, opts.epochs, threads)
        results[f"{name}_threads"] = {"s_per_step": again["s_per_step"],
                                      "load_1min": again["load_1min"],
                                      "same_bytes": {k: again[k] == first[k] for k in keys}}
    results["posteriors_max_abs_diff_1_vs_2"] = _max_diff(OUT / "exp" / "before",
                                                         OUT / "exp" / "after")
    results["speedup_per_step"] = round(before["s_per_step"] / after["s_per_step"], 1)
    path = REPO / "bench" / "out" / "head_under_load.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
