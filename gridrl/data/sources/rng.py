"""Seeded random streams per site and per purpose.

Each (scenario seed, site name, stream name) triple gets its own independent generator,
so adding a site or a stream never changes the random draws of another one, and the
same scenario always produces the same signals.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy.signal import lfilter


def stream_rng(seed: int, site: str, stream: str) -> np.random.Generator:
    """A generator for one site and one purpose, independent of all others.

    Parameters
    ----------
    seed : int
        The scenario seed.
    site : str
        Site name (part of the key, so sites draw independently).
    stream : str
        Purpose (``"congestion"``, ``"carbon"``, ...).
    """
    key = [zlib.crc32(site.encode()), zlib.crc32(stream.encode())]
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *key]))


def ar1_noise(rng: np.random.Generator, n_hours: int, std: float, phi: float) -> np.ndarray:
    """Stationary AR(1) noise ``x_t = phi x_{t-1} + sqrt(1 - phi^2) std e_t``.

    The first value is drawn from the stationary distribution, so every hour has
    standard deviation ``std`` and lag-1 correlation ``phi``.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_hours : int
        Length of the series.
    std : float
        Stationary standard deviation, in the unit of the signal it perturbs.
    phi : float
        Lag-1 autocorrelation in [0, 1).

    Returns
    -------
    numpy.ndarray
        Shape ``[n_hours]``.
    """
    e = rng.standard_normal(n_hours)
    x0 = e[0] * std
    innov = e[1:] * std * np.sqrt(1.0 - phi**2)
    rest = lfilter([1.0], [1.0, -phi], innov, zi=[phi * x0])[0]
    return np.concatenate([[x0], rest])
