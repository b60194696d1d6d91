"""The embedding directory: the contract between ``extract-embeddings`` (its writer,
sertool.transfer.embeddings) and the frozen-trunk folds of ``finetune`` (its reader).

Layout::

    emb.json          how it was made: model (path and SHA-256), feature dir (feats.scp
                      SHA-256), policy, copies, seed, pooled dimension, counts
    emb.<j>.ark/.scp  job j's float32 vectors (Kaldi binary ark, read with kaldiio)
    .done.<j>         job j's done marker (sertool.jobs)
    emb.scp           every job's entries, written last: the directory is complete

Keys: ``<utt>`` is the original whole segment, ``<utt>#aug1`` ... ``<utt>#aug<N>`` its N
SpecAugment-ed copies (``#`` never occurs in a Kaldi utterance id).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from sertool.errors import SertoolError
from sertool.io_utils import OpenedDir, atomic_write_text, read_json_object

EMB_JSON = "emb.json"
EMB_SCP = "emb.scp"
AUG_SEP = "#aug"
JOB_FILES = ("emb.JOB.ark", "emb.JOB.scp")


class EmbeddingError(SertoolError, ValueError):
    """Bad input or an incompatible existing output directory (the message names the file)."""


def aug_key(utt: str, k: int) -> str:
    """Key of the k-th augmented copy (k >= 1) of ``utt``."""
    return f"{utt}{AUG_SEP}{k}"


def keys_of(utts: Sequence[str], copies: int) -> list[str]:
    """The keys of ``utts``, each followed by those of its ``copies`` augmented copies."""
    return [k for u in utts for k in [u, *(aug_key(u, j) for j in range(1, copies + 1))]]


def utt_of(key: str) -> str:
    """The utterance of a key (itself, or the one a copy was made of)."""
    return key.split(AUG_SEP)[0]


def write_index(emb_dir: Path, job_indices: Sequence[int], expected: int) -> None:
    """emb.scp from the finished jobs' indices, sorted: the directory is complete. Refused
    unless they hold ``expected`` entries."""
    from sertool.faults import kill_point

    lines: list[str] = []
    for index in job_indices:
        lines += (emb_dir / f"emb.{index}.scp").read_text(encoding="utf-8").splitlines()
    if len(lines) != expected:
        raise EmbeddingError(f"{emb_dir}: {len(lines)} embeddings written, expected {expected}")
    kill_point("extract-embeddings:before-emb-scp")  # every job done, the set not complete
    atomic_write_text(emb_dir / EMB_SCP, "\n".join(sorted(lines)) + "\n")


class EmbeddingDir(OpenedDir):
    """A finished embedding directory opened for reading (see
    :class:`sertool.io_utils.OpenedDir`): emb.json at once, the vectors when first asked for;
    no vectors travel to a cluster task."""

    @classmethod
    def open(cls, path: str | os.PathLike) -> EmbeddingDir:
        emb_dir = cls(path)
        emb_dir.meta  # noqa: B018 - an unfinished directory is refused now
        return emb_dir

    @cached_property
    def meta(self) -> dict:
        """emb.json: how the vectors were made."""
        scp = self.path / EMB_SCP
        if not scp.is_file():
            raise EmbeddingError(f"{scp}: not found (extract-embeddings has not finished in "
                                 f"{self.path})")
        return read_json_object(self.path / EMB_JSON, EmbeddingError,
                                f"extract-embeddings has not finished in {self.path}")

    @cached_property
    def vectors(self) -> dict[str, np.ndarray]:
        """Every vector, keyed as written (float32)."""
        import kaldiio

        return {key: np.asarray(mat, dtype=np.float32)
                for key, mat in kaldiio.load_scp_sequential(str(self.path / EMB_SCP))}
