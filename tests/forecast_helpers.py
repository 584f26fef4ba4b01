"""Real data frames for the forecasting tests (ENTSO-E 2020), read with pandas.

The national signals get an approximate location (the country's centroid) for the
solar features and the night bound.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gridrl.data.signals import Signals
from gridrl.forecast.solar import SiteLocation

# Approximate geographic centres used for the sun geometry of national PV fleets.
NATIONAL_CENTROIDS = {
    "fr": SiteLocation(46.6, 2.4),
    "gb": SiteLocation(53.0, -1.5),
}
YEAR_START, YEAR_END = "2020-01-01", "2021-01-01"


def _hourly(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    raw = pd.read_csv(path, index_col=0, parse_dates=True)
    raw.index = raw.index.tz_localize("UTC")
    out = pd.DataFrame(index=raw.index)
    for name, expr in columns.items():
        out[name] = sum(raw[c] for c in expr.split("+"))
    # Mixed 15/30/60 min steps: hour means of whatever samples each hour holds.
    hourly = out.resample("h").mean()
    start, end = pd.Timestamp(YEAR_START, tz="UTC"), pd.Timestamp(YEAR_END, tz="UTC")
    return hourly[(hourly.index >= start) & (hourly.index < end)]


def entsoe_signals(shared_data: Path, country: str) -> Signals:
    """Hourly 2020 carbon intensity, national solar and wind (MW) of ``fr`` or ``gb``."""
    base = shared_data / "grid" / "entsoe_2020"
    carbon = _hourly(base / f"{country}_carbon_intensity.csv",
                     {"carbon_g_per_kwh": "Carbon Intensity"})
    wind = "Wind Onshore" if country == "fr" else "Wind Onshore+Wind Offshore"
    prod = _hourly(base / f"{country}_production.csv", {"solar_mw": "Solar", "wind_mw": wind})
    frame = pd.concat([carbon, prod], axis=1)
    frame.index.name = "time"
    frame.columns = pd.MultiIndex.from_product([[country], frame.columns])
    return Signals.from_frame(frame, source=f"entsoe_2020/{country}")


def tmy_pv_signals(file: str = "723170TYA.CSV", kwp: float = 200.0) -> tuple[Signals, dict]:
    """Hourly PV of a horizontal ``kwp`` array from a TMY3 file shipped with pvlib.

    PV (kW) = GHI (W/m2) / 1000 x ``kwp`` (no losses: a simple real-weather PV signal).
    TMY3 rows are hour-ending local standard time: shifted to UTC start labels and laid
    on 2021. Returns the signals (site ``tmy``) and ``{"tmy": SiteLocation}``.
    """
    import pvlib

    path = Path(pvlib.__file__).parent / "data" / file
    data, meta = pvlib.iotools.read_tmy3(str(path), map_variables=True)
    first_local_start = pd.Timestamp("2021-01-01 00:00")
    start_utc = first_local_start - pd.Timedelta(hours=float(meta["TZ"]))
    index = pd.date_range(start_utc.tz_localize("UTC"), periods=len(data), freq="h",
                          name="time")
    frame = pd.DataFrame(
        {("tmy", "pv_kw"): data["ghi"].to_numpy(dtype=float) / 1000.0 * kwp,
         ("tmy", "temp_c"): data["temp_air"].to_numpy(dtype=float)},
        index=index,
    )
    loc = SiteLocation(float(meta["latitude"]), float(meta["longitude"]),
                       float(meta["altitude"]))
    return Signals.from_frame(frame, source=str(path)), {"tmy": loc}
