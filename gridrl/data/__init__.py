"""Site signals: sources, loaders, validation and units."""

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
    "SignalError",
    "SignalSpec",
    "Signals",
    "signal_spec",
]
