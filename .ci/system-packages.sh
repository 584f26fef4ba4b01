#!/usr/bin/env bash
# System packages the test suite needs beyond the Python venv.
# slurm-wlm + munge: the Slurm adapter's integration test starts a real
# munged + slurmctld + slurmd on 127.0.0.1 (tests/test_slurm_integration.py).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y slurm-wlm munge
# wrk: HTTP load generator used by benchmarks/serving.py (loopback decisions/s).
apt-get install -y wrk
