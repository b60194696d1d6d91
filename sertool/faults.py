"""Test hooks: named kill points, where a crash would hurt (tests/stages/test_kill_points.py), and a
job hold (tests/cluster/test_jobs_slurm.py).

``SERTOOL_KILL_AT=NAME`` makes the process SIGKILL itself the first time it reaches
``kill_point(NAME)``; ``SERTOOL_KILL_AT=NAME:N`` at its N-th hit. Hits are counted per process
(each spawned job counts its own). Before dying it prints ``sertool: kill point NAME`` on
stderr, so a test can tell this death from any other. SIGKILL, not an exception: nothing runs
after it (no ``finally``, no atexit, no flush), exactly as with the OOM killer or a lost node.

``SERTOOL_HOLD_JOB=3,5`` makes the jobs of those numbers wait forever before they start
(:func:`hold_point`), so that a test can stop or cancel a running Slurm array task.

Unset (every real run) a kill point costs one dictionary lookup. The names in use are
:data:`KILL_POINTS`; each call site says in a comment why a crash there matters.
"""

from __future__ import annotations

import os
import signal
import sys
import time

KILL_ENV = "SERTOOL_KILL_AT"
HOLD_ENV = "SERTOOL_HOLD_JOB"

# Every kill point in the code (a test checks that each is reached by some kill test).
KILL_POINTS = (
    "atomic:before-rename",         # io_utils.atomic_open: temp file complete, not renamed
    "atomic-dir:between-renames",   # io_utils.atomic_dir: old dir moved aside, new not in place
    "prepare:after-data-files",     # corpora.prepare: wav.scp... written, folds not yet
    "job:before-marker",            # jobs: a job's outputs renamed, its done marker not written
    "extract-feats:after-utt",      # a job's archive half-written
    "extract-feats:after-ark",      # a job's archive renamed, its scp not yet
    "extract-feats:after-feats-scp",  # feats.scp merged, utt2num_frames... not yet
    "checkpoint:before-rename",     # a checkpoint's temp file written, not renamed
    "train:after-step",             # mid-epoch, after the step (and its partial.pt, if due)
    "train:after-epoch-checkpoint",  # model_N.pt written, train_log.csv not yet
    "train:before-final",           # every epoch done, final.pt not yet
    "extract-embeddings:after-utt",  # a job's archive half-written
    "extract-embeddings:after-ark",  # a job's archive complete, its scp not renamed
    "extract-embeddings:before-emb-scp",  # every job done, emb.scp not written
    "finetune:head-epoch",          # mid-way through training a fold's head
    "finetune:after-model",         # a fold's model.pt written, its bundle not yet
    "finetune:before-posteriors",   # a fold's bundle written, posteriors.tsv (its marker) not
    "finetune:before-fold",         # at a fold job's start: the folds before it done
    "score:after-png",              # a confusion PNG written, the rest of the report not yet
    "predict:before-file",          # some files predicted, the output not written
)

_hits: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process here if ``SERTOOL_KILL_AT`` names this point (and hit)."""
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    point, _, nth = wanted.rpartition(":")
    if not nth.isdigit():  # "NAME" (names hold a colon themselves), not "NAME:N"
        point, nth = wanted, "1"
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth):
        sys.stderr.write(f"sertool: kill point {wanted}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def hold_point(job: int) -> None:
    """Wait forever here if ``SERTOOL_HOLD_JOB`` lists job number ``job`` (comma-separated)."""
    if str(job) in os.environ.get(HOLD_ENV, "").split(","):
        while True:
            time.sleep(60)
