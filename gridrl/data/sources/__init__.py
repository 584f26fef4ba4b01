"""Embedded signal sources: everything here works on a fresh install, without downloads.

One module per physical quantity, each a function of the scenario's site configuration
and the hourly UTC index of the scenario year:

- ``weather``: pvlib's bundled typical-meteorological-year files mapped onto the year;
- ``pv``: PV AC power through pvlib's models (PVWatts DC and inverter);
- ``wind``: turbine output through windpowerlib's OEDB power curves;
- ``grid``: background load, feeder capacity after events, headroom;
- ``market``: carbon intensity and price of the regional mix (model or CSV);
- ``workload``: inference demand and flexible work arrivals (seeded generator);
- ``series``: any of these signals from a real file or a named data set instead.

``gridrl.data.build.build_signals`` puts them together into one ``Signals`` table.
"""
