"""Helpers for the experiments tests: small real studies on geo3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
GEO3 = REPO / "envs" / "geo3.yaml"

# Validation weeks end weeks before the test weeks begin: the perfect forecasts of a
# validation hour (24 h ahead at most) never reach a test row.
PERIODS = {
    "train": [{"start": "2021-01-01", "end": "2021-06-21"}],
    "validation": [{"start": "2021-07-01", "end": "2021-07-07"},
                   {"start": "2021-09-01", "end": "2021-09-07"}],
    "test": [{"start": "2021-10-22", "end": "2021-10-28"},
             {"start": "2021-12-22", "end": "2021-12-28"}],
}

# Tiny budgets: these studies check the runner, not the learning.
TINY_PPO = {
    "name": "ppo",
    "algo": "PPO",
    "hyperparameters": {"n_steps": 32, "batch_size": 64, "n_epochs": 2},
    "policy_kwargs": {"net_arch": [16]},
}
TINY_A2C = {
    "name": "a2c",
    "algo": "A2C",
    "hyperparameters": {"n_steps": 8},
    "policy_kwargs": {"net_arch": [16]},
}

# the tiny PPO with the two references gap closed needs, run once (deterministic)
WITH_REFERENCES = [
    TINY_PPO,
    {"name": "run_now", "reference": "run_now", "seeds": [0]},
    {"name": "lp_bound", "reference": "lp_bound", "seeds": [0]},
]


def write_study(path: Path, **over: Any) -> Path:
    """A small study on geo3 (perfect forecasts, 2 seeds) written to ``path``."""
    data: dict[str, Any] = {
        "name": "tiny",
        "scenario": str(GEO3),
        "forecast": {"mode": "perfect"},
        "agents": [TINY_PPO],
        "seeds": [0, 1],
        "training": {
            "timesteps": 384,  # 192 steps per env: one whole 168 h episode each
            "n_envs": 2,
            "checkpoint_every_steps": 192,
            "tensorboard": False,
        },
        "evaluation": {"episodes": 2},
        "backend": {"kind": "local", "max_workers": 2},
    }
    data.update(over)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path

