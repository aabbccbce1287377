"""A real SLURM cluster on this machine for the job-script tests: munged, slurmctld and two slurmd (n1, n2).

SLURM is Debian's `slurm-wlm` (installed with apt-get when missing; the tests skip with the reason when it
cannot be). Everything the cluster writes (config, munge key, state, spool, logs) lives under one temporary
directory; the daemons are children of the test process and everything they started is gone at the end.

Why each setting (measured on a 2-core machine without systemd):
- several slurmd on one host: Debian builds SLURM with multiple-slurmd support; each gets a NodeName, a port
  and `slurmd -N NAME` (the machine's host name is neither n1 nor n2); NodeAddr=127.0.0.1 so that the job
  script's main address (the first node's NodeAddr) is reachable;
- no cgroups or systemd: ProctrackType=proctrack/linuxproc and TaskPlugin=task/none;
- SlurmdParameters=config_overrides: 2 nodes x 2 CPUs on 2 cores;
- EnforcePartLimits=ALL: an impossible request fails at sbatch instead of pending forever;
- AuthInfo cred_expire=5 (the minimum): a requeued job may start again cred_expire + 1 s later (default 121 s);
- SchedulerParameters sched_interval=1: the requeued job is started within a second of becoming eligible;
- PreemptType=preempt/partition_prio: a job in the `urgent` partition preempts (requeues) one in `debug`
  after sending its steps SIGTERM, GraceTime seconds before killing them, as production clusters do.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo", "squeue")
NODES = ("n1", "n2")
CPUS_PER_NODE = 2
GRACE_TIME_S = 30  # preemption: SIGTERM to the steps, SIGKILL this much later
KILL_WAIT_S = 10  # scancel / time limit: SIGTERM, SIGKILL this much later
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def _which(name: str) -> str | None:
    """Daemons live in /usr/sbin, which a non-login PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def apt_install(packages: tuple[str, ...], binaries: tuple[str, ...]) -> str | None:
    """Install Debian PACKAGES unless BINARIES are all there; returns why that is impossible, or None."""
    if all(_which(b) for b in binaries):
        return None
    what = " ".join(packages)
    if os.geteuid() != 0:
        return f"{what} not installed, and installing it with apt-get needs root"
    if not shutil.which("apt-get"):
        return f"{what} not installed, and this machine has no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=120", *packages]
    result = None
    for attempt in range(2):  # the second time after refreshing the package lists
        if attempt:
            subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env, timeout=600)
        try:
            result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
        except subprocess.TimeoutExpired:
            return f"apt-get install {what}: no answer within 600 s"
        if result.returncode == 0:
            break
    missing = [b for b in binaries if not _which(b)]
    if missing:
        tail = (result.stderr or result.stdout).strip().splitlines()[-2:] if result else []
        return f"apt-get install {what} failed (still missing {', '.join(missing)}): {' | '.join(tail)}"
    return None


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _slurm_conf(root: Path, host: str, ctld_port: int, node_ports: list[int]) -> str:
    nodes = "\n".join(
        f"NodeName={name} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={CPUS_PER_NODE} Port={port} State=UNKNOWN"
        for name, port in zip(NODES, node_ports, strict=True)
    )
    names = ",".join(NODES)
    return f"""\
ClusterName=distgantest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
EnforcePartLimits=ALL
ReturnToService=2
KillWait={KILL_WAIT_S}
MinJobAge=600
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
{nodes}
PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE \
GraceTime={GRACE_TIME_S}
PartitionName=urgent Nodes={names} MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
"""


@dataclass
class Slurm:
    """A running cluster: commands with its SLURM_CONF, job submission and polling."""

    root: Path
    env: dict[str, str]
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)

    def cmd(self, *args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [_which(args[0]) or args[0], *args[1:]],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
        return result

    def submit(self, script: str, *args: str, options: tuple[str, ...] = (), env: dict[str, str] | None = None) -> int:
        """`sbatch --parsable OPTIONS SCRIPT ARGS` from the repository root with ENV added; the job id."""
        result = subprocess.run(
            [_which("sbatch") or "sbatch", "--parsable", *options, script, *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, f"sbatch failed: {result.stderr.strip()}"
        return int(result.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, NodeList, ...)."""
        text = self.cmd("scontrol", "show", "job", "-o", str(job_id)).stdout
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait_for(
        self,
        job_id: int,
        condition: Callable[[dict[str, str]], bool],
        what: str,
        timeout: float = 240,
        log: Path | None = None,
    ) -> dict[str, str]:
        """Poll `scontrol show job` every 0.25 s (sbatch --wait polls at 2, 10, 42, 74 s) until CONDITION."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if condition(info):
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id}: not {what} after {timeout} s: {info}\n{self.diagnose(log)}")
            time.sleep(0.25)

    def wait_finished(self, job_id: int, timeout: float = 240, log: Path | None = None) -> dict[str, str]:
        return self.wait_for(job_id, lambda j: j.get("JobState") in FINISHED, "finished", timeout, log)

    def diagnose(self, log: Path | None = None) -> str:
        """The job's output and the daemons' logs (tails), for assertion messages."""
        parts = []
        files = [log] if log else []
        files += sorted((self.root / "log").glob("*.log"))
        for path in files:
            if path and path.exists():
                lines = path.read_text(errors="replace").replace("\r", "\n").splitlines()
                errors = [line for line in lines[:-40] if line.startswith("error:")][:5]  # distgan's one-liners
                parts.append(f"--- {path.name}:\n" + "\n".join([*errors, *lines[-40:]]))
        return "\n".join(parts)


def _start(slurm: Slurm, name: str, argv: list[str]) -> None:
    with open(slurm.root / "log" / f"{name}.stdout", "wb") as out:  # the daemon keeps its own descriptor
        slurm.daemons[name] = subprocess.Popen(argv, env=slurm.env, stdout=out, stderr=subprocess.STDOUT)


def _wait(what: str, condition: Callable[[], bool], slurm: Slurm, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for name, proc in slurm.daemons.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}\n{slurm.diagnose()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"SLURM test cluster: {what} not within {timeout} s\n{slurm.diagnose()}")
        time.sleep(0.1)


def _nodes_idle(slurm: Slurm) -> bool:
    result = slurm.cmd("sinfo", "-h", "-N", "-o", "%N %T", check=False)
    states = dict(line.split() for line in result.stdout.splitlines() if line.strip())
    return result.returncode == 0 and all(states.get(n) == "idle" for n in NODES)


def _stop(slurm: Slurm) -> None:
    """Cancel the jobs, wait for their processes, stop the daemons, then end anything they left behind."""
    if "slurmctld" in slurm.daemons and slurm.daemons["slurmctld"].poll() is None:
        jobs = slurm.cmd("squeue", "-h", "-o", "%i", check=False).stdout.split()
        if jobs:
            slurm.cmd("scancel", *jobs, check=False)
            deadline = time.monotonic() + KILL_WAIT_S + 15
            while slurm.cmd("squeue", "-h", "-o", "%i", check=False).stdout.split():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.25)
    for proc in slurm.daemons.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in slurm.daemons.values():
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    # slurmstepd and job processes detach from the daemons; they (and only they) carry this cluster's
    # SLURM_CONF in their environment.
    marker = f"SLURM_CONF={slurm.env['SLURM_CONF']}".encode()
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            if int(proc_dir.name) != os.getpid() and marker in (proc_dir / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc_dir.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """A 2-node SLURM cluster (n1, n2; 2 CPUs each; partitions `debug` and the preempting `urgent`)."""
    reason = apt_install(PACKAGES, BINARIES)
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster runs its daemons as root (SlurmUser=root): run the tests as root")

    root = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "log", *(f"spool/{n}" for n in NODES)):
        (root / sub).mkdir(parents=True)
    munge = root / "munge"
    munge.mkdir(mode=0o755)  # munged refuses a socket directory that others can write to
    munge.chmod(0o755)
    key = munge / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o600)  # and a key that others can read

    host = socket.gethostname().split(".")[0]
    ctld_port, *node_ports = _free_ports(1 + len(NODES))
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, host, ctld_port, node_ports))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    env["SLURM_CONF"] = str(conf)  # not under /etc: every command and daemon must be told
    cluster = Slurm(root=root, env=env)
    try:
        _start(
            cluster,
            "munged",
            [
                _which("munged") or "munged",
                "--foreground",
                "--force",
                f"--socket={munge / 'munge.socket'}",
                f"--key-file={key}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={root / 'log' / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
        )
        _wait("munged's socket", (munge / "munge.socket").exists, cluster)
        _start(cluster, "slurmctld", [_which("slurmctld") or "slurmctld", "-D", "-i"])
        for name in NODES:
            _start(cluster, f"slurmd-{name}", [_which("slurmd") or "slurmd", "-D", "-N", name])
        _wait("nodes idle in sinfo", lambda: _nodes_idle(cluster), cluster)
        yield cluster
    finally:
        _stop(cluster)
