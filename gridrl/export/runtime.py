"""Torch-free policy runtime: load a bundle with onnxruntime and turn observations into
per-site decisions.

Imports only numpy, onnxruntime, pydantic and the standard library (never torch or
stable-baselines3), so it runs inside a scheduler's environment.

>>> rt = PolicyRuntime("bundle/")                       # doctest: +SKIP
>>> rt.decide(obs)            # one observation -> list[SiteDecision]   # doctest: +SKIP
>>> rt.decide(obs_batch)      # [B, D] -> DecisionBatch (arrays [B, sites])   # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from gridrl.errors import GridrlError
from gridrl.export.manifest import (
    CHECKSUM_FILE,
    MANIFEST_FILE,
    ONNX_FILE,
    Manifest,
    parse_checksums,
)
from gridrl.io import sha256_file

FLOAT32_MAX = float(np.finfo(np.float32).max)


class BundleError(GridrlError, ValueError):
    """A bundle is incomplete, corrupt (checksum mismatch) or its manifest is invalid."""


class InputError(GridrlError, ValueError):
    """An observation does not fit the bundle's manifest.

    ``errors`` lists ``{"loc": [...], "msg": str, "type": str}`` entries (the shape
    FastAPI uses for 422 responses); the message joins them.
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{'/'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))


@dataclass(frozen=True)
class SiteDecision:
    """What the policy decides for one site.

    Attributes
    ----------
    run_share
        Share (0-1) of the flexible work still queued after migration to start now,
        earliest deadline first; the rest is deferred to the next decision.
    power_cap_fraction
        GPU power cap as a fraction (cap_min-1) of maximum board power.
    route_weight
        Softmax weight (0-1) of the site as a destination of migrated work (sums to 1 over
        the sites of one decision); work leaving site i goes to j != i in proportion
        ``route_weight[j] / (1 - route_weight[i])``.
    migrate_share
        Share (0-max_migration_fraction) of this site's queued flexible work sent to
        other sites (before ``run_share`` applies to what stays).
    battery_kw
        Battery setpoint in kW (+ charge, - discharge), None when a rule dispatches it.
    """

    site: str
    run_share: float
    power_cap_fraction: float
    route_weight: float
    migrate_share: float
    battery_kw: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return {
            "site": self.site,
            "run_share": self.run_share,
            "power_cap_fraction": self.power_cap_fraction,
            "route_weight": self.route_weight,
            "migrate_share": self.migrate_share,
            "battery_kw": self.battery_kw,
        }


@dataclass(frozen=True)
class DecisionBatch:
    """Decisions for B observations; every array is ``[B, n_sites]`` in ``sites`` order."""

    sites: tuple[str, ...]
    run_share: np.ndarray
    power_cap_fraction: np.ndarray
    route_weight: np.ndarray
    migrate_share: np.ndarray
    battery_kw: np.ndarray | None
    action: np.ndarray  # [B, action_dim], the policy's raw output in its Box

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def site_decisions(self, i: int) -> list[SiteDecision]:
        """Decisions of observation ``i``, one per site."""
        # .tolist() gives Python floats in one call (float() per numpy scalar is slow)
        cols = [
            self.run_share[i].tolist(),
            self.power_cap_fraction[i].tolist(),
            self.route_weight[i].tolist(),
            self.migrate_share[i].tolist(),
            [None] * len(self.sites) if self.battery_kw is None else self.battery_kw[i].tolist(),
        ]
        return [SiteDecision(s, *values) for s, *values in zip(self.sites, *cols, strict=True)]

    def to_columns(self) -> dict[str, Any]:
        """Columnar JSON-ready dict: each decision field is a list of B rows of n_sites."""
        return {
            "sites": list(self.sites),
            "run_share": self.run_share.tolist(),
            "power_cap_fraction": self.power_cap_fraction.tolist(),
            "route_weight": self.route_weight.tolist(),
            "migrate_share": self.migrate_share.tolist(),
            "battery_kw": None if self.battery_kw is None else self.battery_kw.tolist(),
        }


def load_manifest(bundle_dir: str | Path, *, verify_checksum: bool = True) -> Manifest:
    """Read and validate a bundle's manifest, checking both files' SHA-256 first.

    Raises
    ------
    BundleError
        naming the missing file, the file whose checksum differs, or the bad manifest key.
    """
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: bundle folder not found")
    for name in (ONNX_FILE, MANIFEST_FILE, CHECKSUM_FILE):
        if not (bundle_dir / name).is_file():
            raise BundleError(f"{bundle_dir}: missing {name}")
    if verify_checksum:
        try:
            sums = parse_checksums(
                (bundle_dir / CHECKSUM_FILE).read_text(), str(bundle_dir / CHECKSUM_FILE)
            )
        except ValueError as exc:
            raise BundleError(str(exc)) from None
        for name in (ONNX_FILE, MANIFEST_FILE):
            if name not in sums:
                raise BundleError(f"{bundle_dir / CHECKSUM_FILE}: no entry for {name}")
            got = sha256_file(bundle_dir / name)
            if got != sums[name]:
                raise BundleError(
                    f"{bundle_dir / name}: SHA-256 {got[:12]}... does not match "
                    f"{CHECKSUM_FILE} ({sums[name][:12]}...): the bundle was modified or is corrupt"
                )
    try:
        return Manifest.model_validate(json.loads((bundle_dir / MANIFEST_FILE).read_text()))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{bundle_dir / MANIFEST_FILE}: not valid JSON: {exc}") from None
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise BundleError(f"{bundle_dir / MANIFEST_FILE}: {msgs}") from None


class PolicyRuntime:
    """A loaded bundle: validated observations in, per-site decisions out.

    Parameters
    ----------
    bundle_dir
        Folder with ``policy.onnx``, ``manifest.json`` and ``checksums.sha256``.
    verify_checksum
        Check both files against ``checksums.sha256`` before loading (default).
    threads
        onnxruntime intra-op threads. One is fastest for single decisions (no thread
        hand-off); more help only for large batches.
    """

    def __init__(
        self, bundle_dir: str | Path, *, verify_checksum: bool = True, threads: int = 1
    ) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest = load_manifest(self.bundle_dir, verify_checksum=verify_checksum)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                str(self.bundle_dir / ONNX_FILE),
                sess_options=opts,
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(
                f"{self.bundle_dir / ONNX_FILE}: onnxruntime cannot load it: {exc}"
            ) from None
        onnx_info = self.manifest.onnx
        self._input = onnx_info.input_name
        self.observation_dim = onnx_info.observation_dim
        self.action_dim = onnx_info.action_dim
        self.observation_names = tuple(f.name for f in self.manifest.observation.fields)
        self._obs_index = {name: i for i, name in enumerate(self.observation_names)}
        self._obs_offset = np.array([f.offset for f in self.manifest.observation.fields])
        self._obs_scale = np.array([f.scale for f in self.manifest.observation.fields])

        self.sites = tuple(self.manifest.action.sites)
        self._outputs = [onnx_info.output_name, onnx_info.decision_output_name]
        self._components = tuple(onnx_info.decision_components)

    # ------------------------------------------------------------------ inputs

    def validate(self, obs: Any) -> np.ndarray:
        """Check ``obs`` against the manifest; return it as float32 ``[B, D]``.

        Accepts one observation (length D) or a batch (B x D), as a sequence or array.

        Raises
        ------
        InputError
            on a wrong shape, a non-number, or a non-finite value (NaN, inf, or a number
            too large for float32); the message names the row, index and field.
        """
        if isinstance(obs, np.ndarray) and obs.dtype == np.float32:
            arr = obs  # the common case (a scheduler's own arrays): no conversion
        else:
            try:
                arr = np.asarray(obs, dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(
                    [
                        {
                            "loc": ["observation"],
                            "msg": "expected numbers in a list (D) or a list of lists (B x D)",
                            "type": "type_error",
                        }
                    ]
                ) from None
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.observation_dim or arr.shape[0] == 0:
            raise InputError(
                [
                    {
                        "loc": ["observation"],
                        "msg": f"expected shape ({self.observation_dim},) or "
                        f"(B, {self.observation_dim}) with B >= 1, got {tuple(np.shape(obs))}",
                        "type": "shape_error",
                    }
                ]
            )
        # one pass: False for NaN, +-inf and numbers float32 cannot hold
        ok = np.abs(arr) <= FLOAT32_MAX
        if not ok.all():
            rows, cols = np.nonzero(~ok)
            errors = [
                {
                    "loc": ["observation", int(r), int(c)],
                    "msg": f"{self.observation_names[c]} = {float(arr[r, c])!r} "
                    "is not a finite float32",
                    "type": "finite_number",
                }
                for r, c in zip(rows[:10].tolist(), cols[:10].tolist(), strict=True)
            ]
            raise InputError(errors)
        return arr if arr.dtype == np.float32 else arr.astype(np.float32)

    def observation_from_values(self, values: Mapping[str, float]) -> np.ndarray:
        """Build one observation from raw values by field name, applying the manifest's
        scaling ``(value - offset) / scale``.

        Raises
        ------
        InputError
            listing missing and unknown field names.
        """
        missing = [n for n in self.observation_names if n not in values]
        unknown = sorted(set(values) - set(self._obs_index))
        errors = [
            {"loc": ["values", n], "msg": "missing observation field", "type": "missing"}
            for n in missing
        ] + [
            {
                "loc": ["values", n],
                "msg": "not an observation field of this bundle",
                "type": "extra",
            }
            for n in unknown
        ]
        if errors:
            raise InputError(errors)
        raw = np.array([values[n] for n in self.observation_names], dtype=np.float64)
        return ((raw - self._obs_offset) / self._obs_scale).astype(np.float32)

    # ------------------------------------------------------------------ outputs

    def _run(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        x = self.validate(obs)
        action, decisions = self._session.run(self._outputs, {self._input: x})
        if not (np.isfinite(action).all() and np.isfinite(decisions).all()):
            raise BundleError(
                f"{self.bundle_dir / ONNX_FILE}: the policy produced a non-finite action"
            )
        return action, decisions

    def actions(self, obs: Any) -> np.ndarray:
        """Raw policy actions ``[B, action_dim]`` (in the policy's Box) for validated ``obs``."""
        return self._run(obs)[0]

    def decide_batch(self, obs: Any) -> DecisionBatch:
        """Decisions for a batch ``[B, D]`` (or one observation, as B = 1).

        The mapping to physical units (and the route softmax) is part of the ONNX graph:
        one onnxruntime call per batch.
        """
        action, decisions = self._run(obs)
        c = self._components.index
        return DecisionBatch(
            sites=self.sites,
            run_share=decisions[c("run")],
            power_cap_fraction=decisions[c("cap")],
            route_weight=decisions[c("route")],
            migrate_share=decisions[c("migrate")],
            battery_kw=decisions[c("battery")] if "battery" in self._components else None,
            action=action,
        )

    def decide(self, obs: Sequence[float] | np.ndarray) -> list[SiteDecision] | DecisionBatch:
        """One observation (length D) -> list of SiteDecision; a batch (B x D) -> DecisionBatch."""
        batch = self.decide_batch(obs)
        if np.ndim(obs) == 1:
            return batch.site_decisions(0)
        return batch
