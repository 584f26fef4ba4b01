"""One physics: the compiled kernel equals the numpy oracle from any state, the formulas
give the same numbers compiled and as numpy, and no module outside the oracle and the
formula module writes PUE or IT power out itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numba
import numpy as np
import pytest
from env_helpers import network_of, scenario, site, synthetic_exo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridrl.env import core, kernel, physics
from gridrl.env.params import build_params
from gridrl.env.state import EnvState

PACKAGE = Path(__file__).resolve().parents[1] / "gridrl"
BATTERY = {"capacity_kwh": 20.0, "power_kw": 4.0, "round_trip_efficiency": 0.85,
           "soc_min_fraction": 0.1, "soc_max_fraction": 0.9, "soc_initial_fraction": 0.5,
           "soc_initial_fraction_range": [0.2, 0.8], "degradation_cost_per_kwh": 0.03}

cases = st.fixed_dictionaries({
    "n_sites": st.integers(1, 3),
    "batch": st.integers(1, 4),
    "battery": st.booleans(),
    "battery_control": st.sampled_from(["rule", "setpoint", "residual"]),
    "threshold": st.sampled_from([0.0, 0.5, 1.0]),
    "pue_slope": st.sampled_from([0.0, 0.01, 0.05]),
    "rent": st.sampled_from([0.0, 2.5]),
    "holding": st.sampled_from([0.0, 0.02]),
    "backup_kw": st.sampled_from([0.0, 3.0, 50.0]),
    "dr": st.booleans(),
    "seed": st.integers(0, 2**31 - 1),
})


def _params(c):
    sites = [site(f"s{i}", pue=1.0 + 0.2 * i, facility_fixed_kw=0.7 * i,
                  pue_temp_slope_per_c=c["pue_slope"],
                  pue_temp_threshold_c=15.0 + 5 * i, gpus=10 + 7 * i,
                  battery=BATTERY if c["battery"] else {},
                  gpu_rent_per_gpu_h=c.get("rent", 0.0) * (i % 2 == 0),
                  workload={"deadline_slack_h_min": i, "deadline_slack_h_max": 3 + 2 * i,
                            "holding_cost_per_gpu_h_h": c.get("holding", 0.0)},
                  backup={"capacity_kw": c.get("backup_kw", 0.0), "fuel_cost_per_kwh": 0.26,
                          "carbon_g_per_kwh": 707.0},
                  demand_response={"payment_per_event_h": 5.0 * c.get("dr", False),
                                   "penalty_per_kwh": 2.0 * c.get("dr", False)})
             for i in range(c["n_sites"])]
    return build_params(scenario(sites=sites, env={
        "battery_control": c["battery_control"],
        "battery_discharge_threshold_fraction": c["threshold"],
        "inference_remote_fraction_max": 0.3}, network=network_of(c["n_sites"])))


def _random_state(p, b, rng) -> EnvState:
    """Any reachable-looking state: random queues and transit (some buckets empty), any
    state of charge within limits, any cap."""
    shape = (b, p.n_sites, p.slack_buckets + 1)
    q = rng.exponential(5.0, shape) * (rng.random(shape) < 0.6)
    z = rng.exponential(2.0, shape) * (rng.random(shape) < 0.3) * (p.n_sites > 1)
    z[..., -1] = 0.0
    soc = p.soc_min_kwh + rng.random((b, p.n_sites)) * (p.soc_max_kwh - p.soc_min_kwh)
    cap = p.cap_min + rng.random((b, p.n_sites)) * (1.0 - p.cap_min)
    return EnvState(q, z, soc, cap)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases)
def test_kernel_equals_the_oracle_from_random_states(c):
    """Every output column, the reward and the next state, for random states, actions
    (the bounds included) and signals (outages, huge arrivals, hot hours), under every
    battery control."""
    p = _params(c)
    rng = np.random.default_rng(c["seed"])
    b = c["batch"]
    exo = synthetic_exo(p.n_sites, 8, seed=c["seed"])[:b]  # one hour per episode
    exo = exo * rng.choice([0.0, 0.5, 1.0, 4.0], size=exo.shape)
    exo[..., kernel.Exo.TEMP_C] = rng.uniform(-10.0, 45.0, exo.shape[:2])
    acts = rng.uniform(-1.0, 1.0, (b, p.n_sites, p.n_actions_per_site))
    acts[rng.random(acts.shape) < 0.25] = rng.choice([-1.0, 1.0])
    state = _random_state(p, b, rng)
    want_state, want = core.step(p, state, acts, exo)
    got_state, got = kernel.step(p, state, acts, exo)
    for f, name in enumerate(kernel.OUTPUT_FIELDS):
        np.testing.assert_allclose(got.values[..., f], want.values[..., f], rtol=1e-9,
                                   atol=1e-9, err_msg=name)
    np.testing.assert_allclose(got.reward, want.reward, rtol=1e-9, atol=1e-12)
    for name in ("queue_gpu_h", "transit_gpu_h", "soc_kwh", "cap"):
        np.testing.assert_allclose(getattr(got_state, name), getattr(want_state, name),
                                   rtol=1e-9, atol=1e-9, err_msg=name)


def _formulas(temp, pue, slope, t0, busy, cap, gpus, idle, pmax, tau, demand, request,
              fac, gen, head, theta, carbon, price, rent, hold, w):
    """Every formula of the site model, on scalars or on arrays alike."""
    inf, flex, busy_d = kernel.dispatch(demand, request, gpus, tau, 0.5 * (tau + cap))
    ch, dis = kernel.rule_wants_kw(fac, gen, head, theta)
    rent_cost, hold_cost = kernel.gpu_time_cost(busy, rent, request, hold)
    e_x = kernel.it_kwh_per_gpu_h(cap, tau, idle, pmax, hold)
    return (
        kernel.pue_at(temp, pue, slope, t0), kernel.it_kw(busy, demand, e_x, tau, gpus, idle),
        e_x, kernel.it_kw_from_active(busy, gpus, idle),
        kernel.facility_kw(head, pue, busy, fac), kernel.fleet_facility_kw(head, pue, gpus, idle),
        inf, flex, busy_d, ch, dis,
        kernel.rule_battery_kw(fac, gen, head, theta),
        kernel.discharge_available_kw(fac, gen, theta),
        kernel.import_price_per_kwh(w[0], w[1], carbon, price),
        kernel.terminal_value_per_gpu_h(pue, e_x, w[0], w[1], carbon, price, rent,
                                        hold, gen),
        kernel.penalty(w, carbon, price, demand, request, head, rent, hold, gen, tau, fac,
                       busy, temp),
        kernel.migration_accept_share(gpus, demand * request, request, gen),
        rent_cost, hold_cost,
        kernel.battery_value_per_kwh(tau, w[0], w[1], carbon, price),
        kernel.terminal_charge(busy, hold, fac, gen, rent),
        kernel.backup_kw(kernel.outage_on(temp - 20.0, busy - 50.0), head - fac, gen),
        kernel.dr_event_on(temp - 20.0, busy - 50.0),
        kernel.dr_shortfall_kwh(theta, fac, head),
        *kernel.backup_terms(gen, rent, carbon),
        *kernel.dr_terms(kernel.dr_event_on(temp - 20.0, busy - 50.0), fac, rent, hold),
        kernel.dr_compliant(kernel.dr_event_on(temp - 20.0, busy - 50.0), theta, head))


_compiled = numba.njit(_formulas)


def test_formulas_give_the_same_numbers_compiled_and_as_numpy():
    """The formulas called from Python (numpy, on arrays) and inlined into compiled code
    (scalars) agree."""
    rng = np.random.default_rng(0)
    n = 200
    args = [rng.uniform(-10, 45, n), rng.uniform(1.0, 1.5, n), rng.uniform(0, 0.05, n),
            rng.uniform(10, 30, n), rng.uniform(0, 100, n), rng.uniform(0.4, 1.0, n),
            rng.integers(1, 100, n).astype(float), rng.uniform(0.05, 0.2, n),
            rng.uniform(0.5, 1.0, n), rng.uniform(0.4, 1.0, n), rng.uniform(0, 120, n),
            rng.uniform(0, 120, n), rng.uniform(0, 200, n), rng.uniform(0, 200, n),
            rng.uniform(0, 200, n), rng.choice([0.0, 0.5, 1.0], n), rng.uniform(20, 800, n),
            rng.uniform(10, 300, n), rng.uniform(0, 4, n), rng.uniform(0, 0.05, n)]
    w = np.array([0.19, 1.0, 10.0, 2.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0])
    as_numpy = np.stack(_formulas(*args, w), axis=1)
    compiled = np.array([_compiled(*(a[j] for a in args), w) for j in range(n)])
    np.testing.assert_allclose(compiled, as_numpy, rtol=1e-12, atol=1e-12)


def test_terminal_value_is_the_documented_formula():
    """Uncapped energy at the mean carbon and price, one rented GPU-hour, and holding over
    the site's mean deadline slack."""
    p = _params({"n_sites": 2, "battery": False, "battery_control": "rule", "threshold": 0.5,
                 "pue_slope": 0.01, "rent": 2.5, "holding": 0.02})
    exo = synthetic_exo(2, 48, seed=1)
    mean = exo[..., [kernel.Exo.CARBON_G_PER_KWH, kernel.Exo.PRICE_PER_MWH]].mean(0)
    w = p.reward_weights
    slack_mean_h = np.array([(0 + 3) / 2, (1 + 5) / 2])
    # uncapped training work: full board plus the host's busy share, less idle
    e_kwh = p.gpu_board_max_kw + p.host_busy_kw_per_gpu - p.gpu_idle_kw
    want = p.pue * e_kwh * (w[0] * mean[:, 0] / 1000 + w[1] * mean[:, 1] / 1000)
    want = want + w[1] * (np.array([2.5, 0.0]) + 0.02 * slack_mean_h)
    np.testing.assert_allclose(physics.terminal_value_per_gpu_h(p, exo), want, rtol=1e-12)


# --------------------------------------------------------------------------- one place

# Modules allowed to write the site model's formulas: the oracle, the formula module and
# the parameter builder (observation scales and input validation).
FORMULA_HOMES = {"env/core.py", "env/kernel.py", "env/params.py"}
# The Slurm adapter's demand-response rule bounds GPU *board* power from the operator's
# nameplate in SITES.yaml (gpus x board limit x cap); it is not the site model (no idle
# floor, no host share, no PUE) and the adapter may not import gridrl.env.
OPERATOR_RULES = {"integrations/slurm_events.py", "integrations/slurm_sites.py"}
_PARAM = (r"(?:gpu_idle_kw|gpu_max_kw|gpu_board_max_kw|gpu_board_idle_kw|host_busy_kw_per_gpu"
          r"|host_idle_kw_per_gpu|facility_fixed_kw|pue_temp_slope_per_c|pue_temp_threshold_c"
          r"|\.pue\b)")
# a parameter of the PUE or IT-power formulas used in arithmetic
_ARITH = re.compile(rf"{_PARAM}(?:\[[^\]]*\])*\s*[-+*/](?!=)|[-+*/]\s*[\w.]*{_PARAM}")


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """Lines of code (docstrings and comments left out)."""
    src = path.read_text()
    doc_lines: set[int] = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(
                node.value.value, str):
            doc_lines.update(range(node.lineno, node.end_lineno + 1))
    return [(i, line.split("#")[0]) for i, line in enumerate(src.splitlines(), 1)
            if i not in doc_lines]


def test_no_module_writes_pue_or_it_power_itself():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in FORMULA_HOMES | OPERATOR_RULES:
            continue
        offenders += [f"{rel}:{i}: {line.strip()}" for i, line in _code_lines(path)
                      if _ARITH.search(line)]
    assert not offenders, "PUE / IT power written outside gridrl.env.kernel:\n" + "\n".join(
        offenders)


def test_the_grep_check_finds_a_formula_written_out():
    """The check above is not vacuous: the formulas as they used to be written match."""
    for line in ("pue = p.pue + p.pue_temp_slope_per_c * np.maximum(temp - t0, 0.0)",
                 "it = busy * (cap * p.gpu_max_kw - p.gpu_idle_kw) + p.gpus * p.gpu_idle_kw",
                 "e_kwh = p.pue * (p.gpu_max_kw - p.gpu_idle_kw)",
                 "it = busy * (cap * p.gpu_board_max_kw + p.host_busy_kw_per_gpu)",
                 "fac = p.facility_fixed_kw + pue * it"):
        assert _ARITH.search(line), line
    assert not _ARITH.search("pue = physics.pue_of(p, exo)")


def test_no_production_path_steps_the_oracle():
    """``core.step`` is called by tests only."""
    calls = re.compile(r"\bcore\.step\(|from gridrl\.env\.core import[^\n]*\bstep\b")
    offenders = [f"{path.relative_to(PACKAGE)}:{i}" for path in sorted(PACKAGE.rglob("*.py"))
                 if path.name != "core.py"
                 for i, line in _code_lines(path) if calls.search(line)]
    assert not offenders, offenders


@pytest.mark.parametrize("name", ["_step_env", "_advance", "_fill_env", "_kernel"])
def test_compiled_functions_live_in_the_kernel_file(name):
    """numba's cache notices changes only in the file of a compiled function: the step's
    helpers and the formulas it inlines are all in gridrl/env/kernel.py."""
    fn = getattr(kernel, name)
    assert Path(fn.py_func.__code__.co_filename).name == "kernel.py"
    for formula in (kernel.pue_at, kernel.it_kw, kernel.dispatch, kernel.battery_kw,
                    kernel.penalty, kernel.terminal_value_per_gpu_h):
        assert Path(formula.__code__.co_filename).name == "kernel.py"
