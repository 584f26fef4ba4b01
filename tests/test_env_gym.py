"""The Gymnasium env, the native VecEnv, the discrete wrapper, layouts and KPIs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from env_helpers import index, scenario, site, synthetic_exo
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import gridrl.env
from gridrl.data.signals import Signals
from gridrl.env import core, physics
from gridrl.env.batch import InvalidActionError, InvalidBackendError
from gridrl.env.episodes import EpisodeStartError
from gridrl.env.gym_env import GridEnv
from gridrl.env.inputs import EnvData, EnvDataError
from gridrl.env.kernel import EXO_SIGNALS, OUTPUT_FIELDS
from gridrl.env.kpis import KPIS
from gridrl.env.physics import battery_value_per_kwh, terminal_value_per_gpu_h
from gridrl.env.vec_env import DiscreteVecActions, GridVecEnv
from gridrl.env.wrappers import DiscreteActions

BATTERY = {"capacity_kwh": 20.0, "power_kw": 4.0}


def _signals(sc, hours=24 * 14, seed=0) -> Signals:
    names = [s.name for s in sc.expanded_sites()]
    exo = synthetic_exo(len(names), hours, seed=seed)
    cols = pd.MultiIndex.from_product([names, EXO_SIGNALS], names=["site", "signal"])
    return Signals.from_frame(pd.DataFrame(exo.reshape(hours, -1), index=index(hours),
                                           columns=cols))


@pytest.fixture(scope="module")
def tiny():
    sc = scenario(sites=[site("a", battery=BATTERY), site("b"), site("c", gpus=20)])
    return sc, _signals(sc)


@pytest.fixture(scope="module")
def tiny_env(tiny):
    sc, sig = tiny
    return GridEnv(sc, signals=sig, forecast_mode="perfect", seed=0)


def _rollout(env, actions, seed):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    rewards, infos = [], []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append(obs)
        rewards.append(r)
        infos.append(info)
        if term or trunc:
            obs, _ = env.reset()
            out.append(obs)
    return np.array(out), np.array(rewards), infos


def test_checkers_pass(tiny_env):
    gym_check_env(tiny_env, skip_render_check=True)
    sb3_check_env(tiny_env, warn=False)


def test_registered_id_makes_the_env(tiny):
    sc, sig = tiny
    env = gym.make(gridrl.env.ENV_ID, scenario=sc, signals=sig, forecast_mode="persistence")
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    obs, reward, term, trunc, info = env.step(env.action_space.sample())
    assert np.isfinite(reward) and not term


def test_same_seed_same_episode(tiny_env):
    acts = np.random.default_rng(0).uniform(-1, 1, (60, tiny_env.action_space.shape[0]))
    o1, r1, i1 = _rollout(tiny_env, acts, seed=7)
    o2, r2, i2 = _rollout(tiny_env, acts, seed=7)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)
    assert [i["row"] for i in i1] == [i["row"] for i in i2]
    o3, _, _ = _rollout(tiny_env, acts, seed=8)
    assert not np.array_equal(o1[0], o3[0])


def test_vecenv_equals_single_envs(tiny):
    sc, sig = tiny
    b, steps = 3, 60  # episodes of 24 h: two auto-resets
    venv = GridVecEnv(sc, b, signals=sig, forecast_mode="perfect", seed=11)
    singles = [GridEnv(sc, data=venv.data) for _ in range(b)]
    acts = np.random.default_rng(1).uniform(-1.3, 1.3, (steps, b, venv.action_space.shape[0]))
    obs = venv.reset()
    single_obs = np.stack([e.reset(seed=11 + j)[0] for j, e in enumerate(singles)])
    np.testing.assert_allclose(obs, single_obs, rtol=1e-6, atol=1e-6)
    for t in range(steps):
        obs, rew, dones, infos = venv.step(acts[t].astype(np.float32))
        for j, env in enumerate(singles):
            o, r, term, trunc, info = env.step(acts[t, j].astype(np.float32))
            assert dones[j] == (term or trunc)
            assert rew[j] == pytest.approx(r, rel=1e-6, abs=1e-6)
            for key in ("grid_import_kwh", "work_done_gpu_h", "action_clipped", "row"):
                assert infos[j][key] == pytest.approx(info[key], rel=1e-9, abs=1e-9)
            if dones[j]:
                np.testing.assert_allclose(infos[j]["terminal_observation"], o, rtol=1e-6,
                                           atol=1e-6)
                assert infos[j]["TimeLimit.truncated"]
                assert infos[j]["episode_summary"]["kpis"]["return"] == pytest.approx(
                    info["episode_summary"]["kpis"]["return"], rel=1e-9)
                o, _ = env.reset()
            np.testing.assert_allclose(obs[j], o, rtol=1e-6, atol=1e-6)


def test_env_steps_as_the_numpy_oracle(tiny):
    """GridEnv (compiled kernel, bookkeeping in the batched step) against ``core.step``
    driven by hand: every output field, the reward and the terminal charge."""
    sc, sig = tiny
    env = GridEnv(sc, signals=sig, seed=3)
    p = env.params
    acts = np.random.default_rng(2).uniform(-1.2, 1.2, (30, env.action_space.shape[0]))
    acts = acts.astype(np.float32)  # what the env receives
    _, info = env.reset(seed=3)
    state = core.reset(p, 1)
    tval = terminal_value_per_gpu_h(p, env.episode_exo())
    bval = battery_value_per_kwh(p, env.episode_exo())
    soc0 = state.soc_kwh[0].copy()
    for t, a in enumerate(acts):
        x = env.data.exo[info["row"] + t][None]
        a3 = np.clip(a.astype(np.float64), -1, 1).reshape(1, p.n_sites, p.n_actions_per_site)
        state, out = core.step(p, state, a3, x)
        _, r, term, trunc, step_info = env.step(a)
        for k, name in enumerate(OUTPUT_FIELDS):
            assert step_info[name] == pytest.approx(out.totals()[0, k], rel=1e-9, abs=1e-9)
        charge = ((state.work_gpu_h()[0] * tval).sum() - (state.soc_kwh[0] - soc0) @ bval
                  if term or trunc else 0.0)
        assert r == pytest.approx(out.reward[0] - charge / p.reward_scale, rel=1e-9, abs=1e-9)
        if term or trunc:
            break


def test_numpy_backend_is_refused(tiny):
    """The numpy core is a test oracle: no environment steps it."""
    sc, sig = tiny
    with pytest.raises(InvalidBackendError, match="test oracle"):
        GridEnv(sc, signals=sig, backend="numpy")
    with pytest.raises(InvalidBackendError, match="test oracle"):
        GridVecEnv(sc, 2, signals=sig, backend="numpy")


def test_both_envs_resolve_starts_alike(tiny):
    """A row or a timestamp starts the same episode in GridEnv and GridVecEnv; bad
    starts raise the same error in both."""
    sc, sig = tiny
    env = GridEnv(sc, signals=sig, seed=0)
    venv = GridVecEnv(sc, 2, data=env.data, seed=0)
    row = env.windows.blocks[0][0] + 5
    ts = env.data.index[row]
    for start in (row, np.int64(row), ts, str(ts), ts.tz_localize(None).isoformat()):
        _, info = env.reset(options={"start": start})
        venv.set_options({"start": start})
        venv.reset()
        assert info["row"] == row
        assert [i["row"] for i in venv.reset_infos] == [row, row]
    for bad, match in ((1.5, "expected a data row"), (True, "expected a data row"),
                       ("2001-01-01", "not a step of the data"), ("soon", "not a timestamp"),
                       (10**6, "outside every block")):
        with pytest.raises(EpisodeStartError, match=match):
            env.reset(options={"start": bad})
        venv.set_options({"start": bad})
        with pytest.raises(EpisodeStartError, match=match):
            venv.reset()


def test_bad_actions(tiny_env):
    env = tiny_env
    env.reset(seed=0)
    dim = env.action_space.shape[0]
    bad = np.zeros(dim, dtype=np.float32)
    bad[5] = np.nan
    with pytest.raises(InvalidActionError, match=r"NaN at env 0, index 5 \(b\.cap\)"):
        env.step(bad)
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(np.zeros(dim + 1, dtype=np.float32))
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(np.zeros((1, dim), dtype=np.float32))
    # out of bounds: clipped to [-1, 1], counted in info
    env.reset(seed=0)
    row = env.window.start
    wild = np.linspace(-3, 3, dim).astype(np.float32)
    _, r1, _, _, info1 = env.step(wild)
    env.reset(options={"start": row})
    _, r2, _, _, info2 = env.step(np.clip(wild, -1, 1))
    assert r1 == r2
    assert info1["action_clipped"] == int((np.abs(wild) > 1).sum()) > 0
    assert info2["action_clipped"] == 0


def test_step_before_reset_and_after_end_raise(tiny):
    sc, sig = tiny
    env = GridEnv(sc, signals=sig)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    for _ in range(sc.env.episode_hours):
        *_, trunc, _ = env.step(env.action_space.sample())
    assert trunc
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())


def test_info_and_episode_summary(tiny_env):
    env = tiny_env
    env.reset(seed=5)
    rng = np.random.default_rng(5)
    total_r = 0.0
    sums = dict.fromkeys(OUTPUT_FIELDS, 0.0)
    while True:
        _, r, _, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape[0]))
        total_r += r
        for k in OUTPUT_FIELDS:
            sums[k] += info[k]
        terms = sum(info[k] for k in info if k.startswith("reward_"))
        assert r == pytest.approx(terms, rel=1e-9, abs=1e-9)
        if trunc:
            break
    summary = info["episode_summary"]
    kpis = summary["kpis"]
    assert set(k.name for k in KPIS) <= set(kpis)
    assert kpis["return"] == pytest.approx(total_r)
    assert kpis["work_lost_gpu_h"] == pytest.approx(0.0, abs=1e-9)
    assert kpis["energy_kwh"] == pytest.approx(sums["facility_kwh"])
    assert kpis["energy_per_useful_gpu_h"] == pytest.approx(
        sums["facility_kwh"] / (sums["work_done_gpu_h"] + sums["inference_served_gpu_h"]))
    assert kpis["carbon_per_useful_gpu_h"] == pytest.approx(
        sums["carbon_kg"] / (sums["work_done_gpu_h"] + sums["inference_served_gpu_h"]))
    assert kpis["renewable_share"] == pytest.approx(
        1 - sums["grid_import_kwh"] / sums["facility_kwh"])
    assert kpis["headroom_violation_h"] == sums["headroom_violation"]
    assert set(summary["kpis_per_site"]) == {"a", "b", "c"}
    per_site = sum(v["energy_kwh"] for v in summary["kpis_per_site"].values())
    assert per_site == pytest.approx(kpis["energy_kwh"])
    # the terminal charge is the leftover work valued at the episode's mean carbon/price,
    # less the battery's gain in charge at its value
    left = env.state.work_gpu_h()[0]
    value = terminal_value_per_gpu_h(env.params, env.episode_exo())
    gain = env.state.soc_kwh[0] - physics.initial_soc_kwh(env.params, [env.sim.start[0]])[0]
    credit = battery_value_per_kwh(env.params, env.episode_exo())
    assert (credit > 0).any() and np.abs(gain).max() > 0  # the credit is exercised
    assert kpis["terminal_charge"] == pytest.approx(float(left @ value - gain @ credit))
    assert info["reward_terminal"] == pytest.approx(-kpis["terminal_charge"] /
                                                   env.params.reward_scale)


def test_fixed_starts_tile_the_test_blocks(tiny):
    sc, sig = tiny
    env = GridEnv(sc, signals=sig, period="test", start="fixed")
    starts = []
    for _ in range(len(env.windows.fixed) + 1):
        _, info = env.reset()
        starts.append(info["row"])
    assert starts[-1] == starts[0]  # cycles
    test_rows = sc.periods.test[0].hours(env.data.index)
    assert starts[:-1] == list(range(test_rows[0], test_rows[-1] + 2 - 24, 24))


def test_discrete_wrappers(tiny):
    sc, sig = tiny
    env = DiscreteActions(GridEnv(sc, signals=sig, seed=0))
    assert env.action_space.nvec.tolist() == [5] * 12
    np.testing.assert_allclose(env.action(np.array([0, 1, 2, 3, 4] * 2 + [0, 4])),
                               [-1, -0.5, 0, 0.5, 1] * 2 + [-1, 1])
    env.reset(seed=0)
    env.step(env.action_space.sample())
    with pytest.raises(ValueError, match="0..4"):
        env.step(np.full(12, 5))
    venv = DiscreteVecActions(GridVecEnv(sc, 2, signals=sig, seed=0), n_levels=3)
    venv.reset()
    obs, rew, dones, infos = venv.step(np.full((2, 12), 2))
    assert obs.shape == (2, venv.observation_space.shape[0])


def test_layouts_name_every_entry(tiny_env):
    env = tiny_env
    obs_layout = env.observation_layout
    assert obs_layout.dim == env.observation_space.shape[0]
    names = obs_layout.names
    assert len(set(names)) == len(names)
    assert names[:4] == ["hour_sin", "hour_cos", "weekday_sin", "weekday_cos"]
    assert "c.fc_pv_kw_h4_p50" in names and "a.queue_slack_4h_plus" in names
    obs, _ = env.reset(seed=0)
    raw = env.data.exo[env.window.start]
    i = names.index("c.headroom_kw")
    ref = 20 * 1.0 * 1.0  # GPUs x (board max + host busy) x pue (no fixed overhead)
    assert obs[i] == pytest.approx(raw[2, 2] / ref, rel=1e-6)
    act = env.action_layout
    assert act.dim == env.action_space.shape[0]
    assert [f.name for f in act.fields[:4]] == ["a.run", "a.cap", "a.route", "a.migrate"]
    assert act.fields[1].physical_low == pytest.approx(0.6)
    manifest = pytest.importorskip("gridrl.export.manifest")
    manifest.ObservationLayout.model_validate(obs_layout.to_dict())
    manifest.ActionLayout.model_validate(act.to_dict())


def test_observation_state_features_follow_the_queue(tiny):
    sc, sig = tiny
    env = GridEnv(sc, signals=sig, seed=0)
    env.reset(seed=0)
    names = env.observation_layout.names
    for _ in range(5):  # defer everything: the queue fills
        obs, *_ = env.step(np.tile([-1, 1, 0, -1], 3).astype(np.float32))
    q = env.state.queue_gpu_h[0, 0]
    groups = [q[1:3].sum(), q[3:5].sum(), q[5:].sum()]
    got = [obs[names.index(f"a.{n}")] for n in
           ("queue_slack_0_2h", "queue_slack_2_4h", "queue_slack_4h_plus")]
    np.testing.assert_allclose(got, np.array(groups) / 10, rtol=1e-6)
    assert obs[names.index("a.overdue_gpu_h")] == pytest.approx(q[0] / 10, rel=1e-6)


def test_bad_inputs_raise_clear_errors():
    sc = scenario(2)
    exo = synthetic_exo(2, 48)
    exo[7, 1, 2] = -5.0
    with pytest.raises(EnvDataError, match=r"site 's1', signal 'headroom_kw', row 7 .*negative"):
        EnvData.from_arrays(index(48), exo, ["s0", "s1"])
    exo[7, 1, 2] = np.nan
    with pytest.raises(EnvDataError, match="not finite"):
        EnvData.from_arrays(index(48), exo, ["s0", "s1"])
    with pytest.raises(EnvDataError, match="shape"):
        EnvData.from_arrays(index(48), exo[:, :1], ["s0", "s1"])
    good = EnvData.from_arrays(index(24 * 14), synthetic_exo(2, 24 * 14), ["s0", "s1"])
    with pytest.raises(ValueError, match="differ from scenario sites"):
        GridEnv(scenario(3), data=good)
    with pytest.raises(Exception, match="periods.test"):
        GridEnv(sc, data=EnvData.from_arrays(index(48), synthetic_exo(2, 48), ["s0", "s1"]),
                period="test")
