"""Pooled trunk statistics per utterance and per SpecAugment-ed copy: ``extract-embeddings``.

With the trunk frozen (the paper's transfer setting) only the new FC layers learn, and they
see nothing but the trunk's pooled statistics (mean ‖ std over time). Running the trunk once
per utterance and per augmented copy, and training the FC layers on the stored vectors,
gives the same model as running the frozen trunk in every epoch of every fold, at a fraction
of the cost (the full ResNet34 at 128 mels runs ~3.6 utterances/s on a 2-core CPU).

Output directory::

    emb.json          how it was made: model (path and SHA-256), feature dir (feats.scp
                      SHA-256), policy, copies, seed, pooled dimension, counts
    emb.<j>.ark/.scp  job j's float32 vectors (Kaldi binary ark, read with kaldiio)
    emb.scp           every job's entries, written last: the directory is complete

Keys: ``<utt>`` is the original whole segment, ``<utt>#aug1`` ... ``<utt>#aug<N>`` its N
SpecAugment-ed copies (``#`` never occurs in a Kaldi utterance id). The trunk runs in eval
mode on whole, variable-length segments (no chunking, no padding), the original and its
copies in one batch (same length, and eval-mode batch norm treats samples independently).
Copy k of an utterance is masked with a generator seeded from (seed, utt, k): the same
vectors come out whatever ``nj`` is and however often a job is rerun.

A job writes its ark, then its scp under a temporary name renamed into place: a job with an
scp is finished and a rerun skips it; a killed job is redone. A directory made with another
model, feature set, policy, copies or seed is refused, not mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sertool.errors import SertoolError
from sertool.io_utils import atomic_write_json, atomic_write_text

EMB_JSON = "emb.json"
EMB_SCP = "emb.scp"
AUG_SEP = "#aug"
POLICIES = ("none", "conservative", "aggressive")


class EmbeddingError(SertoolError, ValueError):
    """Bad input or an incompatible existing output directory (the message names the file)."""


def aug_key(utt: str, k: int) -> str:
    """Key of the k-th augmented copy (k >= 1) of ``utt``."""
    return f"{utt}{AUG_SEP}{k}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_seed(seed: int, utt: str, k: int) -> int:
    digest = hashlib.sha256(f"{seed}:{utt}:{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch seeds must fit in int64


@dataclass
class EmbeddingSet:
    """What ``extract_embeddings`` wrote."""

    emb_dir: Path
    meta: dict
    n_written: int  # entries computed now (0 when everything was already there)


# ----------------------------------------------------------------------------- one job


def _augmenter(policy: str):
    from sertool.augment import SpecAugment

    return SpecAugment.from_policy(policy)


def _run_job(job: int, entries: list[tuple[str, str]], model_path: str, out_dir: str,
             copies: int, policy: str, seed: int, device: str, threads: int | None,
             queue=None) -> int:
    """Compute and write job ``job``'s embeddings; returns how many utterances it did."""
    import kaldiio
    import torch

    from sertool.checkpoint import load_model

    if threads:
        torch.set_num_threads(threads)
    model, _ = load_model(model_path, device)
    model.eval()
    augment = _augmenter(policy) if copies else None
    out = Path(out_dir)
    ark, scp = out / f"emb.{job}.ark", out / f"emb.{job}.scp"
    scp_tmp = out / f".emb.{job}.scp.tmp"
    done = 0
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp_tmp}") as writer:
        for utt, rxfile in entries:
            feats = torch.tensor(np.asarray(kaldiio.load_mat(rxfile)), dtype=torch.float32)
            batch = [feats]
            for k in range(1, copies + 1):
                gen = torch.Generator().manual_seed(copy_seed(seed, utt, k))
                batch.append(augment(feats, generator=gen))
            with torch.inference_mode():
                pooled = model.pooled(torch.stack(batch).to(device)).cpu().numpy()
            writer(utt, pooled[0].astype(np.float32))
            for k in range(1, copies + 1):
                writer(aug_key(utt, k), pooled[k].astype(np.float32))
            done += 1
            if queue is not None:
                queue.put(1)
    with open(ark, "rb") as handle:
        os.fsync(handle.fileno())
    from sertool.io_utils import atomic_replace_file

    atomic_replace_file(scp_tmp, scp)
    return done


# ----------------------------------------------------------------------------- the stage


def _split(items: list, nj: int) -> list[list]:
    size, extra = divmod(len(items), nj)
    parts, start = [], 0
    for j in range(nj):
        end = start + size + (1 if j < extra else 0)
        parts.append(items[start:end])
        start = end
    return parts


def extract_embeddings(feat_dir: str | os.PathLike, model_path: str | os.PathLike,
                       emb_dir: str | os.PathLike, *, copies: int = 2,
                       policy: str = "conservative", seed: int = 0, nj: int = 1,
                       device: str = "cpu", utts: Sequence[str] | None = None,
                       progress: bool = True) -> EmbeddingSet:
    """Write the pooled statistics of every utterance of ``feat_dir`` (or of ``utts``) and of
    ``copies`` SpecAugment-ed copies of each (policy ``none``: originals only) to ``emb_dir``.
    """
    import kaldiio
    from tqdm import tqdm

    from sertool.checkpoint import load_model
    from sertool.datadir import read_table

    if policy not in POLICIES:
        raise EmbeddingError(f"unknown augmentation policy {policy!r} (known: "
                             f"{', '.join(POLICIES)})")
    if copies < 0 or nj < 1:
        raise EmbeddingError(f"copies must be >= 0 and nj >= 1 (got {copies}, {nj})")
    if policy == "none":
        copies = 0
    feat_dir, model_path, emb_dir = Path(feat_dir), Path(model_path), Path(emb_dir).resolve()
    feats_scp = feat_dir / "feats.scp"
    table = read_table(feats_scp)
    wanted = sorted(table) if utts is None else sorted(set(utts))
    absent = [u for u in wanted if u not in table]
    if absent:
        raise EmbeddingError(f"{feats_scp}: {len(absent)} utterance(s) have no features, "
                             f"e.g. {absent[0]!r}")
    if not wanted:
        raise EmbeddingError(f"{feats_scp}: no utterances")
    if not model_path.is_file():
        raise EmbeddingError(f"{model_path}: model not found")
    model, model_meta = load_model(model_path, "cpu")
    first = np.asarray(kaldiio.load_mat(table[wanted[0]]))
    feat_dim = int(model_meta.get("feat_dim", first.shape[1]))
    if first.ndim != 2 or first.shape[1] != feat_dim:
        raise EmbeddingError(f"{feats_scp}: utterance {wanted[0]!r} has features of shape "
                             f"{first.shape}, the model {model_path} expects {feat_dim} dims")
    pooled_dim = int(model.pooled_dim)
    del model

    meta = {
        "model": str(model_path),
        "model_sha256": _sha256(model_path),
        "feat_dir": str(feat_dir.resolve()),
        "feats_scp_sha256": _sha256(feats_scp),
        "policy": policy,
        "copies": copies,
        "seed": seed,
        "utts_sha256": hashlib.sha256("\n".join(wanted).encode()).hexdigest(),
        "n_utts": len(wanted),
        "pooled_dim": pooled_dim,
        "feat_dim": feat_dim,
        "keys": f"<utt> = original segment; <utt>{AUG_SEP}k = augmented copy k (1..copies)",
    }
    identity = ("model_sha256", "feats_scp_sha256", "policy", "copies", "seed", "utts_sha256")
    meta_path = emb_dir / EMB_JSON
    if meta_path.is_file():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        changed = [k for k in identity if old.get(k) != meta[k]]
        if changed:
            raise EmbeddingError(f"{emb_dir} holds embeddings made differently "
                                 f"({', '.join(changed)} differ); remove it or choose another "
                                 "directory")
        if (emb_dir / EMB_SCP).is_file():
            return EmbeddingSet(emb_dir, old, 0)
        if old.get("nj") != nj:  # parts of another split: start afresh
            for part in emb_dir.glob("emb.*.*"):
                part.unlink()
    meta["nj"] = nj
    emb_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta_path, meta)

    parts = _split([(u, table[u]) for u in wanted], nj)
    pending = [j for j in range(1, nj + 1) if not (emb_dir / f"emb.{j}.scp").is_file()]
    total = sum(len(parts[j - 1]) for j in pending)
    written = 0
    bar = tqdm(total=total, desc="extract-embeddings", unit="utt", disable=not progress)
    args = (str(model_path), str(emb_dir), copies, policy, seed, device)
    try:
        if nj == 1 or len(pending) == 1:
            queue = _BarQueue(bar)
            for j in pending:
                written += _run_job(j, parts[j - 1], *args, None, queue)
        else:
            written = _run_parallel(pending, parts, args, bar)
    finally:
        bar.close()

    lines = []
    for j in range(1, nj + 1):
        lines += (emb_dir / f"emb.{j}.scp").read_text(encoding="utf-8").splitlines()
    expected = len(wanted) * (1 + copies)
    if len(lines) != expected:
        raise EmbeddingError(f"{emb_dir}: {len(lines)} embeddings written, expected {expected}")
    atomic_write_text(emb_dir / EMB_SCP, "\n".join(sorted(lines)) + "\n")
    return EmbeddingSet(emb_dir, meta, written * (1 + copies))


class _BarQueue:
    """Stands in for a multiprocessing queue when the job runs in this process."""

    def __init__(self, bar):
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.update(n)


def _run_parallel(pending: list[int], parts: list[list], args: tuple, bar) -> int:
    """One process per job (spawned: a forked torch can deadlock), one thread each."""
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(len(pending), mp_context=ctx) as pool:
        progress = manager.Queue()
        futures = [pool.submit(_run_job, j, parts[j - 1], *args, 1, progress) for j in pending]
        while not all(f.done() for f in futures):
            try:
                bar.update(progress.get(timeout=0.2))
            except queue_mod.Empty:
                pass
        while not progress.empty():
            bar.update(progress.get())
        return sum(f.result() for f in futures)


# ----------------------------------------------------------------------------- reading


def read_embeddings(emb_dir: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """All vectors of a finished embedding directory, keyed as written, and its ``emb.json``."""
    import kaldiio

    emb_dir = Path(emb_dir)
    scp = emb_dir / EMB_SCP
    if not scp.is_file():
        raise EmbeddingError(f"{scp}: not found (extract-embeddings has not finished in "
                             f"{emb_dir})")
    meta = json.loads((emb_dir / EMB_JSON).read_text(encoding="utf-8"))
    vectors = {key: np.asarray(mat, dtype=np.float32)
               for key, mat in kaldiio.load_scp_sequential(str(scp))}
    return vectors, meta
