"""An OpenADR 2.0b VEN for one site: utility events -> the site's event signal file.

The VEN (``openleadr``'s client) registers with the utility's VTN, polls it, and for
every event answers ``oadrCreatedEvent`` with ``optIn`` when the site can comply (its
power with every GPU at ``cap_min_fraction`` is at or below each limit of the event) and
``optOut`` otherwise, or when the event is not a load dispatch in real power it
understands (:mod:`.openadr_events`). Accepted events go into the event signal CSV (the
SITES.yaml ``events`` file the Slurm adapter reads), rewritten atomically on every event
and every ``step_s`` once the VTN has registered the VEN and sent the events in force.
Cancelled and completed events leave the signal.

Certificates and keys (paths) come from the environment (:data:`SECURITY_ENV`), never the
command line; the passphrase is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gridrl.integrations.openadr_events import (
    OPT_IN,
    OPT_OUT,
    DemandEvent,
    OpenADRError,
    opt_reason,
    parse_event,
    write_event_signal,
)
from gridrl.integrations.slurm_sites import SlurmSite

log = logging.getLogger("gridrl.openadr")

# What the VEN reads from the environment: PEM files for signed messages and TLS.
SECURITY_ENV = {
    "cert": "GRIDRL_OPENADR_CERT",
    "key": "GRIDRL_OPENADR_KEY",
    "passphrase": "GRIDRL_OPENADR_KEY_PASSPHRASE",
    "ca_file": "GRIDRL_OPENADR_CA_FILE",
    "vtn_fingerprint": "GRIDRL_OPENADR_VTN_FINGERPRINT",
}
ENDED = ("cancelled", "completed")


@dataclass(frozen=True)
class VenSecurity:
    """Certificate, key and CA paths (all None: plain HTTP without signatures)."""

    cert: str | None = None
    key: str | None = None
    passphrase: str | None = None
    ca_file: str | None = None
    vtn_fingerprint: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> VenSecurity:
        """From :data:`SECURITY_ENV`; a cert without key (or a missing file) is an error."""
        env = os.environ if env is None else env
        got = {k: (env.get(v) or None) for k, v in SECURITY_ENV.items()}
        if (got["cert"] is None) != (got["key"] is None):
            raise OpenADRError(
                f"set both {SECURITY_ENV['cert']} and {SECURITY_ENV['key']}, or neither"
            )
        for k in ("cert", "key", "ca_file"):
            if got[k] is not None and not Path(got[k]).is_file():
                raise OpenADRError(f"{SECURITY_ENV[k]}: no file {got[k]}")
        return cls(**got)

    def __repr__(self) -> str:  # the passphrase stays out of logs and tracebacks
        return f"VenSecurity(cert={self.cert!r}, key={self.key!r}, ca_file={self.ca_file!r})"


class SiteVen:
    """The VEN of one site.

    Parameters
    ----------
    site
        The site in SITES.yaml (``gpus``, ``gpu_max_kw``, ``cap_min_fraction``).
    out
        The event signal CSV to write.
    step_s, horizon_h
        Row spacing of the signal, and how far ahead rows are written even without an
        event (the file stays fresh that long should the VEN stop).
    on_opt
        Called with ``(event_id, opt_type, reason)`` for every answer (reason None on
        optIn).
    """

    def __init__(
        self,
        site: SlurmSite,
        out: str | Path,
        vtn_url: str,
        ven_name: str,
        *,
        step_s: float,
        horizon_h: float,
        security: VenSecurity | None = None,
        on_opt: Callable[[str, str, str | None], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from openleadr import OpenADRClient

        if site.full_power_kw is None:
            raise OpenADRError(
                f"SITES.yaml: site {site.name!r}: gpu_max_kw is required to answer events"
            )
        self.site, self.out = site, Path(out)
        self.full_kw = site.full_power_kw
        self.min_kw = self.full_kw * site.cap_min_fraction
        self.step_s, self.horizon_s = step_s, horizon_h * 3600.0
        self.on_opt, self.clock = on_opt, clock
        self.events: dict[str, DemandEvent] = {}
        sec = security or VenSecurity()
        self.client = OpenADRClient(
            ven_name=ven_name, vtn_url=vtn_url, cert=sec.cert, key=sec.key,
            passphrase=sec.passphrase, ca_file=sec.ca_file,
            vtn_fingerprint=sec.vtn_fingerprint, show_fingerprint=False,
            disable_signature=sec.cert is None,
        )  # fmt: skip
        self.client.add_handler("on_event", self.on_event)
        self.client.add_handler("on_update_event", self.on_event)

    def _now(self) -> pd.Timestamp:
        return pd.Timestamp(self.clock(), unit="s", tz="UTC")

    async def on_event(self, event: dict[str, Any]) -> str:
        """openleadr's handler for new and changed events: the opt answer."""
        desc = event.get("event_descriptor") or {}
        event_id = str(desc.get("event_id"))
        if desc.get("event_status") in ENDED:
            self.events.pop(event_id, None)
            self.write()
            return self._answer(event_id, OPT_IN, None)
        try:
            parsed = parse_event(event, self.full_kw, self._now())
            reason = opt_reason(parsed, self.min_kw)
        except OpenADRError as exc:
            parsed, reason = None, str(exc)
        if parsed is None or reason is not None:
            self.events.pop(event_id, None)  # a changed event we can no longer meet
            self.write()
            return self._answer(event_id, OPT_OUT, reason)
        self.events[event_id] = parsed
        self.write()
        return self._answer(event_id, OPT_IN, None)

    def _answer(self, event_id: str, opt: str, reason: str | None) -> str:
        log.info("event %s: %s%s", event_id, opt, f" ({reason})" if reason else "")
        if self.on_opt is not None:
            self.on_opt(event_id, opt, reason)
        return opt

    def write(self) -> int:
        """Rewrite the signal from now on (events ended are dropped first)."""
        now = self._now()
        self.events = {k: e for k, e in self.events.items() if e.end > now}
        return write_event_signal(
            self.out, self.events.values(), now, self.full_kw, self.step_s, self.horizon_s
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Register, poll and keep the file fresh until ``stop`` is set (or forever)."""
        stop = stop or asyncio.Event()
        # registers and requests every event in force: only then does the VEN know them
        # all, so the file (events accepted before a restart) is left alone until then
        await self.client.run()
        if self.client.registration_id is None:  # openleadr logged why and stopped
            raise OpenADRError(f"{self.client.vtn_url}: the VTN did not register this VEN")
        self.write()
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.step_s)
                except asyncio.TimeoutError:
                    self.write()
        finally:
            await self.client.stop()
