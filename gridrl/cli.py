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

# ---------------------------------------------------------------- forecast (gridrl.forecast)

# ---------------------------------------------------------------- evaluate (gridrl.agents)

# ---------------------------------------------------------------- run / report (gridrl.experiments)

# ---------------------------------------------------------------- export / serve / slurm / replay


if __name__ == "__main__":  # pragma: no cover
    app()
