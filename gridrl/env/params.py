"""Static parameters of the simulation core, built from a :class:`~gridrl.scenario.Scenario`.

``EnvParams`` holds per-site numpy arrays (shape ``[N]``) and scalars; the core broadcasts
them against the batch axis. Building them validates everything the simulation needs
beyond what the scenario schema checks, and raises :class:`~gridrl.scenario.ScenarioError`
naming the key (``site 'pv01': a GPU capped at env.cap_min_fraction ...``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gridrl.data.datasets import dataset_dir, existing_form
from gridrl.env.clock import MINUTES_PER_HOUR, step_hours, steps_per_hour
from gridrl.errors import GridrlError
from gridrl.scenario import NetworkConfig, Scenario, ScenarioError, SiteConfig

__all__ = [
    "ACTION_NAMES", "REWARD_TERMS", "EnvParams", "arrival_split", "build_params",
    "migration_link_gpu_h", "rtt_ms", "slack_buckets", "step_units", "terminal_delay_h",
    "throttle_grid", "transfer_cost_per_gb",
]

#: Per-site action components, in layout order (``battery`` only with a battery action).
ACTION_NAMES = ("run", "cap", "route", "migrate", "battery")

#: Largest route logit scale: exp(-2 * 300) is still a normal float64.
MAX_ROUTE_LOGIT_SCALE = 300.0

#: Reward terms, in the order of ``EnvParams.reward_weights``.
REWARD_TERMS = ("carbon_kg", "cost", "slo_gpu_h", "overdue_gpu_h", "overdraw_kwh",
                "gpu_rent_cost", "holding_cost", "battery_degradation_cost", "transfer_cost",
                "backup_fuel_cost", "dr_penalty_cost", "dr_payment")

SECONDS_PER_MINUTE = 60.0
#: Speed of light in vacuum (km per ms): round-trip times from distances.
C_KM_PER_MS = 299.792458
#: Mean Earth radius (km) for great-circle distances.
EARTH_RADIUS_KM = 6371.0
GB_PER_GBIT = 0.125


@dataclass(frozen=True, eq=False)
class EnvParams:
    """Everything constant during an episode. Arrays are float64 of shape ``[N]``.

    Attributes
    ----------
    site_names : tuple of str
    slack_buckets : int
        ``S``: queue slack buckets ``0..S-1`` hours (plus an overdue bucket); see
        :func:`slack_buckets`. Buckets age at the end of each hour, whatever the step.
    gpus : ndarray
        ``G_i`` accelerators per site.
    gpu_idle_kw : ndarray
        ``P0``: IT power per idle GPU (kW), its board idle plus its share of the host
        idle (``gpu_board_idle_kw + host_idle_kw_per_gpu``).
    gpu_board_idle_kw, gpu_board_max_kw : ndarray
        Board power of an idle GPU and the board's max power ``Pb`` (what caps are
        fractions of).
    host_idle_kw_per_gpu, host_busy_kw_per_gpu : ndarray
        The GPU's share of its host (not capped), idle and with the GPU busy (``Hb``).
    facility_fixed_kw : ndarray
        ``F0``: facility power that does not scale with IT (kW).
    pue, pue_temp_slope_per_c, pue_temp_threshold_c : ndarray
        ``PUE_t = pue + slope * max(temp_c - threshold, 0)``: the facility power per kW
        of IT on top of ``F0``.
    battery_capacity_kwh, battery_power_kw : ndarray
        Energy capacity and charge/discharge power limit (bus side).
    battery_eta : ndarray
        One-way efficiency ``sqrt(round_trip_efficiency)``.
    soc_min_kwh, soc_max_kwh, soc_initial_kwh : ndarray
    soc_initial_low_kwh, soc_initial_high_kwh : ndarray
        Range the initial charge of an episode is drawn from
        (:func:`gridrl.env.physics.initial_soc_kwh`); both ``soc_initial_kwh`` without
        ``battery.soc_initial_fraction_range``.
    battery_degradation_per_kwh : ndarray
        Wear cost per kWh discharged (bus side).
    arrival_split : ndarray
        ``[N, S + 1]``: share of a step's flexible arrivals entering each queue bucket
        (index 0 = overdue gets none; index ``1 + d`` = slack ``d`` hours).
    throttle_cap : ndarray
        Cap fractions of the board's max power at which both throttle curves are given
        (the points of both scenario curves; each curve is linear between them).
    throttle_throughput, throttle_power : ndarray
        Training (flexible work) curve at ``throttle_cap``: throughput fraction
        ``tau_X`` and board power fraction ``pi_X`` drawn by a busy GPU.
    inference_throughput, inference_power : ndarray
        Inference curve at ``throttle_cap``: ``tau_I`` and ``pi_I``.
    cap_min : float
        Lowest power cap fraction an action (or curtailment) can set.
    tau_min : float
        Training throughput at ``cap_min``.
    migration_kwh_per_gpu_h : float
        Transfer energy charged at the source per GPU-hour of work moved
        (``network.transfer_kwh_per_gb x network.checkpoint_gb_per_gpu_h``).
    migration_gb_per_gpu_h : float
        Checkpoint and data (GB) moved with one GPU-hour of queued work.
    migration_link_gpu_h : ndarray
        Most work (GPU-h) a site can send in one step over its link
        (:func:`migration_link_gpu_h`).
    restart_overhead_gpu_h_per_gpu_h : float
        Work added at the destination per GPU-h migrated (checkpoint reload, lost
        progress).
    accept_hours : float
        ``S - 1``: the longest a migrated GPU-h may still wait on arrival (hours); a
        destination accepts at most ``G accept_hours`` per step.
    transfer_cost_per_gb : ndarray
        ``[N, N]`` price of one GB sent from site ``i`` to site ``j``.
    inference_routable : ndarray
        ``[N, N]`` 1 where site ``j`` may serve site ``i``'s inference (round trip within
        ``network.inference_rtt_max_ms``, ``i != j``), else 0.
    inference_remote_fraction_max : float
        Largest share of a site's inference demand served elsewhere.
    inference_network_kwh_per_gpu_h : float
        Network energy charged at the home site per GPU-h of inference routed away.
    max_migration_fraction : float
        Upper end of the ``migrate`` action.
    route_logit_scale : float
        ``route`` action ``a`` becomes the softmax logit ``a * route_logit_scale``.
    battery_control : str
        ``"rule"`` (the dispatch rule, no battery action), ``"setpoint"`` (the action is
        the setpoint) or ``"residual"`` (the action adds to the rule's setpoint).
    battery_discharge_threshold_fraction : float
        The rule: discharge covers import above this share of headroom.
    gpu_rent_per_gpu_h : ndarray
        Price of a busy GPU-hour where capacity is rented (0 where it is owned).
    holding_cost_per_gpu_h_h : ndarray
        Price of holding one GPU-h of flexible work (queued or in transit) for an hour:
        the value of results delivered sooner.
    terminal_delay_h : ndarray
        Hours of holding charged to a GPU-h left at the end of an episode: the site's
        mean deadline slack (see :func:`terminal_delay_h`).
    backup_capacity_kw, backup_fuel_cost_per_kwh, backup_carbon_g_per_kwh : ndarray
        Standby generation: capacity, fuel cost and carbon per kWh generated.
    dr_payment_per_event_h, dr_penalty_per_kwh : ndarray
        Demand-response programme terms: payment per event hour, penalty per kWh of
        import above an event's level.
    reward_weights : ndarray
        ``[12]`` weights of ``REWARD_TERMS`` (rent, holding, battery wear, transfer, fuel and
        the demand-response penalty are money, weighted like ``cost``; the payment is a
        credit, weighted ``-cost``).
    reward_scale : float
        The weighted sum is divided by it.
    ref_kw : ndarray
        ``F0 + G (Pb + Hb) pue``: the per-site power that observations are scaled by.
    scenario : Scenario
        The scenario the parameters came from.
    step_h : float
        Length of a step in hours (``env.step_minutes / 60``): energy is ``kW x step_h``.
    """

    site_names: tuple[str, ...]
    slack_buckets: int
    gpus: np.ndarray
    gpu_idle_kw: np.ndarray
    gpu_board_idle_kw: np.ndarray
    gpu_board_max_kw: np.ndarray
    host_idle_kw_per_gpu: np.ndarray
    host_busy_kw_per_gpu: np.ndarray
    facility_fixed_kw: np.ndarray
    pue: np.ndarray
    pue_temp_slope_per_c: np.ndarray
    pue_temp_threshold_c: np.ndarray
    battery_capacity_kwh: np.ndarray
    battery_power_kw: np.ndarray
    battery_eta: np.ndarray
    soc_min_kwh: np.ndarray
    soc_max_kwh: np.ndarray
    soc_initial_kwh: np.ndarray
    soc_initial_low_kwh: np.ndarray
    soc_initial_high_kwh: np.ndarray
    battery_degradation_per_kwh: np.ndarray
    arrival_split: np.ndarray
    throttle_cap: np.ndarray
    throttle_throughput: np.ndarray
    throttle_power: np.ndarray
    inference_throughput: np.ndarray
    inference_power: np.ndarray
    cap_min: float
    tau_min: float
    migration_kwh_per_gpu_h: float
    migration_gb_per_gpu_h: float
    migration_link_gpu_h: np.ndarray
    restart_overhead_gpu_h_per_gpu_h: float
    accept_hours: float
    transfer_cost_per_gb: np.ndarray
    inference_routable: np.ndarray
    inference_remote_fraction_max: float
    inference_network_kwh_per_gpu_h: float
    max_migration_fraction: float
    route_logit_scale: float
    battery_control: str
    battery_discharge_threshold_fraction: float
    gpu_rent_per_gpu_h: np.ndarray
    holding_cost_per_gpu_h_h: np.ndarray
    terminal_delay_h: np.ndarray
    backup_capacity_kw: np.ndarray
    backup_fuel_cost_per_kwh: np.ndarray
    backup_carbon_g_per_kwh: np.ndarray
    dr_payment_per_event_h: np.ndarray
    dr_penalty_per_kwh: np.ndarray
    reward_weights: np.ndarray
    reward_scale: float
    ref_kw: np.ndarray
    scenario: Scenario = field(repr=False)
    step_h: float = 1.0

    @property
    def n_sites(self) -> int:
        """Number of sites ``N``."""
        return len(self.site_names)

    @property
    def steps_per_hour(self) -> int:
        """Steps in an hour (1, 2 or 4; :func:`gridrl.env.clock.steps_per_hour`)."""
        return steps_per_hour(round(self.step_h * MINUTES_PER_HOUR))

    @property
    def battery_action(self) -> bool:
        """True when the action has a battery component (setpoint or residual)."""
        return self.battery_control != "rule"

    @property
    def battery_residual(self) -> bool:
        """True when the battery action is added to the rule's setpoint."""
        return self.battery_control == "residual"

    @property
    def battery_action_span_kw(self) -> np.ndarray:
        """``[N]`` kW of battery power per unit of the battery action: ``P_b`` for a
        setpoint, ``2 P_b`` for a residual (so that from any rule setpoint in
        [-P_b, P_b] every setpoint in that range is reachable)."""
        return self.battery_power_kw * (2.0 if self.battery_residual else 1.0)

    @property
    def action_names(self) -> tuple[str, ...]:
        """Per-site action components in layout order."""
        return ACTION_NAMES if self.battery_action else ACTION_NAMES[:4]

    @property
    def n_actions_per_site(self) -> int:
        """Action components per site (4, or 5 with the battery action)."""
        return len(self.action_names)

    @property
    def gpu_max_kw(self) -> np.ndarray:
        """``[N]`` IT power of a GPU busy at the full board power, host share included:
        ``gpu_board_max_kw + host_busy_kw_per_gpu`` (no work draws more)."""
        return self.gpu_board_max_kw + self.host_busy_kw_per_gpu

    def throughput(self, cap: np.ndarray | float) -> np.ndarray:
        """Training (flexible work) throughput fraction at power cap fraction ``cap``."""
        return np.interp(cap, self.throttle_cap, self.throttle_throughput)

    def inference_throughput_at(self, cap: np.ndarray | float) -> np.ndarray:
        """Inference throughput fraction at power cap fraction ``cap``."""
        return np.interp(cap, self.throttle_cap, self.inference_throughput)

    def power_at(self, cap: np.ndarray | float, inference: bool = False) -> np.ndarray:
        """Board power fraction a busy GPU draws at cap ``cap`` (training or inference)."""
        return np.interp(cap, self.throttle_cap,
                         self.inference_power if inference else self.throttle_power)

    def to_dict(self) -> dict:
        """Arrays as lists (for manifests, logs and other solvers)."""
        out: dict = {}
        for name in self.__dataclass_fields__:  # step_h included: rates need it
            if name == "scenario":
                continue
            value = getattr(self, name)
            out[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out


def arrival_split(site: SiteConfig, slack_buckets: int) -> np.ndarray:
    """Share of a step's flexible arrivals per queue bucket ``[S + 1]``.

    Work arriving in hour ``t`` (in any of its steps) gets a deadline slack ``d`` drawn
    over the integers ``workload.deadline_slack_h_min .. deadline_slack_h_max`` in equal
    shares (deterministic split, no sampling): it may run in hours ``t .. t + d`` and
    enters bucket ``1 + d`` (bucket 0 is overdue).
    """
    w = site.workload
    split = np.zeros(slack_buckets + 1)
    lo, hi = w.deadline_slack_h_min, w.deadline_slack_h_max
    split[1 + lo : 2 + hi] = 1.0 / (hi - lo + 1)
    return split


def terminal_delay_h(site: SiteConfig) -> float:
    """Hours of holding a GPU-h of work left at the end of an episode is charged: the mean
    deadline slack its site's arrivals get, ``(slack_min + slack_max) / 2``.

    Work left at the end still has to run after it; it was allowed to wait that long
    on average, so leaving it costs at least that much holding. A shorter charge would
    make pushing work past the end cheaper than holding it inside the episode.
    """
    w = site.workload
    return 0.5 * (w.deadline_slack_h_min + w.deadline_slack_h_max)


def _initial_range(site: SiteConfig) -> tuple[float, float]:
    b = site.battery
    return b.soc_initial_fraction_range or (b.soc_initial_fraction, b.soc_initial_fraction)


def slack_buckets(scenario: Scenario) -> int:
    """Hourly queue buckets ``S``: ``env.slack_buckets``, or more if a site's longest
    deadline slack needs them (``max deadline_slack_h_max + 1``). Buckets are hours at
    every step length (deadlines fall at the ends of hours), so a step costs the same
    whatever its length.

    ``env.slack_buckets`` is a minimum: a queue with fewer buckets than the longest
    slack would have to lump or cut deadlines, so the queue grows instead (nothing else
    depends on ``S``: observations use slack edges in hours).
    """
    longest = max(s.workload.deadline_slack_h_max for s in scenario.expanded_sites())
    return max(scenario.env.slack_buckets, longest + 1)


def _site_checks(site: SiteConfig, scenario: Scenario, caps: np.ndarray,
                 curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """A busy GPU at any cap an action can set must draw at least an idle one."""
    idle_kw = site.gpu_board_idle_kw + site.host_idle_kw_per_gpu
    for name, (_, power) in curves.items():
        ok = caps >= scenario.env.cap_min_fraction
        busy_kw = power[ok] * site.gpu_board_max_kw + site.host_busy_kw_per_gpu
        if (busy_kw < idle_kw).any():
            c = caps[ok][busy_kw < idle_kw][0]
            raise ScenarioError(
                f"site {site.name!r}: a GPU busy with {name} work at cap {c:g} (throttle."
                f"{name}) draws {busy_kw[busy_kw < idle_kw][0]:g} kW with its host share, "
                f"below its idle power gpu_board_idle_kw + host_idle_kw_per_gpu = "
                f"{idle_kw:g} kW; raise env.cap_min_fraction or check the power keys"
            )


def throttle_grid(scenario: Scenario) -> tuple[np.ndarray, dict[str, tuple[np.ndarray,
                                                                             np.ndarray]]]:
    """The caps of both throttle curves and each curve's ``(throughput, power fraction)``
    at them (linear interpolation, so each curve stays exactly what the scenario says)."""
    t = scenario.throttle
    caps = np.unique(np.concatenate([t.training.cap_fraction, t.inference.cap_fraction]))
    out = {}
    for name, c in (("training", t.training), ("inference", t.inference)):
        x = np.asarray(c.cap_fraction, dtype=np.float64)
        out[name] = (np.interp(caps, x, c.throughput_fraction), np.interp(caps, x, c.power))
    return caps.astype(np.float64), out


def build_params(scenario: Scenario) -> EnvParams:
    """Build the core's parameters from a validated scenario.

    Raises
    ------
    ScenarioError
        A power cap below
        idle power; ``env.cap_min_fraction`` outside the throttle curve; a network key
        naming an unknown site or region, or a latency of a step or more; bad observation
        edges or horizons.
    """
    env = scenario.env
    sites = scenario.expanded_sites()
    cap_x, curves = throttle_grid(scenario)
    for name in curves:
        first = getattr(scenario.throttle, name).cap_fraction[0]
        if env.cap_min_fraction < first:
            raise ScenarioError(
                f"env.cap_min_fraction = {env.cap_min_fraction} lies below the throttle "
                f"curve's first point throttle.{name}.cap_fraction[0] = {first}: the curve "
                "must cover every cap an action can set"
            )
    thr_y = curves["training"][0]
    if env.route_logit_scale > MAX_ROUTE_LOGIT_SCALE:
        raise ScenarioError(
            f"env.route_logit_scale = {env.route_logit_scale} exceeds "
            f"{MAX_ROUTE_LOGIT_SCALE}: softmax weights exp(-2 x scale) would underflow"
        )
    n_slack = slack_buckets(scenario)
    edges = env.observation_slack_edges_h
    if any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or (
        edges and edges[-1] >= n_slack
    ):
        raise ScenarioError(
            f"env.observation_slack_edges_h = {edges}: expected increasing values below "
            f"the {n_slack} queue slack buckets"
        )
    hz = env.forecast_horizons_h
    if any(b <= a for a, b in zip(hz, hz[1:], strict=False)):
        raise ScenarioError(f"env.forecast_horizons_h = {hz}: expected increasing values")
    qs = env.forecast_quantiles
    if 0.5 not in qs or any(b <= a for a, b in zip(qs, qs[1:], strict=False)):
        raise ScenarioError(
            f"env.forecast_quantiles = {qs}: expected increasing levels that include 0.5"
        )
    for site in sites:
        _site_checks(site, scenario, cap_x, curves)

    def arr(get) -> np.ndarray:
        return np.array([float(get(s)) for s in sites], dtype=np.float64)

    cap = arr(lambda s: s.battery.capacity_kwh)
    rw = scenario.reward
    gpus = arr(lambda s: s.gpus)
    board_max = arr(lambda s: s.gpu_board_max_kw)
    host_busy = arr(lambda s: s.host_busy_kw_per_gpu)
    pue = arr(lambda s: s.pue)
    return EnvParams(
        site_names=tuple(s.name for s in sites),
        slack_buckets=n_slack,
        gpus=gpus,
        gpu_idle_kw=arr(lambda s: s.gpu_board_idle_kw + s.host_idle_kw_per_gpu),
        gpu_board_idle_kw=arr(lambda s: s.gpu_board_idle_kw),
        gpu_board_max_kw=board_max,
        host_idle_kw_per_gpu=arr(lambda s: s.host_idle_kw_per_gpu),
        host_busy_kw_per_gpu=host_busy,
        facility_fixed_kw=arr(lambda s: s.facility_fixed_kw),
        pue=pue,
        pue_temp_slope_per_c=arr(lambda s: s.pue_temp_slope_per_c),
        pue_temp_threshold_c=arr(lambda s: s.pue_temp_threshold_c),
        battery_capacity_kwh=cap,
        # A battery without energy cannot move power either.
        battery_power_kw=np.where(cap > 0, arr(lambda s: s.battery.power_kw), 0.0),
        battery_eta=np.sqrt(arr(lambda s: s.battery.round_trip_efficiency)),
        soc_min_kwh=cap * arr(lambda s: s.battery.soc_min_fraction),
        soc_max_kwh=cap * arr(lambda s: s.battery.soc_max_fraction),
        soc_initial_kwh=cap * arr(lambda s: s.battery.soc_initial_fraction),
        soc_initial_low_kwh=cap * arr(lambda s: _initial_range(s)[0]),
        soc_initial_high_kwh=cap * arr(lambda s: _initial_range(s)[1]),
        battery_degradation_per_kwh=arr(lambda s: s.battery.degradation_cost_per_kwh),
        arrival_split=np.stack([arrival_split(s, n_slack) for s in sites]),
        throttle_cap=cap_x,
        throttle_throughput=thr_y,
        throttle_power=curves["training"][1],
        inference_throughput=curves["inference"][0],
        inference_power=curves["inference"][1],
        cap_min=float(env.cap_min_fraction),
        tau_min=float(np.interp(env.cap_min_fraction, cap_x, thr_y)),
        **_network_fields(scenario, sites, n_slack),
        max_migration_fraction=float(env.max_migration_fraction),
        route_logit_scale=float(env.route_logit_scale),
        battery_control=env.battery_control,
        battery_discharge_threshold_fraction=float(env.battery_discharge_threshold_fraction),
        gpu_rent_per_gpu_h=arr(lambda s: s.gpu_rent_per_gpu_h),
        holding_cost_per_gpu_h_h=arr(lambda s: s.workload.holding_cost_per_gpu_h_h),
        terminal_delay_h=arr(terminal_delay_h),
        backup_capacity_kw=arr(lambda s: s.backup.capacity_kw),
        backup_fuel_cost_per_kwh=arr(lambda s: s.backup.fuel_cost_per_kwh),
        backup_carbon_g_per_kwh=arr(lambda s: s.backup.carbon_g_per_kwh),
        dr_payment_per_event_h=arr(lambda s: s.demand_response.payment_per_event_h),
        dr_penalty_per_kwh=arr(lambda s: s.demand_response.penalty_per_kwh),
        reward_weights=np.array(
            [rw.carbon_per_kg, rw.cost_per_unit, rw.slo_per_gpu_h, rw.overdue_per_gpu_h,
             rw.overdraw_per_kwh, rw.cost_per_unit, rw.cost_per_unit, rw.cost_per_unit,
             rw.cost_per_unit, rw.cost_per_unit, rw.cost_per_unit, -rw.cost_per_unit],
            dtype=np.float64,
        ),
        reward_scale=float(rw.scale),
        ref_kw=arr(lambda s: s.facility_fixed_kw) + gpus * (board_max + host_busy) * pue,
        scenario=scenario,
        step_h=step_hours(env.step_minutes),
    )


# --------------------------------------------------------------------------- network


def migration_link_gpu_h(net: NetworkConfig, step_minutes: int = 60) -> float:
    """Most work (GPU-h) a site can send in one step: ``bandwidth x link share x (step -
    latency)`` in GB over ``checkpoint_gb_per_gpu_h`` (unlimited without data).

    Work sent in a step arrives at the start of the next one: the transfer of at most
    this much work takes ``latency + size / rate <=`` one step, so the transit delay is
    one step (the only place the link's seconds are turned into steps).
    """
    step_s = step_minutes * SECONDS_PER_MINUTE
    latency_s = net.latency_ms * 1e-3
    if latency_s >= step_s:
        raise ScenarioError(f"network.latency_ms = {net.latency_ms}: expected less than "
                            f"one step ({step_s * 1e3:g} ms)")
    if net.checkpoint_gb_per_gpu_h == 0.0:
        return float("inf")
    gb = net.bandwidth_gbps * GB_PER_GBIT * net.link_share_fraction * (step_s - latency_s)
    return gb / net.checkpoint_gb_per_gpu_h


def rtt_ms(net: NetworkConfig, names: list[str]) -> np.ndarray:
    """``[N, N]`` round-trip times (ms) from ``network.coordinates_deg``: ``inflation x 2 d
    / c`` over the great-circle distance ``d`` (infinite where a site has none: only
    without inference routing, :func:`check_network_sites`)."""
    pos = np.array([net.coordinates_deg.get(n, (np.nan, np.nan)) for n in names], float)
    lat, lon = np.radians(pos[:, 0]), np.radians(pos[:, 1])
    h = (np.sin((lat[:, None] - lat[None]) / 2) ** 2
         + np.cos(lat[:, None]) * np.cos(lat[None]) * np.sin((lon[:, None] - lon[None]) / 2) ** 2)
    d_km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    out = net.rtt_inflation * 2 * d_km / C_KM_PER_MS
    return np.where(np.isnan(out), np.inf, out)


def transfer_cost_per_gb(net: NetworkConfig, names: list[str]) -> np.ndarray:
    """``[N, N]`` USD per GB sent from site ``i`` (row) to ``j``: the cloud regions'
    matrix when ``network.transfer_cost_regions`` is set, else the flat
    ``transfer_cost_per_gb``."""
    n = len(names)
    regions = net.transfer_cost_regions
    if not regions:
        return np.full((n, n), net.transfer_cost_per_gb) * (1.0 - np.eye(n))
    missing = [s for s in names if s not in regions]
    if missing:
        raise ScenarioError(
            f"network.transfer_cost_regions: expected a region for every site; missing "
            f"{missing}")
    try:
        path = existing_form(dataset_dir(net.transfer_cost_dataset) / net.transfer_cost_file)
        table = pd.read_csv(path, index_col=0)
    except (GridrlError, OSError) as exc:
        raise ScenarioError(f"network.transfer_cost_regions: {exc}") from None
    bad = sorted({regions[s] for s in names} - set(table.index) - set(table.columns))
    if bad:
        raise ScenarioError(
            f"network.transfer_cost_regions: regions {bad} are not in {path} (rows and "
            f"columns: {', '.join(table.index)})")
    src = [regions[s] for s in names]
    price = table.loc[src, src].to_numpy(dtype=np.float64)
    # sites in one region still pay to cross between its zones
    same = np.equal.outer(src, src) & ~np.eye(n, dtype=bool)
    if same.any():
        if net.transfer_cost_intra_region_per_gb is None:
            i, j = np.argwhere(same)[0]
            raise ScenarioError(
                f"network.transfer_cost_regions: sites {names[i]!r} and {names[j]!r} are both "
                f"in {src[i]!r}, whose price to itself is not a transfer between sites; set "
                "network.transfer_cost_intra_region_per_gb (the provider's cross-zone "
                "price per GB)")
        price[same] = net.transfer_cost_intra_region_per_gb
    return price * (1.0 - np.eye(n))


def check_network_sites(scenario: Scenario, names: list[str]) -> None:
    """Network keys name sites of the scenario, and with inference routing every site
    has coordinates (a site without would silently serve no one and be served by none).

    Raises
    ------
    ScenarioError
        Naming the key path, the names not known and the site names expected.
    """
    net = scenario.network
    for key in ("coordinates_deg", "transfer_cost_regions"):
        unknown = sorted(set(getattr(net, key)) - set(names))
        if unknown:
            raise ScenarioError(f"network.{key}: unknown site(s) {unknown}; expected names "
                                f"among the scenario's sites {names}")
    if scenario.env.inference_remote_fraction_max > 0:
        missing = [s for s in names if s not in net.coordinates_deg]
        if missing:
            raise ScenarioError(
                f"network.coordinates_deg: expected [latitude, longitude] for every site when "
                f"env.inference_remote_fraction_max > 0 (inference routing); missing {missing}")


def _network_fields(scenario: Scenario, sites: list[SiteConfig], n_slack: int) -> dict:
    net, env = scenario.network, scenario.env
    names = [s.name for s in sites]
    n = len(names)
    if n > 1:  # a single site uses no network
        check_network_sites(scenario, names)
    routable = (rtt_ms(net, names) <= net.inference_rtt_max_ms) & ~np.eye(n, dtype=bool)
    return dict(
        migration_kwh_per_gpu_h=net.transfer_kwh_per_gb * net.checkpoint_gb_per_gpu_h,
        migration_gb_per_gpu_h=float(net.checkpoint_gb_per_gpu_h),
        migration_link_gpu_h=np.full(n, migration_link_gpu_h(net, env.step_minutes)),
        restart_overhead_gpu_h_per_gpu_h=float(net.restart_overhead_gpu_h_per_gpu_h),
        accept_hours=float(n_slack - 1),
        transfer_cost_per_gb=transfer_cost_per_gb(net, names) if n > 1 else np.zeros((1, 1)),
        inference_routable=routable.astype(np.float64),
        inference_remote_fraction_max=float(env.inference_remote_fraction_max),
        inference_network_kwh_per_gpu_h=float(net.inference_kwh_per_gpu_h),
    )


def step_units(params: EnvParams) -> EnvParams:
    """``params`` in the units of one step, as the linear program reads them
    (:mod:`gridrl.agents.lp`): powers as the kWh of a step, GPUs as the GPU-h of a
    step, holding, the overdue weight and the event payment per step (the destination
    limit ``G (S - 1)`` of hours kept); ``step_h`` 1. At hourly steps ``params`` itself."""
    dt = params.step_h
    if dt == 1.0:
        return params
    weights = params.reward_weights.copy()
    weights[REWARD_TERMS.index("overdue_gpu_h")] *= dt  # charged per hour it is held
    return dataclasses.replace(
        params, gpus=params.gpus * dt, facility_fixed_kw=params.facility_fixed_kw * dt,
        battery_power_kw=params.battery_power_kw * dt,
        backup_capacity_kw=params.backup_capacity_kw * dt,
        dr_payment_per_event_h=params.dr_payment_per_event_h * dt,
        holding_cost_per_gpu_h_h=params.holding_cost_per_gpu_h_h * dt,
        accept_hours=params.accept_hours / dt, reward_weights=weights, step_h=1.0)
