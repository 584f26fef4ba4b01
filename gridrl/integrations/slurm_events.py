"""Demand-response events at the Slurm adapter: the cap a site publishes during an event.

The rule, applied after the policy's decision: while an event is active at a site (its
event signal file, written by ``gridrl openadr-ven``, says ``dr_active = 1`` at now),
the site's cap is ``min(policy cap, event cap)``. The event cap is the highest cap ``c``
whose estimated power ``gpus x gpu_max_kw x c`` (every GPU busy at its cap) stays at or
below ``dr_limit_kw``, rounded down to the published digits, and never below the GPUs'
``cap_min_fraction``: a limit below that cannot be met by capping (the VEN opts out of
such events; a note says so if one is in force anyway).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from gridrl.export.runtime import SiteDecision
from gridrl.integrations.slurm_observation import ObservationError, read_signal_row
from gridrl.integrations.slurm_sites import SitesConfig

DR_ACTIVE, DR_LIMIT_KW = "dr_active", "dr_limit_kw"


def event_cap_fraction(
    limit_kw: float, gpus: int, gpu_max_kw: float, cap_min_fraction: float, digits: int
) -> float:
    """The highest cap in ``[cap_min_fraction, 1]`` (rounded down to ``digits``) keeping
    ``gpus x gpu_max_kw x cap <= limit_kw``; ``cap_min_fraction`` when none does."""
    step = 10.0**digits
    cap = math.floor(limit_kw / (gpus * gpu_max_kw) * step + 1e-9) / step
    return min(1.0, max(cap_min_fraction, cap))


def _check(key: str, value: float) -> str | None:
    if key == DR_ACTIVE and value not in (0.0, 1.0):
        return f"expected 0 or 1, got {value:g}"
    if key == DR_LIMIT_KW and value < 0:
        return f"{value:g} is negative; a power limit cannot be"
    return None


def active_limits(cfg: SitesConfig, now_s: float) -> dict[str, float]:
    """``{site: dr_limit_kw}`` of the sites with an event in force at ``now_s``.

    Raises
    ------
    ObservationError
        naming the file, row and column when an event signal file is missing, stale, or
        lacks a value (see :func:`~.slurm_observation.read_signal_row`).
    """
    out: dict[str, float] = {}
    for site in cfg.sites:
        if site.events is None:
            continue
        row = read_signal_row(site.events, now_s, [DR_ACTIVE, DR_LIMIT_KW], _check)
        missing = [k for k in (DR_ACTIVE, DR_LIMIT_KW) if k not in row]
        if missing:
            raise ObservationError(f"{site.events.file}: no column {missing}")
        if row[DR_ACTIVE] == 1.0:
            out[site.name] = row[DR_LIMIT_KW]
    return out


def cap_for_events(
    decisions: Sequence[SiteDecision], limits: dict[str, float], cfg: SitesConfig
) -> tuple[list[SiteDecision], list[str]]:
    """The decisions with every active event's cap applied, and one note per event."""
    sites = {s.name: s for s in cfg.sites}
    out, notes = [], []
    for d in decisions:
        limit = limits.get(d.site)
        if limit is None:
            out.append(d)
            continue
        s = sites[d.site]
        assert s.gpu_max_kw is not None  # SITES.yaml requires it with events
        cap = event_cap_fraction(
            limit, s.gpus, s.gpu_max_kw, s.cap_min_fraction, cfg.power_cap_digits
        )
        new = min(d.power_cap_fraction, cap)
        est = s.gpus * s.gpu_max_kw * new
        met = "" if est <= limit + 1e-9 else " - NOT met: below the GPUs' lowest cap"
        notes.append(
            f"site {d.site}: demand-response limit {limit:.3f} kW: cap "
            f"{d.power_cap_fraction:.3f} -> {new:.3f} ({s.gpus} GPUs x {s.gpu_max_kw:g} kW "
            f"x cap = {est:.3f} kW){met}"
        )
        out.append(replace(d, power_cap_fraction=new))
    return out, notes
