"""US EIA-930 hourly grid monitor, per balancing authority (tz-aware UTC timestamps).

Columns: ``timestamp``, generation by fuel in MW (``WND``, ``SUN``, ``WAT``, ``OIL``,
``NG``, ``COL``, ``NUC``, ``OTH``) and ``avg_CI`` (gCO2/kWh). Some hours are empty in
every column (CISO 3, PJM 23 in 2022 — PJM's run is a whole day at the spring DST
change); they are errors unless ``fill="interpolate"`` is asked for, and then every
filled cell is counted in the provenance.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from gridrl.data.loaders._common import read_csv, require_columns
from gridrl.data.signals import Signals

__all__ = ["EIA930_NAMES", "load_eia930"]

TIME_COLUMN = "timestamp"
EIA930_NAMES: dict[str, str] = {
    "WND": "wind_mw",
    "SUN": "solar_mw",
    "WAT": "hydro_mw",
    "OIL": "oil_mw",
    "NG": "gas_mw",
    "COL": "coal_mw",
    "NUC": "nuclear_mw",
    "OTH": "other_mw",
    "avg_CI": "carbon_g_per_kwh",
}


def load_eia930(
    path: str | Path,
    *,
    site: str | None = None,
    columns: Mapping[str, str] | None = None,
    fill: Literal["interpolate"] | None = None,
    max_fill_h: int | None = None,
) -> Signals:
    """Load one balancing-authority file of the EIA-930 2022 set.

    Parameters
    ----------
    path : path
        The CSV file (``CISO.csv``, ...).
    site : str, optional
        Site name; default the file stem in lower case (``ciso``).
    columns : mapping, optional
        Raw column -> signal name; default ``EIA930_NAMES`` (all of them).
    fill : {"interpolate"}, optional
        Fill empty hours by time-linear interpolation (explicit opt-in, recorded).
    max_fill_h : int, optional
        With ``fill``: longest run of empty hours to fill; longer runs stay errors.

    Returns
    -------
    Signals
        MW by fuel and ``carbon_g_per_kwh``.
    """
    path = Path(path)
    df = read_csv(path)
    columns = dict(EIA930_NAMES if columns is None else columns)
    require_columns(df, [TIME_COLUMN, *columns], path)
    return Signals.from_frame(
        df,
        source=str(path),
        site=site or path.stem.lower(),
        columns=columns,
        time_column=TIME_COLUMN,
        fill=fill,
        max_fill_h=max_fill_h,
        _line_offset=1,
    )
