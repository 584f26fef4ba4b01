"""Live signal providers for operation: one interface, one provider per service.

``make_provider("uk_carbon", {"region_id": "13"})`` builds a provider from string
options (as given on the command line); ``provider.fetch(start, end)`` returns validated
hourly ``Signals``; ``poll_to_csv`` merges them into the CSV signal file that
``gridrl slurm`` reads. See ``base.Provider`` for the contract.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gridrl.data.providers.base import (
    HttpJson,
    Provider,
    ProviderError,
    RateLimitedError,
    hour_floor,
)
from gridrl.data.providers.electricitymaps import ElectricityMaps
from gridrl.data.providers.entsoe_api import Entsoe
from gridrl.data.providers.gridstatus_iso import GridStatus
from gridrl.data.providers.live import poll_to_csv
from gridrl.data.providers.openmeteo import OpenMeteo
from gridrl.data.providers.uk_carbon import UKCarbonIntensity

__all__ = [
    "PROVIDERS",
    "ElectricityMaps",
    "Entsoe",
    "GridStatus",
    "HttpJson",
    "OpenMeteo",
    "Provider",
    "ProviderError",
    "RateLimitedError",
    "UKCarbonIntensity",
    "hour_floor",
    "make_provider",
    "poll_to_csv",
]

PROVIDERS: dict[str, type[Provider]] = {
    cls.name: cls for cls in (UKCarbonIntensity, ElectricityMaps, OpenMeteo, GridStatus, Entsoe)
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def make_provider(name: str, options: Mapping[str, Any] | None = None) -> Provider:
    """Build the provider ``name`` from options given as strings or values.

    Raises
    ------
    ProviderError
        For an unknown provider or option, or a value of the wrong type (naming it).
    """
    if name not in PROVIDERS:
        raise ProviderError(f"unknown provider {name!r}: expected one of {sorted(PROVIDERS)}")
    cls = PROVIDERS[name]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, raw in (options or {}).items():
        if key not in fields:
            raise ProviderError(f"{name}: unknown option {key!r}: expected one of {sorted(fields)}")
        kwargs[key] = _convert(name, key, raw, type(fields[key].default))
    return cls(**kwargs)


def _convert(provider: str, key: str, raw: Any, kind: type) -> Any:
    if not isinstance(raw, str) or kind is str:
        return raw
    text = raw.strip()
    try:
        if kind is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(f"expected one of {_TRUE + _FALSE}")
            return text.lower() in _TRUE
        return kind(text)
    except ValueError as err:
        raise ProviderError(
            f"{provider}: option {key}={raw!r}: not a {kind.__name__} ({err})"
        ) from None
