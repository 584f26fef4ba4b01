"""Write a policy bundle: ``policy.onnx`` + ``manifest.json`` + ``checksums.sha256``.

``export_bundle(policy_dir, out_dir)`` reads a trained policy directory, folds the
observation normalisation and the deterministic action into one ONNX graph, checks the
graph against stable-baselines3 on sampled observations, writes the manifest and the
checksums, and moves the finished folder into place in one rename (a reader never sees
half a bundle).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gridrl import __version__
from gridrl.export.manifest import (
    BATTERY_RESIDUAL_SEMANTICS,
    CHECKSUM_FILE,
    COMPONENT_SEMANTICS,
    MANIFEST_FILE,
    ONNX_FILE,
    ActionLayout,
    Manifest,
    ObservationLayout,
    OnnxInfo,
    ScenarioRef,
    checksum_text,
)
from gridrl.export.onnx_export import (
    DECISION_NAME,
    INPUT_NAME,
    ONNX_OPSET,
    OUTPUT_NAME,
    ExportError,
    build_module,
    export_onnx,
    load_obs_normalisation,
    load_sb3_model,
    sb3_actions,
)
from gridrl.export.policy_dir import PolicyDir, read_policy_dir
from gridrl.io import make_temp_dir, write_json_atomic, write_text_atomic


class ExportOptions(BaseModel):
    """Options of ``gridrl export``.

    ``verify_samples`` observations are drawn from the observation space (standard
    normal where it is unbounded) with ``verify_seed`` and pushed through SB3 and
    onnxruntime; the export fails when any action differs by more than
    ``verify_tolerance``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    verify_samples: int = Field(default=256, ge=1)
    verify_seed: int = 0
    verify_tolerance: float = Field(default=1e-5, gt=0.0)
    overwrite: bool = False


def layouts_from_meta(
    meta_obs: dict[str, Any], meta_act: dict[str, Any]
) -> tuple[ObservationLayout, ActionLayout]:
    """Build the manifest layouts from the environment's layout dicts (``to_dict()``)."""
    return ObservationLayout.model_validate(meta_obs), ActionLayout.model_validate(meta_act)


def decision_semantics(action: ActionLayout) -> dict[str, str]:
    """Words for each action component present, with each site's physical range."""
    out: dict[str, str] = {}
    for comp, text in COMPONENT_SEMANTICS.items():
        fields = [f for f in action.fields if f.component == comp]
        if not fields:
            continue
        if comp == "battery" and action.battery_control == "residual":
            text = (f"{BATTERY_RESIDUAL_SEMANTICS} battery_rule_threshold_fraction = "
                    f"{action.battery_rule_threshold_fraction:g}.")
        ranges = ", ".join(
            f"{f.site}: [{f.physical_low:g}, {f.physical_high:g}] {f.unit}" for f in fields
        )
        out[comp] = f"{text} Physical range per site: {ranges}."
    out["cadence"] = (
        "One decision per control step for the whole observation; a scheduler re-asks at "
        "every step and applies only the latest decision."
    )
    return out


def _sample_observations(space: Any, n: int, seed: int) -> np.ndarray:
    """Uniform draws inside finite bounds, standard normal (clipped to the box) elsewhere."""
    rng = np.random.default_rng(seed)
    low = np.asarray(space.low, dtype=np.float64)
    high = np.asarray(space.high, dtype=np.float64)
    bounded = np.isfinite(low) & np.isfinite(high)
    x = rng.standard_normal((n, low.size))
    span = np.where(bounded, high - low, 0.0)
    x = np.where(bounded, np.where(bounded, low, 0.0) + rng.random((n, low.size)) * span, x)
    return np.clip(x, low, high).astype(np.float32)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import stable_baselines3
    import torch

    return {
        "gridrl": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def reference_decisions(action: np.ndarray, layout: ActionLayout) -> np.ndarray:
    """Decisions ``[components, B, sites]`` computed with numpy from actions ``[B, A]``
    (the check of the graph's decision head)."""
    m = layout.decision_map()
    phys = np.asarray(m["physical_low"]) + (action.astype(np.float64) - m["low"]) * m["slope"]
    comps = layout.components
    parts = phys[:, m["gather"]].reshape(len(action), len(comps), len(layout.sites))
    parts = parts.transpose(1, 0, 2).copy()
    r = comps.index("route")
    e = np.exp(parts[r] - parts[r].max(axis=1, keepdims=True))
    parts[r] = e / e.sum(axis=1, keepdims=True)
    return parts


def verify_onnx(
    onnx_path: Path, model: Any, norm: Any, obs: np.ndarray, tolerance: float, layout: ActionLayout
) -> float:
    """Max |ONNX - SB3| over ``obs`` (actions, and decisions against numpy); raise
    ExportError when above ``tolerance``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got, decisions = sess.run([OUTPUT_NAME, DECISION_NAME], {INPUT_NAME: obs})
    want = sb3_actions(model, norm, obs)
    err = float(np.max(np.abs(got - want)))
    if not err <= tolerance:
        raise ExportError(f"ONNX and SB3 actions differ by {err:.3g} > {tolerance:g}")
    dec_err = float(np.max(np.abs(decisions - reference_decisions(got, layout))))
    if not dec_err <= tolerance:
        raise ExportError(f"ONNX decisions differ from the layout's mapping by {dec_err:.3g}")
    return err


def _check_spaces(pdir: PolicyDir, model: Any, obs_layout: ObservationLayout,
                  act_layout: ActionLayout) -> tuple[int, int]:
    """The model's observation and action sizes, checked against the layouts (and the
    action box against the layout's ranges)."""
    obs_dim = int(model.policy.observation_space.shape[0])
    act_dim = int(model.policy.action_space.shape[0])
    if obs_dim != obs_layout.dim:
        raise ExportError(
            f"{pdir.path}: model observes {obs_dim} values, layout has {obs_layout.dim}"
        )
    if act_dim != act_layout.dim:
        raise ExportError(
            f"{pdir.path}: model outputs {act_dim} actions, layout has {act_layout.dim}"
        )
    space = model.policy.action_space
    for i, f in enumerate(act_layout.fields):
        if not (np.isclose(space.low[i], f.low) and np.isclose(space.high[i], f.high)):
            raise ExportError(
                f"action {i} ({f.name}): layout range [{f.low}, {f.high}] != policy box "
                f"[{space.low[i]}, {space.high[i]}]"
            )
    return obs_dim, act_dim


def _manifest(meta: Any, obs_layout: ObservationLayout, act_layout: ActionLayout,
              module: Any, norm: Any, dims: tuple[int, int],
              export_check: dict[str, Any]) -> Manifest:
    """The bundle's manifest: layouts, ONNX interface, semantics, training metadata."""
    norm_text = (
        "VecNormalize observation normalisation folded in: clip((obs - mean) / "
        f"sqrt(var + {norm.epsilon:g}), -{norm.clip_obs:g}, {norm.clip_obs:g})"
        if norm is not None
        else "none (the policy was trained on raw observations)"
    )
    return Manifest(
        gridrl_version=__version__,
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        algo=meta.algo,
        scenario=ScenarioRef(path=meta.scenario_path, hash=meta.scenario_hash),
        step_minutes=meta.step_minutes,
        forecast_mode=meta.forecast_mode,
        observation=obs_layout,
        action=act_layout,
        onnx=OnnxInfo(
            opset=ONNX_OPSET,
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            decision_output_name=DECISION_NAME,
            decision_components=list(act_layout.components),
            observation_dim=dims[0],
            action_dim=dims[1],
            normalisation=norm_text,
            action_postprocess=module.postprocess,
        ),
        decision_semantics=decision_semantics(act_layout),
        training={**meta.training, "export_check": export_check},
        versions=_versions(),
    )


def export_bundle(
    policy_dir: str | Path | PolicyDir, out_dir: str | Path, options: ExportOptions | None = None
) -> Manifest:
    """Export a trained policy directory to a bundle folder.

    Parameters
    ----------
    policy_dir
        Training run's policy folder (``model.zip``, ``meta.json``, optional
        ``vecnormalize.pkl``).
    out_dir
        Bundle folder to create. An existing folder is replaced only with
        ``options.overwrite``.

    Returns
    -------
    The manifest written.

    Raises
    ------
    PolicyDirError, ExportError
        with the file and what is wrong.
    """
    options = options or ExportOptions()
    pdir = policy_dir if isinstance(policy_dir, PolicyDir) else read_policy_dir(policy_dir)
    out_dir = Path(out_dir)
    if out_dir.exists() and not options.overwrite:
        raise ExportError(f"{out_dir}: already exists (pass overwrite to replace it)")
    meta = pdir.meta
    obs_layout, act_layout = layouts_from_meta(meta.observation_layout, meta.action_layout)

    model = load_sb3_model(meta.algo, pdir.model_path)
    norm = load_obs_normalisation(pdir.vecnormalize_path) if pdir.vecnormalize_path else None
    module = build_module(model, meta.algo, norm, act_layout)
    obs_dim, act_dim = _check_spaces(pdir, model, obs_layout, act_layout)

    # folder and files honour the umask: a bundle is meant to be read by services that
    # may run as other accounts of the group
    tmp_dir = make_temp_dir(out_dir.parent, f".{out_dir.name}.")
    try:
        export_onnx(module, obs_dim, tmp_dir / ONNX_FILE)
        obs = _sample_observations(
            model.policy.observation_space, options.verify_samples, options.verify_seed
        )
        err = verify_onnx(
            tmp_dir / ONNX_FILE, model, norm, obs, options.verify_tolerance, act_layout
        )
        manifest = _manifest(meta, obs_layout, act_layout, module, norm, (obs_dim, act_dim),
                             {"samples": options.verify_samples, "max_abs_error": err})
        write_json_atomic(tmp_dir / MANIFEST_FILE, manifest.model_dump(mode="json"))
        write_text_atomic(tmp_dir / CHECKSUM_FILE, checksum_text(tmp_dir))
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp_dir, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return manifest


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Parse a bundle's ``manifest.json`` (no checksum check; see the runtime for that)."""
    return Manifest.model_validate(json.loads((Path(bundle_dir) / MANIFEST_FILE).read_text()))
