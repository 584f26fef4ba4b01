"""Bundle writer and torch-free runtime: files, manifest, checksums, decisions, validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from export_helpers import geo_env, random_policy_dir

from gridrl import __version__
from gridrl.env.kernel import EXO_SIGNALS
from gridrl.export.bundle import ExportOptions, export_bundle
from gridrl.export.manifest import CHECKSUM_FILE, MANIFEST_FILE, ONNX_FILE
from gridrl.export.onnx_export import ExportError, load_obs_normalisation, load_sb3_model
from gridrl.export.policy_dir import PolicyDirError, read_policy_dir
from gridrl.export.runtime import BundleError, InputError, PolicyRuntime

REPO = Path(__file__).resolve().parents[1]
SITES = ["greensboro", "miami"]  # the first two sites of envs/geo3.yaml
# calendar + per site: the signals, 6 targets x 6 horizons x 2, 4 queue groups + 4
DIM = 4 + 2 * (len(EXO_SIGNALS) + 72 + 8)


@pytest.fixture(scope="module", params=["PPO", "SAC"])
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"bundle_{request.param}")
    pdir = random_policy_dir(root / "policy", geo_env(2), seed=3, algo=request.param)
    manifest = export_bundle(pdir, root / "bundle")
    return request.param, pdir, root / "bundle", manifest


def test_bundle_has_three_files_and_a_complete_manifest(exported):
    algo, _, bundle, manifest = exported
    assert sorted(os.listdir(bundle)) == sorted([ONNX_FILE, MANIFEST_FILE, CHECKSUM_FILE])
    data = json.loads((bundle / MANIFEST_FILE).read_text())
    assert data["gridrl_version"] == __version__
    assert data["algo"] == algo
    assert data["onnx"]["opset"] >= 13
    assert data["onnx"]["input_name"] == "observation"
    assert "VecNormalize" in data["onnx"]["normalisation"]
    expected_post = {"PPO": "clip", "SAC": "unscale"}[algo]
    assert data["onnx"]["action_postprocess"] == expected_post
    env = geo_env(2)
    # the environment's layouts, verbatim, each observation field with its metadata
    fields = data["observation"]["fields"]
    env_fields = env.observation_layout.to_dict()["fields"]
    assert [{k: f[k] for k in e} for f, e in zip(fields, env_fields, strict=True)] == env_fields
    assert all(f["kind"] for f in fields)
    assert data["action"] == env.action_layout.to_dict()
    assert data["scenario"]["hash"] == env.scenario.content_hash()
    carbon = next(f for f in data["observation"]["fields"] if f["name"] == "miami.carbon_g_per_kwh")
    assert (carbon["unit"], carbon["offset"]) == ("g/kWh", 0.0)
    assert data["action"]["sites"] == SITES
    assert {"run", "cap", "route", "migrate", "cadence"} <= set(data["decision_semantics"])
    cap_min = env.params.cap_min
    assert f"[{cap_min:g}, 1]" in data["decision_semantics"]["cap"]
    assert data["training"]["seed"] == 3
    assert data["training"]["export_check"]["max_abs_error"] <= 1e-5
    assert {"torch", "onnxruntime", "stable_baselines3"} <= set(data["versions"])
    # sha256sum -c understands the checksum file
    out = subprocess.run(
        ["sha256sum", "-c", CHECKSUM_FILE], cwd=bundle, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_runtime_decisions_match_sb3_and_the_manifest_scaling(exported):
    algo, pdir, bundle, _ = exported
    rt = PolicyRuntime(bundle)
    model = load_sb3_model(algo, pdir / "model.zip")
    norm = load_obs_normalisation(pdir / "vecnormalize.pkl")
    obs = (
        np.random.default_rng(7)
        .normal(scale=2.0, size=(1000, rt.observation_dim))
        .astype(np.float32)
    )
    batch = rt.decide(obs)
    want, _ = model.predict(norm.apply(obs), deterministic=True)
    np.testing.assert_allclose(batch.action, want, atol=1e-5, rtol=0)
    # physical mapping: [-1, 1] -> ranges of the layout, route -> softmax over sites
    # the environment's own mapping to physical units (gridrl.env.core.physical_action)
    from gridrl.env.core import physical_action

    params = geo_env(2).params
    phys = physical_action(params, want.reshape(1000, 2, 4).astype(np.float64))
    np.testing.assert_allclose(batch.run_share, phys.run, atol=1e-5)
    np.testing.assert_allclose(batch.power_cap_fraction, phys.cap, atol=1e-5)
    soft = np.exp(phys.route_logit) / np.exp(phys.route_logit).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(batch.route_weight, soft, atol=1e-5)
    np.testing.assert_allclose(batch.migrate_share, phys.migrate, atol=1e-5)
    assert batch.battery_kw is None
    # a single observation gives a list of per-site decisions equal to the batch row
    single = rt.decide(obs[17])
    assert [d.site for d in single] == SITES
    assert single[1].power_cap_fraction == pytest.approx(batch.power_cap_fraction[17, 1], abs=1e-6)
    assert sum(d.route_weight for d in single) == pytest.approx(1.0)


def test_observation_from_named_raw_values(exported):
    _, _, bundle, _ = exported
    rt = PolicyRuntime(bundle)
    env = geo_env(2)
    obs_env, _ = env.reset(seed=4)
    # raw values (observation x scale) map back to the environment's observation
    values = {
        f.name: float(o) * f.scale + f.offset
        for f, o in zip(env.observation_layout.fields, obs_env, strict=True)
    }
    np.testing.assert_allclose(rt.observation_from_values(values), obs_env, rtol=1e-6, atol=1e-7)
    del values["miami.cap"]
    values["nonsense"] = 3.0
    with pytest.raises(
        InputError, match=r"miami\.cap: missing.*nonsense: not an observation field"
    ):
        rt.observation_from_values(values)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([0.0] * 3, rf"expected shape \({DIM},\) or \(B, {DIM}\)"),
        ([[0.0] * DIM, [0.0] * (DIM - 1)], "expected numbers"),
        ([[]], r"got \(1, 0\)"),
        (np.zeros((0, DIM)), r"B >= 1"),
        ("abc", "expected numbers"),
        (
            [0.0] * (DIM - 1) + [float("nan")],
            rf"observation/0/{DIM - 1}: miami\.cap = nan is not a finite",
        ),
        ([float("inf")] + [0.0] * (DIM - 1), "hour_sin = inf"),
        ([0.0, 1e39] + [0.0] * (DIM - 2), r"hour_cos = 1e\+39 is not a finite float32"),
    ],
)
def test_invalid_inputs_are_refused_with_a_clear_message(exported, bad, match):
    rt = PolicyRuntime(exported[2])
    with pytest.raises(InputError, match=match):
        rt.decide(bad)


def test_tampered_or_incomplete_bundles_are_refused(exported, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(exported[2], bundle)
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["action"]["fields"][1]["physical_low"] = 0.1  # a silent change of the cap range
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest.json: SHA-256 .* does not match"):
        PolicyRuntime(bundle)
    PolicyRuntime(bundle, verify_checksum=False)  # explicit opt-out still loads
    (bundle / CHECKSUM_FILE).write_text("not a checksum\n")
    with pytest.raises(BundleError, match="line 1: expected"):
        PolicyRuntime(bundle)
    (bundle / ONNX_FILE).unlink()
    with pytest.raises(BundleError, match="missing policy.onnx"):
        PolicyRuntime(bundle)


def test_bundle_files_honour_the_umask_so_the_group_can_read_them(tmp_path):
    """A service running as another account of the group reads the bundle (files were
    0600 when written through mkstemp)."""
    import stat

    pdir = random_policy_dir(tmp_path / "p", geo_env(2), seed=1)
    old = os.umask(0o027)
    try:
        export_bundle(pdir, tmp_path / "bundle")
    finally:
        os.umask(old)
    bundle = tmp_path / "bundle"
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o750
    for name in (ONNX_FILE, MANIFEST_FILE, CHECKSUM_FILE):
        assert stat.S_IMODE((bundle / name).stat().st_mode) == 0o640, name
    if os.geteuid() != 0:
        return
    # as root: read every file as an unprivileged account whose only group is the files'
    group = 60_123
    os.chown(bundle, -1, group)
    for name in (ONNX_FILE, MANIFEST_FILE, CHECKSUM_FILE):
        os.chown(bundle / name, -1, group)
    # (the child enters the bundle folder before it drops root's rights)
    out = subprocess.run(
        ["cat", ONNX_FILE, MANIFEST_FILE, CHECKSUM_FILE],
        cwd=bundle, user=65_534, group=group, extra_groups=[], capture_output=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    # and the same account, outside the group, cannot
    out = subprocess.run(
        ["cat", MANIFEST_FILE], cwd=bundle, user=65_534, group=65_534, extra_groups=[],
        capture_output=True,
    )  # fmt: skip
    assert out.returncode != 0


def test_export_refuses_to_overwrite_and_checks_the_policy_dir(exported, tmp_path):
    _, pdir, bundle, _ = exported
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(pdir, bundle)
    export_bundle(pdir, bundle, ExportOptions(overwrite=True))
    PolicyRuntime(bundle)
    with pytest.raises(PolicyDirError, match="missing model.zip"):
        read_policy_dir(tmp_path)
    (tmp_path / "model.zip").write_bytes(b"")
    (tmp_path / "meta.json").write_text('{"algo": "PPO"}')
    with pytest.raises(PolicyDirError, match="meta.json: observation_layout: Field required"):
        read_policy_dir(tmp_path)


def test_export_checks_layout_against_the_model(tmp_path):
    pdir = random_policy_dir(tmp_path / "p", geo_env(2))
    meta = json.loads((pdir / "meta.json").read_text())
    meta["observation_layout"]["fields"] = meta["observation_layout"]["fields"][:-1]
    (pdir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match=f"model observes {DIM} values, layout has {DIM - 1}"):
        export_bundle(pdir, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_runtime_runs_with_torch_and_sb3_unimportable(exported):
    bundle = exported[2]
    script = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "stable_baselines3", "sb3_contrib", "gymnasium"):
                    raise ImportError("blocked: " + name)
                return None
        sys.meta_path.insert(0, Block())
        from gridrl.export.runtime import PolicyRuntime
        rt = PolicyRuntime({str(bundle)!r})
        ds = rt.decide([0.1] * rt.observation_dim)
        b = rt.decide([[0.1] * rt.observation_dim] * 4)
        assert len(ds) == 2 and len(b) == 4
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "stable_baselines3"))
        assert not loaded, loaded
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            print("torch blocked:", exc)
        print("ok", ds[0].power_cap_fraction)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "torch blocked" in out.stdout and "ok" in out.stdout


@pytest.mark.parametrize("control", ["setpoint", "residual"])
def test_battery_action_becomes_kw(tmp_path, control):
    """With a battery action the fifth component per site is battery power in kW: the
    setpoint, or (residual) what is added to the site rule, as the manifest says."""
    from export_helpers import geo_env_data

    from gridrl.env.core import physical_action
    from gridrl.env.gym_env import GridEnv

    sc, data = geo_env_data(2, control)
    env = GridEnv(sc, data=data, seed=0)
    assert env.action_space.shape == (10,)
    pdir = random_policy_dir(tmp_path / "p", env, seed=2)
    export_bundle(pdir, tmp_path / "b")
    rt = PolicyRuntime(tmp_path / "b")
    obs = np.random.default_rng(3).normal(size=(50, rt.observation_dim)).astype(np.float32)
    batch = rt.decide(obs)
    phys = physical_action(env.params, batch.action.reshape(50, 2, 5).astype(np.float64))
    np.testing.assert_allclose(batch.battery_kw, phys.battery_kw, atol=1e-3)
    assert "battery" in rt.manifest.decision_semantics
    assert rt.manifest.action.battery_control == control
    residual = "added to the site's battery rule" in rt.manifest.decision_semantics["battery"]
    assert residual == (control == "residual")
    span = env.params.battery_action_span_kw
    assert [f.physical_high for f in rt.manifest.action.fields if f.component == "battery"] \
        == pytest.approx(span.tolist())
    assert rt.decide(obs[0])[1].battery_kw == pytest.approx(batch.battery_kw[0, 1])
