"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from provider_helpers import TEST_KEY, FakeService, serving

from gridrl.data.datasets import DATA_DIR_ENV_VAR, data_root, fetch_command, registry

# Test configuration: on this project's machines the reference copies of the public data
# sets sit beside the repository; elsewhere, set GRIDRL_DATA_DIR or run `gridrl data fetch`.
REFERENCE_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not os.environ.get(DATA_DIR_ENV_VAR) and REFERENCE_DATA.is_dir():
    os.environ[DATA_DIR_ENV_VAR] = str(REFERENCE_DATA)


@pytest.fixture(scope="session", autouse=True)
def _sb3_log_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests that call SB3's ``learn`` without a logger: SB3 then makes an ``SB3-<time>``
    folder (``SB3_LOGDIR``, else the system temp folder); keep it in pytest's."""
    os.environ.setdefault("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The data root holding every registered data set; skip with the fetch command if not."""
    root = data_root()
    missing = sorted(n for n, ds in registry().items() if not (root / ds.folder).is_dir())
    if missing:
        pytest.skip(
            f"real data sets {', '.join(missing)} not found under {root}: run "
            f"`{fetch_command('all')}` or set {DATA_DIR_ENV_VAR} to a copy"
        )
    return root


@pytest.fixture()
def service() -> Iterator[FakeService]:
    """A real local HTTP server with routes set by the test (``provider_helpers``)."""
    with serving() as state:
        yield state


@pytest.fixture()
def entsoe_service(service: FakeService, monkeypatch: pytest.MonkeyPatch) -> FakeService:
    """``service`` as entsoe-py's endpoint (its own client and HTTP), with a test key."""
    entsoe = pytest.importorskip("entsoe.entsoe", reason="entsoe-py not installed (gridrl[live])")
    monkeypatch.setattr(entsoe, "URL", f"{service.url}/api")
    monkeypatch.setenv("ENTSOE_API_KEY", TEST_KEY)
    return service
