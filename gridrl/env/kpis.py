"""Key performance indicators: one definition, used for every policy and every report.

An episode's KPIs are computed from the per-site sums of the step outputs
(``core.OUTPUT_FIELDS``) over the episode, plus the work held at its start and end.
``KPIS`` names each KPI with its unit and definition; :func:`episode_kpis` computes them
all for one site, or for the whole fleet when given sums over sites.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gridrl.env.kernel import Out

__all__ = ["KPIS", "Kpi", "episode_kpis", "kpi_arrays", "kpi_table"]


@dataclass(frozen=True)
class Kpi:
    """A KPI: name, unit and definition in words."""

    name: str
    unit: str
    definition: str


KPIS: tuple[Kpi, ...] = (
    Kpi("hours", "h", "hours simulated in the episode"),
    Kpi("energy_kwh", "kWh", "facility energy: PUE x IT energy plus migration energy"),
    Kpi("it_energy_kwh", "kWh", "IT energy of the GPUs (busy and idle)"),
    Kpi("grid_import_kwh", "kWh", "energy imported from the grid"),
    Kpi("export_kwh", "kWh", "local generation not used (spilled or exported unpaid)"),
    Kpi("carbon_kg", "kg CO2e", "grid import x grid carbon intensity of the hour, plus "
        "standby generation x its carbon"),
    Kpi("cost", "currency", "grid import x price of the hour"),
    Kpi("gpu_rent_cost", "currency", "busy GPU-hours x the site's rental price per GPU-hour"),
    Kpi("battery_degradation_cost", "currency",
        "battery energy discharged x its wear cost per kWh"),
    Kpi("holding_cost", "currency",
        "flexible work held (queued or in transit) at the end of each hour x its holding "
        "price per GPU-h per hour"),
    Kpi("renewable_share", "1",
        "share of facility energy not imported from the grid, i.e. met by local PV and "
        "wind directly or through the battery: 1 - grid_import / energy (0 when no energy)"),
    Kpi("useful_gpu_h", "GPU h", "work done: flexible work plus inference served"),
    Kpi("energy_per_useful_gpu_h", "kWh/GPU h", "energy_kwh / useful_gpu_h"),
    Kpi("carbon_per_useful_gpu_h", "kg/GPU h", "carbon_kg / useful_gpu_h"),
    Kpi("work_done_gpu_h", "GPU h", "flexible work done (GPU-h of uncapped work)"),
    Kpi("arrived_gpu_h", "GPU h", "flexible work that arrived during the episode"),
    Kpi("deadline_miss_gpu_h", "GPU h", "flexible work whose deadline passed before it ran"),
    Kpi("overdue_gpu_h", "GPU h", "overdue work summed over the hours it stayed overdue"),
    Kpi("slo_violation_gpu_h", "GPU h", "inference demand not served (capacity or shed)"),
    Kpi("inference_demand_gpu_h", "GPU h", "inference demand"),
    Kpi("headroom_violation_h", "site h", "site-hours with import above headroom (overdraw)"),
    Kpi("overdraw_kwh", "kWh", "import above headroom that curtailment could not remove"),
    Kpi("curtailed_kwh", "kWh", "facility energy removed by curtailment"),
    Kpi("migrated_gpu_h", "GPU h", "flexible work moved between sites"),
    Kpi("migration_kwh", "kWh", "energy spent moving work"),
    Kpi("mean_cap", "1", "mean power cap fraction over the site-hours"),
    Kpi("leftover_gpu_h", "GPU h", "flexible work still queued or in transit at the end"),
    Kpi("work_lost_gpu_h", "GPU h",
        "work held at start + arrived + restart overhead - done - held at end; must be 0 "
        "(conservation)"),
    Kpi("transfer_cost", "currency", "price of the data sent with migrated work"),
    Kpi("restart_gpu_h", "GPU h", "restart overhead added to migrated work"),
    Kpi("inference_routed_gpu_h", "GPU h", "inference served at a site other than its own"),
    Kpi("backup_kwh", "kWh",
        "standby generation (outage hours only: import above headroom it covered)"),
    Kpi("backup_fuel_cost", "currency", "standby generation x its fuel cost per kWh"),
    Kpi("backup_carbon_kg", "kg CO2e", "standby generation x its carbon (also in carbon_kg)"),
    Kpi("dr_event_h", "site h", "site-hours of demand-response events"),
    Kpi("dr_compliant_h", "site h", "event site-hours with import at or below the level"),
    Kpi("dr_compliance", "1", "dr_compliant_h / dr_event_h (1 without events)"),
    Kpi("dr_shortfall_kwh", "kWh", "import above the events' levels"),
    Kpi("dr_payment", "currency", "programme payments for event hours"),
    Kpi("dr_penalty_cost", "currency", "dr_shortfall_kwh x the programme's penalty per kWh"),
)


def kpi_arrays(sums: np.ndarray, hours: np.ndarray | float, start_work_gpu_h: np.ndarray | float,
               end_work_gpu_h: np.ndarray | float, n_sites: int = 1,
               step_h: float = 1.0) -> dict[str, np.ndarray]:
    """KPIs of many episodes at once, as arrays over the leading axes of ``sums``.

    Parameters
    ----------
    sums : ndarray
        ``[..., F]`` step outputs summed over an episode (and over sites for fleet KPIs),
        fields in ``OUTPUT_FIELDS`` order.
    hours : array_like
        ``[...]`` hours simulated.
    start_work_gpu_h, end_work_gpu_h : array_like
        ``[...]`` flexible work held (queued plus in transit) at the start and the end.
    n_sites : int
        Sites summed into ``sums`` (``mean_cap`` averages over site-hours).
    step_h : float
        Hours in a step: ``sums`` of the cap (a fraction per step) weigh ``step_h`` each.
    """
    sums = np.asarray(sums, dtype=np.float64)

    def f(name: str) -> np.ndarray:
        return sums[..., Out[name.upper()]]

    hours = np.asarray(hours, dtype=np.float64)
    energy = f("facility_kwh")
    grid = f("grid_import_kwh")
    carbon = f("carbon_kg")
    useful = f("work_done_gpu_h") + f("inference_served_gpu_h")
    start = np.asarray(start_work_gpu_h, dtype=np.float64)
    end = np.asarray(end_work_gpu_h, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(energy > 0, 1.0 - grid / np.where(energy > 0, energy, 1.0), 0.0)
        per_useful = np.where(useful > 0, 1.0 / np.where(useful > 0, useful, 1.0), np.nan)
        mean_cap = np.where(hours > 0, f("cap") * step_h / (hours * n_sites), np.nan)
        ev = f("dr_event_h")
        compliance = np.where(ev > 0, f("dr_compliant_h") / np.where(ev > 0, ev, 1.0), 1.0)
    return {
        "hours": hours + 0.0 * energy,
        "energy_kwh": energy,
        "it_energy_kwh": f("it_kwh"),
        "grid_import_kwh": grid,
        "export_kwh": f("export_kwh"),
        "carbon_kg": carbon,
        "cost": f("cost"),
        "gpu_rent_cost": f("gpu_rent_cost"),
        "holding_cost": f("holding_cost"),
        "battery_degradation_cost": f("battery_degradation_cost"),
        "renewable_share": share,
        "useful_gpu_h": useful,
        "energy_per_useful_gpu_h": energy * per_useful,
        "carbon_per_useful_gpu_h": carbon * per_useful,
        "work_done_gpu_h": f("work_done_gpu_h"),
        "arrived_gpu_h": f("arrived_gpu_h"),
        "deadline_miss_gpu_h": f("deadline_miss_gpu_h"),
        "overdue_gpu_h": f("overdue_gpu_h"),
        "slo_violation_gpu_h": f("slo_gpu_h"),
        "inference_demand_gpu_h": f("inference_demand_gpu_h"),
        "headroom_violation_h": f("headroom_violation"),
        "overdraw_kwh": f("overdraw_kwh"),
        "curtailed_kwh": f("curtailed_kwh"),
        "migrated_gpu_h": f("migrated_gpu_h"),
        "migration_kwh": f("migration_kwh"),
        "mean_cap": mean_cap,
        "leftover_gpu_h": end + 0.0 * energy,
        "work_lost_gpu_h": (start + f("arrived_gpu_h") + f("restart_gpu_h")
                            - f("work_done_gpu_h") - end),
        "transfer_cost": f("transfer_cost"),
        "restart_gpu_h": f("restart_gpu_h"),
        "inference_routed_gpu_h": f("inference_routed_gpu_h"),
        "backup_kwh": f("backup_kwh"),
        "backup_fuel_cost": f("backup_fuel_cost"),
        "backup_carbon_kg": f("backup_carbon_kg"),
        "dr_event_h": f("dr_event_h"),
        "dr_compliant_h": f("dr_compliant_h"),
        "dr_compliance": compliance,
        "dr_shortfall_kwh": f("dr_shortfall_kwh"),
        "dr_payment": f("dr_payment"),
        "dr_penalty_cost": f("dr_penalty_cost"),
    }


def episode_kpis(sums: np.ndarray, hours: float, start_work_gpu_h: float | np.ndarray,
                 end_work_gpu_h: float | np.ndarray, step_h: float = 1.0) -> dict[str, float]:
    """KPIs of one episode.

    Parameters
    ----------
    sums : ndarray
        ``[F]`` (one site or the fleet) or ``[N, F]`` (per site) sums of step outputs over
        the episode, fields in ``OUTPUT_FIELDS`` order. Per-site input gives fleet KPIs
        (sites summed; ``mean_cap`` averaged over site-hours).
    hours : float
        Hours simulated (steps x ``step_h``).
    start_work_gpu_h, end_work_gpu_h : float or ndarray
        Flexible work held (queued plus in transit) at the start and the end (summed).
    step_h : float
        Hours in a step.
    """
    sums = np.asarray(sums, dtype=np.float64)
    n_sites = 1 if sums.ndim == 1 else sums.shape[0]
    tot = sums if sums.ndim == 1 else sums.sum(axis=0)
    arrays = kpi_arrays(tot, hours, float(np.sum(start_work_gpu_h)),
                        float(np.sum(end_work_gpu_h)), n_sites, step_h)
    return {k: float(v) for k, v in arrays.items()}


def kpi_table() -> list[Mapping[str, str]]:
    """KPI names, units and definitions as rows (for reports and docs)."""
    return [{"name": k.name, "unit": k.unit, "definition": k.definition} for k in KPIS]
