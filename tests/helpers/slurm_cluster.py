"""A real single-node Slurm cluster for the ``slurm`` tests (munged, slurmctld, slurmd).

Everything lives in one temporary directory (key, sockets, state, logs, slurm.conf on
private ports), so it neither needs nor touches a system-wide Slurm or munge. The fixture
``slurm`` starts it once per session and points SLURM_CONF at it; it skips when the binaries
are absent or the daemons do not come up, except with SERTOOL_REQUIRE_SLURM=1 (then it fails).
Install with: apt-get install -y slurm-wlm munge
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_ENV = "SERTOOL_REQUIRE_SLURM"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "scontrol")


class ClusterUnavailable(RuntimeError):
    pass


def free_port() -> int:
    """A TCP port nobody listens on now (daemons and rendezvous of the tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_line() -> str:
    """This machine as slurmd sees it (real CPU count and memory)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("NodeName="))
    return line + " State=UNKNOWN"


def write_conf(root: Path, munge_socket: Path) -> Path:
    node = _node_line()
    name = node.split()[0].split("=", 1)[1]
    (root / "state").mkdir()
    (root / "spool").mkdir()
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=sertooltest
SlurmctldHost={name}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'slurmctld.log'}
SlurmdLogFile={root / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
{node}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _wait(predicate, seconds: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tail = "\n".join(f"--- {p}\n" + (p.read_text(errors="replace")[-2000:] if p.exists()
                                       else "(no log)") for p in logs)
    raise ClusterUnavailable(f"{what} did not come up within {seconds:.0f} s\n{tail}")


def start(root: Path) -> dict[str, str]:
    """Start munged, slurmctld and slurmd under ``root``; returns the environment to use."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise ClusterUnavailable(f"Slurm binaries not found: {', '.join(missing)} "
                                 "(apt-get install -y slurm-wlm munge)")
    key, munge_socket = root / "munge.key", root / "munge.sock"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    subprocess.run(["munged", "--force", f"--socket={munge_socket}", f"--key-file={key}",
                    f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
                    f"--seed-file={root / 'munged.seed'}"], check=False,
                   capture_output=True)
    _wait(munge_socket.exists, 10, "munged", [root / "munged.log"])
    conf = write_conf(root, munge_socket)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for daemon in ("slurmctld", "slurmd"):
        subprocess.run([daemon, "-f", str(conf)], env=env, check=False, capture_output=True)

    def idle() -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                             text=True)
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated")

    _wait(idle, 30, "the Slurm node", [root / "slurmctld.log", root / "slurmd.log"])
    return env


def stop(root: Path, env: dict[str, str] | None) -> None:
    if env is not None:
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True, check=False)
    for name in ("slurmd.pid", "slurmctld.pid", "munged.pid"):  # what scontrol left
        pid_file = root / name
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The environment (SLURM_CONF) of a running single-node cluster; set in os.environ too,
    so that sertool's sbatch/squeue calls reach it."""
    root = tmp_path_factory.mktemp("slurm")
    env = None
    try:
        env = start(root)
    except (ClusterUnavailable, subprocess.CalledProcessError, OSError) as err:
        stop(root, env)
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but no Slurm cluster: {err}")
        pytest.skip(f"no Slurm cluster ({err}); set {REQUIRE_ENV}=1 to make this a failure")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    try:
        yield env
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        stop(root, env)
