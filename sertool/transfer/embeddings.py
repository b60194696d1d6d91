"""Pooled trunk statistics per utterance and per SpecAugment-ed copy: ``extract-embeddings``.

With the trunk frozen (the paper's transfer setting) only the new FC layers learn, and they
see nothing but the trunk's pooled statistics (mean ‖ std over time). Running the trunk once
per utterance and per augmented copy, and training the FC layers on the stored vectors,
gives the same model as running the frozen trunk in every epoch of every fold, at a fraction
of the cost (the full ResNet34 at 128 mels runs ~3.6 utterances/s on a 2-core CPU).

The output directory's layout and keys belong to :mod:`sertool.transfer.embdir`. The trunk
runs in eval mode on whole, variable-length segments (no chunking, no padding), the original
and its copies in one batch (same length, and eval-mode batch norm treats samples
independently).
Copy k of an utterance is masked with a generator seeded from (seed, utt, k): the same
vectors come out whatever ``nj`` is and however often a job is rerun.

A job writes its ark, then its scp under a temporary name renamed into place, then its done
marker ``.done.<j>`` (sertool.jobs runs the jobs, here or on a cluster; one log each in
``log/extract-embeddings.<j>.log``): a job with its marker and scp is finished and a rerun
skips it; a killed job is redone. A directory made with another model, feature set, policy,
copies or seed is refused, not mixed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import kaldiio
import numpy as np
import torch

from sertool.faults import kill_point
from sertool.frontend.featdir import FEATS_SCP, FeatDir
from sertool.io_utils import atomic_replace_file, atomic_write_json, output_errors, sha256_of
from sertool.jobs import Cluster, check_identity, run_stage, split
from sertool.nnet.checkpoint import load_model
from sertool.nnet.data import load_feats
from sertool.nnet.device import resolve_device
from sertool.nnet.specaugment import POLICIES, SpecAugment
from sertool.transfer.embdir import (
    AUG_SEP,
    EMB_JSON,
    EMB_SCP,
    JOB_FILES,
    EmbeddingError,
    aug_key,
    write_index,
)

STAGE = "extract-embeddings"  # log/extract-embeddings.JOB.log


def copy_seed(seed: int, utt: str, k: int) -> int:
    digest = hashlib.sha256(f"{seed}:{utt}:{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch seeds must fit in int64


@dataclass
class EmbeddingSet:
    """What ``extract_embeddings`` wrote."""

    emb_dir: Path
    meta: dict
    n_written: int  # entries computed now (0 when everything was already there)

    def summary(self) -> str:
        meta, n = self.meta, self.meta["n_utts"] * (1 + self.meta["copies"])
        return (f"{self.emb_dir}: {meta['n_utts']} utterances x {1 + meta['copies']} "
                f"({meta['policy']}) = {n} vectors of {meta['pooled_dim']} dims; "
                f"{self.n_written} computed now")


# ----------------------------------------------------------------------------- one job


def _augmenter(policy: str) -> SpecAugment:
    return SpecAugment.from_policy(policy)


def _run_job(index: int, entries: list[tuple[str, str]], model_path: str, out_dir: str,
             copies: int, policy: str, seed: int, device: str, all_layers: bool = False, *,
             log: TextIO, progress: Callable[[int], None]) -> int:
    """Compute and write job ``index``'s embeddings; returns how many utterances it did.
    Run by sertool.jobs (here, in a pool worker or in a slurm task)."""


    device = resolve_device(device)  # on the machine the job runs on (auto: its best)
    log.write(f"# job {index}: {len(entries)} utterances x {1 + copies}, model {model_path}, "
              f"device {device}, {torch.get_num_threads()} thread(s)\n")
    model, _ = load_model(model_path, device)
    model.eval()
    augment = _augmenter(policy) if copies else None
    pool = model.trunk.pooled_layers if all_layers else model.pooled
    out = Path(out_dir)
    ark, scp = out / f"emb.{index}.ark", out / f"emb.{index}.scp"
    scp_tmp = out / f".emb.{index}.scp.tmp"
    done = 0
    # a failure frees what the job wrote (a full disk gets its space back); no marker, so a
    # rerun redoes the job
    with (output_errors(ark, ark, scp_tmp),
          kaldiio.WriteHelper(f"ark,scp:{ark},{scp_tmp}") as writer):
        for utt, rxfile in entries:
            feats = torch.tensor(load_feats(rxfile, utt))  # a copy: kaldiio may share memory
            batch = [feats]
            for k in range(1, copies + 1):
                gen = torch.Generator().manual_seed(copy_seed(seed, utt, k))
                batch.append(augment(feats, generator=gen))
            with torch.inference_mode():
                pooled = pool(torch.stack(batch).to(device)).cpu().numpy()
            if not np.isfinite(pooled).all():  # finite features, weights that overflow
                raise EmbeddingError(f"utterance {utt} ({rxfile}): the model {model_path} "
                                     "gives NaN or infinite embeddings for it")
            writer(utt, pooled[0].astype(np.float32))
            for k in range(1, copies + 1):
                writer(aug_key(utt, k), pooled[k].astype(np.float32))
            done += 1
            progress(1)
            kill_point("extract-embeddings:after-utt")  # the archive half-written
    with open(ark, "rb") as handle:
        os.fsync(handle.fileno())
    kill_point("extract-embeddings:after-ark")  # the archive complete, no scp
    atomic_replace_file(scp_tmp, scp)
    log.write(f"# done: {done} utterances\n")
    return done


# ----------------------------------------------------------------------------- the stage


def extract_embeddings(feat_dir: str | os.PathLike | FeatDir, model_path: str | os.PathLike,
                       emb_dir: str | os.PathLike, *, copies: int = 2,
                       policy: str = "conservative", seed: int = 0, nj: int = 1,
                       device: str = "cpu", utts: Sequence[str] | None = None,
                       progress: bool = True, cluster: Cluster | None = None,
                       all_layers: bool = False) -> EmbeddingSet:
    """Write the pooled statistics of every utterance of ``feat_dir`` (or of ``utts``) and of
    ``copies`` SpecAugment-ed copies of each (policy ``none``: originals only) to ``emb_dir``.

    ``nj`` is capped at the number of utterances; ``cluster`` says where the jobs run
    (default: this machine). ``all_layers``: a trunk with several hidden layers (Whisper)
    stores every layer's statistics, layer 0 first (the head picks or mixes them).
    """


    if cluster is None or cluster.cmd == "local":  # a Slurm node checks its own (_run_job)
        device = resolve_device(device)
    if policy not in POLICIES:
        raise EmbeddingError(f"unknown augmentation policy {policy!r} (known: "
                             f"{', '.join(POLICIES)})")
    if copies < 0 or nj < 1:
        raise EmbeddingError(f"copies must be >= 0 and nj >= 1 (got {copies}, {nj})")
    if policy == "none":
        copies = 0
    features = FeatDir.open(feat_dir)
    model_path, emb_dir = Path(model_path), Path(emb_dir).resolve()
    feats_scp = features.path / FEATS_SCP
    table = features.feats
    wanted = sorted(table) if utts is None else sorted(set(utts))
    absent = features.missing(wanted)
    if absent:
        raise EmbeddingError(f"{feats_scp}: {len(absent)} utterance(s) have no features, "
                             f"e.g. {absent[0]!r}")
    if not wanted:
        raise EmbeddingError(f"{feats_scp}: no utterances")
    if not model_path.is_file():
        raise EmbeddingError(f"{model_path}: model not found")
    model, model_meta = load_model(model_path, "cpu")
    features.check_model(model_meta, model_path)
    if copies and not getattr(model.trunk, "spec_augment", True):
        # SpecAugment masks mel bins and 10 ms frames; a waveform has neither (a "frequency"
        # mask over its one column would blank the whole utterance)
        reads = getattr(model.trunk, "reads", "the waveform")
        raise EmbeddingError(f"{model_path}: its {model.model_conf['type']} trunk reads "
                             f"{reads}, which SpecAugment ({policy}) does not apply to: set "
                             "augment.policy = none (finetune --set augment.policy=none)")
    feat_dim = int(model_meta.get("feat_dim", features.dim))
    if features.dim != feat_dim:
        raise EmbeddingError(f"{feats_scp}: features of {features.dim} dims, the model "
                             f"{model_path} expects {feat_dim}")
    pooled_dim = int(model.pooled_dim)
    layers = None
    if all_layers:
        if not hasattr(model.trunk, "pooled_layers"):
            raise EmbeddingError(f"{model_path}: its {model.model_conf['type']} trunk has one "
                                 "pooled output, not several hidden layers")
        n_states = int(model.trunk.n_hidden_states)
        pooled_dim = 2 * int(model.trunk.encoder.d_model) * n_states
        layers = {"n": n_states, "dim": pooled_dim // n_states,
                  "order": "hidden state 0 (the first block's input) first"}
    del model

    meta = {
        "model": str(model_path),
        "model_sha256": sha256_of(model_path),
        "feat_dir": str(features.path.resolve()),
        "feats_scp_sha256": sha256_of(feats_scp),
        "policy": policy,
        "copies": copies,
        "seed": seed,
        "utts_sha256": hashlib.sha256("\n".join(wanted).encode()).hexdigest(),
        "n_utts": len(wanted),
        "pooled_dim": pooled_dim,
        "feat_dim": feat_dim,
        "keys": f"<utt> = original segment; <utt>{AUG_SEP}k = augmented copy k (1..copies)",
        **({"layers": layers} if layers else {}),
    }
    # "layers" only in a directory of every layer's statistics (absent, it matches the others)
    identity = ("model_sha256", "feats_scp_sha256", "policy", "copies", "seed", "utts_sha256",
                "layers")
    meta_path = emb_dir / EMB_JSON
    old = check_identity(emb_dir, meta_path, meta, keys=identity, what="differently",
                         error=EmbeddingError)
    if old is not None and (emb_dir / EMB_SCP).is_file():
        return EmbeddingSet(emb_dir, old, 0)
    parts = split([(u, table[u]) for u in wanted], nj)
    meta["nj"] = len(parts)  # nj capped at the number of utterances
    emb_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta_path, meta)
    jobs, ran = run_stage(STAGE, emb_dir, _run_job, parts,
                          (str(model_path), str(emb_dir), copies, policy, seed, device,
                           all_layers),
                          files=JOB_FILES, identity={k: meta[k] for k in identity if k in meta},
                          cluster=cluster, progress=progress, desc="extract-embeddings",
                          threads_per_job=1 if len(parts) > 1 else None,
                          error=EmbeddingError)
    written = sum(len(jobs[i - 1].items) for i in ran.ran)

    write_index(emb_dir, [job.index for job in jobs], len(wanted) * (1 + copies))
    return EmbeddingSet(emb_dir, meta, written * (1 + copies))
