"""How many CPU threads and processes sertool's work may use: the one cap, and the one rule for
small models.

:func:`available_cpus` is what this process may really use: its CPU affinity (taskset, a
cpuset), its cgroup CPU quota (a container's or a Slurm job's ``cpu.max``, or cgroup v1's
``cpu.cfs_quota_us``) and ``SLURM_CPUS_PER_TASK``, whichever is smallest. Every count that
sertool starts threads or processes by goes through :func:`capped`: ``--threads`` (torch's
intra-op threads), the local pool's concurrent ``--nj`` jobs, DataLoader ``num_workers``. A
larger request is capped with one warning line, not refused: the same recipe (``--nj 8``,
``--threads 16``) then runs on a laptop, a 2-CPU container and a 64-core node; more threads
than cores only make every one of them wait (torch starts a request of 100000 at once).

A *small* model (:func:`is_small`) trains on one thread unless threads were asked for: its
steps are a few small matrix products, and on cores shared with other jobs a second thread
costs more in waiting for each other than it saves (the RAVDESS frozen-trunk head: 0.04-0.17 s
a step with 2 threads, 0.01 s with 1, docs/RESULTS.md). The ask is ``--threads N`` or
``SERTOOL_THREADS=N`` (the option puts it in the environment, so pool workers and Slurm tasks
see it too).

The thread count is no configuration key, although it changes a trained model's last bits
(sums taken in another order, which SGD then carries on: a RAVDESS head's posteriors differed
by up to 0.07 between 1 and 2 threads, docs/RESULTS.md); each count is reproducible run to
run. It never was one - PyTorch's default, one thread per core, made results depend on the
machine - and a new key would change every experiment's identity. One thread for small models
makes the head's result the same whatever the core count.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sertool.errors import SertoolError
from sertool.progress import write_line

if TYPE_CHECKING:
    import torch

THREADS_ENV = "SERTOOL_THREADS"
THREADS_OPTION = "--threads"  # the CLI option whose value THREADS_ENV carries
# Small: a model of only fully connected layers (its work per example is its parameter count)
# with fewer parameters than this; the frozen-trunk heads are 0.1-0.5 M.
SMALL_MODEL_PARAMS = 1_000_000
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")

_warned: set[str] = set()


class ThreadsError(SertoolError, ValueError):
    """A thread count in the environment that is not a whole number >= 1."""


@dataclass(frozen=True)
class CpuLimit:
    """How many CPUs this process may use, and what says so (for the warning)."""

    cpus: int
    source: str


def available_cpus() -> CpuLimit:
    """The CPUs this process may use: the smallest of its affinity, its cgroup's CPU quota
    (rounded down, at least 1) and ``SLURM_CPUS_PER_TASK``."""
    try:
        limits = [CpuLimit(len(os.sched_getaffinity(0)), "CPU affinity")]
    except AttributeError:  # not Linux
        limits = [CpuLimit(os.cpu_count() or 1, "CPU count")]
    quota = _cgroup_quota()
    if quota is not None:
        cpus, path = quota
        limits.append(CpuLimit(max(1, math.floor(cpus)), f"CPU quota {cpus:g} in {path}"))
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) >= 1:
        limits.append(CpuLimit(int(slurm), f"SLURM_CPUS_PER_TASK={slurm}"))
    return min(limits, key=lambda limit: limit.cpus)


def _cgroup_quota() -> tuple[float, Path] | None:
    """The tightest CPU quota (in CPUs) of this process's cgroup and its ancestors, and the
    file that sets it; None without one ("max", -1, no cgroup file system)."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    found: list[tuple[float, Path]] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one tree, cpu.max = "QUOTA PERIOD" or "max PERIOD"
            base, names = CGROUP_ROOT, ("cpu.max",)
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own tree
            base, names = CGROUP_ROOT / controllers, ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        # a container sees its own cgroup as the root: its path may not exist below base
        folder = base / path.lstrip("/")
        for directory in (folder, *folder.parents):
            if not directory.is_relative_to(base):
                break
            quota = _read_quota(directory, names)
            if quota is not None:
                found.append((quota, directory / names[0]))
    return min(found, key=lambda q: q[0]) if found else None


def _read_quota(directory: Path, names: tuple[str, ...]) -> float | None:
    try:
        fields = [(directory / name).read_text().split() for name in names]
    except OSError:
        return None
    values = fields[0] if len(fields) == 1 else [fields[0][0], fields[1][0]]
    try:
        quota, period = float(values[0]), float(values[1])
    except (ValueError, IndexError):  # "max": no quota
        return None
    return quota / period if quota > 0 and period > 0 else None


def capped(requested: int, what: str, *, then: str = "using {n}") -> int:
    """``requested`` threads or processes, at most :func:`available_cpus`; a larger request
    is capped with one warning line (said once): "sertool: warning: WHAT: more
    than the N CPU(s) this process may use (why); THEN". ``what`` names the option and
    its value (``--threads 64``), ``then`` what happens instead, with ``{n}`` for the cap."""
    limit = available_cpus()
    if requested <= limit.cpus:
        return requested
    line = (f"sertool: warning: {what}: more than the {limit.cpus} CPU(s) this process may "
            f"use ({limit.source}); " + then.format(n=limit.cpus))
    if line not in _warned:  # once: a trainer asks every epoch
        _warned.add(line)
        write_line(line)
    return limit.cpus


def requested() -> int | None:
    """The thread count asked for (``--threads`` or ``SERTOOL_THREADS``), or None."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ThreadsError(f"{THREADS_ENV}={value!r}: must be a whole number of threads >= 1")
    return int(value)


@contextlib.contextmanager
def torch_threads(asked: int | None) -> Iterator[int]:
    """Run a command with torch's threads set: ``asked`` capped at :func:`available_cpus`, or
    without a request PyTorch's default capped the same way (silently: only a quota or Slurm
    limit makes it smaller). The request is put in ``SERTOOL_THREADS`` for what runs inside
    (the small-model rule, pool workers, Slurm tasks); both come back afterwards."""
    import torch

    before, env_before = torch.get_num_threads(), os.environ.get(THREADS_ENV)
    cpus = available_cpus().cpus
    number = (capped(asked, f"{THREADS_OPTION} {asked}") if asked is not None
              else min(before, cpus))
    if torch.get_num_interop_threads() > cpus:
        with contextlib.suppress(RuntimeError):  # settable only before inter-op work began
            torch.set_num_interop_threads(cpus)
    torch.set_num_threads(number)
    if asked is not None:
        os.environ[THREADS_ENV] = str(asked)
    try:
        yield number
    finally:
        torch.set_num_threads(before)
        if env_before is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = env_before


def is_small(model: torch.nn.Module) -> bool:
    """Whether ``model`` is small (see :data:`SMALL_MODEL_PARAMS`): fewer parameters than
    that, all of them in fully connected, normalisation or activation layers (a convolutional
    or recurrent network does far more work per parameter and keeps its threads)."""
    import torch

    dense = (torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.LayerNorm, torch.nn.PReLU)
    owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    count = sum(p.numel() for p in model.parameters())
    return count < SMALL_MODEL_PARAMS and all(isinstance(m, dense) for m in owners)


@contextlib.contextmanager
def training_threads(model: torch.nn.Module) -> Iterator[int]:
    """Train ``model`` with the threads asked for (``SERTOOL_THREADS``, capped), else one
    thread if it is small, else as torch is set; torch's setting comes back afterwards (a
    finetune run trains many heads, and other work, in one process)."""
    import torch

    before = torch.get_num_threads()
    asked = requested()
    number = (capped(asked, f"{THREADS_OPTION} {asked}") if asked is not None
              else 1 if is_small(model) else before)
    torch.set_num_threads(number)
    try:
        yield number
    finally:
        torch.set_num_threads(before)
