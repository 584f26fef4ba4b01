"""Site signals: sources, loaders, validation and units."""

from gridrl.data.loaders import (
    PodTrace,
    load_alibaba_pods,
    load_citylearn,
    load_eia930,
    load_entsoe_carbon,
    load_entsoe_production,
)
from gridrl.data.signals import (
    SIGNALS,
    UNIT_SUFFIXES,
    SignalError,
    Signals,
    SignalSpec,
    signal_spec,
)

__all__ = [
    "SIGNALS",
    "UNIT_SUFFIXES",
    "PodTrace",
    "SignalError",
    "SignalSpec",
    "Signals",
    "load_alibaba_pods",
    "load_citylearn",
    "load_eia930",
    "load_entsoe_carbon",
    "load_entsoe_production",
    "signal_spec",
]
