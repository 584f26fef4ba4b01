"""One error model in the CLI: any GridrlError becomes one red ``error:`` line and exit
code 2, handled in one place; commands do not catch gridrl's errors themselves."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gridrl.cli
from gridrl.cli import app
from gridrl.errors import GridrlError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "{tmp}/missing.yaml"], "missing.yaml: study file not found"),
        (["export", "{tmp}", "--out", "{tmp}/bundle"], "meta.json"),
        (["serve", "{tmp}/nobundle", "--token", "t0ken"], "nobundle"),
        (["slurm", "--bundle", "{tmp}/nobundle", "--sites", "{tmp}/sites.yaml"], "nobundle"),
        (["forecast", "show", "{tmp}"], "no forecaster, cube or backtest found"),
        (["signals", "{tmp}/none.yaml"], "none.yaml: scenario file not found"),
        (
            ["evaluate", str(REPO / "envs" / "geo3.yaml"), "--policy", "{tmp}", "--param", "q=1"],
            "apply to reference policies only",
        ),
        (["evaluate", str(REPO / "envs" / "geo3.yaml"), "--policy", "oracle"],
         "neither a reference policy"),
    ],
)
def test_gridrl_errors_end_as_one_red_line_and_exit_2(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    result = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == GridrlError.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith("error: "), result.output
    assert expected in " ".join(result.output.split()), result.output


def test_bad_command_line_values_are_usage_errors(tmp_path: Path) -> None:
    geo3 = str(REPO / "envs" / "geo3.yaml")
    bad = CliRunner().invoke(app, ["evaluate", geo3, "--policy", "run_now", "--param", "q"])
    assert bad.exit_code == 2 and "expected KEY=VALUE" in bad.output
    bad = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "config.resolved.yaml" in bad.output


def test_the_cli_has_one_handler_of_gridrl_errors() -> None:
    """No command catches a gridrl error class; the group's handler is the one place."""
    tree = ast.parse(inspect.getsource(gridrl.cli))
    project_errors = _project_error_names()
    handlers = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                caught = {n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)}
                reraises = len(node.body) == 1 and isinstance(node.body[0], ast.Raise) and \
                    node.body[0].exc is None
                handlers.append((func.name, caught, reraises))
    catching = [(f, c) for f, c, reraises in handlers if c & project_errors and not reraises]
    assert catching == [("invoke", {"GridrlError"})]


def _project_error_names() -> set[str]:
    """Names of the exception classes defined in the package (all end in ``Error``)."""
    package = Path(gridrl.cli.__file__).parent
    return {
        node.name
        for path in package.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name.endswith("Error")
    }
