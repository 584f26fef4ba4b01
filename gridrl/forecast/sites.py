"""Site locations for the solar features and the night bound, from a scenario."""

from __future__ import annotations

from typing import Any

from gridrl.forecast.errors import ForecastError
from gridrl.forecast.solar import SiteLocation


def site_locations(scenario: Any) -> dict[str, SiteLocation]:
    """Location of every site of a :class:`gridrl.scenario.Scenario`: its ``location``
    key, else the header of its weather file (read by
    :func:`gridrl.data.sources.weather.load_weather`), with the tilt and azimuth of its
    PV array.

    Raises
    ------
    ForecastError
        for a site whose weather source carries no coordinates.
    """
    from gridrl.data.sources.weather import load_weather

    out: dict[str, SiteLocation] = {}
    for site in scenario.expanded_sites():
        if site.location is not None:  # the site's own key wins over the weather file
            loc = site.location
            out[site.name] = SiteLocation(loc.latitude_deg, loc.longitude_deg, loc.altitude_m,
                                          pv_tilt_deg=site.pv.tilt_deg,
                                          pv_azimuth_deg=site.pv.azimuth_deg)
            continue
        try:
            w = load_weather(site.weather, scenario.year)
        except NotImplementedError:
            raise ForecastError(
                f"site {site.name!r}: weather source {site.weather.source!r} has no "
                "coordinates; pass locations explicitly"
            ) from None
        out[site.name] = SiteLocation(w.latitude_deg, w.longitude_deg, w.altitude_m,
                                      pv_tilt_deg=site.pv.tilt_deg,
                                      pv_azimuth_deg=site.pv.azimuth_deg)
    return out
