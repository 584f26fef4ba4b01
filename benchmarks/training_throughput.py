"""PPO training throughput on geo3: environment steps per second of training wall time.

Trains the quickstart study's PPO (same hyperparameters, native VecEnv, VecNormalize,
one torch thread per run as in a study worker) for a short budget and prints env-steps/s
for each VecEnv batch size. Run two at once (``--parallel 2``) to see the rate per run
when a study keeps both cores busy.

    python benchmarks/training_throughput.py [--steps 200000] [--n-envs 16 32 64]
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _train(args: tuple[int, int, int]) -> tuple[int, int, float, float]:
    steps, n_envs, seed = args
    import torch

    from gridrl.agents.train import train_policy
    from gridrl.experiments.schema import load_study

    torch.set_num_threads(1)
    study = load_study(REPO / "experiments" / "quickstart.yaml")
    ppo = study.agent("ppo")
    with tempfile.TemporaryDirectory() as tmp:
        training = study.training.model_copy(update={
            "timesteps": steps, "n_envs": n_envs, "checkpoint_every_steps": None,
            "tensorboard": False, "progress_bar": False,
        })  # fmt: skip
        agent = ppo.model_copy(update={"timesteps": None, "n_envs": None})
        info = train_policy(
            study.scenario, agent, training, tmp, seed=seed,
            forecast_mode=study.forecast.mode, forecast_config=study.forecast.config,
        )  # fmt: skip
    return n_envs, seed, info["env_steps_per_s"], info["wall_time_s"]


def main() -> None:
    """Print PPO env-steps/s per VecEnv batch size (and per parallel run)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--n-envs", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--parallel", type=int, default=1, help="runs at the same time")
    args = parser.parse_args()
    print(
        f"PPO on geo3 (quickstart hyperparameters), {args.steps:,} steps per run, "
        f"{args.parallel} run(s) at a time, 1 torch thread each"
    )
    print(f"{'n_envs':>7} {'run':>4} {'env-steps/s':>12} {'wall s':>8}")
    with ProcessPoolExecutor(args.parallel, mp_context=get_context("spawn")) as pool:
        for n_envs in args.n_envs:
            jobs = [(args.steps, n_envs, seed) for seed in range(args.parallel)]
            for n, seed, rate, wall in pool.map(_train, jobs):
                print(f"{n:>7} {seed:>4} {rate:>12,.0f} {wall:>8.1f}")


if __name__ == "__main__":
    main()
