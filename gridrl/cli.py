"""The ``gridrl`` command. Each subcommand is a thin shell over a library function.

Imports of heavy modules happen inside the commands so ``gridrl --help`` stays fast.
"""

from __future__ import annotations

import typer
from rich.console import Console

from gridrl import __version__

app = typer.Typer(
    name="gridrl",
    help="Energy-aware control of AI workloads: signals, forecasts, RL, references, export.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


def _version(value: bool) -> None:
    if value:
        console.print(f"gridrl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """gridrl: site signals -> forecasts -> environment -> agents -> schedulers."""


# ---------------------------------------------------------------- signals (gridrl.data)


@app.command("signals")
def signals_cmd(
    scenario: str = typer.Argument(..., help="Scenario YAML file (envs/*.yaml)."),
    plot: str = typer.Option(None, "--plot", help="Write a PNG of one week of every signal."),
    week_start: str = typer.Option(
        None, "--week-start",
        help="First day of the plotted week (UTC); default: the first test block.",
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Rebuild, ignore the cache."),
) -> None:
    """Build a scenario's hourly site signals; print a per-site summary, plot a week."""
    from pathlib import Path

    from rich.progress import Progress

    from gridrl.data.build import build_signals, build_stats
    from gridrl.data.signals import SignalError
    from gridrl.data.summary import plot_week, site_summary, summary_tables
    from gridrl.scenario import ScenarioError, load_scenario

    try:
        sc = load_scenario(scenario)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("building site signals", total=len(sc.expanded_sites()))
            sig = build_signals(
                sc, base_dir=Path(scenario).parent, cache=not no_cache,
                on_site=lambda _name: progress.advance(task),
            )
        for table in summary_tables(site_summary(sc, sig), title=f"{sc.name} {sc.year}"):
            console.print(table)
        saturated = {k: v.saturated_hours for k, v in build_stats(sig).items()
                     if v.saturated_hours}
        if saturated:
            console.print(
                "hours with headroom 0 because background load + reserve reached the "
                f"feeder capacity (not outages): {saturated}", highlight=False,
            )
        if plot is not None:
            start = week_start or sc.periods.test[0].start
            written = plot_week(sig, plot, start, title=f"{sc.name}: week from {start}")
            console.print(f"plot: {written}")
    except (ScenarioError, SignalError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None

# ---------------------------------------------------------------- forecast (gridrl.forecast)

forecast_app = typer.Typer(
    help="LightGBM quantile forecasts of site signals: fit, backtest, show.",
    no_args_is_help=True,
)
app.add_typer(forecast_app, name="forecast")
_FORECAST_CONFIG = "forecasts/default.yaml"


def _forecast_errors():
    from gridrl.data.signals import SignalError
    from gridrl.forecast import ForecastConfigError, ForecastError
    from gridrl.scenario import ScenarioError

    return (ScenarioError, SignalError, ForecastError, ForecastConfigError)


def _print_frame(df, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in df.columns:
        table.add_column(str(col), justify="left" if df[col].dtype == object else "right")
    for row in df.itertuples(index=False):
        table.add_row(*[("-" if v != v else f"{v:.4g}") if isinstance(v, float) else str(v)
                        for v in row])
    console.print(table)


def _short_columns(df):
    return df.rename(columns={"mae": "MAE", "rmse": "RMSE", "nmae": "nMAE",
                              "coverage_outer": "cover", "skill_vs_seasonal_naive": "skill"})


@forecast_app.command("fit")
def forecast_fit(
    scenario: str = typer.Argument(..., help="Scenario YAML file (envs/*.yaml)."),
    config: str = typer.Option(_FORECAST_CONFIG, "--config", help="Forecaster YAML."),
    out: str = typer.Option(None, "--out", help="Output folder (default runs/forecast/NAME)."),
    seed: int = typer.Option(0, "--seed", help="Seed of horizon sampling and LightGBM."),
) -> None:
    """Fit the forecaster on the training periods, save it, build the cube (causal in the
    validation and test periods, cross-fitted elsewhere)."""
    from pathlib import Path

    from gridrl.forecast.pipeline import fit_scenario
    from gridrl.scenario import load_scenario

    try:
        out_dir = out or str(Path("runs") / "forecast" / load_scenario(scenario).name)
        info = fit_scenario(scenario, config, out_dir, seed=seed, progress=True)
    except _forecast_errors() as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    console.print(f"fitted in {info['fit_s']} s, cube in {info['cube_s']} s")
    console.print(f"model: {info['model']}\ncube: {info['cube']}", highlight=False)


@forecast_app.command("backtest")
def forecast_backtest(
    scenario: str = typer.Argument(..., help="Scenario YAML file (envs/*.yaml)."),
    config: str = typer.Option(_FORECAST_CONFIG, "--config", help="Forecaster YAML."),
    out: str = typer.Option(None, "--out", help="Folder for metrics.csv/parquet, summary."),
    plots: str = typer.Option(None, "--plots", help="Folder for PNG plots."),
    scheme: str = typer.Option(
        "causal", "--scheme",
        help="causal (the cube's), rolling (origin) or crossfit (whole year, not causal)."),
    period: str = typer.Option("test", "--period", help="Evaluate on: test, validation or all."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Out-of-sample backtest against the baselines; print the table, save CSV and PNGs."""
    from gridrl.forecast.pipeline import backtest_scenario

    if scheme not in ("causal", "crossfit", "rolling") or period not in ("test", "validation",
                                                                          "all"):
        console.print("[red]error:[/] --scheme is causal|crossfit|rolling, --period is "
                      "test|validation|all")
        raise typer.Exit(2)
    try:
        result = backtest_scenario(scenario, config, out, scheme=scheme, period=period,
                                   plots_dir=plots, seed=seed, progress=True)
    except _forecast_errors() as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    _print_frame(_short_columns(result.summary),
                 f"{scheme} backtest, {period} period: mean over horizons")
    if out:
        console.print(f"tables: {out}")
    if plots:
        console.print(f"plots: {plots}")


@forecast_app.command("show")
def forecast_show(
    directory: str = typer.Argument(..., help="Folder written by fit or backtest."),
) -> None:
    """Describe a fitted forecaster, its cube, or a backtest."""
    from gridrl.forecast.pipeline import describe

    try:
        info = describe(directory)
    except (FileNotFoundError, *_forecast_errors()) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    for key in ("fit", "cube", "backtest"):
        if key in info:
            console.print(f"[bold]{key}[/]: {info[key]}", highlight=False)
    if "model" in info:
        _print_frame(info["model"], f"forecaster (sites: {', '.join(info['sites'])})")
    if "summary" in info:
        _print_frame(_short_columns(info["summary"]), "backtest: mean over horizons")


# ---------------------------------------------------------------- evaluate (gridrl.agents)


@app.command("evaluate")
def evaluate_cmd(
    scenario: str = typer.Argument(..., help="Scenario YAML file (envs/*.yaml)."),
    policy: str = typer.Option(
        ..., "--policy", help="Reference name (run_now, carbon_aware, follow_renewables, "
        "headroom_guard, mpc, lp_bound, random) or a trained policy folder."),
    period: str = typer.Option("test", "--period", help="train or test."),
    episodes: int = typer.Option(
        None, "--episodes", help="Episodes drawn from the period; default: all its weeks."),
    seed: int = typer.Option(0, "--seed", help="Seeds the choice of episodes."),
    forecast: str = typer.Option(
        None, "--forecast",
        help="Forecast mode: perfect, persistence, none, noisy(SIGMA), lightgbm; default: "
        "the trained policy's (meta.json), else perfect."),
    forecast_config: str = typer.Option(
        None, "--forecast-config", help="Forecaster config YAML (lightgbm mode), e.g. "
        "forecasts/default.yaml; default: the trained policy's, else the built-in defaults."),
    param: list[str] = typer.Option(
        None, "--param", help="Reference parameter KEY=VALUE (repeatable), e.g. horizon_h=24."),
    out: str = typer.Option(None, "--out", help="Output folder; default eval/SCENARIO-POLICY."),
) -> None:
    """Evaluate a policy on a period: KPI table (CSV, parquet), dispatch plot, gap closed."""
    import json
    from pathlib import Path

    import yaml
    from rich.table import Table

    from gridrl.agents.evaluate import evaluate_detailed, gap_closed, make_setup
    from gridrl.agents.plots import dispatch_plot
    from gridrl.agents.registry import REFERENCES, load_policy
    from gridrl.io import write_with
    from gridrl.scenario import ScenarioError

    try:
        params = {}
        for item in param or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--param {item!r}: expected KEY=VALUE")
            params[key.strip()] = yaml.safe_load(value)
        is_ref = policy in REFERENCES
        if not is_ref and params:
            raise ValueError("--param applies to reference policies only")
        mode, config = forecast, forecast_config
        if not is_ref and (Path(policy) / "meta.json").is_file():
            meta = json.loads((Path(policy) / "meta.json").read_text())
            mode = mode or meta.get("forecast_mode")
            config = config or meta.get("forecast_config")
        mode = mode or "perfect"
        pol = load_policy(policy, **params)
        label = policy if is_ref else Path(policy).name
        with console.status(f"building inputs of {scenario} ({mode} forecasts)"):
            # the inputs a study trains and evaluates on (scenario-seeded forecasts)
            from gridrl.agents.train import env_inputs

            data = env_inputs(scenario, mode, config)
            setup = make_setup(scenario, period=period, forecast_mode=mode, data=data)
        runs = {label: pol}
        for ref in ("run_now", "lp_bound"):
            if ref != label:
                runs[ref] = load_policy(ref)
        results = {}
        for name, p in runs.items():
            results[name] = evaluate_detailed(
                p, setup, period=period, episodes=episodes, seed=seed, progress=True,
                trace_episodes=(0,) if name == label else ())
    except (ScenarioError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    folder = Path(out) if out else Path("eval") / f"{setup.scenario.name}-{label}"
    folder.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    tables = []
    for name, res in results.items():
        t = res.table.copy()
        t.insert(0, "policy", name)
        tables.append(t)
    all_rows = pd.concat(tables, ignore_index=True)
    j0 = results["run_now"].table["J"].to_numpy()
    j1 = results["lp_bound"].table["J"].to_numpy()
    all_rows["gap_closed"] = gap_closed(all_rows["J"].to_numpy(), pd.concat(
        [results["run_now"].table["J"]] * len(results)).to_numpy(), pd.concat(
        [results["lp_bound"].table["J"]] * len(results)).to_numpy())
    write_with(folder / "kpis.csv", lambda p: all_rows.to_csv(p, index=False))
    write_with(folder / "kpis.parquet", lambda p: all_rows.to_parquet(p, index=False))
    shown = ["J", "carbon_kg", "cost", "energy_kwh", "grid_import_kwh", "renewable_share",
             "energy_per_useful_gpu_h", "carbon_per_useful_gpu_h", "work_done_gpu_h",
             "deadline_miss_gpu_h", "overdue_gpu_h", "slo_violation_gpu_h",
             "headroom_violation_h", "overdraw_kwh", "mean_cap", "leftover_gpu_h",
             "work_lost_gpu_h"]
    means = all_rows.groupby("policy", sort=False)[shown].mean()
    write_with(folder / "summary.csv", lambda p: means.to_csv(p))
    n_ep = len(results[label].table)
    table = Table(title=f"{setup.scenario.name} {period}: mean over {n_ep} episodes "
                        f"(seed {seed}, {mode} forecasts)")
    table.add_column("KPI")
    for name in means.index:
        table.add_column(name, justify="right")
    for col in shown:
        table.add_row(col, *[f"{means.loc[name, col]:,.4g}" for name in means.index])
    console.print(table)
    gap_mean = gap_closed(results[label].table["J"].mean(), j0.mean(), j1.mean())
    per_ep = gap_closed(results[label].table["J"].to_numpy(), j0, j1)
    console.print(f"gap closed by {label} (run_now -> lp_bound, mean J): {gap_mean:.3f}; "
                  f"per episode: {', '.join(f'{g:.3f}' for g in per_ep)}", highlight=False)
    console.print(f"{label} decision time: {results[label].policy_s_per_step * 1e3:.2f} ms "
                  "per episode-hour", highlight=False)
    trace = results[label].traces.get(0)
    if trace is not None:
        png = dispatch_plot(trace, folder / "dispatch.png")
        console.print(f"dispatch plot: {png}")
    console.print(f"KPI tables: {folder / 'kpis.csv'}, {folder / 'kpis.parquet'}, "
                  f"{folder / 'summary.csv'}")

# ---------------------------------------------------------------- run / report (gridrl.experiments)


@app.command("run")
def run_cmd(
    study: str = typer.Argument(..., help="Study YAML file (experiments/*.yaml)."),
    backend: str = typer.Option(
        None, "--backend", help="local (process pool) or ray; default: the study's backend."
    ),
    address: str = typer.Option(
        None, "--address", help="Ray address: auto, host:port or local; default: the study's."
    ),
    resume: bool = typer.Option(False, "--resume", help="Skip units that already finished."),
    out: str = typer.Option(None, "--out", help="Run folder; default: the study's output_dir."),
) -> None:
    """Run a study (train, evaluate, report) from one YAML file."""
    from gridrl.experiments.backends import BackendError
    from gridrl.experiments.runner import run_study
    from gridrl.experiments.schema import StudyError, load_study
    from gridrl.experiments.store import RunDirError

    if backend is not None and backend not in ("local", "ray"):
        console.print(f"[red]--backend: expected local or ray, got {backend!r}[/]")
        raise typer.Exit(2)
    try:
        spec = load_study(study)
        run_dir = run_study(spec, out_dir=out, backend=backend, address=address, resume=resume)
    except (StudyError, RunDirError, BackendError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except RuntimeError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"run folder: {run_dir}")


@app.command("report")
def report_cmd(
    run_dir: str = typer.Argument(..., help="Run folder written by `gridrl run`."),
) -> None:
    """(Re)write report.md and its plots for a run folder."""
    from pathlib import Path

    from gridrl.experiments.report import write_report

    if not (Path(run_dir) / "config.resolved.yaml").exists():
        console.print(f"[red]error:[/] {run_dir}: not a run folder (no config.resolved.yaml)")
        raise typer.Exit(2)
    console.print(f"report: {write_report(run_dir)}")


# ---------------------------------------------------------------- export / serve / slurm / replay


@app.command("export")
def export_cmd(
    policy_dir: str = typer.Argument(..., help="Trained policy folder (RUN_DIR/units/POLICY)."),
    out: str = typer.Option(..., "--out", help="Bundle folder to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle."),
) -> None:
    """Export a trained policy as a bundle: policy.onnx, manifest.json, checksums.sha256."""
    from gridrl.export.bundle import ExportOptions, export_bundle
    from gridrl.export.onnx_export import ExportError
    from gridrl.export.policy_dir import PolicyDirError

    try:
        with console.status("exporting and checking ONNX against stable-baselines3"):
            manifest = export_bundle(policy_dir, out, ExportOptions(overwrite=overwrite))
    except (PolicyDirError, ExportError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    check = manifest.training.get("export_check", {})
    console.print(
        f"bundle: {out}  ({manifest.algo}, sites {', '.join(manifest.action.sites)}, "
        f"{manifest.onnx.observation_dim} observations -> {manifest.onnx.action_dim} actions, "
        f"max |ONNX - SB3| = {check.get('max_abs_error', float('nan')):.2g} "
        f"on {check.get('samples', 0)} observations)",
        highlight=False,
    )


@app.command("serve")
def serve_cmd(
    bundle: str = typer.Argument(..., help="Bundle folder written by `gridrl export`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    token: str = typer.Option(
        None, "--token", envvar="GRIDRL_SERVE_TOKEN",
        help="Require 'Authorization: Bearer TOKEN' on /v1/* (or set GRIDRL_SERVE_TOKEN).",
    ),
    max_body_bytes: int = typer.Option(None, "--max-body-bytes", help="Largest request body."),
    max_batch: int = typer.Option(None, "--max-batch", help="Most observations per request."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes sharing the port."),
) -> None:
    """Serve a bundle over HTTP: POST /v1/decide, GET /healthz, OpenAPI at /docs."""
    from gridrl.export.runtime import BundleError, PolicyRuntime
    from gridrl.integrations.http_service import ServeConfig, serve

    limits = {"max_body_bytes": max_body_bytes, "max_batch": max_batch}
    try:
        runtime = PolicyRuntime(bundle)
        config = ServeConfig(token=token, **{k: v for k, v in limits.items() if v is not None})
    except (BundleError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    serve(runtime, host=host, port=port, config=config, access_log=access_log, workers=workers)


@app.command("slurm")
def slurm_cmd(
    bundle: str = typer.Option(..., "--bundle", help="Bundle folder written by `gridrl export`."),
    sites: str = typer.Option(..., "--sites", help="SITES.yaml: partitions, signals, options."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the commands, change nothing."),
    once: bool = typer.Option(False, "--once", help="Decide once and exit."),
    interval: float = typer.Option(
        None, "--interval", help="Seconds between decisions; default: SITES.yaml's interval."
    ),
    list_inputs: bool = typer.Option(
        False, "--list-inputs", help="List the observation keys each site must provide, exit."
    ),
) -> None:
    """Drive Slurm with a policy: squeue -> observation -> decisions -> scontrol."""
    from rich.table import Table

    from gridrl.export.runtime import BundleError, PolicyRuntime
    from gridrl.integrations.slurm import SlurmAdapter, TickResult, format_command
    from gridrl.integrations.slurm_observation import ObservationError
    from gridrl.integrations.slurm_queue import SlurmError
    from gridrl.integrations.slurm_sites import SitesConfigError, load_sites

    try:
        runtime = PolicyRuntime(bundle)
        if list_inputs:
            from gridrl.integrations.slurm_observation import source_of

            table = Table("field", "site", "key", "unit", "from", title=f"observation of {bundle}")
            for f in runtime.manifest.observation.fields:
                table.add_row(f.name, f.site or "-", f.key, f.unit, source_of(f))
            console.print(table)
            return
        adapter = SlurmAdapter(runtime, load_sites(sites), dry_run=dry_run)
    except (BundleError, SitesConfigError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None

    def show(result: TickResult) -> None:
        table = Table(
            "site", "run_share", "power_cap", "route_weight", "migrate_share", "battery_kw"
        )
        for d in result.decisions:
            # batteries are not Slurm resources: their setpoint is shown, not applied
            battery = "-" if d.battery_kw is None else f"{d.battery_kw:.1f}"
            table.add_row(
                d.site, f"{d.run_share:.3f}", f"{d.power_cap_fraction:.3f}",
                f"{d.route_weight:.3f}", f"{d.migrate_share:.3f}", battery,
            )
        console.print(table)
        console.print(f"jobs: {result.summary()}", highlight=False)
        for argv in result.commands:
            # plain print: a dry run's output is meant to be copied into a shell
            print(("" if dry_run else "ran: ") + format_command(argv))
        for err in result.errors:
            console.print(f"[red]{err}[/]", highlight=False)

    try:
        results = adapter.run(
            interval_s=interval,
            once=once,
            on_tick=show,
            on_error=lambda exc: console.print(f"[red]tick failed:[/] {exc}", highlight=False),
        )
    except (SlurmError, ObservationError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    if any(r.errors for r in results):
        raise typer.Exit(1)


REPLAY_ZERO = 1e-9  # KPI magnitudes below this are round-off, not a reference


@app.command("replay")
def replay_cmd(
    bundle: str = typer.Argument(..., help="Bundle folder written by `gridrl export`."),
    trace: str = typer.Option(..., "--trace", help="GPU pod trace (Alibaba pods.csv)."),
    scenario: str = typer.Option(
        None, "--scenario", help="Scenario YAML; default: the one named in the manifest."
    ),
    days: int = typer.Option(None, "--days", min=1, help="Days replayed; default: one episode."),
    start: str = typer.Option(None, "--start", help="UTC day of the first hour; default: test."),
    forecast_mode: str = typer.Option(None, "--forecast-mode", help="Default: the bundle's."),
    seed: int = typer.Option(0, "--seed", help="Seeds the job deadline draws."),
    out: str = typer.Option(None, "--out", help="Folder for kpis.json, per-job/hour CSVs, PNG."),
) -> None:
    """Replay real jobs under the bundle's decisions and under run_now; compare KPIs."""
    import math
    from pathlib import Path

    from rich.table import Table

    from gridrl.export.runtime import BundleError
    from gridrl.integrations.replay import ReplayError, plot_replay, replay
    from gridrl.io import write_json_atomic, write_with
    from gridrl.scenario import ScenarioError

    try:
        with console.status("replaying the trace (bundle, then run_now)"):
            ours, base, report = replay(
                bundle, trace, scenario_path=scenario, days=days, start=start,
                forecast_mode=forecast_mode, seed=seed,
            )
    except (BundleError, ReplayError, ScenarioError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    table = Table("KPI", "run_now", "bundle", "change", title=f"job-level replay of {trace}")
    for key, value in ours.kpis.items():
        ref = base.kpis[key]
        # no relative change of (near-)zero references (float round-off of sums)
        small = math.isnan(ref) or abs(ref) < REPLAY_ZERO
        change = "" if small else f"{(value - ref) / abs(ref):+.1%}"
        table.add_row(key, f"{ref:,.4g}", f"{value:,.4g}", change)
    console.print(table)
    console.print(
        f"{report['jobs_per_site']} jobs per site from {report['flexible_pods_in_window']} "
        f"flexible pods ({report['excluded_never_ran']} never ran, "
        f"{report['excluded_cpu_only']} CPU-only); {report['hours']} h from "
        f"{report['replay_start']}",
        highlight=False,
    )
    if out is not None:
        folder = Path(out)
        write_json_atomic(
            folder / "kpis.json", {"bundle": ours.kpis, "run_now": base.kpis, "trace": report}
        )
        for res in (ours, base):
            for name, frame in (("jobs", res.jobs), ("hourly", res.hourly)):
                write_with(
                    folder / f"{name}_{res.policy}.csv",
                    lambda p, f=frame: f.to_csv(p, index=False),
                )
        png = plot_replay(ours, base, folder / "replay.png")
        console.print(f"written: {folder} (plot {png})")


if __name__ == "__main__":  # pragma: no cover
    app()
