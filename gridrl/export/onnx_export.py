"""Turn a stable-baselines3 policy into one ONNX graph: raw observation -> action.

The graph holds, in order: VecNormalize's observation normalisation (mean, variance,
epsilon, clip), the policy network's deterministic action, and the post-processing
``predict`` applies for that algorithm (clip to the action box for Gaussian policies,
tanh + rescale for squashed ones). Its ``action`` output equals
``model.predict(vecnormalize.normalize_obs(obs), deterministic=True)``.

A second output, ``decision``, maps the action to the physical decisions of the action
layout (affine maps, route softmax over sites) in float64, ``[components, B, sites]``:
one onnxruntime call gives everything a scheduler needs.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from gridrl.errors import GridrlError

INPUT_NAME = "observation"
OUTPUT_NAME = "action"
DECISION_NAME = "decision"
# Opset 17 is read by every onnxruntime >= 1.13 and covers every op these graphs use.
ONNX_OPSET = 17

SUPPORTED_ALGOS = ("PPO", "A2C", "SAC", "TD3")


class ExportError(GridrlError, ValueError):
    """The policy cannot be exported (unsupported algorithm, space or normaliser)."""


@dataclass(frozen=True)
class ObsNormalisation:
    """VecNormalize's observation statistics (float64, as VecNormalize keeps them)."""

    mean: np.ndarray
    var: np.ndarray
    epsilon: float
    clip_obs: float

    def apply(self, obs: np.ndarray) -> np.ndarray:
        """Normalise ``obs`` exactly as ``VecNormalize.normalize_obs`` does (float32 out)."""
        out = np.clip(
            (obs - self.mean) / np.sqrt(self.var + self.epsilon), -self.clip_obs, self.clip_obs
        )
        return out.astype(np.float32)


def load_obs_normalisation(path: str | Path) -> ObsNormalisation | None:
    """Read the observation statistics from a saved ``VecNormalize`` pickle.

    The file is a trusted artefact of the training runner (pickle runs code on load).

    Returns
    -------
    None when the VecNormalize did not normalise observations (``norm_obs=False``).
    """
    with open(path, "rb") as fh:
        vecnorm = pickle.load(fh)  # noqa: S301 - our own training artefact
    if not getattr(vecnorm, "norm_obs", False):
        return None
    rms = vecnorm.obs_rms
    if isinstance(rms, dict):
        raise ExportError(f"{path}: dict observations are not supported (Box only)")
    return ObsNormalisation(
        mean=np.asarray(rms.mean, dtype=np.float64),
        var=np.asarray(rms.var, dtype=np.float64),
        epsilon=float(vecnorm.epsilon),
        clip_obs=float(vecnorm.clip_obs),
    )


def load_sb3_model(algo: str, model_path: str | Path) -> Any:
    """Load an SB3 model on CPU by algorithm name (``PPO``, ``SAC``, ...)."""
    import stable_baselines3 as sb3

    if algo not in SUPPORTED_ALGOS:
        raise ExportError(
            f"algorithm {algo!r} cannot be exported; supported: {list(SUPPORTED_ALGOS)} "
            "(recurrent policies carry hidden state that a single-step runtime does not keep)"
        )
    return getattr(sb3, algo).load(str(model_path), device="cpu")


class _DeterministicPolicy(torch.nn.Module):
    """Raw observation -> deterministic action, as ``predict`` computes it."""

    def __init__(self, policy: Any, algo: str, norm: ObsNormalisation | None) -> None:
        super().__init__()
        self.policy = policy
        self.algo = algo
        self.normalise = norm is not None
        if norm is not None:
            # Statistics stay float64 so the graph matches VecNormalize's numpy maths.
            self.register_buffer("obs_mean", torch.as_tensor(norm.mean, dtype=torch.float64))
            self.register_buffer(
                "obs_std", torch.sqrt(torch.as_tensor(norm.var + norm.epsilon, dtype=torch.float64))
            )
            self.clip_obs = norm.clip_obs
        space = policy.action_space
        self.register_buffer("low", torch.as_tensor(space.low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(space.high, dtype=torch.float32))
        self.postprocess = postprocess_kind(policy, algo)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        if self.normalise:
            x = (x.to(torch.float64) - self.obs_mean) / self.obs_std
            x = torch.clamp(x, -self.clip_obs, self.clip_obs).to(torch.float32)
        p = self.policy
        if self.algo in ("PPO", "A2C"):
            features = p.extract_features(x, p.pi_features_extractor)
            if isinstance(features, tuple):
                features = features[0]
            latent_pi = p.mlp_extractor.forward_actor(features)
            action = p.action_net(latent_pi)
            if self.postprocess == "tanh_unscale":
                action = torch.tanh(action)
        elif self.algo == "SAC":
            actor = p.actor
            features = actor.extract_features(x, actor.features_extractor)
            action = torch.tanh(actor.mu(actor.latent_pi(features)))
        else:  # TD3: the actor's last layer is already a tanh
            action = p.actor(x)
        if self.postprocess == "clip":
            return torch.maximum(torch.minimum(action, self.high), self.low)
        return self.low + 0.5 * (action + 1.0) * (self.high - self.low)


def postprocess_kind(policy: Any, algo: str) -> str:
    """How ``predict`` post-processes this policy's actions.

    ``clip`` (Gaussian actor-critic: clip to the box), ``tanh_unscale`` (gSDE with
    ``squash_output``: tanh, then rescale [-1, 1] to the box) or ``unscale`` (SAC, TD3:
    the network already squashes; rescale to the box).
    """
    if algo in ("PPO", "A2C"):
        return "tanh_unscale" if policy.squash_output else "clip"
    return "unscale"


class _DecisionHead(torch.nn.Module):
    """Action ``[B, A]`` -> decisions ``[components, B, sites]`` (float64)."""

    def __init__(self, decision_map: dict[str, list], n_components: int, n_sites: int, route: int):
        super().__init__()
        for key in ("low", "physical_low", "slope"):
            self.register_buffer(key, torch.tensor(decision_map[key], dtype=torch.float64))
        self.register_buffer("gather", torch.tensor(decision_map["gather"], dtype=torch.int64))
        self.n_components = n_components
        self.n_sites = n_sites
        self.route = route

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        phys = self.physical_low + (action.to(torch.float64) - self.low) * self.slope
        parts = torch.index_select(phys, 1, self.gather)
        parts = parts.reshape(-1, self.n_components, self.n_sites).transpose(0, 1)
        route = torch.softmax(parts[self.route], dim=-1).unsqueeze(0)
        return torch.cat([parts[: self.route], route, parts[self.route + 1 :]], dim=0)


class _PolicyWithDecisions(torch.nn.Module):
    """Observation -> (action, decisions)."""

    def __init__(self, policy: _DeterministicPolicy, head: _DecisionHead) -> None:
        super().__init__()
        self.policy = policy
        self.head = head
        self.postprocess = policy.postprocess

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        action = self.policy(obs)
        return action, self.head(action)


def build_module(
    model: Any,
    algo: str,
    norm: ObsNormalisation | None,
    action_layout: Any = None,
) -> torch.nn.Module:
    """Wrap an SB3 model's policy in a torch module ready for export (eval mode).

    With ``action_layout`` (a :class:`~gridrl.export.manifest.ActionLayout`) the module
    also returns the decisions (see the module notes).
    """
    policy = model.policy
    obs_space, act_space = policy.observation_space, policy.action_space
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        raise ExportError(f"expected a flat Box observation space, got {obs_space}")
    if not isinstance(act_space, spaces.Box) or len(act_space.shape) != 1:
        raise ExportError(f"expected a flat Box action space, got {act_space}")
    if norm is not None and norm.mean.shape != obs_space.shape:
        raise ExportError(
            f"VecNormalize statistics have shape {norm.mean.shape}, the policy observes "
            f"{obs_space.shape}"
        )
    policy.set_training_mode(False)
    module: torch.nn.Module = _DeterministicPolicy(policy, algo, norm)
    if action_layout is not None:
        comps = action_layout.components
        head = _DecisionHead(
            action_layout.decision_map(), len(comps), len(action_layout.sites), comps.index("route")
        )
        module = _PolicyWithDecisions(module, head)
    module.eval()
    return module


def export_onnx(module: torch.nn.Module, obs_dim: int, out_path: str | Path) -> None:
    """Export ``module`` to ``out_path`` with a dynamic batch axis.

    Uses the TorchScript-based exporter: it needs no extra package and traces these
    feed-forward graphs exactly.
    """
    example = torch.zeros((1, obs_dim), dtype=torch.float32)
    with_decisions = isinstance(module, _PolicyWithDecisions)
    outputs = [OUTPUT_NAME, DECISION_NAME] if with_decisions else [OUTPUT_NAME]
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    if with_decisions:
        axes[DECISION_NAME] = {1: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated in favour of torch.export (which needs
        # onnxscript); it remains supported and exact for these graphs.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (example,),
            str(out_path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
        )


def sb3_actions(model: Any, norm: ObsNormalisation | None, obs: np.ndarray) -> np.ndarray:
    """Reference actions: what SB3 itself returns for raw observations ``obs`` [B, D]."""
    x = norm.apply(obs) if norm is not None else obs
    actions, _ = model.predict(x, deterministic=True)
    return np.asarray(actions, dtype=np.float32)
