"""The ``gridrl`` command. Each subcommand is a thin shell over a library function.

Imports of heavy modules happen inside the commands so ``gridrl --help`` stays fast.
Errors: every :class:`~gridrl.errors.GridrlError` a command raises becomes one red
``error:`` line and exit code 2, in one place (:class:`_Commands`); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from gridrl import __version__
from gridrl.errors import GridrlError

console = Console()


class _Commands(TyperGroup):
    """The command group: the one handler of gridrl's own errors."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GridrlError as exc:
            console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="gridrl",
    help="Energy-aware control of AI workloads: signals, forecasts, RL, references, export.",
    no_args_is_help=True,
    add_completion=False,
    cls=_Commands,
)


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
    from gridrl.data.summary import plot_week, site_summary, summary_tables
    from gridrl.scenario import load_scenario

    sc = load_scenario(scenario)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("building site signals", total=len(sc.expanded_sites()))
        sig = build_signals(
            sc, base_dir=Path(scenario).parent, cache=not no_cache,
            on_site=lambda _name: progress.advance(task),
        )
    years = sorted({t.year for t in (sig.index[0], sig.index[-1])})
    span = "-".join(str(y) for y in years)
    for table in summary_tables(site_summary(sc, sig), title=f"{sc.name} {span}"):
        console.print(table)
    _print_source_summary(sig)
    _print_series_summary(sig)
    saturated = {k: v.saturated_hours for k, v in build_stats(sig).items()
                 if v.saturated_hours}
    if saturated:
        console.print(
            "hours with headroom 0 because background load + reserve reached the "
            f"feeder capacity (not outages): {saturated}", highlight=False,
        )
    dropped = {k: v.dr_events_dropped for k, v in build_stats(sig).items()
               if v.dr_events_dropped}
    if dropped:
        console.print("demand-response events drawn but dropped (overlapping another "
                      f"event, or past the data's end): {dropped}", highlight=False)
    if plot is not None:
        start = week_start or sc.periods.test[0].start
        written = plot_week(sig, plot, start, title=f"{sc.name}: week from {start}")
        console.print(f"plot: {written}")


def _print_source_summary(sig) -> None:
    """What the real-data loaders did, per site (offsets, DST, estimated carbon)."""
    from rich.box import SIMPLE_HEAD
    from rich.table import Table

    from gridrl.data.build import source_summary

    frame = source_summary(sig)
    if frame.empty:
        return
    bases = ", ".join(sorted(set(frame.pop("carbon_basis").dropna())))
    zones = frame.pop("zone")
    heads = {"utc_offsets_h": "label\nUTC+h", "temp_peak_lag_h": "T peak\nlag h",
             "dst_change_days": "DST\ndays", "dst_hours_fixed": "DST h\nfixed",
             "edge_hours_filled": "edge h\nfilled", "carbon_estimated_share": "carbon\nestim.",
             "negative_price_hours": "price\n<0 h"}
    table = Table(title=f"real data: what the loaders did (carbon {bases})",
                  header_style="bold", box=SIMPLE_HEAD, pad_edge=False)
    table.add_column("zone", no_wrap=True)
    for col in frame.columns:
        table.add_column(heads.get(col, col), justify="right", no_wrap=True)
    for site, row in frame.iterrows():
        cells = {k: str(v) for k, v in row.items()}
        cells["utc_offsets_h"] = ",".join(f"{h:+g}" for h in row["utc_offsets_h"])
        share = row["carbon_estimated_share"]
        cells["carbon_estimated_share"] = "-" if share is None or share != share else f"{share:.1%}"
        table.add_row(str(zones[site]), *cells.values())
    console.print(table)

def _print_series_summary(sig) -> None:
    """The signals read from real series: file, columns, scale, what was done."""
    from gridrl.data.build import series_summary

    frame = series_summary(sig)
    if not frame.empty:
        _print_frame(frame.reset_index(), "real series: what was read and done")


# ---------------------------------------------------------------- forecast (gridrl.forecast)

forecast_app = typer.Typer(
    help="LightGBM quantile forecasts of site signals: fit, backtest, show.",
    no_args_is_help=True,
)
app.add_typer(forecast_app, name="forecast")


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


_CSV_HELP = "A CSV or parquet file to forecast instead of a scenario."


def _forecast_inputs(scenario, csv, column, signal, lat, lon, time_column, assume_tz,
                     resample, fill, max_fill_h):
    """A scenario path, or the ScenarioData of one column of a file (--csv)."""
    from pydantic import ValidationError

    from gridrl.config import format_validation_errors
    from gridrl.data.sources.series import signal_name_for
    from gridrl.forecast.pipeline import file_inputs
    from gridrl.scenario import SeriesSource

    if (scenario is None) == (csv is None):
        raise typer.BadParameter("give a scenario YAML or --csv FILE --column COL (one)")
    if scenario is not None:
        return scenario
    if not column:
        raise typer.BadParameter("--csv needs --column (repeat it to sum columns)")
    try:
        source = SeriesSource(file=csv, column=list(column), time_column=time_column,
                              assume_tz=assume_tz, resample=resample, fill=fill,
                              max_fill_h=max_fill_h)
    except ValidationError as exc:
        raise typer.BadParameter(format_validation_errors(exc, "options")) from None
    name = signal or signal_name_for(column[0])
    return file_inputs(source, name, latitude_deg=lat, longitude_deg=lon)


_FILE_OPTIONS = {
    "csv": typer.Option(None, "--csv", help=_CSV_HELP),
    "column": typer.Option(None, "--column", help="Column of --csv (repeat to sum)."),
    "signal": typer.Option(None, "--signal", help="Signal name with its unit (wind_mw); "
                           "default from the column (EIA-930/ENTSO-E names, or *_kw ...)."),
    "lat": typer.Option(None, "--lat", help="Latitude of the series (sun features)."),
    "lon": typer.Option(None, "--lon", help="Longitude of the series (sun features)."),
    "time_column": typer.Option(None, "--time-column", help="Default: the first column."),
    "assume_tz": typer.Option(None, "--assume-tz", help="Zone of naive timestamps (UTC)."),
    "resample": typer.Option(None, "--resample", help="mean|sum|interpolate to hourly."),
    "fill": typer.Option(None, "--fill", help="interpolate: fill empty cells (default: "
                         "they stay missing and are not fitted nor scored)."),
    "max_fill_h": typer.Option(None, "--max-fill-h", help="Longest run --fill fills."),
}


@forecast_app.command("fit")
def forecast_fit(
    scenario: str = typer.Argument(None, help="Scenario YAML file (envs/*.yaml)."),
    config: str = typer.Option(None, "--config", help="Forecaster YAML (forecasts/"
                               "default.yaml); default: derived from the targets present."),
    out: str = typer.Option(None, "--out", help="Output folder (default runs/forecast/NAME)."),
    seed: int = typer.Option(0, "--seed", help="Seed of horizon sampling and LightGBM."),
    csv: str = _FILE_OPTIONS["csv"], column: list[str] = _FILE_OPTIONS["column"],
    signal: str = _FILE_OPTIONS["signal"], lat: float = _FILE_OPTIONS["lat"],
    lon: float = _FILE_OPTIONS["lon"], time_column: str = _FILE_OPTIONS["time_column"],
    assume_tz: str = _FILE_OPTIONS["assume_tz"], resample: str = _FILE_OPTIONS["resample"],
    fill: str = _FILE_OPTIONS["fill"], max_fill_h: int = _FILE_OPTIONS["max_fill_h"],
) -> None:
    """Fit the forecaster on the training periods (a file: all of it), save it, build the
    cube (causal in the validation and test periods, cross-fitted elsewhere)."""
    from pathlib import Path

    from gridrl.forecast.pipeline import fit_scenario, load_inputs

    data = _forecast_inputs(scenario, csv, column, signal, lat, lon, time_column, assume_tz,
                            resample, fill, max_fill_h)
    if isinstance(data, str):
        data = load_inputs(data)
    out_dir = out or str(Path("runs") / "forecast" / data.name)
    info = fit_scenario(data, config, out_dir, seed=seed, progress=True)
    console.print(f"targets: {', '.join(info['targets'])} (solar features: "
                  f"{'on' if info['solar_features'] else 'off'})", highlight=False)
    console.print(f"fitted in {info['fit_s']} s, cube in {info['cube_s']} s")
    console.print(f"model: {info['model']}\ncube: {info['cube']}", highlight=False)


@forecast_app.command("backtest")
def forecast_backtest(
    scenario: str = typer.Argument(None, help="Scenario YAML file (envs/*.yaml)."),
    config: str = typer.Option(None, "--config", help="Forecaster YAML (forecasts/"
                               "default.yaml); default: derived from the targets present."),
    out: str = typer.Option(None, "--out", help="Folder for metrics.csv/parquet, summary."),
    plots: str = typer.Option(None, "--plots", help="Folder for PNG plots."),
    scheme: str = typer.Option(
        "causal", "--scheme",
        help="causal (the cube's), rolling (origin) or crossfit (whole year, not causal)."),
    period: str = typer.Option("test", "--period", help="Evaluate on: test, validation or all."),
    seed: int = typer.Option(0, "--seed"),
    csv: str = _FILE_OPTIONS["csv"], column: list[str] = _FILE_OPTIONS["column"],
    signal: str = _FILE_OPTIONS["signal"], lat: float = _FILE_OPTIONS["lat"],
    lon: float = _FILE_OPTIONS["lon"], time_column: str = _FILE_OPTIONS["time_column"],
    assume_tz: str = _FILE_OPTIONS["assume_tz"], resample: str = _FILE_OPTIONS["resample"],
    fill: str = _FILE_OPTIONS["fill"], max_fill_h: int = _FILE_OPTIONS["max_fill_h"],
) -> None:
    """Out-of-sample backtest against the baselines; print the table, save CSV and PNGs."""
    from gridrl.forecast.pipeline import backtest_scenario

    if scheme not in ("causal", "crossfit", "rolling") or period not in ("test", "validation",
                                                                          "all"):
        raise typer.BadParameter("--scheme is causal|crossfit|rolling, --period is "
                                 "test|validation|all")
    data = _forecast_inputs(scenario, csv, column, signal, lat, lon, time_column, assume_tz,
                            resample, fill, max_fill_h)
    if csv is not None and scheme == "causal":
        scheme = "rolling"  # a file has no validation/test periods to refit causally over
    result = backtest_scenario(data, config, out, scheme=scheme, period=period,
                               plots_dir=plots, seed=seed, progress=True)
    meta = result.meta
    console.print(f"solar features: {'on' if meta['solar_features'] else 'off'}; targets "
                  f"left out: {', '.join(meta['targets_left_out']) or 'none'}",
                  highlight=False)
    _print_frame(_short_columns(result.summary),
                 f"{scheme} backtest, {meta['period']} period: mean over horizons")
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

    info = describe(directory)
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
    period: str = typer.Option("test", "--period", help="train, validation or test."),
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
    from pathlib import Path

    from gridrl.agents.evaluate import compare_with_references, forecast_for, make_setup
    from gridrl.agents.plots import dispatch_plot
    from gridrl.agents.registry import load_policy, policy_label
    from gridrl.agents.train import env_inputs

    pol = load_policy(policy, **_parse_params(param))
    label = policy_label(policy)
    mode, config = forecast_for(policy, forecast, forecast_config)
    with console.status(f"building inputs of {scenario} ({mode} forecasts)"):
        # the inputs a study trains and evaluates on (scenario-seeded forecasts)
        data = env_inputs(scenario, mode, config)
        setup = make_setup(scenario, period=period, forecast_mode=mode, data=data)
    comparison = compare_with_references(
        pol, label, setup, period=period, episodes=episodes, seed=seed, progress=True
    )
    folder = Path(out) if out else Path("eval") / f"{setup.scenario.name}-{label}"
    tables = comparison.write_tables(folder)
    ours = comparison.results[label]
    _print_summary(comparison.summary(), f"{setup.scenario.name} {period}: mean over "
                   f"{len(ours.table)} episodes (seed {seed}, {mode} forecasts)")
    per_ep = ", ".join(f"{g:.3f}" for g in comparison.gap_closed_per_episode())
    console.print(f"gap closed by {label} (run_now -> lp_bound, mean J): "
                  f"{comparison.gap_closed_mean():.3f}; per episode: {per_ep}", highlight=False)
    console.print(f"{label} decision time: {ours.policy_s_per_step * 1e3:.2f} ms "
                  "per episode-hour", highlight=False)
    trace = ours.traces.get(0)
    if trace is not None:
        console.print(f"dispatch plot: {dispatch_plot(trace, folder / 'dispatch.png')}")
    console.print(f"KPI tables: {', '.join(str(t) for t in tables)}")


def _parse_params(items: list[str] | None) -> dict[str, object]:
    """``--param KEY=VALUE`` options as a dict (values read as YAML: numbers, lists)."""
    import yaml

    params = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--param")
        params[key.strip()] = yaml.safe_load(value)
    return params


def _print_summary(means, title: str) -> None:
    """KPIs down, policies across (the summary of a comparison)."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("KPI")
    for name in means.index:
        table.add_column(name, justify="right")
    for col in means.columns:
        table.add_row(col, *[f"{means.loc[name, col]:,.4g}" for name in means.index])
    console.print(table)

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
    resume: bool = typer.Option(
        False, "--resume",
        help="Skip units that already finished; after a study change, rerun only the units "
        "it changed."),
    out: str = typer.Option(None, "--out", help="Run folder; default: the study's output_dir."),
) -> None:
    """Run a study (train, evaluate, report) from one YAML file."""
    from gridrl.experiments.progress_display import RichProgress
    from gridrl.experiments.runner import run_study
    from gridrl.experiments.schema import load_study

    if backend is not None and backend not in ("local", "ray"):
        raise typer.BadParameter(f"expected local or ray, got {backend!r}", param_hint="--backend")
    spec = load_study(study)
    run_dir = run_study(spec, out_dir=out, backend=backend, address=address, resume=resume,
                        progress=RichProgress(Console(stderr=True)))
    console.print(f"run folder: {run_dir}")


@app.command("report")
def report_cmd(
    run_dir: str = typer.Argument(..., help="Run folder written by `gridrl run`."),
    docs: str = typer.Option(None, "--docs", help="Also publish to DIR/<study>.md, "
                             "DIR/<study>_leaderboard.csv and DIR/<study>/*.png."),
    levers: str = typer.Option(None, "--levers", help="levers.csv of benchmarks/levers.py "
                               "to add to the published report (with --docs)."),
    name: str = typer.Option(None, "--name", help="Page name of the published documents "
                             "in place of <study> (with --docs), e.g. multiregion."),
) -> None:
    """(Re)write report.md and its plots for a run folder."""
    from pathlib import Path

    from gridrl.experiments.report import write_report

    if not (Path(run_dir) / "config.resolved.yaml").exists():
        raise typer.BadParameter(f"{run_dir}: not a run folder (no config.resolved.yaml)",
                                 param_hint="RUN_DIR")
    for flag, value in (("--levers", levers), ("--name", name)):
        if value is not None and docs is None:
            raise typer.BadParameter(f"{flag} needs --docs", param_hint=flag)
    if docs is None:
        console.print(f"report: {write_report(run_dir)}")
        return
    from gridrl.experiments.publish import publish_report

    console.print(f"report: {publish_report(run_dir, docs, levers_csv=levers, name=name)}")


# ---------------------------------------------------------------- export / serve / slurm / replay


@app.command("export")
def export_cmd(
    policy_dir: str = typer.Argument(..., help="Trained policy folder (RUN_DIR/units/POLICY)."),
    out: str = typer.Option(..., "--out", help="Bundle folder to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle."),
) -> None:
    """Export a trained policy as a bundle: policy.onnx, manifest.json, checksums.sha256."""
    from gridrl.export.bundle import ExportOptions, export_bundle

    with console.status("exporting and checking ONNX against stable-baselines3"):
        manifest = export_bundle(policy_dir, out, ExportOptions(overwrite=overwrite))
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
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth", help="Serve without a token (loopback hosts only)."
    ),
    max_body_bytes: int = typer.Option(
        None, "--max-body-bytes", min=1,
        help="Largest request body (default: 16 MiB, or what --max-batch needs).",
    ),
    max_batch: int = typer.Option(
        None, "--max-batch", min=1, help="Most observations per request (default: what fits)."
    ),
    threads: int = typer.Option(None, "--threads", min=1, help="Requests decided at once."),
    queue: int = typer.Option(
        None, "--queue", min=0, help="Requests admitted beyond --threads (more get 503)."
    ),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes sharing the port."),
) -> None:
    """Serve a bundle over HTTP: POST /v1/decide, GET /healthz, OpenAPI at /docs."""
    from gridrl.export.runtime import PolicyRuntime
    from gridrl.integrations.http_service import check_access, serve, serve_config
    from gridrl.integrations.serve_body import resolve_limits

    given = {
        "max_body_bytes": max_body_bytes, "max_batch": max_batch, "threads": threads,
        "queue": queue,
    }  # fmt: skip
    config = serve_config(
        token=token,
        insecure_no_auth=insecure_no_auth,
        **{k: v for k, v in given.items() if v is not None},
    )
    check_access(config, host)  # refuses to serve open except on loopback when asked
    runtime = PolicyRuntime(bundle)
    resolve_limits(runtime.observation_dim, config.max_body_bytes, config.max_batch)
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

    from gridrl.export.runtime import PolicyRuntime
    from gridrl.integrations.slurm import SlurmAdapter, TickResult, format_command
    from gridrl.integrations.slurm_observation import source_of
    from gridrl.integrations.slurm_sites import load_sites

    runtime = PolicyRuntime(bundle)
    if list_inputs:
        table = Table("field", "site", "key", "unit", "from", title=f"observation of {bundle}")
        for f in runtime.manifest.observation.fields:
            table.add_row(f.name, f.site or "-", f.key, f.unit, source_of(f))
        console.print(table)
        return
    adapter = SlurmAdapter(runtime, load_sites(sites), dry_run=dry_run)

    def show(result: TickResult) -> None:
        if result.input_error is not None:
            console.print(
                f"[red]tick input error:[/] {result.input_error} - safe default decision "
                "(run what is queued; release own deferrals whose deadline requires)",
                highlight=False,
            )
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        for event in result.events:
            console.print(f"[magenta]event:[/] {event}", highlight=False)
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
    except KeyboardInterrupt:  # the operator stopped the loop: not an error
        raise typer.Exit(0) from None
    if any(not r.ok for r in results):
        raise typer.Exit(1)  # a bad tick is visible to the operator of --once


@app.command("node-agent")
def node_agent_cmd(
    caps: str = typer.Option(..., "--caps", help="Node caps file the Slurm adapter writes."),
    node: str = typer.Option(None, "--node", help="Slurm node name; default: short hostname."),
    state: str = typer.Option(None, "--state", help="The agent's own record of capped GPUs."),
    interval: float = typer.Option(None, "--interval", help="Seconds between steps."),
    max_age: float = typer.Option(None, "--max-age", help="Refuse caps files older (s)."),
    once: bool = typer.Option(False, "--once", help="Apply once, leave the caps, exit."),
    memory_gpus: int = typer.Option(
        None, "--memory-gpus", help="Use N in-memory GPUs instead of NVML (no hardware)."
    ),
) -> None:
    """Apply the adapter's caps to the GPUs of running jobs (NVML); restore on stop."""
    import json
    import socket
    from dataclasses import fields
    from pathlib import Path

    from gridrl.integrations.node_agent import AgentConfig, NodeAgent, StepResult
    from gridrl.integrations.nvml import MemoryGpuPower, PynvmlPower

    given = {"state_file": state, "interval_s": interval, "max_age_s": max_age}
    defaults = {f.name: f.default for f in fields(AgentConfig)}
    cfg = AgentConfig(
        caps_file=Path(caps),
        node=node or socket.gethostname().split(".")[0],
        **{k: type(defaults[k])(v) for k, v in given.items() if v is not None},
    )
    gpus = MemoryGpuPower(memory_gpus) if memory_gpus is not None else PynvmlPower()
    bad: list[StepResult] = []

    def show(result: StepResult) -> None:
        print(json.dumps(result.summary()), flush=True)  # one JSON line per step
        if result.caps_error or result.errors:
            bad.append(result)

    try:
        NodeAgent(cfg, gpus).run(once=once, on_step=show)
    finally:
        if isinstance(gpus, PynvmlPower):
            gpus.close()
    if once and bad:
        raise typer.Exit(1)


REPLAY_ZERO = 1e-9  # KPI magnitudes below this are round-off, not a reference
REPLAY_DATASET = ("alibaba_gpu_2023", "pods.csv")  # the trace replayed by default


def _trace_or_dataset(value: str | None) -> str:
    """``--trace``, else the pods of the registered trace (missing: the fetch command)."""
    if value:
        return value
    from gridrl.data.datasets import dataset_file

    return str(dataset_file(*REPLAY_DATASET))  # missing: DataNotFoundError names the fetch


@app.command("replay")
def replay_cmd(
    bundle: str = typer.Argument(..., help="Bundle folder written by `gridrl export`."),
    trace: str = typer.Option(
        None, "--trace", callback=_trace_or_dataset,
        help="GPU pod trace (pods.csv); default: data set alibaba_gpu_2023.",
    ),
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

    from gridrl.integrations.replay import plot_replay, replay
    from gridrl.io import write_json_atomic, write_with

    with console.status("replaying the trace (bundle, then run_now)"):
        ours, base, report = replay(
            bundle, trace, scenario_path=scenario, days=days, start=start,
            forecast_mode=forecast_mode, seed=seed,
        )
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


# ---------------------------------------------------------------- data (gridrl.data.fetch)

data_app = typer.Typer(
    help="Public data sets by name: list, fetch (pinned, checksummed, cached), verify, path.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
DATA_DIR_HELP = "Data root; default: $GRIDRL_DATA_DIR, else the user cache."


def _data_names(name: str | None) -> list[str]:
    from gridrl.data.datasets import dataset_names

    return dataset_names() if name in (None, "all") else [name]


@data_app.command("list")
def data_list_cmd(
    long: bool = typer.Option(False, "--long", help="Also licence, attribution and uses."),
    data_dir: str = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
) -> None:
    """Every registered data set: size, files present locally, pinned source."""
    from pathlib import Path

    from rich.table import Table

    from gridrl.data.datasets import data_root, registry

    root = Path(data_dir) if data_dir else data_root()
    table = Table("name", "MB", "local", "upstream @ commit", "title", title=f"data root: {root}")
    for name, ds in sorted(registry().items()):
        present = sum((root / ds.folder / f.path).exists() for f in ds.files)
        source = ds.repository.removeprefix("https://github.com/")
        table.add_row(name, f"{ds.size_bytes / 1e6:.1f}", f"{present}/{len(ds.files)}",
                      f"{source} @ {ds.commit[:7]}", ds.title)
    console.print(table)
    if long:
        for name, ds in sorted(registry().items()):
            console.print(
                f"\n[bold]{name}[/]\n  licence: {ds.licence}\n  attribution: {ds.attribution}"
                f"\n  uses: {ds.uses}\n  checked: {ds.check}", highlight=False,
            )


@data_app.command("fetch")
def data_fetch_cmd(
    name: str = typer.Argument(..., help="Registered name (see `gridrl data list`), or all."),
    only: str = typer.Option(None, "--only", help="Only files matching this glob."),
    offline: bool = typer.Option(False, "--offline", help="Never touch the network."),
    data_dir: str = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
) -> None:
    """Download a data set (checked against its sha256), or confirm the local copy."""
    from pathlib import Path

    from gridrl.data.fetch import fetch_dataset

    for each in _data_names(name):
        with console.status(f"{each}: fetching"):
            rep = fetch_dataset(each, Path(data_dir) if data_dir else None,
                                offline=offline, only=only)
        for path, why in rep.refetched.items():
            console.print(f"{each}/{path}: was {why}; fetched again", highlight=False)
        console.print(
            f"{each}: {len(rep.downloaded)} downloaded, {len(rep.refetched)} re-fetched, "
            f"{len(rep.cached)} already there and verified -> {rep.folder}", highlight=False,
        )


@data_app.command("verify")
def data_verify_cmd(
    name: str = typer.Argument(None, help="Registered name; default: every data set."),
    data_dir: str = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
) -> None:
    """Check every local file against the registry's size and sha256 (exit 1 on failure)."""
    from pathlib import Path

    from gridrl.data.datasets import fetch_command
    from gridrl.data.fetch import verify_dataset

    failed = 0
    for each in _data_names(name):
        checks = verify_dataset(each, Path(data_dir) if data_dir else None)
        bad = [c for c in checks if not c.ok]
        for c in bad:
            console.print(f"[red]{each}:[/] {c.path}: {c.detail}", highlight=False)
        hint = f" (repair: {fetch_command(each)})" if bad else ""
        console.print(f"{each}: {len(checks) - len(bad)}/{len(checks)} files ok{hint}",
                      highlight=False)
        failed += len(bad)
    if failed:
        raise typer.Exit(1)


@data_app.command("path")
def data_path_cmd(name: str = typer.Argument(..., help="Registered name.")) -> None:
    """Print the local folder of a data set (an error with the fetch command if absent)."""
    from gridrl.data.datasets import dataset_dir

    print(dataset_dir(name))


# ---------------------------------------------------------------- live (gridrl.data.providers)



@app.command("live")
def live_cmd(
    provider: str = typer.Argument(
        ..., help="uk_carbon, electricitymaps, openmeteo, gridstatus or entsoe."
    ),
    out: str = typer.Option(..., "--out", help="CSV signal file to merge into (SITES.yaml)."),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Provider option KEY=VALUE (repeatable), e.g. zone=DE."
    ),
    back_h: int = typer.Option(0, "--back-h", min=0, help="Hours before the current hour."),
    ahead_h: int = typer.Option(24, "--ahead-h", min=0, help="Hours from the current hour."),
    start: str = typer.Option(None, "--start", help="Window start (UTC ISO); overrides --back-h."),
    end: str = typer.Option(None, "--end", help="Window end (UTC ISO); overrides --ahead-h."),
) -> None:
    """Poll a live signal provider into a CSV signal file (merged, written atomically).

    Keys come from the provider's environment variable (ELECTRICITYMAPS_API_KEY,
    ENTSOE_API_KEY). Exit 2 on an error, 3 when the service rate-limits (HTTP 429).
    """
    import pandas as pd

    from gridrl.data.providers import make_provider, poll_to_csv

    # a rate limit ends the command with RateLimitedError.exit_code (3), other errors 2
    options = dict(_key_value(p) for p in param)
    source = make_provider(provider, options)
    now = pd.Timestamp.now(tz="UTC").floor("h")
    lo = start if start is not None else now - pd.Timedelta(hours=back_h)
    hi = end if end is not None else now + pd.Timedelta(hours=ahead_h)
    res = poll_to_csv(source, out, lo, hi)
    console.print(
        f"{provider}: {res.fetched_rows} hours {res.first} .. {res.last} -> {res.path} "
        f"({res.file_rows} rows, {res.replaced_values} values replaced)",
        highlight=False,
    )


# ---------------------------------------------------------------- openadr (gridrl.integrations)

OPENADR_STEP_S = 900.0  # rows of the event signal: fresher than any decision interval
OPENADR_HORIZON_H = 24.0  # rows ahead without events: the file stays valid a day


@app.command("openadr-ven")
def openadr_ven_cmd(
    vtn: str = typer.Option(..., "--vtn", help="VTN URL, e.g. https://vtn/OpenADR2/Simple/2.0b"),
    ven_name: str = typer.Option(..., "--ven-name", help="This VEN's name at the VTN."),
    out: str = typer.Option(..., "--out", help="Event signal CSV (the site's events file)."),
    sites: str = typer.Option(..., "--sites", help="SITES.yaml (GPUs and power of the site)."),
    site: str = typer.Option(..., "--site", help="The site this VEN answers for."),
    step_s: float = typer.Option(OPENADR_STEP_S, "--step-s", min=1, help="Row spacing (s)."),
    horizon_h: float = typer.Option(
        OPENADR_HORIZON_H, "--horizon-h", min=0, help="Hours of rows written ahead."
    ),
) -> None:
    """Receive a utility's demand-response events (OpenADR 2.0b) into a site's event signal.

    Opts in to events the site can meet by capping its GPUs, out of the others. Certificates
    and keys come from GRIDRL_OPENADR_CERT, _KEY, _KEY_PASSPHRASE, _CA_FILE and
    _VTN_FINGERPRINT (unset: plain HTTP without signatures).
    """
    import asyncio
    import logging

    from gridrl.integrations.openadr import SiteVen, VenSecurity
    from gridrl.integrations.openadr_events import OpenADRError
    from gridrl.integrations.slurm_sites import load_sites

    cfg = load_sites(sites)
    by_name = {s.name: s for s in cfg.sites}
    if site not in by_name:
        raise OpenADRError(f"{sites}: no site {site!r}; sites are {sorted(by_name)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    def said(event_id: str, opt: str, reason: str | None) -> None:
        console.print(f"event {event_id}: {opt}" + (f" ({reason})" if reason else ""),
                      highlight=False)

    ven = SiteVen(by_name[site], out, vtn, ven_name, step_s=step_s, horizon_h=horizon_h,
                  security=VenSecurity.from_env(), on_opt=said)
    try:
        asyncio.run(ven.run())
    except KeyboardInterrupt:  # the operator stopped the VEN: not an error
        raise typer.Exit(0) from None


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise typer.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint="--param")
    return key.strip(), value


if __name__ == "__main__":  # pragma: no cover
    app()
