"""The prepared GPU check: ``make device-check`` (``python -m bench.device_check [--quick]
[--out DIR] [--budget-s S]``).

One run, at most 8 minutes on one GPU, answers what needs a GPU to answer:

* throughput: the paper's ResNet34 (128 mels, 200-frame chunks) training steps at batch 32 and
  128, float32 and bf16 autocast, on random tensors already on the GPU (the bare loop):
  segments/s and peak GPU memory after warm-up steps, timed with ``cuda.synchronize``;
* data_path: the same model and batch through the trainer's real data path (feature archive
  written with kaldiio, ChunkDataset + ChunkBatchSampler + DataLoader with 4 and 8 workers) and
  its real loop (``sertool.nnet.loop.train_steps``): segments/s as a fraction of the bare loop
  and the share of step time spent waiting for the next batch;
* amp: ``amp = "bf16"`` refused on the CPU; on the GPU one short ``train`` under it;
* torchrun: ``torchrun --nproc_per_node=1 sertool train`` (nccl, DDP of one process);
* resume: a ``train`` SIGKILLed mid-epoch (the ``train:after-step`` kill point) and resumed
  against an uninterrupted one: largest weight difference against a stated tolerance;
* embeddings_predict: ``extract-embeddings`` and ``predict`` on cuda vs the CPU.

Without a GPU the CPU-sized parts run on tiny sizes (tiny ResNet, a few steps) and both outputs
say "GPU parts skipped: no CUDA device"; the exit status is 0 unless a part failed. Each part has
a time budget and stops (or is skipped, with a note) when it is spent. Writes
``OUT/device_check.json`` and ``OUT/device_check.txt`` (default OUT: bench/out).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np
import torch

from sertool import __version__
from sertool.config import CONF_DIR
from sertool.errors import SertoolError
from sertool.models import build_model, load_model_conf
from sertool.nnet.data import ChunkBatchSampler, ChunkDataset, Item, chunk_loader
from sertool.nnet.loop import EpochBatches, StepTimes, train_steps

# The trainer tests' tiny runs (4 speakers x 6 utterances, tiny ResNet, 4 batches per epoch,
# partial.pt every 2 steps): the resume check is tests/stages/test_train_resume.py's, on the device.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "helpers"))
from train_helpers import make_feats, tiny_conf  # noqa: E402

GPU_SKIPPED = "GPU parts skipped: no CUDA device"
BUDGET_S = 450  # the whole run, GPU: under the 8 minutes a device check may take
HARD_STOP_S = 25  # a part still running this long after the budget is stopped (SIGALRM)
REPO = Path(__file__).resolve().parent.parent
# Weights of a killed-and-resumed run vs an uninterrupted one. CPU: bit-exact (as
# tests/stages/test_train_resume.py). GPU: cuDNN may pick kernels that accumulate in another order
# (atomics in some backward kernels), so equal up to float32 noise grown over a few steps.
RESUME_TOL = {"cpu": 0.0, "cuda": 1e-4}
# cuda vs CPU on the same weights and inputs. cuDNN convolutions use TF32 by default
# (torch.backends.cudnn.allow_tf32), ~1e-3 relative per operation: relative to the largest
# value for embeddings, absolute for probabilities.
EMB_REL_TOL, PROB_ABS_TOL = 1e-2, 1e-3


@dataclass
class Sizes:
    model_conf: str
    feat_dim: int
    frames: int
    batches: tuple[int, ...]
    warmup: int
    steps: int
    workers: tuple[int, ...]
    classes: int
    budgets: dict  # part -> seconds at most


def sizes_for(gpu: bool, quick: bool) -> Sizes:
    if gpu:
        return Sizes("model_resnet34.toml", 128, 200, (32, 128), 5, 20, (4, 8), 1000,
                     {"throughput": 130, "data_path": 120, "amp": 30, "torchrun": 60,
                      "resume": 60, "embeddings_predict": 40})
    # CPU mode: the budgets guard a GPU run's 8 minutes; here they only stop a hung part, so
    # they are wide (a 2-core machine busy with other jobs took 3x the idle time)
    budgets = {"throughput": 180, "data_path": 270, "amp": 90, "resume": 270}
    return Sizes("model_resnet_tiny.toml", 40, 50, (8,), 1 if quick else 2, 2 if quick else 8,
                 (0, 1) if quick else (0, 2), 10, budgets)


class OutOfTime(Exception):
    pass


class HardStop(BaseException):
    """The whole run's time is up: raised by SIGALRM wherever the part is (not an Exception,
    so no ``except Exception`` on the way swallows it)."""


class Clock:
    """Seconds left of the whole run and of the current part."""

    def __init__(self, budget_s: float):
        self.end = time.monotonic() + budget_s
        self.part_end = self.end

    def start_part(self, seconds: float) -> float:
        self.part_end = min(self.end, time.monotonic() + seconds)
        return self.left()

    def left(self) -> float:
        return self.part_end - time.monotonic()

    def check(self) -> None:
        if self.left() <= 0:
            raise OutOfTime


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _model(sizes: Sizes, device: str):
    torch.manual_seed(0)
    model = build_model(load_model_conf(CONF_DIR / sizes.model_conf), sizes.classes,
                        sizes.feat_dim).to(device).train()
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


AUTOCAST = {"fp32": None, "bf16": torch.bfloat16}


# ----------------------------------------------------------------------------- parts


def part_throughput(sizes: Sizes, device: str, clock: Clock, results: dict) -> dict:
    precisions = ("fp32", "bf16") if device.startswith("cuda") else ("fp32",)
    runs = []
    for batch in sizes.batches:
        for precision in precisions:
            model, opt = _model(sizes, device)
            x = torch.randn(batch, sizes.frames, sizes.feat_dim, device=device)
            y = torch.randint(0, sizes.classes, (batch,), device=device)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            done, started = 0, 0.0
            for i in range(sizes.warmup + sizes.steps):
                if i == sizes.warmup:
                    sync(device)
                    started = time.perf_counter()
                with torch.autocast(device.split(":")[0], dtype=AUTOCAST[precision],
                                    enabled=AUTOCAST[precision] is not None):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done = max(0, i + 1 - sizes.warmup)
                if clock.left() <= 0 and done:
                    break
            sync(device)
            if not done:
                raise OutOfTime
            seconds = time.perf_counter() - started
            runs.append({"precision": precision, "batch": batch, "steps": done,
                         "segments_per_s": round(done * batch / seconds, 2),
                         "step_s": round(seconds / done, 4),
                         "peak_mem_mib": (round(torch.cuda.max_memory_allocated() / 2**20)
                                          if device.startswith("cuda") else None),
                         "loss_finite": bool(torch.isfinite(loss).item())})
            del model, opt, x, y
    out = {"model": sizes.model_conf, "feat_dim": sizes.feat_dim, "frames": sizes.frames,
           "warmup": sizes.warmup, "runs": runs}
    if not device.startswith("cuda"):
        out["note"] = "bf16 autocast is measured on CUDA only"
    out["ok"] = all(r["loss_finite"] for r in runs)
    return out


def write_archive(root: Path, n_utts: int, frames: int, dim: int, seed: int = 0
                  ) -> dict[str, str]:
    """feats.scp + utt2num_frames of ``n_utts`` random (frames, dim) matrices -> utt: rxfile."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    with kaldiio.WriteHelper(f"ark,scp:{root}/feats.1.ark,{root}/feats.scp") as w:
        for i in range(n_utts):
            w(f"u{i:04d}", rng.standard_normal((frames, dim)).astype(np.float32))
    (root / "utt2num_frames").write_text("".join(f"u{i:04d} {frames}\n" for i in range(n_utts)))
    return dict(line.split() for line in open(root / "feats.scp"))


def part_data_path(sizes: Sizes, device: str, clock: Clock, results: dict) -> dict:
    batch = sizes.batches[0]
    n_batches = sizes.warmup + sizes.steps
    bare = {r["precision"]: r["segments_per_s"]
            for r in results.get("throughput", {}).get("runs", []) if r["batch"] == batch}
    variants = [(w, "fp32") for w in sizes.workers]
    if device.startswith("cuda"):
        variants.append((sizes.workers[-1], "bf16"))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        n_utts = min(512, batch * n_batches)
        feats = write_archive(Path(tmp), n_utts, 3 * sizes.frames // 2, sizes.feat_dim)
        utts = sorted(feats)
        items = [Item(utts[i % n_utts], i % sizes.classes, 0, 3 * sizes.frames // 2)
                 for i in range(batch * n_batches)]
        dataset = ChunkDataset(items, feats)
        for workers, precision in variants:
            clock.check()
            model, opt = _model(sizes, device)
            sampler = ChunkBatchSampler(len(items), batch, [sizes.frames], seed=0, epoch=1)
            loader = chunk_loader(dataset, sampler, workers, device, seed=0)
            times, marks = StepTimes(), {}

            # Snapshots at the step hook of the last warm-up step and of every later one (the
            # loop's loss.item() has synchronised the device by then): between two hooks lie
            # as many waits for a batch as steps.
            def on_step(_epoch: int, step: int, _sums, times=times, marks=marks) -> None:
                if step >= sizes.warmup:
                    marks["start" if step == sizes.warmup else "end"] = (
                        step, time.perf_counter(), times.data_wait_s, times.step_s)
                if step > sizes.warmup and clock.left() <= 0:
                    raise OutOfTime

            try:
                train_steps(model, opt, EpochBatches(loader, n_batches), device, number=1,
                            on_step=on_step, times=times, autocast=AUTOCAST[precision])
            except OutOfTime:
                if "end" not in marks:
                    raise
            (s0, t0, w0, c0), (s1, t1, w1, c1) = marks["start"], marks["end"]
            done, seconds, wait, stepping = s1 - s0, t1 - t0, w1 - w0, c1 - c0
            seg_s = done * batch / seconds
            runs.append({"workers": workers, "precision": precision, "batch": batch,
                         "steps": done, "segments_per_s": round(seg_s, 2),
                         "fraction_of_bare": (round(seg_s / bare[precision], 3)
                                              if precision in bare else None),
                         "data_wait_s": round(wait, 4), "step_s": round(stepping, 4),
                         "data_wait_share": round(wait / (wait + stepping), 4)})
            del loader, model, opt
    return {"model": sizes.model_conf, "frames": sizes.frames, "warmup": sizes.warmup,
            "bare_segments_per_s": bare, "runs": runs,
            "note": "trainer loop: loss.item() synchronises every step (the bare loop once "
                    "at the end); data_wait_share = time in next(batches) / step time",
            "ok": all(0.0 <= r["data_wait_share"] <= 1.0 and r["segments_per_s"] > 0
                      for r in runs)}


def part_amp(sizes: Sizes, device: str, clock: Clock, results: dict) -> dict:
    from sertool.nnet.trainer import train

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        feat_dir, data_dir = make_feats(Path(tmp), n_utt=6, dim=sizes.feat_dim)
        try:
            train(feat_dir, data_dir, Path(tmp) / "cpu", tiny_conf(amp="bf16"),
                  device="cpu", progress=False)
            out["cpu_bf16"] = {"refused": False}
        except SertoolError as err:
            out["cpu_bf16"] = {"refused": True, "message": str(err)}
        if device.startswith("cuda"):
            clock.check()
            result = train(feat_dir, data_dir, Path(tmp) / "gpu",
                           tiny_conf(amp="bf16", epochs=1), device=device,
                           progress=False)
            row = result.history[-1]
            out["cuda_bf16"] = {"train_loss": row["train_loss"],
                                "finite": math.isfinite(row["train_loss"])}
    out["ok"] = out["cpu_bf16"]["refused"] and out.get("cuda_bf16", {}).get("finite", True)
    return out


def _run(cmd: list[str], clock: Clock, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    try:
        return subprocess.run(cmd, env=full_env, capture_output=True, text=True,
                              timeout=max(1.0, clock.left()))
    except subprocess.TimeoutExpired as err:
        raise OutOfTime from err


def part_torchrun(sizes: Sizes, device: str, clock: Clock, results: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        feat_dir, data_dir = make_feats(Path(tmp), n_utt=6, dim=sizes.feat_dim)
        exp = Path(tmp) / "exp"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=1", "-m", "sertool", "train", "--task", "speaker",
               str(feat_dir), str(data_dir), str(exp), "--model-conf", "model_resnet_tiny.toml",
               "--set", "epochs=1", "--set", "batch_size=4", "--set", "chunk_frames=[20]",
               "--set", "num_workers=2", "--device", device]
        backend = "backend " + ("nccl" if device.startswith("cuda") else "gloo")
        started = time.perf_counter()
        proc = _run(cmd, clock)
        log = (exp / "train.log").read_text() if (exp / "train.log").is_file() else ""
        return {"command": " ".join(["torchrun", *cmd[3:]]), "returncode": proc.returncode,
                "seconds": round(time.perf_counter() - started, 1),
                "backend": backend.split()[1] if backend in log else None,
                "final_model": (exp / "final.pt").is_file(),
                "stderr_tail": proc.stderr[-1500:] if proc.returncode else "",
                "ok": proc.returncode == 0 and backend in log and (exp / "final.pt").is_file()}


CHILD = textwrap.dedent("""
    import json, sys, torch
    from sertool.nnet.trainer import train
    feat, data, exp, conf, device, threads = json.loads(sys.argv[1])
    torch.set_num_threads(threads)
    train(feat, data, exp, conf, device=device, progress=False)
""")


def part_resume(sizes: Sizes, device: str, clock: Clock, results: dict) -> dict:
    from sertool.faults import KILL_ENV
    from sertool.nnet.checkpoint import load_checkpoint
    from sertool.nnet.trainer import train

    kill_at = 7  # epoch 2, batch 3: after the partial.pt of batch 2, batch 3's update lost
    workers = sizes.workers[-1]
    # CPU results are bit-exact only with one thread count in all three runs (another count
    # sums in another order); a caller (a test session) may have changed this process's
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _resume(sizes, device, clock, kill_at, workers, train, load_checkpoint,
                       KILL_ENV)
    finally:
        torch.set_num_threads(threads)


def _resume(sizes: Sizes, device: str, clock: Clock, kill_at: int, workers: int, train,
            load_checkpoint, kill_env: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        feat_dir, data_dir = make_feats(Path(tmp), n_utt=6, dim=sizes.feat_dim)
        conf = tiny_conf(num_workers=workers)
        ref = train(feat_dir, data_dir, Path(tmp) / "ref", conf, device=device, progress=False)
        cut = Path(tmp) / "cut"
        clock.check()
        args = json.dumps([str(feat_dir), str(data_dir), str(cut), conf, device, 1])
        proc = _run([sys.executable, "-c", CHILD, args], clock,
                    {kill_env: f"train:after-step:{kill_at}"})
        killed = proc.returncode == -9
        partial = load_checkpoint(cut / "partial.pt") if (cut / "partial.pt").is_file() else None
        resumed = train(feat_dir, data_dir, cut, conf, device=device, progress=False)
        a, b = load_checkpoint(ref.final_model), load_checkpoint(resumed.final_model)
        diff = max(float((a["model"][k].double() - b["model"][k].double()).abs().max())
                   if a["model"][k].numel() else 0.0 for k in a["model"])
    tol = RESUME_TOL["cuda" if device.startswith("cuda") else "cpu"]
    return {"device": device, "workers": workers, "killed_at_step": kill_at,
            "killed": killed, "partial_at": [partial["epoch"], partial["step"]] if partial
            else None, "resumed_from": Path(resumed.resumed_from or "").name,
            "max_abs_diff": diff, "tolerance": tol, "exact": diff == 0.0,
            "stderr_tail": "" if killed else proc.stderr[-1500:],
            "ok": killed and resumed.resumed_from is not None and diff <= tol}


def part_embeddings_predict(sizes: Sizes, device: str, clock: Clock, results: dict) -> dict:
    import soundfile as sf

    from sertool.frontend.pipeline import resolve_conf
    from sertool.io_utils import atomic_write_json
    from sertool.nnet.checkpoint import save_checkpoint
    from sertool.predict import export_bundle, load_bundle, predict_files
    from sertool.transfer.embdir import EmbeddingDir
    from sertool.transfer.embeddings import extract_embeddings

    classes = ["ang", "hap", "neu", "sad"]
    model_conf = load_model_conf(CONF_DIR / "model_resnet_tiny.toml")
    torch.manual_seed(0)
    model = build_model(model_conf, len(classes), 128).eval()
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        feats = write_archive(root / "feats", 6, 300, 128)
        model_path = root / "model.pt"
        save_checkpoint(model_path, model, model_conf=model_conf, num_classes=len(classes),
                        feat_dim=128, labels=classes, with_rng=False)
        emb = {}
        for dev in ("cpu", device):
            extract_embeddings(root / "feats", model_path, root / f"emb_{dev}", copies=1,
                               policy="conservative", device=dev, progress=False)
            emb[dev] = EmbeddingDir.open(root / f"emb_{dev}").vectors
        scale = max(float(np.abs(v).max()) for v in emb["cpu"].values())
        diff = max(float(np.abs(emb["cpu"][k] - emb[device][k]).max()) for k in emb["cpu"])
        out["extract_embeddings"] = {"vectors": len(emb["cpu"]), "utterances": len(feats),
                                     "max_abs_diff": diff, "max_abs_value": scale,
                                     "rel_diff": diff / scale, "rel_tolerance": EMB_REL_TOL}
        clock.check()
        frontend_json = root / "frontend.json"
        atomic_write_json(frontend_json, resolve_conf())
        bundle = export_bundle(root / "bundle", model, classes=classes, model_conf=model_conf,
                               feat_dim=128, frontend_json=frontend_json,
                               provenance={"corpus": "device-check"})
        rng = np.random.default_rng(1)
        wavs = []
        for i, f0 in enumerate((120.0, 180.0, 240.0)):
            t = np.arange(32000) / 16000
            wave = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(len(t))
            sf.write(root / f"utt{i}.wav", wave.astype(np.float32), 16000)
            wavs.append(root / f"utt{i}.wav")
        probs = {dev: [p.probs for p in predict_files(load_bundle(bundle, dev), wavs)]
                 for dev in ("cpu", device)}
        pdiff = max(abs(a[c] - b[c]) for a, b in zip(probs["cpu"], probs[device], strict=True)
                    for c in classes)
        out["predict"] = {"files": len(wavs), "max_abs_diff": pdiff,
                          "abs_tolerance": PROB_ABS_TOL}
    out["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    out["ok"] = (out["extract_embeddings"]["rel_diff"] <= EMB_REL_TOL
                 and out["predict"]["max_abs_diff"] <= PROB_ABS_TOL)
    return out


PARTS: list[tuple[str, Callable, bool]] = [  # (name, function, needs CUDA)
    ("throughput", part_throughput, False),
    ("data_path", part_data_path, False),
    ("amp", part_amp, False),
    ("torchrun", part_torchrun, True),
    ("resume", part_resume, False),
    ("embeddings_predict", part_embeddings_predict, True),
]


# ----------------------------------------------------------------------------- report


def machine() -> dict:
    gpu = torch.cuda.is_available()
    return {"platform": f"{platform.machine()}, {os.cpu_count()} CPU cores",
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda if gpu else None,
            "gpu": torch.cuda.get_device_name(0) if gpu else None,
            "gpu_count": torch.cuda.device_count() if gpu else 0,
            "tf32": {"cudnn": torch.backends.cudnn.allow_tf32,
                     "matmul": torch.backends.cuda.matmul.allow_tf32}}


def _line(name: str, part: dict) -> str:
    head = f"{name} [{part['status']}, {part['seconds']:.1f} s]"
    if part["status"] != "ok":
        return f"{head}: {part.get('note', '')}".rstrip(": ")
    if name == "throughput":
        runs = "; ".join(f"batch {r['batch']} {r['precision']} {r['segments_per_s']} seg/s"
                         + (f" {r['peak_mem_mib']} MiB" if r["peak_mem_mib"] is not None else "")
                         for r in part["runs"])
        return f"{head}: {part['model']}, {part['frames']} frames: {runs}"
    if name == "data_path":
        runs = "; ".join(
            f"{r['workers']} workers {r['precision']} {r['segments_per_s']} seg/s"
            + (f" = {r['fraction_of_bare']:.2f} of bare" if r["fraction_of_bare"] else "")
            + f", data wait {100 * r['data_wait_share']:.1f}%" for r in part["runs"])
        return f"{head}: batch {part['runs'][0]['batch']}: {runs}"
    if name == "amp":
        text = ("bf16 on cpu refused" if part["cpu_bf16"]["refused"]
                else "bf16 on cpu NOT refused")
        if "cuda_bf16" in part:
            text += f"; bf16 train on cuda: loss {part['cuda_bf16']['train_loss']:.3f}"
        return f"{head}: {text}"
    if name == "torchrun":
        return (f"{head}: returncode {part['returncode']}, backend {part['backend']}, "
                f"final.pt {part['final_model']}")
    if name == "resume":
        return (f"{head}: {part['device']}, killed at step {part['killed_at_step']} "
                f"({'SIGKILL' if part['killed'] else 'NOT killed'}), resumed from "
                f"{part['resumed_from']}: max |weight diff| {part['max_abs_diff']:.3g} "
                f"(tolerance {part['tolerance']:g}{', exact' if part['exact'] else ''})")
    emb, pred = part["extract_embeddings"], part["predict"]
    return (f"{head}: extract-embeddings cuda vs cpu rel diff {emb['rel_diff']:.3g} "
            f"(tolerance {emb['rel_tolerance']:g}); predict max |prob diff| "
            f"{pred['max_abs_diff']:.3g} (tolerance {pred['abs_tolerance']:g})")


def summary(report: dict) -> str:
    lines = [f"sertool device check ({report['date']}, sertool {report['sertool_version']}): "
             f"{report['mode']} mode{' (quick)' if report['quick'] else ''}, "
             f"{report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s budget",
             f"machine: {report['machine']['platform']}, torch {report['machine']['torch']}, "
             f"GPU {report['machine']['gpu'] or 'none'}"]
    if report["gpu_skipped"]:
        lines.append(GPU_SKIPPED)
    lines += [_line(name, part) for name, part in report["parts"].items()]
    count = {k: sum(p["status"] == k for p in report["parts"].values())
             for k in ("ok", "skipped", "failed")}
    lines.append(f"result: {count['ok']} passed, {count['skipped']} skipped, "
                 f"{count['failed']} failed" + (": " + ", ".join(report["failed"])
                                                  if report["failed"] else ""))
    return "\n".join(lines) + "\n"


def run_check(out_dir: Path, quick: bool = False, budget_s: float = BUDGET_S) -> dict:
    started = time.monotonic()
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    sizes = sizes_for(gpu, quick)
    clock = Clock(budget_s)
    report = {"sertool_version": __version__, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                    time.gmtime()),
              "mode": "gpu" if gpu else "cpu", "quick": quick, "gpu_skipped": not gpu,
              "note": None if gpu else GPU_SKIPPED, "budget_s": budget_s,
              "machine": machine(), "parts": {}}

    def hard_stop(_signum, _frame):  # a step or kernel that overran its part's budget
        raise HardStop

    old_handler = signal.signal(signal.SIGALRM, hard_stop)
    signal.alarm(int(budget_s + HARD_STOP_S))
    try:
        _run_parts(sizes, device, gpu, clock, report)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    report["failed"] = [n for n, p in report["parts"].items() if p["status"] == "failed"]
    report["ok"] = not report["failed"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "device_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "device_check.txt").write_text(summary(report))
    return report


def _run_parts(sizes: Sizes, device: str, gpu: bool, clock: Clock, report: dict) -> None:
    for name, func, needs_cuda in PARTS:
        part_start = time.monotonic()
        if needs_cuda and not gpu:
            part = {"status": "skipped", "note": GPU_SKIPPED}
        elif clock.start_part(sizes.budgets.get(name, 0)) < 5:
            part = {"status": "skipped", "note": "time budget spent"}
        else:
            print(f"device-check: {name} ...", flush=True)
            try:
                part = func(sizes, device, clock, report["parts"])
                part["status"] = "ok" if part.pop("ok") else "failed"
            except OutOfTime:
                part = {"status": "skipped", "note": "stopped: its time budget was spent"}
            except HardStop:
                part = {"status": "skipped", "note": "stopped: the whole run's time was up"}
            except Exception as err:  # noqa: BLE001 - one failing part must not hide the rest
                part = {"status": "failed", "note": repr(err),
                        "traceback": traceback.format_exc()[-3000:]}
        part["seconds"] = round(time.monotonic() - part_start, 2)
        report["parts"][name] = part
        print(_line(name, part), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.device_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewest steps (the test)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help=f"whole-run time budget in seconds (default {BUDGET_S})")
    args = parser.parse_args(argv)
    report = run_check(args.out, args.quick, args.budget_s)
    print(summary(report), end="")
    print(f"written: {args.out / 'device_check.json'} and {args.out / 'device_check.txt'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
