"""Reference controllers by name, and policies from a name or a trained-policy folder.

``make_policy("carbon_aware", quantile=0.2)`` builds a reference with validated
parameters (pydantic; defaults documented on each parameter model). ``load_policy``
also accepts the path of a trained policy folder (``model.zip``, optional
``vecnormalize.pkl``, ``meta.json`` with the algorithm name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gridrl.agents.bound import LPBound, LPBoundParams
from gridrl.agents.heuristics import (
    CarbonAware,
    CarbonAwareParams,
    DRCap,
    DRCapParams,
    FollowRenewables,
    FollowRenewablesParams,
    GreedySpatial,
    GreedySpatialParams,
    HeadroomGuard,
    HeadroomGuardParams,
    PriceThreshold,
    PriceThresholdParams,
    RandomParams,
    RandomPolicy,
    RunNow,
    RunNowParams,
    StaticParams,
    StaticPolicy,
)
from gridrl.agents.mpc import MPC, MPCParams
from gridrl.agents.policy import Policy, SB3Policy
from gridrl.agents.specs import ImitationSpec
from gridrl.agents.train import load_policy as load_trained
from gridrl.errors import GridrlError

__all__ = [
    "REFERENCES", "PolicySpecError", "check_expert", "load_policy", "make_policy",
    "make_reference", "policy_label",
]


class PolicySpecError(GridrlError, ValueError):
    """An unknown reference name, invalid reference parameters, or a path that is not a
    trained policy folder; the message names the policy and the key."""


#: name -> (controller class, parameter model)
REFERENCES: dict[str, tuple[type, type[BaseModel]]] = {
    "run_now": (RunNow, RunNowParams),
    "carbon_aware": (CarbonAware, CarbonAwareParams),
    "follow_renewables": (FollowRenewables, FollowRenewablesParams),
    "headroom_guard": (HeadroomGuard, HeadroomGuardParams),
    "dr_cap": (DRCap, DRCapParams),
    "mpc": (MPC, MPCParams),
    "lp_bound": (LPBound, LPBoundParams),
    "random": (RandomPolicy, RandomParams),
    "static": (StaticPolicy, StaticParams),
    "price_threshold": (PriceThreshold, PriceThresholdParams),
    "greedy_spatial": (GreedySpatial, GreedySpatialParams),
}


def make_policy(name: str, **params: Any) -> Policy:
    """The reference controller ``name`` with parameters ``params``.

    Raises
    ------
    PolicySpecError
        Unknown name (lists the known ones) or invalid parameters (names the key).
    """
    if name not in REFERENCES:
        raise PolicySpecError(f"unknown reference policy {name!r}; known: {sorted(REFERENCES)}")
    cls, model = REFERENCES[name]
    try:
        return cls(model(**params))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise PolicySpecError(f"policy {name!r}: {problems}") from None


make_reference = make_policy


def check_expert(spec: ImitationSpec) -> None:
    """Raise ValueError unless ``spec.expert`` is a reference that acts step by step (a
    bound plans whole episodes) and ``spec.params`` are valid parameters of it."""
    stepped = sorted(k for k, (cls, _) in REFERENCES.items() if not getattr(cls, "is_bound", False))
    if spec.expert not in stepped:
        raise ValueError(f"expected a reference that acts step by step, one of {stepped}; "
                         f"got {spec.expert!r}")
    make_policy(spec.expert, **spec.params)  # PolicySpecError (a ValueError) names the key


def load_policy(spec: str | Path, *, deterministic: bool = True, **params: Any) -> Policy:
    """A reference by name, or a trained policy folder wrapped as a policy.

    Raises
    ------
    PolicySpecError
        ``spec`` is neither a reference name nor a folder, or ``params`` are given for a
        folder.
    TrainedPolicyError
        The folder lacks ``model.zip`` or ``meta.json``.
    """
    if str(spec) in REFERENCES:
        return make_policy(str(spec), **params)
    path = Path(spec)
    if not path.is_dir():
        raise PolicySpecError(f"{spec!r} is neither a reference policy ({sorted(REFERENCES)}) nor "
                              "a trained policy folder")
    if params:
        raise PolicySpecError(f"{spec}: parameters {sorted(params)} apply to reference "
                              "policies only, not to a trained policy folder")
    trained = load_trained(path, deterministic=deterministic)
    return SB3Policy(trained, deterministic=deterministic,
                     name=str(trained.meta.get("algo", path.name)))


def policy_label(spec: str | Path) -> str:
    """How tables name a policy: the reference's name, or the trained policy's folder."""
    return str(spec) if str(spec) in REFERENCES else Path(spec).name
