"""The real local Slurm cluster of the tests (tests/slurm/cluster.py), the mark that
skips a test module where its programs are not installed, and the queue's jobs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gridrl.integrations.slurm_queue import SlurmJob

sys.path.insert(0, str(Path(__file__).parent / "slurm"))
from cluster import LocalSlurm, missing_binaries  # noqa: E402

__all__ = ["NOW", "LocalSlurm", "missing_binaries", "needs_slurm", "pending_job"]

NOW = 1_800_000_000.0  # the clock of the tests without a cluster
HOUR_S = 3600.0

needs_slurm = pytest.mark.skipif(
    bool(missing_binaries()),
    reason=f"Slurm/munge programs missing: {missing_binaries()} "
    "(Debian: apt-get install slurm-wlm munge; see .ci/system-packages.sh)",
)


def pending_job(
    job_id: int,
    partition: str = "pa",
    gpus: int = 1,
    limit_h: float = 1.0,
    deadline_h: float | None = None,
    **kw,
) -> SlurmJob:
    """A job pending on priority, submitted 10 min before ``NOW``; ``kw`` overrides any
    field."""
    fields = dict(
        job_id=job_id,
        name=f"j{job_id}",
        partition=partition,
        state="PENDING",
        reason="Priority",
        qos="normal",
        submit_time=NOW - 600,
        eligible_time=NOW - 600,
        deadline=None if deadline_h is None else NOW + deadline_h * HOUR_S,
        time_limit_s=limit_h * HOUR_S,
        gpus=gpus,
        cpus=4,
        comment="",
    )
    fields.update(kw)
    return SlurmJob(**fields)
