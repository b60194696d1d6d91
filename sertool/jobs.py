"""The one job runner of the parallel stages (Kaldi's ``nj`` jobs with run.pl or slurm.pl).

A stage splits its work items into ``nj`` parts with :func:`split` and hands them to
:func:`run_jobs`, with the function that does one part. Job N (1-based, Kaldi's ``JOB``):

``OUT/log/<stage>.N.log``  its log: what the job function writes, and a traceback on failure
``OUT/.done.N``            written last, after the function returned (its outputs are in
                           place); holds the job's digest (a hash of its inputs). A rerun skips a
                           job whose marker matches and whose outputs exist, and redoes the
                           others from scratch: only failed or missing jobs run again.
``OUT/log/<stage>.slurm.pkl``  with ``--cmd slurm``: what each array task runs

Dispatch (``Cluster.cmd``):

``local``  the pending jobs in a process pool on this machine (spawned, not forked: a forked
           child of a process that has used torch can deadlock in its thread pool), one
           progress bar fed by the workers; one pending job runs in this process, and so do
           all of them, one after another, with ``pool=False`` (jobs that each use every core,
           such as training a fold). The workers end with the command (SIGTERM, SIGINT,
           SIGKILL, a crash: they must not go on writing beside a rerun); a worker killed on
           its own breaks the pool and is reported as a JobError naming the unfinished jobs
           (a rerun resumes).
``slurm``  one ``sbatch`` job array over the pending jobs only, the array index being the job
           number; each task runs ``python -m sertool.jobs OUT/log/<stage>.slurm.pkl``, i.e. the
           same job function as a local run, so the outputs are byte-identical. The command
           waits (polling ``squeue``) and then checks the done markers.

:func:`check_identity` is the one "this directory was made with another configuration"
refusal: stages compare the record they keep (frontend.json, emb.json, ...) with the current
one and name the keys that differ.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any, TypeVar

from sertool.config import differing_keys
from sertool.errors import SertoolError
from sertool.faults import hold_point, kill_point
from sertool.io_utils import atomic_write_text
from sertool.progress import progress_bar
from sertool.threads import capped

T = TypeVar("T")
CMDS = ("local", "slurm")
POLL_S = 1.0
SQUEUE_RETRIES = 120  # consecutive squeue failures (one per POLL_S) before giving up


class JobError(SertoolError, RuntimeError):
    """A job failed or did not finish; the message names its log file."""


class IdentityError(SertoolError, ValueError):
    """A directory was made with another configuration (see :func:`check_identity`)."""


# ----------------------------------------------------------------------------- splitting


def split(items: Sequence[T], nj: int, groups: Sequence[Hashable] | None = None
          ) -> list[list[T]]:
    """``items`` in at most ``nj`` contiguous parts of about equal size (never more parts than
    items: ``nj`` is capped). Items of one group (``groups[i]``, e.g. a conversation for
    conversation-level CMVN) are never split across parts; ``items`` must then be sorted by
    group. A part may come out empty when one group is larger than a part."""
    n = len(items)
    nj = max(1, min(nj, n))
    bounds = [round(k * n / nj) for k in range(nj + 1)]
    if groups is not None:  # move each boundary to the start of a group
        for k in range(1, nj):
            while 0 < bounds[k] < n and groups[bounds[k]] == groups[bounds[k] - 1]:
                bounds[k] += 1
    return [list(items[bounds[k]:max(bounds[k], bounds[k + 1])]) for k in range(nj)]


def digest(*parts: Any) -> str:
    """A job's digest: a hash of its JSON-able inputs (stored in its done marker)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- identity


def check_identity(directory: str | os.PathLike, record: str | os.PathLike,
                   current: Mapping, *, keys: Iterable[str] | None = None,
                   previous: Mapping | None = None, what: str = "with another configuration",
                   hint: str = "remove it or choose another directory",
                   error: type[Exception] = IdentityError) -> dict | None:
    """Refuse to mix outputs made differently in one directory.

    ``record`` is the JSON file that says how ``directory`` was made; ``previous`` its content
    when already read (or what its absence means). When it differs from ``current`` (in
    ``keys`` only, if given), raises ``error``: "DIR was made WHAT (KEYS differ; see RECORD);
    HINT". Returns the previous record, or None when the directory has none yet.
    """
    record = Path(record)
    if previous is None:
        if not record.is_file():
            return None
        with open(record, encoding="utf-8") as handle:
            previous = json.load(handle)
    changed = differing_keys(previous, current, keys)
    if changed:
        verb = "differs" if len(changed) == 1 else "differ"
        raise error(f"{directory} was made {what} ({', '.join(changed)} {verb}; see "
                    f"{record}); {hint}")
    return dict(previous)


# ----------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One part of a stage: job ``index`` (1-based) does ``items``."""

    index: int
    items: list
    digest: str = ""  # hash of everything its outputs depend on
    outputs: tuple[str, ...] = ()  # file names in OUT that must exist for it to count as done


@dataclass
class Cluster:
    """Where the jobs run: ``local`` (process pool) or ``slurm`` (one sbatch job array).

    The slurm fields are passed through to sbatch (``--partition``, ``--time``, ``--mem``,
    ``--gres=gpu:N``); None leaves the cluster's default.
    """

    cmd: str = "local"
    partition: str | None = None
    time: str | None = None
    mem: str | None = None
    gpus: int | None = None

    def __post_init__(self) -> None:
        if self.cmd not in CMDS:
            raise JobError(f"unknown --cmd {self.cmd!r} (known: {', '.join(CMDS)})")

    def sbatch_options(self) -> list[str]:
        options = []
        for name, value in (("partition", self.partition), ("time", self.time),
                            ("mem", self.mem)):
            if value:
                options.append(f"--{name}={value}")
        if self.gpus:
            options.append(f"--gres=gpu:{self.gpus}")
        return options


@dataclass
class RunResult:
    jobs: int  # all jobs of the stage
    skipped: list[int] = field(default_factory=list)  # already done before this run
    ran: list[int] = field(default_factory=list)  # done by this run
    results: dict[int, Any] = field(default_factory=dict)  # job -> return value (local only)


def marker_path(out_dir: str | os.PathLike, index: int) -> Path:
    return Path(out_dir) / f".done.{index}"


def log_path(out_dir: str | os.PathLike, stage: str, index: int) -> Path:
    return Path(out_dir) / "log" / f"{stage}.{index}.log"


def is_done(out_dir: str | os.PathLike, job: Job) -> bool:
    """Job ``job`` finished with these inputs: its marker holds its digest and every output
    is there (a marker alone could outlive an output removed by hand)."""
    marker = marker_path(out_dir, job.index)
    try:
        if marker.read_text(encoding="utf-8").strip() != job.digest:
            return False
    except FileNotFoundError:
        return False
    return all((Path(out_dir) / name).exists() for name in job.outputs)


def remove_stale_jobs(out_dir: str | os.PathLike, stage: str, templates: Iterable[str],
                      nj: int) -> None:
    """Remove the files of jobs numbered above ``nj`` (left by an earlier run with a larger
    ``nj``): each template names a job's file with ``JOB`` for its number (temporary names,
    with a leading dot or a ``.tmp`` suffix, are matched too); markers and logs included."""
    out_dir = Path(out_dir)
    patterns = [re.compile(r"\.?" + re.escape(t).replace("JOB", r"(\d+)") + r"(?:\.tmp)?")
                for t in [*templates, ".done.JOB"]]
    log_pattern = re.compile(re.escape(stage) + r"\.(\d+)\.log")
    for folder, pats in ((out_dir, patterns), (out_dir / "log", [log_pattern])):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            for pattern in pats:
                match = pattern.fullmatch(path.name)
                if match and int(match.group(1)) > nj:
                    path.unlink()
                    break


def _execute(func: Callable[..., Any], out_dir: str, stage: str, job: Job, args: tuple,
             queue: Any = None, append_log: bool = False) -> Any:
    """Run one job: ``func(index, items, *args, log=..., progress=...)``, then its marker.

    The same code runs in this process, in a pool worker and in a slurm array task."""
    marker = marker_path(out_dir, job.index)
    marker.unlink(missing_ok=True)
    log = log_path(out_dir, stage, job.index)
    log.parent.mkdir(parents=True, exist_ok=True)
    progress = queue.put if queue is not None else (lambda n: None)
    with open(log, "a" if append_log else "w", encoding="utf-8") as handle:
        try:
            result = func(job.index, job.items, *args, log=handle, progress=progress)
        except BaseException:
            # best effort: on a full disk the log cannot take the traceback either, and that
            # second failure must not replace the job's own error
            with contextlib.suppress(OSError):
                handle.write(traceback.format_exc())
            with contextlib.suppress(OSError):  # its flush may fail too: not at `with`'s exit
                handle.close()
            raise
    kill_point("job:before-marker")  # outputs in place, the job not yet marked done
    atomic_write_text(marker, job.digest + "\n")
    return result


def run_jobs(stage: str, out_dir: str | os.PathLike, func: Callable[..., Any],
             jobs: Sequence[Job], args: tuple = (), *, cluster: Cluster | None = None,
             progress: bool = True, desc: str | None = None, unit: str = "utt",
             threads_per_job: int | None = None, pool: bool = True) -> RunResult:
    """Run the jobs of ``stage`` that are not done yet; raise JobError naming the failed
    jobs' logs unless every job has its done marker at the end.

    ``func`` must be a module-level function (it is pickled into other processes); it gets
    ``(index, items, *args, log=<open text log>, progress=<callable(n_items)>)``.
    ``threads_per_job`` caps the math libraries' threads in a job that runs beside others.
    ``pool=False``: local jobs run one after another in this process (the first failure
    stops the run), not side by side in a process pool.
    """
    cluster = cluster or Cluster()
    out_dir = Path(out_dir)
    result = RunResult(len(jobs))
    todo = [job for job in jobs if not is_done(out_dir, job)]
    pending = {job.index for job in todo}
    result.skipped = [job.index for job in jobs if job.index not in pending]
    total = sum(len(job.items) for job in todo)
    bar = progress_bar(total=total, desc=desc or f"{stage} {out_dir.name}", unit=unit,
                       disable=not progress or total == 0)
    try:
        if cluster.cmd == "slurm" and todo:
            _run_slurm(stage, out_dir, func, todo, args, cluster, bar, threads_per_job)
        elif len(todo) == 1 or not pool:
            for job in todo:
                try:
                    result.results[job.index] = _execute(func, str(out_dir), stage, job, args,
                                                          _BarQueue(bar))
                except Exception as err:  # noqa: BLE001 - any job error: name its log
                    raise _failure(stage, out_dir, job.index, err) from err
        elif todo:
            result.results = _run_pool(stage, out_dir, func, todo, args, bar, threads_per_job)
    finally:
        bar.close()
    result.ran = [job.index for job in todo]
    unfinished = [job.index for job in jobs if not is_done(out_dir, job)]
    if unfinished:  # the final count check
        raise JobError(f"{stage}: {len(jobs) - len(unfinished)} of {len(jobs)} jobs done; "
                       f"{_name_logs(out_dir, stage, unfinished)}")
    return result


def run_stage(stage: str, out_dir: str | os.PathLike, func: Callable[..., Any],
              parts: Sequence[list], args: tuple, *, files: Sequence[str], identity: Any,
              cluster: Cluster | None = None, progress: bool = True, desc: str | None = None,
              unit: str = "utt", threads_per_job: int | None = None,
              error: type[Exception] = JobError) -> tuple[list[Job], RunResult]:
    """How a stage runs its ``parts`` (see :func:`split`): job N does ``parts[N-1]``, its
    digest covers its items and ``identity`` (what else its outputs depend on), its outputs
    are ``files`` (templates with ``JOB``). Files of jobs beyond ``len(parts)``, left by an
    earlier run with a larger ``nj``, are removed first. A failure is raised as ``error``."""
    remove_stale_jobs(out_dir, stage, files, len(parts))
    jobs = [Job(index, list(items), digest(items, identity),
                tuple(name.replace("JOB", str(index)) for name in files))
            for index, items in enumerate(parts, start=1)]
    try:
        return jobs, run_jobs(stage, out_dir, func, jobs, args, cluster=cluster,
                              progress=progress, desc=desc, unit=unit,
                              threads_per_job=threads_per_job)
    except JobError as err:
        raise error(str(err)) from err


def _name_logs(out_dir: Path, stage: str, indexes: Sequence[int]) -> str:
    logs = [str(log_path(out_dir, stage, i)) for i in indexes]
    more = f" (and {len(logs) - 3} more)" if len(logs) > 3 else ""
    return (f"job(s) {', '.join(map(str, indexes[:10]))} did not finish, see "
            f"{', '.join(logs[:3])}{more}")


class _BarQueue:
    """Stands in for the workers' queue when the job runs in this process."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.update(n)


def _limit_threads(threads: int | None) -> None:
    # Set before the job imports torch/numpy in the fresh process: n jobs of all-cores
    # each would oversubscribe the machine.
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = str(threads)


def _die_with_parent(parent: int) -> None:
    """Make this worker end when ``parent`` (the sertool command) ends in any way: SIGTERM,
    SIGKILL or a crash would otherwise leave it writing into the output directory, racing
    the rerun. On Linux the kernel does it (PR_SET_PDEATHSIG), elsewhere a thread watches."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    else:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)


def _init_worker(threads: int | None, parent: int) -> None:
    _die_with_parent(parent)
    _limit_threads(threads)


def _run_pool(stage: str, out_dir: Path, func: Callable[..., Any], todo: Sequence[Job],
              args: tuple, bar: Any, threads: int | None) -> dict[int, Any]:
    # spawn, not fork: a forked child of a process that has used torch can deadlock
    context = get_context("spawn")
    parent = os.getpid()
    manager = SyncManager(ctx=context)  # the progress queue's process: it ends with us too
    manager.start(_die_with_parent, (parent,))
    queue = manager.Queue()
    results: dict[int, Any] = {}
    failures: list[tuple[int, BaseException]] = []
    # more processes than CPUs only wait for each other: the other jobs queue (same outputs)
    workers = capped(len(todo), f"{len(todo)} {stage} jobs (--nj)",
                     then="running {n} at a time, the others wait")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=_init_worker, initargs=(threads, parent))
    try:
        futures = {job.index: pool.submit(_execute, func, str(out_dir), stage, job, args,
                                          queue) for job in todo}
        while not all(f.done() for f in futures.values()):
            _drain(queue, bar)
            time.sleep(0.05)
        _drain(queue, bar)
        for index, future in futures.items():
            error = future.exception()
            if error is None:
                results[index] = future.result()
            else:
                failures.append((index, error))
    except BaseException:  # Ctrl-C or an error here: stop the jobs now, do not wait for them
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        manager.shutdown()
    if any(isinstance(error, BrokenProcessPool) for _, error in failures):
        raise _died(stage, out_dir, [job.index for job in todo if not is_done(out_dir, job)])
    if failures:
        index, error = failures[0]
        raise _failure(stage, out_dir, index, error, len(failures)) from error
    return results


def _failure(stage: str, out_dir: Path, index: int, error: BaseException,
             n_failed: int = 1) -> JobError:
    more = f" ({n_failed} jobs failed)" if n_failed > 1 else ""
    return JobError(f"{stage}: job {index} failed: {error}; see "
                    f"{log_path(out_dir, stage, index)}{more}")


def _died(stage: str, out_dir: Path, unfinished: Sequence[int]) -> JobError:
    """A worker process was killed (the out-of-memory killer, kill -9): the pool is broken
    and stops every job it had not finished; the finished ones keep their done markers."""
    return JobError(f"{stage}: a job process was killed (by a signal, e.g. the out-of-memory "
                    f"killer); {_name_logs(out_dir, stage, unfinished)}; the finished "
                    "jobs are kept: rerun the same command to resume")


def _drain(queue: Any, bar: Any) -> None:
    n = 0
    while not queue.empty():
        n += queue.get_nowait()
    if n:
        bar.update(n)


# ----------------------------------------------------------------------------- slurm


def _slurm_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise JobError(f"--cmd slurm needs Slurm's {name} on PATH (not found)")
    return path


def _run_slurm(stage: str, out_dir: Path, func: Callable[..., Any], todo: Sequence[Job],
               args: tuple, cluster: Cluster, bar: Any, threads: int | None) -> None:
    """One sbatch job array over the pending jobs (array index = job number); wait for it."""
    sbatch, squeue = _slurm_binary("sbatch"), _slurm_binary("squeue")
    spec = out_dir / "log" / f"{stage}.slurm.pkl"
    spec.parent.mkdir(parents=True, exist_ok=True)
    tmp = spec.with_name(spec.name + ".tmp")
    with open(tmp, "wb") as handle:
        pickle.dump({"func": func, "out_dir": str(out_dir), "stage": stage, "args": args,
                     "threads": threads, "jobs": {job.index: job for job in todo}}, handle)
    os.replace(tmp, spec)
    for job in todo:  # the task appends to its log (slurm opens it first): start it empty
        marker_path(out_dir, job.index).unlink(missing_ok=True)
        log_path(out_dir, stage, job.index).unlink(missing_ok=True)
    command = [sbatch, "--parsable", f"--job-name=sertool-{stage}",
               f"--array={','.join(str(job.index) for job in todo)}",
               f"--output={out_dir / 'log' / stage}.%a.log", "--open-mode=append",
               f"--chdir={os.getcwd()}", *cluster.sbatch_options(),
               "--wrap=exec " + shlex.join([sys.executable, "-m", "sertool.jobs", str(spec)])]
    submitted = subprocess.run(command, capture_output=True, text=True)
    if submitted.returncode != 0:
        raise JobError(f"{stage}: sbatch failed ({submitted.stderr.strip()}); command: "
                       + " ".join(command))
    array_id = submitted.stdout.strip().split(";")[0]
    waiting = {job.index: job for job in todo}
    try:
        with _sigterm_as_interrupt():  # a stopped command cancels its array, as Ctrl-C does
            _wait_for_array(stage, out_dir, array_id, waiting, squeue, bar)
    except KeyboardInterrupt:
        subprocess.run([_slurm_binary("scancel"), array_id], check=False)
        raise
    for index in [i for i, job in waiting.items() if is_done(out_dir, job)]:
        bar.update(len(waiting.pop(index).items))
    if waiting:
        raise JobError(f"{stage}: slurm array job {array_id}: "
                       f"{_name_logs(out_dir, stage, sorted(waiting))}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler stopping the submitting job) raises KeyboardInterrupt
    here, so that the caller's cleanup runs; the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_for_array(stage: str, out_dir: Path, array_id: str, waiting: dict[int, Job],
                    squeue: str, bar: Any) -> None:
    """Poll squeue until no task of the array is left; done jobs leave ``waiting``."""
    errors = 0
    while True:
        for index in [i for i, job in waiting.items() if is_done(out_dir, job)]:
            bar.update(len(waiting.pop(index).items))
        queued = subprocess.run([squeue, "-h", "-r", "-j", array_id, "-o", "%i"],
                                capture_output=True, text=True)
        if queued.returncode == 0 and not queued.stdout.strip():
            break  # no task left in the queue
        if queued.returncode != 0:
            if "invalid job id" in queued.stderr.lower():
                break  # slurm has already forgotten the array: it is over
            errors += 1  # a busy controller times out now and then: keep asking
            if errors > SQUEUE_RETRIES:
                raise JobError(f"{stage}: squeue keeps failing ({queued.stderr.strip()});"
                               f" array job {array_id} may still be running")
        else:
            errors = 0
        time.sleep(POLL_S)


def task_main(argv: Sequence[str]) -> int:
    """Entry point of one slurm array task: ``python -m sertool.jobs SPEC``."""
    if len(argv) != 1 or "SLURM_ARRAY_TASK_ID" not in os.environ:
        print("usage: python -m sertool.jobs OUT/log/STAGE.slurm.pkl (inside a slurm array "
              "task: SLURM_ARRAY_TASK_ID names the job)", file=sys.stderr)
        return 2
    with open(argv[0], "rb") as handle:
        spec = pickle.load(handle)
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    hold_point(index)  # a test hook: lets a test scancel a running task
    _limit_threads(spec["threads"])
    _execute(spec["func"], spec["out_dir"], spec["stage"], spec["jobs"][index], spec["args"],
             append_log=True)
    return 0


if __name__ == "__main__":
    sys.exit(task_main(sys.argv[1:]))
