"""A one-node Slurm cluster on this machine, for the fan-out test and for trying `nox -s fanout` by hand.

    python3 tests/support/slurm_cluster.py install          # apt-get, as root (about a minute)
    python3 tests/support/slurm_cluster.py start [--state DIR]
    export SLURM_CONF=DIR/slurm.conf; srun -n 2 hostname
    python3 tests/support/slurm_cluster.py stop [--state DIR]

Debian's packages (slurm-wlm, slurmdbd, munge, mariadb-server) run from one state folder: the configs, the
accounting database, spool, pid and log files; nothing under /etc is written (munged uses the key its package made
and its default socket, where Slurm looks, and a munged that already answers there is used as it is). Accounting
(slurmdbd over MariaDB) is there because submitit reads job states with ``sacct``: without it a cancelled job is
never seen to end. Process tracking is ``proctrack/linuxproc`` and ``task/none`` (no cgroups, no systemd). ``start``
is idempotent (what runs is left running), ``stop`` ends the daemons it started and keeps the folder.

Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "mariadb-server")
DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged")  # stop order; start is the reverse
CLUSTER_NAME = "logitsmatch"
PARTITION = "debug"
MUNGE_KEY = Path("/etc/munge/munge.key")  # the package creates it
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
DEFAULT_STATE = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "logitsmatch" / "slurm"


class ClusterUnavailable(RuntimeError):
    """Slurm cannot be installed or started here (not root, no apt-get, a daemon that will not come up)."""


def installed() -> bool:
    return all(shutil.which(name) for name in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch",
                                                "sacct"))


def install() -> None:
    """apt-get the packages unless they are there; needs root and apt-get."""
    if installed():
        return
    if not shutil.which("apt-get"):
        raise ClusterUnavailable("Slurm is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        raise ClusterUnavailable("Slurm is not installed and installing it needs root")
    quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        if subprocess.run(command, **quiet).returncode != 0:
            raise ClusterUnavailable(f"{' '.join(command)} failed")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _mem_total_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterUnavailable("cannot read MemTotal from /proc/meminfo")


class Cluster:
    """The files of one cluster under ``state``; ports are chosen once, when the configs are written."""

    def __init__(self, state: Path = DEFAULT_STATE):
        self.state = Path(state).resolve()
        self.conf = self.state / "slurm.conf"
        self.dbd_conf = self.state / "slurmdbd.conf"  # slurmdbd reads it from the folder of $SLURM_CONF
        self.db_dir = self.state / "mariadb"
        self.db_socket = self.state / "mariadb.sock"
        self.log_dir = self.state / "log"
        self.node = socket.gethostname().split(".")[0]

    def env(self) -> dict[str, str]:
        """What a Slurm client (sbatch, srun, sacct) needs to find this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def pid_file(self, daemon: str) -> Path:
        return self.state / f"{daemon}.pid"

    def running(self, daemon: str) -> bool:
        try:
            os.kill(int(self.pid_file(daemon).read_text().split()[0]), 0)
        except (OSError, ValueError, IndexError):
            return False
        return True

    def write_configs(self) -> None:
        """slurm.conf and slurmdbd.conf for this host, once (a later start keeps its ports)."""
        if self.conf.is_file() and self.dbd_conf.is_file():
            return
        for folder in ("ctld", "spool", "log"):
            (self.state / folder).mkdir(parents=True, exist_ok=True)
        cpus = os.cpu_count() or 1
        memory = int(_mem_total_mib() * 0.9)
        ctld_port, slurmd_port, dbd_port, db_port = (_free_port() for _ in range(4))
        self.dbd_conf.write_text("\n".join((
            "AuthType=auth/munge",
            "DbdHost=localhost", f"DbdPort={dbd_port}", "SlurmUser=root",
            f"PidFile={self.pid_file('slurmdbd')}", f"LogFile={self.log_dir / 'slurmdbd.log'}",
            "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1", f"StoragePort={db_port}",
            "StorageUser=root", "StorageLoc=slurm_acct_db", "",
        )))
        self.dbd_conf.chmod(0o600)
        self.conf.write_text("\n".join((
            f"ClusterName={CLUSTER_NAME}", f"SlurmctldHost={self.node}",
            f"SlurmctldPort={ctld_port}", f"SlurmdPort={slurmd_port}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge",
            f"StateSaveLocation={self.state / 'ctld'}", f"SlurmdSpoolDir={self.state / 'spool'}",
            f"SlurmctldPidFile={self.pid_file('slurmctld')}", f"SlurmdPidFile={self.pid_file('slurmd')}",
            f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}", f"SlurmdLogFile={self.log_dir / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=localhost",
            f"AccountingStoragePort={dbd_port}",
            "ReturnToService=2", "MinJobAge=300",
            f"NodeName={self.node} CPUs={cpus} RealMemory={memory} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP DefMemPerCPU={memory // cpus}",
            "",
        )))

    def _spawn(self, daemon: str, command: list[str], wait_for: Path | None = None) -> None:
        """Start ``daemon`` unless it runs; it writes its pid file (or we do); wait for ``wait_for`` to appear."""
        if self.running(daemon):
            return
        log = (self.log_dir / f"{daemon}.out").open("ab")
        process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, **self.env()})
        if daemon == "mariadbd":  # stays in the foreground: its pid is ours to record
            self.pid_file(daemon).write_text(f"{process.pid}\n")
        else:
            process.wait(timeout=60)  # the others fork into the background and write their pid files
        deadline = time.monotonic() + 60
        while not (self.running(daemon) and (wait_for is None or wait_for.exists())):
            if time.monotonic() > deadline or (daemon == "mariadbd" and process.poll() is not None):
                raise ClusterUnavailable(f"{daemon} did not start; see {self.log_dir}")
            time.sleep(0.5)

    def _start_munge(self) -> None:
        """munged on its default socket (Slurm's clients and daemons look there); one that answers is used as it is."""
        if subprocess.run(["munge", "-n"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            return
        if not MUNGE_KEY.is_file():
            subprocess.run(["mungekey", "--create", f"--keyfile={MUNGE_KEY}"], check=True)
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        self._spawn("munged", [
            "munged", "--force", f"--pid-file={self.pid_file('munged')}", f"--log-file={self.log_dir / 'munged.log'}",
            f"--seed-file={self.state / 'munged.seed'}",
        ], wait_for=MUNGE_SOCKET)

    def _start_database(self) -> None:
        if not (self.db_dir / "mysql").is_dir():
            done = subprocess.run(
                ["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={self.db_dir}",
                 "--auth-root-authentication-method=normal", "--skip-test-db"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            if done.returncode != 0:
                raise ClusterUnavailable(f"mariadb-install-db failed: {done.stderr.strip().splitlines()[-1:]}")
        port = next(line.split("=", 1)[1] for line in self.dbd_conf.read_text().splitlines()
                    if line.startswith("StoragePort="))
        self._spawn("mariadbd", [
            "mariadbd", "--no-defaults", "--user=root", f"--datadir={self.db_dir}", f"--socket={self.db_socket}",
            f"--port={port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
            f"--log-error={self.log_dir / 'mariadb.log'}",
            "--innodb-buffer-pool-size=64M",
        ], wait_for=self.db_socket)

    def start(self) -> dict[str, str]:
        """Bring every daemon up (those running are left alone); return the client environment."""
        install()
        self.write_configs()
        self._start_munge()
        self._start_database()
        self._spawn("slurmdbd", ["slurmdbd"])
        self._register_cluster()
        self._spawn("slurmctld", ["slurmctld", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-f", str(self.conf)])
        self._wait_for_node()
        return self.env()

    def _register_cluster(self) -> None:
        """The accounting database must know the cluster before slurmctld reports to it (slurmdbd may take a
        few seconds to accept connections)."""
        deadline = time.monotonic() + 60
        while True:
            listed = self._client(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"])
            if listed.returncode == 0:
                if CLUSTER_NAME not in listed.stdout.split():
                    self._client(["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME])
                return
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"slurmdbd does not answer: {listed.stderr.strip()}")
            time.sleep(1)

    def _client(self, command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **self.env()})

    def _wait_for_node(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            state = self._client(["sinfo", "-h", "-n", self.node, "-o", "%t"]).stdout.strip()
            if state.startswith(("idle", "mix", "alloc")):
                return
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"node {self.node} is {state or 'unknown'} after 60 s; see {self.log_dir}")
            if state.startswith(("down", "drain")):
                self._client(["scontrol", "update", f"nodename={self.node}", "state=resume"])
            time.sleep(1)

    def stop(self) -> None:
        """SIGTERM every daemon that runs, in dependency order, and wait for each to end."""
        for daemon in DAEMONS:
            if not self.running(daemon):
                continue
            pid = int(self.pid_file(daemon).read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while self.running(daemon) and time.monotonic() < deadline:
                if daemon == "mariadbd":
                    try:  # our child only when this process started it
                        os.waitpid(pid, os.WNOHANG)
                    except ChildProcessError:
                        pass
                time.sleep(0.2)
            if self.running(daemon):
                os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slurm_cluster.py", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("install", "start", "stop"))
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE,
                        help=f"the cluster's folder (default {DEFAULT_STATE})")
    args = parser.parse_args(argv)
    cluster = Cluster(args.state)
    try:
        if args.action == "install":
            install()
        elif args.action == "start":
            for key, value in cluster.start().items():
                print(f"export {key}={value}")
        else:
            cluster.stop()
    except ClusterUnavailable as exc:
        print(f"slurm_cluster: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
