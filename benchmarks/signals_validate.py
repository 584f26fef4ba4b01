"""Time ``Signals.validate`` and ``Signals.from_frame`` on a year of 400 sites x 12 signals.

Run: ``python benchmarks/signals_validate.py [--sites 400] [--repeats 5]``. Prints the
best and median wall time of each over the repeats (target: validate well under 1 s).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from gridrl.data import Signals

SIGNALS = [
    "pv_kw",
    "wind_kw",
    "background_load_kw",
    "feeder_capacity_kw",
    "headroom_kw",
    "carbon_g_per_kwh",
    "price_per_mwh",
    "temp_c",
    "ghi_w_per_m2",
    "dni_w_per_m2",
    "inference_gpus",
    "flexible_gpu_h",
]


def main() -> None:
    """Build the table once, then time validation and construction."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", type=int, default=400)
    parser.add_argument("--hours", type=int, default=8760)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cols = pd.MultiIndex.from_product(
        [[f"site{i:03d}" for i in range(args.sites)], SIGNALS], names=("site", "signal")
    )
    index = pd.date_range("2023-01-01", periods=args.hours, freq="h", tz="UTC", name="time")
    frame = pd.DataFrame(rng.random((args.hours, len(cols))), index=index, columns=cols)
    print(
        f"table: {args.hours} h x {args.sites} sites x {len(SIGNALS)} signals "
        f"({frame.size / 1e6:.1f} M values, {frame.memory_usage().sum() / 2**20:.0f} MiB)"
    )
    for name, fn in [
        ("validate", lambda: Signals(frame).validate()),
        ("from_frame", lambda: Signals.from_frame(frame)),
    ]:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        print(f"{name:>10}: best {min(times):.3f} s, median {statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
