"""Study report: rliable leaderboard, gap closed, curves, ablation, tuning, validation.

Aggregates and intervals come from :mod:`gridrl.experiments.stats` (rliable): for each
policy the scores of every training seed on every evaluation week form a
``runs x weeks`` matrix; the leaderboard shows its interquartile mean (IQM) and mean
with stratified bootstrap 95 % intervals over weeks and seeds. Gap closed is computed
per seed from paired episodes (every policy and seed is evaluated on the same
episodes): ``(J - J_run_now) / (J_lp_bound - J_run_now)`` with the seed's mean
objectives, and again against the best static policy (``static`` reference):
``(J - J_static) / (J_lp_bound - J_static)``. The forecast ablation still shows the
t-interval of seed means (one number per seed and mode).

With ``scenario_seeds`` a task is a (scenario seed, week) pair: each scenario seed has
its own random events and workload, so episodes pair only within one scenario seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from gridrl.env.kpis import KPIS
from gridrl.experiments import plots
from gridrl.experiments.schema import Study
from gridrl.experiments.stats import interval_table, performance_profiles, score_matrices
from gridrl.experiments.store import RunStore
from gridrl.experiments.tuning import TUNING_FILE, VALIDATION_FILE, load_tuning, tuned_study
from gridrl.experiments.units import (
    SCENARIO_SEED,
    agent_scenario,
    overrides,
    plan_units,
    policy_for_agent,
    result_check,
    run_scenario_path,
)
from gridrl.io import write_text_atomic, write_with
from gridrl.scenario import load_scenario

OBJECTIVE = "J"  # episode objective column of the harness (higher is better)
ID_COLUMNS = ("policy", "kind", "algo", "seed", "forecast_mode", "unit_id", "episode", "start",
              SCENARIO_SEED)
BASELINE = "run_now"
BOUND = "lp_bound"
_NO_GAP = 1e-12  # |J_lp_bound - J_run_now| below this leaves no gap to close
_CURVE_POINTS = 200  # common step grid of the learning-curve plot (enough for a smooth line)


def seed_means(results: pd.DataFrame) -> pd.DataFrame:
    """Mean of every numeric KPI over episodes, per policy x forecast mode x seed."""
    keys = ["policy", "kind", "algo", "forecast_mode", "seed"]
    numeric = [
        c
        for c in results.columns
        if c not in ID_COLUMNS and pd.api.types.is_numeric_dtype(results[c])
    ]
    return results.groupby(keys, sort=False)[numeric].mean().reset_index()


def _episode_key(results: pd.DataFrame) -> list[str]:
    # an episode is identified by its start hour when the harness reports it: policies
    # evaluated with different seeds on the same windows are then still paired; with
    # scenario seeds, by the scenario seed and its start hour (other events, other week)
    key = ["start"] if "start" in results.columns else ["seed", "episode"]
    return [SCENARIO_SEED, *key] if SCENARIO_SEED in results.columns else key


TASK = "_task"  # rliable's task column: one evaluation episode (scenario seed x week)


def with_task(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with :data:`TASK`, the episode key of :func:`_episode_key` as one label."""
    key = results[_episode_key(results)].astype(str)
    return results.assign(**{TASK: key.agg("|".join, axis=1)})


def reference_rows(results: pd.DataFrame, algo: str) -> pd.DataFrame:
    """The rows of the reference ``algo`` that gaps are measured against.

    A study may run one reference twice (``lp_bound`` with the batteries planned, and
    with the site rule's batteries as a tighter bound of rule-battery policies): the
    entry named like the reference wins, else the first entry in the results.
    """
    ref = results[results["algo"] == algo]
    names = list(dict.fromkeys(ref["policy"]))
    if len(names) <= 1:
        return ref
    return ref[ref["policy"] == (algo if algo in names else names[0])]


def gap_closed_per_seed(
    results: pd.DataFrame, objective: str = OBJECTIVE, *, baseline: str = BASELINE,
    column: str = "gap_closed",
) -> pd.DataFrame:
    """Gap closed per policy x forecast mode x seed, from paired episodes.

    Each episode row is paired with the ``run_now`` and ``lp_bound`` rows of the same
    episode (same start hour; same forecast mode when the study ran the references in
    that mode, else any mode, since neither reads forecasts). Over the episodes where
    both references exist: ``(mean J - mean J_run_now) / (mean J_lp_bound - mean
    J_run_now)``. NaN when a reference is missing or the bound does not improve on
    ``run_now``.

    Returns
    -------
    pandas.DataFrame
        ``policy``, ``forecast_mode``, ``seed``, ``column`` (``gap_closed``); the
        baseline is the reference whose ``algo`` is ``baseline`` (``run_now``).
    """
    keys = ["policy", "forecast_mode", "seed"]
    if objective not in results.columns:
        out = results[keys].drop_duplicates().copy()
        out[column] = np.nan
        return out
    ep = _episode_key(results)
    frame = results[list(dict.fromkeys([*keys, *ep, objective]))].copy()
    for algo in (baseline, BOUND):
        ref = reference_rows(results, algo)
        col = f"_{algo}"
        by_mode = ref.groupby(["forecast_mode", *ep])[objective].mean().rename(col)
        any_mode = ref.groupby(ep)[objective].mean().rename(col + "_any")
        frame = frame.merge(by_mode, left_on=["forecast_mode", *ep], right_index=True, how="left")
        frame = frame.merge(any_mode, left_on=ep, right_index=True, how="left")
        frame[col] = frame[col].fillna(frame.pop(col + "_any"))
    base = f"_{baseline}"
    paired = frame.dropna(subset=[base, f"_{BOUND}"])
    means = paired.groupby(keys, sort=False)[[objective, base, f"_{BOUND}"]].mean()
    den = means[f"_{BOUND}"] - means[base]
    gap = (means[objective] - means[base]) / den.where(den.abs() > _NO_GAP)
    out = (
        results[keys]
        .drop_duplicates()
        .merge(gap.rename(column).reset_index(), on=keys, how="left")
    )
    return out


def t_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Mean and half-width of the Student t confidence interval (NaN for fewer than 2)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan
    sem = float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, float(stats.t.ppf(0.5 + confidence / 2.0, df=v.size - 1) * sem)


def summarize(per_seed: pd.DataFrame, columns: list[str], confidence: float) -> pd.DataFrame:
    """Mean and CI half-width (``<col>_ci``) over seeds, per policy x forecast mode."""
    rows = []
    for (policy, kind, algo, mode), g in per_seed.groupby(
        ["policy", "kind", "algo", "forecast_mode"], sort=False
    ):
        row = {"policy": policy, "kind": kind, "algo": algo, "forecast_mode": mode}
        row["seeds"] = int(g["seed"].nunique())
        for c in columns:
            mean, ci = t_interval(g[c].to_numpy(), confidence)
            row[c], row[f"{c}_ci"] = mean, ci
        rows.append(row)
    return pd.DataFrame(rows)


STATIC = "static"  # the reference whose best entry is the second gap's baseline
_BEST_STATIC = "_best_static"


def best_static(
    results: pd.DataFrame, objective: str = OBJECTIVE, validation: pd.DataFrame | None = None,
) -> str | None:
    """The ``static`` reference entry with the highest mean objective, if any.

    With several entries the choice is a tuned setting, so it is made on ``validation``
    (the validation-period rows) when they hold every entry; the test rows choose only
    where there is no validation result (a study without ``evaluation.validation``).
    """
    static = results[results["algo"] == STATIC]
    if static.empty or objective not in static:
        return None
    names = static["policy"].unique()
    if len(names) == 1:
        return str(names[0])
    if validation is not None and objective in validation and "algo" in validation:
        chosen = validation[validation["algo"] == STATIC]
        if set(names) <= set(chosen["policy"]):
            static = chosen
    return str(static.groupby("policy")[objective].mean().idxmax())


def leaderboard(
    results: pd.DataFrame, *, objective: str = OBJECTIVE, reps: int, confidence: float,
    seed: int, validation: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per policy x forecast mode (see the module docstring for the columns).

    ``J_mean``, ``J_iqm`` and the IQM's ``J_ci_low`` / ``J_ci_high`` come from rliable
    over the ``seeds x weeks`` matrix; ``gap_closed`` / ``gap_closed_vs_static`` are
    means over seeds of the per-seed gaps; ``<kpi>`` are means over every episode, and
    ``saving_<kpi>@<site>`` what the policy saves at each site against ``run_now`` on
    the same weeks (positive = less carbon or cost), from the harness's per-site
    columns. ``validation``: the validation-period rows, which choose the best static
    entry (:func:`best_static`).
    """
    rows = []
    for mode, sub in results.groupby("forecast_mode", sort=False):
        board = interval_table(
            score_matrices(with_task(sub), objective, task=TASK), reps=reps,
            confidence=confidence, seed=seed,
        )
        board.columns = [f"{objective}_{c}" for c in board.columns]
        board = board.rename(columns={
            f"{objective}_iqm_ci_low": f"{objective}_ci_low",
            f"{objective}_iqm_ci_high": f"{objective}_ci_high",
            f"{objective}_runs": "seeds", f"{objective}_tasks": "weeks",
        })  # fmt: skip
        board.insert(0, "forecast_mode", mode)
        rows.append(board.rename_axis("policy").reset_index())
    board = pd.concat(rows, ignore_index=True)
    ids = results[["policy", "kind", "algo"]].drop_duplicates("policy")
    board = ids.merge(board, on="policy")
    board.insert(3, "learned", board["kind"] == "sb3")
    return _board_extras(board, results, objective, validation)


def _board_extras(
    board: pd.DataFrame, results: pd.DataFrame, objective: str,
    validation: pd.DataFrame | None,
) -> pd.DataFrame:
    """Gap closed (both baselines), per-term KPI means and per-site savings."""
    keys = ["policy", "forecast_mode"]
    gaps = gap_closed_per_seed(results, objective)
    static = best_static(results, objective, validation)
    marked = results.copy()
    if static is not None:
        marked.loc[marked["policy"] == static, "algo"] = _BEST_STATIC
    gaps = gaps.merge(
        gap_closed_per_seed(marked, objective, baseline=_BEST_STATIC,
                            column="gap_closed_vs_static"),
        on=[*keys, "seed"],
    )  # fmt: skip
    board = board.merge(gaps.groupby(keys)[["gap_closed", "gap_closed_vs_static"]].mean(),
                        left_on=keys, right_index=True, how="left")
    # every KPI of the env (carbon, cost, delay, SLO, overdraw, ...), as the env defines them
    terms = [k.name for k in KPIS if k.name in results.columns]
    board = board.merge(results.groupby(keys)[terms].mean(), left_on=keys,
                        right_index=True, how="left")
    savings = site_savings(results)
    if not savings.empty:
        board = board.merge(savings, left_on=keys, right_index=True, how="left")
    board["best_static"] = board["policy"] == static
    return board


def site_savings(results: pd.DataFrame) -> pd.DataFrame:
    """Per policy x forecast mode, ``saving_<kpi>@<site>``: mean over paired weeks of
    ``run_now``'s value minus the policy's, for every per-site KPI column."""
    from gridrl.agents.evaluate import SITE_SEP

    site_cols = [c for c in results.columns if SITE_SEP in c]
    ref = reference_rows(results, BASELINE)
    if not site_cols or ref.empty:
        return pd.DataFrame()
    ep = _episode_key(results)
    base = ref.groupby(ep)[site_cols].mean()
    merged = results.merge(base, left_on=ep, right_index=True, suffixes=("", "_ref"))
    diff = pd.DataFrame({
        f"saving_{c}": merged[f"{c}_ref"] - merged[c] for c in site_cols
    })  # fmt: skip
    diff[["policy", "forecast_mode"]] = merged[["policy", "forecast_mode"]]
    return diff.groupby(["policy", "forecast_mode"]).mean()


def learning_curves(store: RunStore, window: int) -> pd.DataFrame:
    """Training-episode returns of every SB3 unit from its ``monitor.csv``, smoothed.

    Returns
    -------
    pandas.DataFrame
        ``agent``, ``seed``, ``forecast_mode``, ``timesteps``, ``episode_return``.
    """
    frames = []
    units = store.load_units()
    if units.empty or "kind" not in units:
        return pd.DataFrame()
    for _, u in units[units["kind"] == "sb3"].iterrows():
        path = store.unit_dir(u["unit_id"]) / "monitor.csv"
        if not path.exists():
            continue
        mon = pd.read_csv(path, skiprows=1)  # first line is SB3's JSON header
        if mon.empty:
            continue
        frames.append(
            pd.DataFrame(
                {
                    "agent": u["agent"],
                    "seed": u["seed"],
                    "forecast_mode": u["forecast_mode"],
                    # VecMonitor rows are episodes in finishing order; steps accumulate
                    "timesteps": mon["l"].cumsum().to_numpy(),
                    "episode_return": mon["r"].rolling(window, min_periods=1).mean().to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def learning_curve_bands(curves: pd.DataFrame, points: int = _CURVE_POINTS) -> pd.DataFrame:
    """Mean and min-max over seeds of each (agent, forecast mode)'s smoothed training
    curve, on a common grid of ``points`` environment-step counts.

    Parameters
    ----------
    curves
        :func:`learning_curves` output.

    Returns
    -------
    pandas.DataFrame
        ``agent``, ``forecast_mode``, ``seeds``, ``timesteps``, ``mean``, ``low``,
        ``high``; ``points`` rows per agent and forecast mode.
    """
    rows = []
    for (agent, mode), g in curves.groupby(["agent", "forecast_mode"], sort=True):
        grid = np.linspace(g["timesteps"].min(), g["timesteps"].max(), points)
        # each seed's own curve: its steps increase, so it can be interpolated
        arr = np.vstack([
            np.interp(grid, s["timesteps"].to_numpy(), s["episode_return"].to_numpy())
            for _, s in g.groupby("seed")
        ])
        rows.append(pd.DataFrame({
            "agent": agent, "forecast_mode": mode, "seeds": len(arr), "timesteps": grid,
            "mean": arr.mean(axis=0), "low": arr.min(axis=0), "high": arr.max(axis=0),
        }))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _fmt(mean: float, ci: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    digits = 3 if abs(mean) < 100 else 1
    if not np.isfinite(ci):
        return f"{mean:,.{digits}f} ± n/a"
    return f"{mean:,.{digits}f} ± {ci:,.{digits}f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a markdown table, one row per row, values as ``str``."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def _seed_overrides(study: Study) -> str:
    own = [f"{a.name} {a.seeds}" for a in study.agents if a.seeds is not None]
    return f" (per agent: {', '.join(own)})" if own else ""


def _episode_overrides(study: Study) -> str:
    own = [f"{a.name} {a.episodes or 'all'} test / {a.validation_episodes or 'all'} "
           "validation" for a in study.agents
           if a.episodes is not None or a.validation_episodes is not None]
    return (f" (per agent, drawn with the same seed and paired on them: {', '.join(own)})"
            if own else "")


def _load_study(run_dir: Path) -> Study:
    return Study.model_validate(yaml.safe_load((run_dir / "config.resolved.yaml").read_text()))


def write_report(run_dir: str | Path, *, objective: str = OBJECTIVE) -> Path:
    """Write ``report.md``, ``leaderboard.csv`` and ``plots/*.png`` for a run folder.

    Parameters
    ----------
    run_dir
        A run folder written by :func:`gridrl.experiments.runner.run_study` (finished or
        not: the report covers the finished units and says which are missing and which
        were found damaged).
    objective
        Column holding the episode objective (higher is better).

    Returns
    -------
    Path
        ``RUN_DIR/report.md``.
    """
    run_dir = Path(run_dir).resolve()
    record = load_tuning(run_dir)
    study = tuned_study(_load_study(run_dir), record)
    store = RunStore(run_dir, check_result=result_check(study))
    results = store.load_results()
    lines = _header(study, store) + _provenance_section(store) + _tuning_section(record)
    if results.empty:
        lines.append("No finished units yet.")
        return write_text_atomic(run_dir / "report.md", "\n".join(lines) + "\n")
    board = _board(study, results, objective, load_validation(store))
    write_with(run_dir / "leaderboard.csv", lambda p: board.to_csv(p, index=False))
    plot_dir = run_dir / "plots"
    main, section = _leaderboard_section(study, board, objective, plot_dir)
    lines += section
    lines += _terms_section(study, main)
    lines += _site_savings_section(main, plot_dir)
    lines += _distribution_section(study, results, objective, plot_dir)
    lines += _validation_section(study, store, objective)
    lines += _ablation_section(study, _summary(study, results, objective), objective, plot_dir)
    lines += _training_section(study, store, plot_dir)
    lines += _dispatch_section(study, store, main, plot_dir)
    return write_text_atomic(run_dir / "report.md", "\n".join(lines) + "\n")


def _tuning_section(record: dict[str, Any]) -> list[str]:
    """The settings chosen on validation (empty without tuning)."""
    if not record:
        return []
    o = record["objective"]
    table = pd.DataFrame([
        {"agent": name, "reference": a["reference"], "candidates": len(a["trials"]),
         "chosen": json.dumps(a["chosen"]), f"validation {o}": round(a["validation_J"], 3)}
        for name, a in record["agents"].items()
    ])  # fmt: skip
    return [
        "## Tuned on validation",
        "",
        f"Chosen on the `{record['period']}` period (forecast mode "
        f"`{record['forecast_mode']}`, highest mean {o} over its episodes); the test ran "
        f"once with these settings. Every candidate's score: `{TUNING_FILE}`.",
        "",
        markdown_table(table),
        "",
    ]


def _board(
    study: Study, results: pd.DataFrame, objective: str, validation: pd.DataFrame
) -> pd.DataFrame:
    rep = study.report
    return leaderboard(results, objective=objective, reps=rep.bootstrap_reps,
                       confidence=rep.confidence, seed=rep.bootstrap_seed,
                       validation=validation)


def _shown(path: str | Path | None) -> str:
    """``path`` relative to the working folder when it lies inside it: published pages
    name the project's files, not the machine they were made on."""
    if path is None:
        return "None"
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _header(study: Study, store: RunStore) -> list[str]:
    """Title, description, protocol and which units are finished, missing or damaged."""
    units = [u.unit_id for u in plan_units(study)]
    finished = set(store.finished_units())
    invalid = store.invalid_units()
    missing = [u for u in units if u not in finished]
    lines = [
        f"# Study `{study.name}`",
        "",
        study.description.strip(),
        "",
        f"- scenario: `{_shown(study.scenario)}`",
        f"- forecast: `{study.forecast.mode}` (config `{_shown(study.forecast.config)}`)",
        f"- seeds: {study.seeds}{_seed_overrides(study)}; evaluation: "
        f"{study.evaluation.episodes or 'all fixed'} episode window(s) of the "
        f"`{study.evaluation.period}` period, the same for every policy and seed"
        f"{_episode_overrides(study)}",
        *_scenario_seed_lines(study),
        f"- units: {len(finished & set(units))} of {len(units)} finished",
    ]
    own = [
        f"{name} " + ", ".join(f"`{k}: {v}`" for k, v in keys.items())
        for name, keys in overrides(study).items()
    ]
    if own:
        lines.append(f"- scenario overrides per agent: {'; '.join(own)}")
    if missing:
        lines.append(f"- **missing units** (rerun with `--resume`): {', '.join(missing)}")
    for unit_id, reason in invalid.items():
        lines.append(f"- **damaged unit** `{unit_id}` (runs again on `--resume`): {reason}")
    lines.append("")
    return lines


def _scenario_seed_lines(study: Study) -> list[str]:
    """The scenario seeds, and that each of their weeks is a task of the statistics."""
    if not study.scenario_seeds:
        return []
    return [f"- scenario seeds: {study.scenario_seeds}, each with its own random events "
            "and workload; the weeks of the leaderboard's `seeds x weeks` are (scenario "
            "seed, week) pairs, the tasks of the statistics"]


def _summary(study: Study, results: pd.DataFrame, objective: str) -> pd.DataFrame:
    """Mean and CI of every KPI (and gap closed) per policy x forecast mode."""
    per_seed = seed_means(results).merge(
        gap_closed_per_seed(results, objective), on=["policy", "forecast_mode", "seed"]
    )
    keys = ("policy", "kind", "algo", "forecast_mode", "seed")
    kpis = [c for c in per_seed.columns if c not in keys]
    return summarize(per_seed, kpis, study.report.confidence)


def _interval(lo: float, mid: float, hi: float) -> str:
    if not np.isfinite(mid):
        return "n/a"
    digits = 3 if abs(mid) < 100 else 1
    return f"{mid:,.{digits}f} [{lo:,.{digits}f}, {hi:,.{digits}f}]"


def _leaderboard_section(
    study: Study, board: pd.DataFrame, objective: str, plot_dir: Path
) -> tuple[pd.DataFrame, list[str]]:
    """The leaderboard (sorted, best first) and its lines: every policy in the study's
    forecast mode, and those of the ablation's other modes as ``<policy>@<mode>``."""
    base = board.assign(label=policy_labels(board, study.forecast.mode))
    sort_col = "gap_closed" if base["gap_closed"].notna().any() else f"{objective}_iqm"
    base = base.sort_values(sort_col, ascending=False)
    o = objective
    shown = [c for c in study.report.leaderboard_columns
             if c in base.columns and c not in (o, "gap_closed")]
    table = pd.DataFrame({
        "policy": base["label"].to_numpy(),
        "kind": base["algo"].to_numpy(),
        "seeds x weeks": [f"{r} x {t}" for r, t in zip(base["seeds"], base["weeks"], strict=True)],
        f"{o} IQM [CI]": [_interval(*v) for v in base[[f"{o}_ci_low", f"{o}_iqm",
                                                      f"{o}_ci_high"]].to_numpy()],
        f"{o} mean [CI]": [_interval(*v) for v in base[[f"{o}_mean_ci_low", f"{o}_mean",
                                                       f"{o}_mean_ci_high"]].to_numpy()],
        "gap_closed": base["gap_closed"].round(3).to_numpy(),
        "gap_closed_vs_static": base["gap_closed_vs_static"].round(3).to_numpy(),
        **{c: base[c].round(3).to_numpy() for c in shown},
    })  # fmt: skip
    conf = f"{study.report.confidence:.0%}"
    lines = [
        f"## Leaderboard (forecast mode `{study.forecast.mode}`)",
        "",
        f"{o}: interquartile mean and mean over the seeds x weeks matrix with rliable's "
        f"stratified bootstrap {conf} intervals (runs and weeks resampled, "
        f"{study.report.bootstrap_reps} replications). Gap closed = (J − J_run_now) / "
        "(J_lp_bound − J_run_now) per seed on paired episodes; gap_closed_vs_static "
        "uses the best static policy (of several static entries, the best on validation) "
        "in place of run_now. Other KPIs: mean per episode.",
        "",
        markdown_table(table),
        "",
        "Every KPI, per-site savings against run_now and every forecast mode: "
        "`leaderboard.csv`; every episode: `results.parquet`.",
        "",
    ]
    p = plots.interval_plot(base.set_index("label"), objective, plot_dir / "leaderboard.png")
    lines += [f"![leaderboard]({p.relative_to(plot_dir.parent)})", ""]
    return base, lines


def policy_labels(board: pd.DataFrame, mode: str) -> pd.Series:
    """``policy`` in the study's forecast mode ``mode``, ``<policy>@<mode>`` in others."""
    other = board["forecast_mode"] != mode
    return board["policy"].where(~other, board["policy"] + "@" + board["forecast_mode"])


def _site_savings_section(board: pd.DataFrame, plot_dir: Path) -> list[str]:
    """Per-site carbon and cost saved against run_now (mean per episode), with bars."""
    from gridrl.agents.evaluate import SITE_SEP

    cols = [c for c in board.columns
            if c.startswith(("saving_carbon_kg@", "saving_cost@"))]  # fmt: skip
    if not cols:
        return []
    table = board.set_index("label")[cols].round(2).rename_axis("policy")
    table.columns = [c.removeprefix("saving_") for c in cols]
    lines = [
        "## Savings per site",
        "",
        "Carbon (kg) and cost saved against `run_now` at each site, mean per episode on "
        "the same weeks (positive = less). Every per-site KPI: `leaderboard.csv`.",
        "",
        markdown_table(table.reset_index()),
        "",
    ]
    shown = board[~board["algo"].isin([BASELINE])].set_index("label")
    for kpi, label in (("carbon_kg", "carbon saved (kg CO2e)"), ("cost", "cost saved")):
        prefix = f"saving_{kpi}{SITE_SEP}"
        site_cols = [c for c in shown.columns if c.startswith(prefix)]
        if not site_cols:
            continue
        bars = shown[site_cols].rename(columns=lambda c, p=prefix: c.removeprefix(p))
        path = plots.site_savings_plot(bars, label, plot_dir / f"savings_{kpi}.png")
        lines += [f"![{kpi} saved per site]({path.relative_to(plot_dir.parent)})", ""]
    return lines


def breakdown_columns(study: Study, columns: list[str]) -> list[str]:
    """The KPI columns of the per-term breakdown present in ``columns`` (report settings)."""
    rep = study.report
    named = [c for c in rep.breakdown_columns if c in columns]
    from gridrl.agents.evaluate import SITE_SEP

    matched = [c for c in columns if SITE_SEP not in c and not c.startswith("saving_")
               and any(p in c for p in rep.breakdown_patterns) and c not in named]
    return named + matched


def _terms_section(study: Study, board: pd.DataFrame) -> list[str]:
    """Per-term breakdown: each cost, delay, SLO and grid term of every policy."""
    cols = breakdown_columns(study, list(board.columns))
    if not cols:
        return []
    table = board.set_index("label")[cols].round(2).rename_axis("policy").reset_index()
    return [
        "## Objective terms",
        "",
        "Each term behind the objective, mean per episode (carbon kg CO2e, costs in the "
        "scenario's currency, delay / SLO in GPU-h, overdraw in kWh; backup and demand-"
        "response columns when the scenario has them).",
        "",
        markdown_table(table),
        "",
    ]


def _provenance_section(store: RunStore) -> list[str]:
    """The exact command(s), code commit and wall time of the run (``run.json``)."""
    drivers = store.run_meta().get("drivers", [])
    if not drivers:
        return []
    total_s = sum(d["wall_s"] for d in drivers)
    lines = ["## How this was run", ""]
    for d in drivers:
        stopped = " (stopped before every unit had run)" if d.get("stopped") else ""
        lines.append(f"- `{d['command']}` at commit `{d['commit']}`, started "
                     f"{d['started_utc']}, wall time {d['wall_s'] / 60:,.1f} min{stopped}")
    lines.append(f"- total wall time: {total_s / 60:,.1f} min ({total_s / 3600:,.2f} h)")
    for c in store.run_meta().get("study_changes", []):
        lines.append(f"- the study changed at {c['utc']} (hash `{c['from']}` -> `{c['to']}`): "
                     "units whose key changed ran again (their earlier files are under "
                     "`<unit>/rejected/`), the others were kept")
    return [*lines, ""]


def normalized_scores(results: pd.DataFrame, objective: str = OBJECTIVE) -> pd.DataFrame:
    """``results`` with ``score``: each episode's gap closed against the same week's
    ``run_now`` and ``lp_bound`` (NaN where a reference is missing or no gap)."""
    ep = _episode_key(results)
    refs = {
        a: reference_rows(results, a).groupby(ep)[objective].mean() for a in (BASELINE, BOUND)
    }
    out = results.copy()
    if any(r.empty for r in refs.values()):
        out["score"] = np.nan
        return out
    j0 = out[ep].merge(refs[BASELINE].rename("j0"), left_on=ep, right_index=True, how="left")
    j1 = out[ep].merge(refs[BOUND].rename("j1"), left_on=ep, right_index=True, how="left")
    from gridrl.agents.evaluate import gap_closed

    out["score"] = gap_closed(out[objective].to_numpy(), j0["j0"].to_numpy(), j1["j1"].to_numpy())
    return out


def _distribution_section(
    study: Study, results: pd.DataFrame, objective: str, plot_dir: Path
) -> list[str]:
    """rliable performance profiles and the per-week distribution of the objective."""
    main = results[results["forecast_mode"] == study.forecast.mode]
    scored = normalized_scores(main, objective)
    column, label = "score", "gap closed per week (0 = run_now, 1 = lp_bound)"
    if scored["score"].isna().any():
        column, label = objective, objective  # no paired references: raw objective
    matrices = score_matrices(with_task(scored), column, task=TASK)
    flat = np.concatenate([m.ravel() for m in matrices.values()])
    taus = np.linspace(float(flat.min()), float(flat.max()), study.report.profile_points)
    rep = study.report
    prof, cis = performance_profiles(matrices, taus, reps=rep.bootstrap_reps,
                                     confidence=rep.confidence, seed=rep.bootstrap_seed)
    p1 = plots.profile_plot(prof, cis, taus, label, plot_dir / "performance_profile.png")
    p2 = plots.week_distribution_plot(scored, column, label, plot_dir / "per_week.png")
    rel = plot_dir.parent
    return [
        "## Distributions",
        "",
        f"Performance profile (rliable score distribution: share of seed x week scores "
        f"above each threshold, with bootstrap bands) and per-week distribution of {label}.",
        "",
        f"![performance profile]({p1.relative_to(rel)})",
        "",
        f"![per week]({p2.relative_to(rel)})",
        "",
    ]


def load_validation(store: RunStore) -> pd.DataFrame:
    """The validation-period rows of every finished unit (empty without any)."""
    frames = [
        pd.read_parquet(path)
        for unit in store.finished_units()
        if (path := store.unit_dir(unit) / VALIDATION_FILE).is_file()
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _validation_section(study: Study, store: RunStore, objective: str) -> list[str]:
    """Every agent's validation-period result beside its test result."""
    val = load_validation(store)
    if val.empty:
        return []
    test = store.load_results()
    keys = ["policy", "forecast_mode"]
    def gap(frame: pd.DataFrame) -> pd.Series:
        return gap_closed_per_seed(frame, objective).groupby(keys)["gap_closed"].mean()

    side = pd.DataFrame({
        f"{objective} validation": val.groupby(keys)[objective].mean(),
        f"{objective} test": test.groupby(keys)[objective].mean(),
        "gap_closed validation": gap(val), "gap_closed test": gap(test),
    }).round(3)  # fmt: skip
    return [
        "## Validation beside test",
        "",
        f"Mean {objective} and gap closed of every agent on the validation period (where "
        "settings are tuned) and on the test period (run once with those settings).",
        "",
        markdown_table(side.reset_index()),
        "",
    ]


def _ablation_section(
    study: Study, summary: pd.DataFrame, objective: str, plot_dir: Path
) -> list[str]:
    """The forecast ablation table and plot (agents run in more than one mode)."""
    if study.ablation is None:
        return []
    modes = study.ablation.forecast_modes
    abl = summary[summary["forecast_mode"].isin(modes)]
    abl = abl[abl.groupby("policy")["forecast_mode"].transform("nunique") > 1]
    if abl.empty:
        return []
    col = "gap_closed" if abl["gap_closed"].notna().any() else objective
    pivot = abl.pivot_table(index="policy", columns="forecast_mode", values=col, sort=False)
    pivot = pivot[[m for m in modes if m in pivot.columns]]
    order = {m: i for i, m in enumerate(modes)}
    abl = abl.sort_values("forecast_mode", key=lambda m: m.map(order), kind="stable")
    p = plots.ablation_plot(abl, col, col, plot_dir / "forecast_ablation.png")
    return [
        "## Forecast ablation",
        "",
        f"{col} per forecast mode (mean over seeds). The difference between modes "
        "is the value of the forecast to each policy.",
        "",
        markdown_table(pivot.round(4).reset_index()),
        "",
        f"![forecast ablation]({p.relative_to(plot_dir.parent)})",
        "",
    ]


def _training_section(study: Study, store: RunStore, plot_dir: Path) -> list[str]:
    """Training throughput per SB3 agent and the learning curves."""
    unit_table = store.load_units()
    if "kind" not in unit_table or not (unit_table["kind"] == "sb3").any():
        return []
    sb3 = unit_table[unit_table["kind"] == "sb3"]
    thr = sb3.groupby("agent").agg(
        algo=("algo", "first"),
        units=("unit_id", "count"),
        timesteps=("timesteps", "mean"),
        train_wall_s=("train_wall_s", "mean"),
        env_steps_per_s=("env_steps_per_s", "mean"),
    )
    lines = [
        "## Training",
        "",
        "Mean over units of each agent; env-steps/s counts environment steps (all "
        "VecEnv episodes) per second of training wall time.",
        "",
        markdown_table(thr.round(1).reset_index()),
        "",
    ]
    curves = learning_curves(store, study.report.learning_curve_window)
    if not curves.empty:
        p = plots.learning_curves_plot(
            learning_curve_bands(curves), plot_dir / "learning_curves.png"
        )
        lines += [f"![learning curves]({p.relative_to(plot_dir.parent)})", ""]
    return lines


def _dispatch_section(
    study: Study, store: RunStore, board: pd.DataFrame, plot_dir: Path
) -> list[str]:
    """Dispatch plot of one test week for the best stepped policy (learned if any)."""
    if not study.report.dispatch_week or board.empty:
        return []
    from gridrl.agents.plots import dispatch_plot

    candidates = board[board["algo"] != BOUND]
    learned = candidates[candidates["kind"] == "sb3"]
    pick = learned if not learned.empty else candidates
    if pick.empty:
        return []
    row = pick.iloc[0]
    name, mode = str(row["policy"]), str(row["forecast_mode"])
    units = store.load_units()
    unit = units[(units["agent"] == name) & (units["forecast_mode"] == mode)].iloc[0]
    trace = dispatch_trace(study, store, unit)
    path = dispatch_plot(
        trace, plot_dir / "dispatch_week.png", title=f"{name}: one test week (UTC)"
    )
    week = f"{trace.index[0]:%Y-%m-%d} to {trace.index[-1]:%Y-%m-%d}"
    return [
        "## Dispatch of one test week",
        "",
        f"`{name}` (seed {unit['seed']}, forecast mode `{mode}`), first evaluation "
        f"episode ({week}, UTC): per site, load against PV, wind, headroom and carbon.",
        "",
        f"![dispatch]({Path(path).relative_to(store.run_dir)})",
        "",
    ]


def dispatch_trace(study: Study, store: RunStore, unit: pd.Series) -> Any:
    """Hour-by-hour trace of a unit's policy on its first evaluation episode.

    The policy is rebuilt from the unit (its policy folder, or the reference by name)
    and run again through the harness with the study's evaluation seed, in the agent's
    scenario, so the trace is the episode the results table reports.
    """
    from gridrl.agents.evaluate import evaluate_detailed
    from gridrl.agents.train import env_inputs

    name, mode = str(unit["agent"]), str(unit["forecast_mode"])
    policy = policy_for_agent(study, name, store.unit_dir(str(unit["unit_id"])))
    scenario_seed = unit.get("scenario_seed")
    scenario_seed = None if pd.isna(scenario_seed) else int(scenario_seed)
    scenario_path = run_scenario_path(study, store.run_dir, scenario_seed)
    result = evaluate_detailed(
        policy,
        agent_scenario(study, load_scenario(scenario_path), name),
        period=study.evaluation.period,
        **study.episode_draw(name),
        seed=study.evaluation.seed,
        forecast_mode=mode,
        data=env_inputs(scenario_path, mode, study.forecast.config),
        deterministic=study.evaluation.deterministic,
        trace_episodes=(0,),
    )
    return result.traces[0]
