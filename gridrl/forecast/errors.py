"""Errors of the forecasting layer."""

from __future__ import annotations

from gridrl.errors import GridrlError


class ForecastError(GridrlError, ValueError):
    """Bad input to a forecaster: the message names the site, the signal and what was expected."""
