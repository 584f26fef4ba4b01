"""Where gridrl finds the public data sets it reads by name.

A data set is asked for by name (``dataset_dir("multiregion_2021_2024")``), never by a
path outside the project. The folder holding local copies is ``$GRIDRL_DATA_DIR``;
without it, or without the data set there, :class:`DataNotFoundError` says what was
expected where.
"""

from __future__ import annotations

import os
from pathlib import Path

from gridrl.errors import GridrlError

DATA_DIR_ENV_VAR = "GRIDRL_DATA_DIR"

# Registry name -> folder under the data root (the layout of the reference copies).
DATASET_FOLDERS: dict[str, str] = {
    "entsoe_2020": "grid/entsoe_2020",
    "eia930_2022": "grid/eia930_2022",
    "multiregion_2021_2024": "grid/multiregion_2021_2024",
    "alibaba_gpu_2023": "traces/alibaba_gpu_2023",
    "cpu_hourly": "traces/cpu_hourly",
    "citylearn_2022": "buildings/citylearn_2022",
}


class DataNotFoundError(GridrlError, FileNotFoundError):
    """A named data set is not where gridrl looks for it."""


def data_root() -> Path:
    """The folder of local data-set copies (``$GRIDRL_DATA_DIR``)."""
    env = os.environ.get(DATA_DIR_ENV_VAR)
    if not env:
        raise DataNotFoundError(
            f"no data folder: set {DATA_DIR_ENV_VAR} to the folder that holds gridrl's data sets"
        )
    return Path(env).expanduser()


def dataset_dir(name: str) -> Path:
    """The local folder of data set ``name``; a clear error when unknown or absent."""
    if name not in DATASET_FOLDERS:
        raise DataNotFoundError(
            f"unknown data set {name!r}; known: {', '.join(sorted(DATASET_FOLDERS))}"
        )
    folder = data_root() / DATASET_FOLDERS[name]
    if not folder.is_dir():
        raise DataNotFoundError(
            f"data set {name!r} not found: expected the folder {folder} "
            f"({DATA_DIR_ENV_VAR}={os.environ.get(DATA_DIR_ENV_VAR)})"
        )
    return folder
