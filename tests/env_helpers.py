"""Tiny hand-built scenarios and synthetic signals for the environment tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gridrl.data.sources.events import GridEvent, announced_view
from gridrl.env.core import EXO_SIGNALS
from gridrl.scenario import Scenario

# Published-measurement-shaped curves: training capped to 0.6 keeps ~0.85 of its
# throughput; inference loses less and, memory-bound, never draws the full board.
THROTTLE = {
    "training": {
        "cap_fraction": [0.5, 0.6, 0.8, 1.0],
        "throughput_fraction": [0.7, 0.85, 0.95, 1.0],
        "source": "test curve shaped after McDonald et al. 2022 (arXiv 2205.09646)",
    },
    "inference": {
        "cap_fraction": [0.5, 0.7, 1.0],
        "throughput_fraction": [0.8, 0.93, 1.0],
        "power_fraction": [0.5, 0.65, 0.75],
        "source": "test curve shaped after POLCA (Patel et al., ASPLOS 2024)",
    },
}


#: Network limits that bind on test sites of 10 GPUs: the link carries 10 Gbps x 0.5 x
#: 3600 s = 2250 GB, i.e. 2.25 GPU-h of work an hour; a restart adds 5 %.
TEST_NETWORK: dict[str, Any] = {
    "checkpoint_gb_per_gpu_h": 1000.0, "transfer_kwh_per_gb": 3e-4,
    "transfer_cost_per_gb": 1e-4, "restart_overhead_gpu_h_per_gpu_h": 0.05,
    "bandwidth_gbps": 10.0, "link_share_fraction": 0.5, "latency_ms": 0.0,
}


def network_of(n_sites: int) -> dict[str, Any]:
    """``TEST_NETWORK`` with sites ``s0 ..`` ~11 km apart (all within inference reach)."""
    return TEST_NETWORK | {"coordinates_deg": {f"s{i}": (0.0, 0.1 * i) for i in range(n_sites)}}


# The old single-curve, board-only model as a special case: inference on the training
# curve, no host share (hand-computed tests keep round numbers).
ONE_CURVE = {"training": THROTTLE["training"], "inference": THROTTLE["training"]}
BOARD_ONLY = {"gpu_board_idle_kw": 0.1, "gpu_board_max_kw": 1.0, "host_idle_kw_per_gpu": 0.0,
              "host_busy_kw_per_gpu": 0.0}


def site(name: str, **over: Any) -> dict[str, Any]:
    """A site dict with small round numbers; ``over`` replaces top-level keys."""
    base: dict[str, Any] = {
        "name": name,
        "weather": {"source": "pvlib_tmy", "file": "723170TYA.CSV"},
        "gpus": 10,
        "gpu_board_idle_kw": 0.07,
        "gpu_board_max_kw": 0.8,
        "host_idle_kw_per_gpu": 0.03,
        "host_busy_kw_per_gpu": 0.2,
        "pue": 1.0,
        "grid": {"feeder_capacity_kw": 100.0},
        "workload": {"deadline_slack_h_min": 2, "deadline_slack_h_max": 4},
    }
    base.update(over)
    return base


def priced_pair(second: str = "b") -> dict[str, Any]:
    """``sites`` and ``network`` of two priced sites: ``a`` with PV, GPU rent, holding,
    a standby set and a demand-response programme; ``second`` with a battery starting
    anywhere in [0.2, 0.8] of its capacity, its wear priced, holding and a standby set."""
    holding = {"holding_cost_per_gpu_h_h": 0.01, "deadline_slack_h_min": 2}
    sites = [
        site("a", pv={"kwp": 5.0}, gpu_rent_per_gpu_h=0.05,
             workload={**holding, "deadline_slack_h_max": 4},
             backup={"capacity_kw": 2.0},
             demand_response={"payment_per_event_h": 0.5, "penalty_per_kwh": 0.4}),
        site(second, battery={"capacity_kwh": 12.0, "power_kw": 4.0,
                              "soc_initial_fraction_range": [0.2, 0.8],
                              "degradation_cost_per_kwh": 0.02},
             backup={"capacity_kw": 6.0}, workload={**holding, "deadline_slack_h_max": 5}),
    ]
    coords = {"a": (0.0, 0.0), second: (0.0, 1.0)}
    return {"sites": sites, "network": TEST_NETWORK | {"coordinates_deg": coords}}


def scenario(n_sites: int = 1, *, env: dict | None = None, reward: dict | None = None,
             sites: list[dict] | None = None, **over: Any) -> Scenario:
    """A validated scenario with ``n_sites`` test sites and short periods."""
    data: dict[str, Any] = {
        "name": "tiny",
        "sites": sites if sites is not None else [site(f"s{i}") for i in range(n_sites)],
        "throttle": THROTTLE,
        "env": {"slack_buckets": 8, "episode_hours": 24, "forecast_horizons_h": [1, 2, 4],
                "observation_slack_edges_h": [2, 4], **(env or {})},
        "reward": reward or {},
        "periods": {"train": [{"start": "2021-01-01", "end": "2021-01-10"}],
                    "test": [{"start": "2021-01-11", "end": "2021-01-14"}]},
    }
    data.update(over)
    return Scenario.model_validate(data)


def index(hours: int = 24 * 14, start: str = "2021-01-01") -> pd.DatetimeIndex:
    """Hourly UTC index."""
    return pd.date_range(start, periods=hours, freq="h", tz="UTC", name="time")


def synthetic_exo(n_sites: int, hours: int = 24 * 14, seed: int = 0, *,
                  gpus: float = 10.0) -> np.ndarray:
    """Plausible random signals ``[T, N, K]`` in ``EXO_SIGNALS`` order (float64)."""
    rng = np.random.default_rng(seed)
    t = np.arange(hours)[:, None]
    hod = t % 24
    sun = np.clip(np.sin((hod - 6) / 12 * np.pi), 0, None)
    out = np.zeros((hours, n_sites, len(EXO_SIGNALS)))
    k = {s: i for i, s in enumerate(EXO_SIGNALS)}
    out[..., k["pv_kw"]] = 8.0 * sun * rng.uniform(0.3, 1.0, (hours, n_sites))
    out[..., k["wind_kw"]] = rng.uniform(0.0, 3.0, (hours, n_sites))
    out[..., k["headroom_kw"]] = rng.uniform(2.0, 12.0, (hours, n_sites))
    out[rng.random((hours, n_sites)) < 0.03, k["headroom_kw"]] = 0.0  # outages
    out[..., k["carbon_g_per_kwh"]] = 300 + 150 * np.cos(hod / 24 * 2 * np.pi) + rng.normal(
        0, 20, (hours, n_sites))
    out[..., k["price_per_mwh"]] = 60 + rng.normal(0, 10, (hours, n_sites))
    out[..., k["inference_gpus"]] = rng.uniform(0.1, 0.5, (hours, n_sites)) * gpus
    out[..., k["flexible_gpu_h"]] = rng.uniform(0.0, 0.6, (hours, n_sites)) * gpus
    out[..., k["temp_c"]] = rng.normal(15, 8, (hours, n_sites))
    return with_grid_events(out, rng)


def with_grid_events(exo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``exo`` with a 3-hour demand-response event every afternoon (level 2-8 kW),
    announced 0 h to a day ahead; hours with headroom 0 are outages without notice
    (known hour by hour)."""
    hours, n_sites = exo.shape[:2]
    k = {s: i for i, s in enumerate(EXO_SIGNALS)}
    for i in range(n_sites):
        events = [GridEvent(d * 24 + 14 - int(rng.integers(0, 25)), d * 24 + 14, d * 24 + 17,
                            float(rng.uniform(2.0, 8.0))) for d in range(hours // 24 + 1)]
        view = announced_view(events, hours)
        exo[:, i, k["dr_starts_in_h"]] = view[:, 0]
        exo[:, i, k["dr_remaining_h"]] = view[:, 1]
        exo[:, i, k["dr_limit_kw"]] = view[:, 2]
    exo[..., k["outage_remaining_h"]] = exo[..., k["headroom_kw"]] == 0.0
    return exo
