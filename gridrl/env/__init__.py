"""gridrl.env: batched simulation core, Gymnasium environment, native SB3 VecEnv.

- :mod:`gridrl.env.core`: ``reset``/``step`` as pure numpy functions (the documented
  equations; a test oracle), :mod:`gridrl.env.kernel` the same compiled, with every
  formula of the site model written once and the signal, output and action columns
  (``Exo``, ``Out``, ``Act``); :mod:`gridrl.env.physics` those formulas on a
  scenario's parameters for planners, heuristics and replay.
- :class:`GridEnv` (Gymnasium, registered as ``gridrl/GridEnv-v0``),
  :class:`GridVecEnv` (SB3 ``VecEnv``), :class:`DiscreteActions` (MultiDiscrete).
- :mod:`gridrl.env.layout` observation/action layouts, :mod:`gridrl.env.kpis` KPIs.

Heavy modules load on first use: ``import gridrl.env`` only registers the environment.
"""

from __future__ import annotations

from typing import Any

import gymnasium

ENV_ID = "gridrl/GridEnv-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="gridrl.env.gym_env:GridEnv")

_LAZY = {
    "GridEnv": "gridrl.env.gym_env",
    "GridVecEnv": "gridrl.env.vec_env",
    "DiscreteVecActions": "gridrl.env.vec_env",
    "DiscreteActions": "gridrl.env.wrappers",
    "EnvData": "gridrl.env.inputs",
    "load_env_data": "gridrl.env.inputs",
    "EnvParams": "gridrl.env.params",
    "build_params": "gridrl.env.params",
    "EnvState": "gridrl.env.state",
    "ObservationLayout": "gridrl.env.layout",
    "ActionLayout": "gridrl.env.layout",
    "KPIS": "gridrl.env.kpis",
    "episode_kpis": "gridrl.env.kpis",
}

__all__ = ["ENV_ID", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gridrl.env' has no attribute {name!r}")
