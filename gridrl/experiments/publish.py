"""Publish a run's report as citable benchmark documents.

``publish_report(run_dir, docs_dir)`` (re)writes the run's report
(:mod:`gridrl.experiments.report`) and copies it to ``docs_dir``, under the study's name
or the page name given (``name``: ``multiregion`` for study ``multiregion_benchmark``):

- ``<study>.md``: the report, its figures linked from ``<study>/``, with the lever
  table of ``benchmarks/levers.py`` appended when its CSV is given;
- ``<study>_leaderboard.csv``: one row per policy (ablation modes as
  ``<policy>@<mode>``) with at least ``policy, kind, learned, J_mean, J_iqm,
  J_ci_low, J_ci_high, gap_closed, gap_closed_vs_static``, then every other column of
  the run's ``leaderboard.csv``;
- ``<study>/*.png``: the figures.

Nothing is computed here: every number is the run report's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import yaml

from gridrl.errors import GridrlError
from gridrl.experiments.report import markdown_table, policy_labels, write_report
from gridrl.io import write_text_atomic, write_with

__all__ = ["LEADERBOARD_COLUMNS", "PublishError", "publish_report"]

#: the published leaderboard's first columns, in this order
LEADERBOARD_COLUMNS = ("policy", "kind", "learned", "J_mean", "J_iqm", "J_ci_low", "J_ci_high",
                       "gap_closed", "gap_closed_vs_static")
LEVER_COLUMNS = ("scenario", "variant", "J", "gap_closed", "value", "value_share_of_gap")


class PublishError(GridrlError, ValueError):
    """A run folder or lever table that cannot be published (names the file and why)."""


def publish_report(run_dir: str | Path, docs_dir: str | Path, *,
                   levers_csv: str | Path | None = None, name: str | None = None) -> Path:
    """Write ``docs_dir/<study>.md``, ``<study>_leaderboard.csv`` and ``<study>/*.png``.

    Parameters
    ----------
    run_dir
        A run folder of :func:`gridrl.experiments.runner.run_study`.
    docs_dir
        Where the documents go (``docs/benchmarks``).
    levers_csv
        The lever table written by ``benchmarks/levers.py`` (``levers.csv``), if any.
    name
        The page name (file stem of the documents and folder of the figures); default
        the study's name.

    Returns
    -------
    Path
        The markdown document.

    Raises
    ------
    PublishError
        when ``run_dir`` has no finished unit, the lever table lacks its columns or
        ``name`` is not a plain file name.
    """
    run_dir, docs_dir = Path(run_dir).resolve(), Path(docs_dir).resolve()
    if name is not None:
        page_name(name)  # a bad name fails before anything is written
    report = write_report(run_dir)
    board_path = run_dir / "leaderboard.csv"
    if not board_path.is_file():
        raise PublishError(f"{run_dir}: no finished unit to publish (no leaderboard.csv)")
    study = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())
    name = page_name(study["name"] if name is None else name)
    figures = docs_dir / name
    figures.mkdir(parents=True, exist_ok=True)
    for png in sorted((run_dir / "plots").glob("*.png")):
        shutil.copyfile(png, figures / png.name)
    text = report.read_text().replace("](plots/", f"]({name}/")
    if levers_csv is not None:
        text += "\n" + "\n".join(lever_section(Path(levers_csv))) + "\n"
    board = published_leaderboard(pd.read_csv(board_path), study["forecast"]["mode"])
    write_with(docs_dir / f"{name}_leaderboard.csv", lambda p: board.to_csv(p, index=False))
    return write_text_atomic(docs_dir / f"{name}.md", text)


def page_name(name: str) -> str:
    """``name`` when it is a plain file name (no folder, not hidden), else PublishError."""
    if not name or name != Path(name).name or name.startswith("."):
        raise PublishError(f"page name {name!r}: expected a plain file name such as "
                           "'multiregion' (no folder, no leading dot)")
    return name


def published_leaderboard(board: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The run's leaderboard with one uniquely named row per policy (and mode)."""
    out = board.copy()
    out["policy"] = policy_labels(out, mode)
    first = [c for c in LEADERBOARD_COLUMNS if c in out.columns]
    missing = [c for c in LEADERBOARD_COLUMNS if c not in out.columns]
    if missing:
        raise PublishError(f"leaderboard.csv lacks {missing}")
    return out[first + [c for c in out.columns if c not in first]]


def lever_section(path: Path) -> list[str]:
    """The lever table of ``benchmarks/levers.py`` as a report section."""
    try:
        levers = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PublishError(f"{path}: unreadable lever table ({exc})") from None
    missing = [c for c in LEVER_COLUMNS if c not in levers.columns]
    if missing:
        raise PublishError(f"{path}: lever table lacks column(s) {missing} "
                           f"(expected the levers.csv of benchmarks/levers.py)")
    return [
        "## What each lever is worth",
        "",
        f"`lp_bound` with one lever removed (`benchmarks/levers.py`, from `{path.name}`): "
        "value = J_bound(full) − J_bound(without), also as a share of the full gap.",
        "",
        markdown_table(levers[list(LEVER_COLUMNS)].round(3)),
        "",
    ]
