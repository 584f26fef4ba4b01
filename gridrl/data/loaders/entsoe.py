"""ENTSO-E Transparency Platform exports: carbon intensity and generation by source.

The files (as published with Wiesner et al., "Let's Wait Awhile", Middleware 2021) have
naive timestamps; ENTSO-E publishes in UTC, so the loaders localise with
``assume_tz="UTC"`` by default — an explicit, documented choice the caller may change.
Steps may be irregular (GB: 30 min, then 15 min from 2020-10-31) and cells may be empty;
without ``resample`` a non-hourly file is a ``SignalError`` listing the steps found. With
``resample="mean"`` each hour is the mean of the samples in it, empty cells are excluded
(never filled; counted in the provenance and logged) and an hour left without any value
is an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

from gridrl.data.loaders._common import read_csv, require_columns
from gridrl.data.signals import ResampleMethod, SignalError, Signals

__all__ = [
    "ENTSOE_PRODUCTION_NAMES",
    "entsoe_production_columns",
    "load_entsoe_carbon",
    "load_entsoe_production",
]

log = logging.getLogger(__name__)

CARBON_TIME_COLUMN = "Time"
CARBON_COLUMN = "Carbon Intensity"

# ENTSO-E production types -> signal names (MW). ENTSO-E reports generation net of the
# units' own consumption, so types that can draw power are signed (``_net_``): pumped
# storage while pumping, reservoirs with pumps, and thermal units whose station
# auxiliaries exceed their output while idle (FR "Fossil Hard coal" goes to -41 MW in
# 2020). For the other types a negative value is an error.
ENTSOE_PRODUCTION_NAMES: dict[str, str] = {
    "Biomass": "biomass_mw",
    "Fossil Brown coal/Lignite": "lignite_net_mw",
    "Fossil Coal-derived gas": "coal_derived_gas_net_mw",
    "Fossil Gas": "gas_net_mw",
    "Fossil Hard coal": "hard_coal_net_mw",
    "Fossil Oil": "oil_net_mw",
    "Fossil Oil shale": "oil_shale_net_mw",
    "Fossil Peat": "peat_net_mw",
    "Geothermal": "geothermal_mw",
    "Hydro Pumped Storage": "hydro_pumped_storage_net_mw",
    "Hydro Run-of-river and poundage": "hydro_run_of_river_mw",
    "Hydro Water Reservoir": "hydro_reservoir_net_mw",
    "Marine": "marine_mw",
    "Nuclear": "nuclear_mw",
    "Other": "other_mw",
    "Other renewable": "other_renewable_mw",
    "Solar": "solar_mw",
    "Waste": "waste_mw",
    "Wind Offshore": "wind_offshore_mw",
    "Wind Onshore": "wind_onshore_mw",
}
# Two-letter neighbour codes (FR, GB, BE, ...) hold imports from that neighbour in MW:
# the data set's carbon-intensity script weights them with the neighbour's mix.
_NEIGHBOUR = re.compile(r"^[A-Z]{2}$")


def _default_site(path: Path) -> str:
    """``gb_production.csv`` -> ``gb``: the bidding-zone prefix of the file name."""
    return path.stem.split("_", 1)[0].lower()


def entsoe_production_columns(raw_columns: list[str], source: str) -> dict[str, str]:
    """Map the raw columns of a production file to signal names.

    Production types come from ``ENTSOE_PRODUCTION_NAMES``; two-letter neighbour codes
    become ``import_from_<code>_mw``. Any other column is a ``SignalError`` (pass an
    explicit ``columns=`` mapping to ``load_entsoe_production`` to load such a file).
    """
    mapping: dict[str, str] = {}
    for raw in raw_columns:
        if raw in ENTSOE_PRODUCTION_NAMES:
            mapping[raw] = ENTSOE_PRODUCTION_NAMES[raw]
        elif _NEIGHBOUR.match(raw):
            mapping[raw] = f"import_from_{raw.lower()}_mw"
        else:
            raise SignalError(
                source,
                "unknown ENTSO-E production column: expected a production type "
                f"({', '.join(ENTSOE_PRODUCTION_NAMES)}) or a two-letter neighbour code; "
                "pass columns={raw: signal_name} to map it",
                column=raw,
            )
    return mapping


def _log_excluded(signals: Signals) -> None:
    for step in signals.provenance:
        excluded = step.get("empty_cells_excluded")
        if excluded:
            log.warning(
                "%s: %d empty cells excluded from hourly means (%s)",
                signals.source,
                sum(excluded.values()),
                ", ".join(f"{c}: {n}" for c, n in excluded.items()),
            )


def load_entsoe_carbon(
    path: str | Path,
    *,
    site: str | None = None,
    assume_tz: str = "UTC",
    resample: ResampleMethod | None = None,
) -> Signals:
    """Load an ENTSO-E carbon-intensity CSV (``Time``, ``Carbon Intensity``).

    Parameters
    ----------
    path : path
        The CSV file.
    site : str, optional
        Site name; default the zone prefix of the file name (``gb``).
    assume_tz : str
        Zone of the naive timestamps; ENTSO-E publishes in UTC.
    resample : {"mean", "sum", "interpolate"}, optional
        Needed for sub-hourly files (both FR and GB are 30/15-minute); ``"mean"`` is
        right for an intensity.

    Returns
    -------
    Signals
        One column ``carbon_g_per_kwh`` (gCO2e/kWh).
    """
    path = Path(path)
    df = read_csv(path)
    require_columns(df, [CARBON_TIME_COLUMN, CARBON_COLUMN], path)
    signals = Signals.from_frame(
        df,
        source=str(path),
        site=site or _default_site(path),
        columns={CARBON_COLUMN: "carbon_g_per_kwh"},
        time_column=CARBON_TIME_COLUMN,
        assume_tz=assume_tz,
        resample=resample,
        _line_offset=1,
    )
    _log_excluded(signals)
    return signals


def load_entsoe_production(
    path: str | Path,
    *,
    site: str | None = None,
    columns: Mapping[str, str] | None = None,
    assume_tz: str = "UTC",
    resample: ResampleMethod | None = None,
) -> Signals:
    """Load an ENTSO-E generation-by-source CSV (first column: time; MW by type).

    Parameters
    ----------
    path : path
        The CSV file.
    site : str, optional
        Site name; default the zone prefix of the file name (``fr``).
    columns : mapping, optional
        Raw column -> signal name; only these are loaded. Default: every column, named
        by ``entsoe_production_columns`` (``Solar`` -> ``solar_mw``, ``Wind Onshore`` ->
        ``wind_onshore_mw``, ``BE`` -> ``import_from_be_mw``, ...).
    assume_tz : str
        Zone of the naive timestamps; ENTSO-E publishes in UTC.
    resample : {"mean", "sum", "interpolate"}, optional
        Needed for the GB file (mixed 30/15-minute steps). ``"mean"`` gives the hourly
        mean power; empty cells are excluded from it and reported.

    Returns
    -------
    Signals
        Generation and imports in MW.
    """
    path = Path(path)
    df = read_csv(path, index_col=0)
    if columns is None:
        columns = entsoe_production_columns([str(c) for c in df.columns], str(path))
    else:
        require_columns(df, columns, path)
    signals = Signals.from_frame(
        df,
        source=str(path),
        site=site or _default_site(path),
        columns=columns,
        assume_tz=assume_tz,
        resample=resample,
        _line_offset=1,
    )
    _log_excluded(signals)
    return signals
