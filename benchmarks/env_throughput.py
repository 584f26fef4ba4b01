"""Environment throughput: single Gymnasium env, native VecEnv, and cost vs number of sites.

Prints

1. steps/s of one ``GridEnv`` on geo3 with uniform random actions in [-1, 1] (drawn
   up front with numpy, so the figure is the environment's, not the action sampler's),
   raw and through ``gymnasium.make`` (checker and order wrappers);
2. env-steps/s of ``GridVecEnv`` on geo3 at B = 256 and 1024, with per-step infos
   (``info_mode="full"``) and without (``"episode"``);
3. time per step against the number of sites (1, 3, 24, 96, 384) for the single env and
   for the VecEnv at B = 64, on a synthetic scenario (sites made from one template,
   four weeks of random signals, perfect forecasts), with the cost per site;
4. geo3 at 60-, 30- and 15-minute steps (``env.step_minutes``): steps/s and simulated
   hours/s of the single env and of the VecEnv at B = 256, and how far throughput per
   simulated hour falls against the step ratio (the goal: no further than the ratio).

Each figure is given twice: wall-clock throughput over the whole measurement, and the
throughput of the fastest tenth of the timed chunks (100 steps of the single env, one
step of a VecEnv), which estimates the cost on an otherwise idle CPU when the machine is
shared (the load average is printed). Episode resets are included in the wall figure.

Usage: ``python benchmarks/env_throughput.py [--seconds S] [--plot PATH.png]
[--only-steps]``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

import gridrl.env
from gridrl.data.signals import Signals
from gridrl.env.clock import STEP_MINUTES, step_hours
from gridrl.env.gym_env import GridEnv
from gridrl.env.inputs import EnvData, load_env_data
from gridrl.env.kernel import EXO_SIGNALS
from gridrl.env.vec_env import GridVecEnv
from gridrl.io import write_with
from gridrl.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[1]
GEO3 = ROOT / "envs" / "geo3.yaml"
SITE_COUNTS = (1, 3, 24, 96, 384)
SCALING_HOURS = 24 * 28
CHUNK_STEPS = 100
console = Console()


def _rates(chunk_s: list[float], per_chunk: int) -> tuple[float, float]:
    """(wall throughput over all chunks, throughput of the fastest tenth of the chunks)."""
    t = np.sort(np.asarray(chunk_s))
    best = t[: max(1, len(t) // 10)].mean()
    return per_chunk * len(t) / t.sum(), per_chunk / best


def _time_single(env: gym.Env, seconds: float, seed: int = 0) -> tuple[float, float]:
    """Steps per second of ``env`` with uniform random actions (wall, fastest chunks)."""
    dim = env.action_space.shape[0]
    actions = np.random.default_rng(seed).uniform(-1, 1, (4096, dim)).astype(np.float32)
    env.reset(seed=seed)
    for i in range(500):  # warm-up (compiled code, caches)
        *_, term, trunc, _ = env.step(actions[i])
        if term or trunc:
            env.reset()
    chunks: list[float] = []
    n = 0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for i in range(CHUNK_STEPS):
            *_, term, trunc, _ = env.step(actions[(n + i) % 4096])
            if term or trunc:
                env.reset()
        chunks.append(time.perf_counter() - t0)
        n += CHUNK_STEPS
    return _rates(chunks, CHUNK_STEPS)


def _time_vec(venv: GridVecEnv, seconds: float, seed: int = 0) -> tuple[float, float]:
    """Env-steps per second of a VecEnv with uniform random actions (wall, fastest
    chunks); chunks are one step, so episode ends (every episode_hours) count in the wall
    figure only."""
    dim = venv.action_space.shape[0]
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (16, venv.num_envs, dim)).astype(np.float32)
    venv.reset()
    for i in range(20):
        venv.step(actions[i % 16])
    chunks: list[float] = []
    t_end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        venv.step(actions[i % 16])
        chunks.append(time.perf_counter() - t0)
        i += 1
    return _rates(chunks, venv.num_envs)


def _synthetic(n_sites: int) -> tuple[Scenario, Signals]:
    """A scenario of ``n_sites`` sites from one template, with four weeks of signals."""
    template = {
        "weather": {"source": "pvlib_tmy", "file": "723170TYA.CSV"},
        "gpus": 1000, "gpu_board_idle_kw": 0.075, "gpu_board_max_kw": 0.7,
        "host_idle_kw_per_gpu": 0.22, "host_busy_kw_per_gpu": 0.35, "pue": 1.2,
        "pue_temp_slope_per_c": 0.01,
        "battery": {"capacity_kwh": 2000.0, "power_kw": 500.0},
        "grid": {"feeder_capacity_kw": 5000.0},
        "workload": {"deadline_slack_h_min": 4, "deadline_slack_h_max": 24},
    }
    sc = Scenario.model_validate({
        "name": f"scaling{n_sites}",
        "site_groups": [{"prefix": "site", "count": n_sites, "template": template,
                         "vary": {"gpus": 0.3}}],
        "throttle": load_scenario(GEO3).throttle.model_dump(),
        "periods": {"train": {"start": "2021-01-01", "end": "2021-01-28"},
                    "test": {"start": "2021-01-22", "end": "2021-01-28"}},
    })
    names = [s.name for s in sc.expanded_sites()]
    rng = np.random.default_rng(n_sites)
    hours = SCALING_HOURS
    hod = np.arange(hours)[:, None] % 24
    sun = np.clip(np.sin((hod - 6) / 12 * np.pi), 0, None)
    shape = (hours, n_sites)
    values = {
        "pv_kw": 400 * sun * rng.uniform(0.3, 1, shape),
        "wind_kw": rng.uniform(0, 300, shape),
        "headroom_kw": rng.uniform(200, 1500, shape),
        "carbon_g_per_kwh": 350 + 100 * np.cos(hod / 24 * 2 * np.pi) + rng.normal(0, 20, shape),
        "price_per_mwh": 60 + rng.normal(0, 10, shape),
        "inference_gpus": rng.uniform(100, 400, shape),
        "flexible_gpu_h": rng.uniform(0, 600, shape),
        "temp_c": rng.normal(15, 8, shape),
    }
    # no demand-response event or outage is announced in these weeks
    for k in ("dr_starts_in_h", "dr_remaining_h", "dr_limit_kw", "outage_starts_in_h",
              "outage_remaining_h"):
        values[k] = np.zeros(shape)
    exo = np.stack([values[k] for k in EXO_SIGNALS], axis=-1)
    cols = pd.MultiIndex.from_product([names, EXO_SIGNALS], names=["site", "signal"])
    index = pd.date_range("2021-01-01", periods=hours, freq="h", tz="UTC", name="time")
    return sc, Signals.from_frame(pd.DataFrame(exo.reshape(hours, -1), index=index,
                                               columns=cols))


def _step_lengths(sc: Scenario, data: EnvData, seconds: float) -> None:
    """Section 4: geo3 at every step length, per step and per simulated hour."""
    table = Table(title="geo3 by step length (env.step_minutes; fastest 10% of chunks; "
                        "VecEnv B=256; fall: simulated h/s at 60 min over h/s here, over "
                        "the step ratio, <= 1 is the goal)")
    for col in ("step", "GridEnv steps/s", "sim. h/s", "fall", "VecEnv env-steps/s",
                "sim. env-h/s", "fall"):
        table.add_column(col, justify="right")
    hourly: tuple[float, float] | None = None
    for minutes in STEP_MINUTES:
        sc_m = sc.model_copy(update={"env": sc.env.model_copy(
            update={"step_minutes": minutes})})
        data_m = data.at_step(minutes)
        single = _time_single(GridEnv(sc_m, data=data_m), seconds)[1]
        vec = _time_vec(GridVecEnv(sc_m, 256, data=data_m, info_mode="episode", seed=0),
                        seconds)[1]
        step_h = step_hours(minutes)
        per_h = (single * step_h, vec * step_h)
        hourly = hourly or per_h
        ratio = 1.0 / step_h
        # fall of simulated hours/s against the hourly run, over the step ratio: <= 1 is
        # the goal (a step costs no more than an hourly one)
        falls = [h0 / h / ratio for h0, h in zip(hourly, per_h, strict=True)]
        table.add_row(f"{minutes} min", f"{single:,.0f}", f"{per_h[0]:,.0f}",
                      f"{falls[0]:.2f}", f"{vec:,.0f}", f"{per_h[1]:,.0f}", f"{falls[1]:.2f}")
    console.print(table)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["sites"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(n, [r["single_us"] for r in rows], "o-", label="GridEnv (B=1), per step")
    ax.loglog(n, [r["vec_us"] for r in rows], "s-", label="GridVecEnv B=64, per env-step")
    ref = rows[0]["single_us"] * n / n[0]
    ax.loglog(n, ref, "k:", label="linear in sites")
    ax.set_xlabel("sites")
    ax.set_ylabel("time per step (us)")
    ax.set_title("gridrl environment: cost vs number of sites")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def main() -> None:
    """Run the benchmark and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--plot", type=Path, default=None, help="write the scaling plot here")
    parser.add_argument("--only-steps", action="store_true",
                        help="only the step-length section (4)")
    args = parser.parse_args()

    sc = load_scenario(GEO3)
    console.print(f"[bold]geo3[/bold]: building signals and perfect forecasts ({GEO3})")
    data = load_env_data(sc, "perfect", base_dir=GEO3.parent)
    if args.only_steps:
        _step_lengths(sc, data, args.seconds)
        return

    env = GridEnv(sc, data=data)
    load = os.getloadavg()
    table = Table(title=f"geo3, random actions (load average {load[0]:.1f} on "
                        f"{os.cpu_count()} CPUs)")
    table.add_column("environment")
    table.add_column("steps/s, wall", justify="right")
    table.add_column("steps/s, fastest 10% of chunks", justify="right")
    table.add_column("goal", justify="right")
    wall, best = _time_single(env, args.seconds)
    table.add_row(f"GridEnv (obs dim {env.observation_space.shape[0]})", f"{wall:,.0f}",
                  f"{best:,.0f}", ">= 10,000")
    made = gym.make(gridrl.env.ENV_ID, scenario=sc, data=data)
    wall, best = _time_single(made, args.seconds)
    table.add_row("gymnasium.make(gridrl/GridEnv-v0)", f"{wall:,.0f}", f"{best:,.0f}",
                  ">= 10,000")
    for b in (256, 1024):
        for mode in ("episode", "full"):
            venv = GridVecEnv(sc, b, data=data, info_mode=mode, seed=0)
            wall, best = _time_vec(venv, args.seconds)
            table.add_row(f"GridVecEnv B={b}, info_mode={mode} (env-steps/s)", f"{wall:,.0f}",
                          f"{best:,.0f}", ">= 300,000")
    console.print(table)

    rows = []
    with console.status("timing against the number of sites") as status:
        for n in SITE_COUNTS:
            status.update(f"timing {n} sites")
            sc_n, sig = _synthetic(n)
            env_n = GridEnv(sc_n, signals=sig, forecast_mode="perfect")
            single = 1e6 / _time_single(env_n, args.seconds)[1]
            venv = GridVecEnv(sc_n, 64, data=env_n.data, info_mode="episode", seed=0)
            vec = 1e6 / _time_vec(venv, args.seconds)[1]
            rows.append({"sites": n, "obs_dim": env_n.observation_space.shape[0],
                         "single_us": single, "vec_us": vec})
    scaling = Table(title="time per step vs sites (synthetic, perfect forecasts; fastest "
                          "10% of chunks)")
    for col in ("sites", "obs dim", "GridEnv us/step", "us/site", "VecEnv B=64 us/env-step",
                "us/site"):
        scaling.add_column(col, justify="right")
    for r in rows:
        scaling.add_row(str(r["sites"]), str(r["obs_dim"]), f"{r['single_us']:.1f}",
                        f"{r['single_us'] / r['sites']:.2f}", f"{r['vec_us']:.2f}",
                        f"{r['vec_us'] / r['sites']:.3f}")
    console.print(scaling)
    first, last = rows[0], rows[-1]
    growth = (last["single_us"] / first["single_us"]) / (last["sites"] / first["sites"])
    console.print(f"GridEnv: {last['sites']}x the sites costs "
                  f"{last['single_us'] / first['single_us']:.1f}x the time "
                  f"(ratio to linear {growth:.2f}; <= 1 means at most linear)")
    if args.plot is not None:
        _plot(rows, args.plot)
        console.print(f"plot written to {args.plot}")
    _step_lengths(sc, data, args.seconds)


if __name__ == "__main__":
    main()
