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

# ---------------------------------------------------------------- evaluate (gridrl.agents)

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


if __name__ == "__main__":  # pragma: no cover
    app()
