"""Turn a stable-baselines3 policy into one ONNX graph: raw observation -> action.

The graph holds, in order: VecNormalize's observation normalisation (mean, variance,
epsilon, clip), the policy network's deterministic action, and the post-processing
``predict`` applies for that algorithm (clip to the action box for Gaussian policies,
tanh + rescale for squashed ones). Its output equals
``model.predict(vecnormalize.normalize_obs(obs), deterministic=True)``.
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

INPUT_NAME = "observation"
OUTPUT_NAME = "action"
# Opset 17 is read by every onnxruntime >= 1.13 and covers every op these graphs use.
ONNX_OPSET = 17

SUPPORTED_ALGOS = ("PPO", "A2C", "SAC", "TD3")


class ExportError(ValueError):
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


def build_module(model: Any, algo: str, norm: ObsNormalisation | None) -> _DeterministicPolicy:
    """Wrap an SB3 model's policy in a torch module ready for export (eval mode)."""
    policy = model.policy
    if (
        not isinstance(policy.observation_space, spaces.Box)
        or len(policy.observation_space.shape) != 1
    ):
        raise ExportError(f"expected a flat Box observation space, got {policy.observation_space}")
    if not isinstance(policy.action_space, spaces.Box) or len(policy.action_space.shape) != 1:
        raise ExportError(f"expected a flat Box action space, got {policy.action_space}")
    if norm is not None and norm.mean.shape != policy.observation_space.shape:
        raise ExportError(
            f"VecNormalize statistics have shape {norm.mean.shape}, the policy observes "
            f"{policy.observation_space.shape}"
        )
    policy.set_training_mode(False)
    module = _DeterministicPolicy(policy, algo, norm)
    module.eval()
    return module


def export_onnx(module: _DeterministicPolicy, obs_dim: int, out_path: str | Path) -> None:
    """Export ``module`` to ``out_path`` with a dynamic batch axis.

    Uses the TorchScript-based exporter: it needs no extra package and traces these
    feed-forward graphs exactly.
    """
    example = torch.zeros((1, obs_dim), dtype=torch.float32)
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
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
        )


def sb3_actions(model: Any, norm: ObsNormalisation | None, obs: np.ndarray) -> np.ndarray:
    """Reference actions: what SB3 itself returns for raw observations ``obs`` [B, D]."""
    x = norm.apply(obs) if norm is not None else obs
    actions, _ = model.predict(x, deterministic=True)
    return np.asarray(actions, dtype=np.float32)
