"""Start and stop a real one-node Slurm cluster (munged + slurmctld + slurmd) on 127.0.0.1.

Used by the Slurm adapter's integration test. Everything lives in one folder (config,
munge key and socket, state, spool, logs); the daemons run in the foreground (``-D`` /
``-F``) as child processes, so stopping them is a plain terminate + wait.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sinfo", "squeue", "scontrol", "sbatch")
NOBODY_UID = 65534
# GPUs the node announces (gres/gpu); gres.conf maps them to placeholder files.
FAKE_GPUS = 4
# Unix socket paths are limited to 107 bytes.
_MAX_SOCKET_PATH = 100


def missing_binaries() -> list[str]:
    """Slurm/munge programs not found on PATH (or in /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [b for b in DAEMONS if shutil.which(b, path=path) is None]


def _which(name: str) -> str:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(name)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory MB) as ``slurmd -C`` reports them for this machine."""
    out = subprocess.run(
        [_which("slurmd"), "-C"], capture_output=True, text=True, check=True
    ).stdout
    cpus = int(re.search(r"\bCPUs=(\d+)", out).group(1))
    mem = int(re.search(r"\bRealMemory=(\d+)", out).group(1))
    return cpus, mem


class LocalSlurm:
    """A running local cluster; use as a context manager.

    Attributes
    ----------
    root : Path
        Folder with ``slurm.conf`` and all state.
    env : dict
        Environment for Slurm client commands (``SLURM_CONF`` set).
    """

    def __init__(self, root: Path, startup_timeout_s: float = 60.0) -> None:
        # Another account (the job owner in tests run as root) must read the config
        # and reach the munge socket: the folder is world-searchable.
        self.root = Path(root)
        self.startup_timeout_s = startup_timeout_s
        self.procs: list[subprocess.Popen] = []
        self.env: dict[str, str] = {}

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> LocalSlurm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        root = self.root
        for sub in ("state", "spool", "log", "munge"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        munge_dir = root / "munge"
        if len(str(munge_dir / "munge.socket")) > _MAX_SOCKET_PATH:
            import tempfile

            munge_dir = Path(tempfile.mkdtemp(prefix="gridrl-munge-"))
        munge_dir.chmod(0o755)  # the socket directory must be searchable by clients
        self.munge_dir = munge_dir
        key = munge_dir / "munge.key"
        subprocess.run([_which("mungekey"), "--create", "--keyfile", str(key)], check=True)
        key.chmod(0o600)
        sock = munge_dir / "munge.socket"
        cpus, mem = _node_hardware()
        conf = (
            (HERE / "slurm.conf.in")
            .read_text()
            .format(
                user=getpass.getuser(),
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                munge_socket=sock,
                root=root,
                cpus=cpus,
                memory_mb=mem,
                gpus=FAKE_GPUS,
            )
        )
        (root / "slurm.conf").write_text(conf)
        (root / "slurm.conf").chmod(0o644)
        self._write_gres_conf()
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
        log = root / "log"
        self._spawn(
            [
                _which("munged"),
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={sock}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--log-file={log / 'munged.log'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
            ],
            log / "munged.out",
        )
        self._wait(lambda: sock.exists(), "munged socket")
        self._spawn([_which("slurmctld"), "-D", "-i"], log / "slurmctld.out")
        self._wait(self._ctld_answers, "slurmctld (sinfo)")
        self._spawn([_which("slurmd"), "-D", "-N", "localhost"], log / "slurmd.out")
        self._wait(self._node_idle, "slurmd registration (node idle)")

    def _write_gres_conf(self) -> None:
        """gres.conf of fake GPUs: one empty placeholder file per GPU (slurmd only needs a
        path per device to hand out indices; task/none never opens them)."""
        dev = self.root / "dev"
        dev.mkdir(exist_ok=True)
        for i in range(FAKE_GPUS):
            (dev / f"gpu{i}").touch()
        (self.root / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName=localhost Name=gpu File={dev}/gpu[0-{FAKE_GPUS - 1}]\n"
        )
        (self.root / "gres.conf").chmod(0o644)

    def _spawn(self, argv: list[str], out: Path) -> None:
        fh = open(out, "wb")  # noqa: SIM115 - kept open for the daemon's lifetime
        self.procs.append(subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=self.env))
        fh.close()  # the child holds its own descriptor

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"{p.args[0]} exited with {p.returncode}; logs in {self.root / 'log'}"
                    )
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(
            f"{what} not ready within {self.startup_timeout_s} s; logs in {self.root / 'log'}"
        )

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster."""
        return subprocess.run(
            [_which(argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            env=self.env,
            check=check,
            timeout=30,
        )

    def _ctld_answers(self) -> bool:
        return self.run("sinfo", "-h", check=False).returncode == 0

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
        return out.returncode == 0 and "idle" in out.stdout

    def stop(self) -> None:
        """Cancel all jobs and stop the daemons (reverse start order)."""
        if self.procs and self.env and self.procs[-1].poll() is None:
            # Cancel, then wait until slurmd has ended every job step: a step left behind
            # when slurmd stops would outlive the test.
            self.run("scancel", "--user", getpass.getuser(), check=False)
            ids = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
            if ids:  # jobs of other owners (the admin may cancel them)
                self.run("scancel", *ids, check=False)
            deadline = time.monotonic() + self.startup_timeout_s
            while time.monotonic() < deadline:
                left = self.run("squeue", "-h", "-o", "%i", check=False)
                if left.returncode != 0 or not left.stdout.strip():
                    break
                time.sleep(0.2)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        self.procs = []
        munge_dir = getattr(self, "munge_dir", None)
        if munge_dir is not None and not str(munge_dir).startswith(str(self.root)):
            shutil.rmtree(munge_dir, ignore_errors=True)

    # -------------------------------------------------------------- helpers

    def sbatch(self, *args: str) -> int:
        """Submit a batch job; returns its id."""
        out = self.run("sbatch", "--parsable", *args)
        return int(out.stdout.strip().split(";")[0])

    @property
    def owner_is_other_account(self) -> bool:
        """Jobs of :meth:`as_owner` belong to an account that is not a Slurm admin
        (``nobody``) when the tests run as root; otherwise to the test's own account."""
        return os.geteuid() == 0

    def as_owner(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command as a job owner (see :attr:`owner_is_other_account`)."""
        prefix: list[str] = []
        if self.owner_is_other_account:
            prefix = [_which("setpriv"), f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}",
                      "--clear-groups"]  # fmt: skip
        return subprocess.run(
            [*prefix, _which(argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            env=self.env,
            check=check,
            timeout=30,
            cwd="/tmp",
        )

    def sbatch_as_owner(self, *args: str) -> int:
        """Submit a batch job as the owner; returns its id."""
        out = self.as_owner("sbatch", "--parsable", "-D", "/tmp", *args)
        return int(out.stdout.strip().split(";")[0])

    def show_job(self, job_id: int) -> dict[str, str]:
        """``scontrol -o show job`` as a dict of its ``Key=Value`` fields."""
        line = self.run("scontrol", "-o", "show", "job", str(job_id)).stdout.strip()
        fields: dict[str, str] = {}
        # Values may contain spaces (Comment); keys are CamelCase words followed by '='.
        parts = re.split(r" (?=[A-Za-z_/:]+=)", line)
        for part in parts:
            key, _, value = part.partition("=")
            fields[key] = value
        return fields
