"""A worker ends with its driver: through Linux's parent-death signal, and through the
portable parent watchdog alone (the path other systems take)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The "driver" starts a "worker" that arms die_with_parent as a pool worker's
# initializer does, prints the worker's pid, and waits to be killed.
DRIVER = """
import subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print(worker.pid, flush=True)
worker.wait()
"""
WORKER = """
import os, sys, time
if sys.argv[1] != "linux":
    sys.platform = sys.argv[1]  # take the path of systems without prctl
from gridrl.experiments.backends import die_with_parent
die_with_parent(os.getppid(), check_every_s=0.1)
print("armed", flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie holds nothing: it waits for init to reap it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_worker_ends_within_a_second_of_its_driver(platform: str) -> None:
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, WORKER, platform],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        worker = int(driver.stdout.readline())
        assert driver.stdout.readline().strip() == "armed"
        assert _alive(worker)
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone
        driver.wait()
        t0 = time.monotonic()
        while _alive(worker) and time.monotonic() - t0 < 5.0:
            time.sleep(0.02)
        assert not _alive(worker), f"worker {worker} outlived its driver ({platform} path)"
        assert time.monotonic() - t0 < 1.0
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        driver.wait()
