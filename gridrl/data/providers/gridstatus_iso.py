"""US ISO load and locational prices through the ``gridstatus`` library.

``gridstatus`` (https://opensource.gridstatus.io) wraps each ISO's public files and
APIs behind one interface and returns frames with tz-aware ``Interval Start`` and
``Interval End`` columns: ``get_load(date, end=..)`` adds ``Load`` (MW) and
``get_lmp(date, end=.., market=.., locations=[..])`` adds ``Location`` and ``LMP``
($/MWh). Some ISOs' loads come as readings at a ``Time`` instead (NYISO: every 5
minutes, with off-cycle readings between). The library does its own HTTP, to the ISOs'
own hosts, so the one call into it is ``GridStatus.query`` and everything after it
(interval checks, hourly means, validation) is gridrl's: tested on frames of that
documented shape, and through gridstatus itself on NYISO answers recorded from the live
service (its host pointed at a local server).

Install with ``pip install 'gridrl[iso]'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from gridrl.data.providers.base import (
    Provider,
    ProviderError,
    hourly_from_intervals,
    intervals_of_readings,
)
from gridrl.data.signals import Signals

__all__ = ["GridStatus"]

ISOS = ("CAISO", "Ercot", "ISONE", "MISO", "NYISO", "PJM", "SPP", "IESO")
KINDS = ("load", "lmp")
START, END, TIME = "Interval Start", "Interval End", "Time"


@dataclass
class GridStatus(Provider):
    """``load_mw`` and/or ``price_per_mwh`` of a US ISO, hourly.

    Attributes
    ----------
    iso : str
        gridstatus class name: CAISO, Ercot, ISONE, MISO, NYISO, PJM, SPP, IESO.
    location : str
        LMP node, hub or zone for ``price_per_mwh`` (e.g. ``TH_NP15_GEN-APND``); empty
        for load only.
    market : str
        gridstatus market for the LMP: ``DAY_AHEAD_HOURLY`` (known a day ahead),
        ``REAL_TIME_HOURLY``, ``REAL_TIME_5_MIN``, ...
    load : bool
        Include ``load_mw``.
    """

    name: ClassVar[str] = "gridstatus"
    provides: ClassVar[tuple[str, ...]] = ("load_mw", "price_per_mwh")
    iso: str = ""
    location: str = ""
    market: str = "DAY_AHEAD_HOURLY"
    load: bool = True

    def fetch(self, start: Any, end: Any) -> Signals:
        if self.iso not in ISOS:
            raise ProviderError(f"{self.name}: iso {self.iso!r}: expected one of {ISOS}")
        if not self.load and not self.location:
            raise ProviderError(f"{self.name}: nothing asked: give location=NODE or load=true")
        lo, hi = self.window(start, end)
        columns = {}
        if self.load:
            columns["load_mw"] = self.parse("load", self.query("load", lo, hi), (lo, hi))
        if self.location:
            columns["price_per_mwh"] = self.parse("lmp", self.query("lmp", lo, hi), (lo, hi))
        frame = pd.concat(columns, axis=1)
        return self.to_signals(
            frame,
            f"gridstatus {self.iso}",
            lo,
            hi,
            note={"iso": self.iso, "location": self.location, "market": self.market},
        )

    def query(self, kind: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """The one call into gridstatus: its frame for ``kind`` in ``[start, end)``."""
        try:
            import gridstatus
        except ImportError:
            raise ProviderError(
                f"{self.name}: the gridstatus package is not installed: pip install 'gridrl[iso]'"
            ) from None
        iso = getattr(gridstatus, self.iso)()
        try:
            if kind == "load":
                return iso.get_load(date=start, end=end)
            return iso.get_lmp(date=start, end=end, market=self.market, locations=[self.location])
        except Exception as err:  # the library raises many types; name the call
            raise ProviderError(
                f"{self.name}: {self.iso} {kind}: {type(err).__name__}: {err}"
            ) from None

    def parse(
        self, kind: str, frame: pd.DataFrame, window: tuple[pd.Timestamp, pd.Timestamp]
    ) -> pd.Series:
        """Hourly means of gridstatus's ``Load`` or ``LMP`` column: over its intervals, or
        for a frame of readings (``Time`` only, as NYISO's load), each reading held until
        the next (:func:`~gridrl.data.providers.base.intervals_of_readings`)."""
        where = f"{self.iso} {kind}"
        value = "Load" if kind == "load" else "LMP"
        readings = START not in frame.columns and END not in frame.columns
        times = [TIME] if readings else [START, END]
        missing = [c for c in (*times, value) if c not in frame.columns]
        if missing:
            raise ProviderError(
                f"{self.name}: {where}: column {missing[0]!r} missing; the frame has "
                f"{list(frame.columns)}"
            )
        if kind == "lmp" and "Location" in frame.columns:
            others = sorted(set(frame["Location"].astype(str)) - {self.location})
            if others:
                raise ProviderError(
                    f"{self.name}: {where}: rows for other locations {others[:3]} where only "
                    f"{self.location!r} was asked"
                )
        for col in times:
            if getattr(frame[col].dt, "tz", None) is None:
                raise ProviderError(f"{self.name}: {where}: {col!r} has no time zone")
        values = frame[value].to_numpy()
        if readings:
            starts, ends, at = intervals_of_readings(frame[TIME], self.name, where)
            values = values[at]
        else:
            starts, ends = pd.DatetimeIndex(frame[START]), pd.DatetimeIndex(frame[END])
        return hourly_from_intervals(starts, ends, values, self.name, where, window)
