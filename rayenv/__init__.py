"""rayenv: OSWorld desktops as Ray actors, pooled, leased and healed for RL training.

``from rayenv import EnvPool`` is all a trainer needs; the env host additionally installs
``rayenv[osworld]`` for desktop-env's task setup and evaluators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ActionFailed,
    ConfigError,
    DesktopUnavailable,
    DesktopUnreachable,
    EnvTimeout,
    EvaluationError,
    InvalidAction,
    InvalidTaskConfig,
    PoolError,
    ProviderUnavailable,
    RayEnvError,
    SetupFailed,
)
from .types import EnvStatus, Observation, StepResult

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .pool.config import PoolConfig
    from .pool.handle import EnvPool
    from .pool.lease import Lease
    from .pool.outcomes import Outcome

_LAZY = {"EnvPool": "pool.handle", "Lease": "pool.lease", "PoolConfig": "pool.config", "Outcome": "pool.outcomes"}


def __getattr__(name: str) -> Any:
    """Import Ray-facing classes on first use so ``import rayenv`` stays cheap."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'rayenv' has no attribute {name!r}")


__all__ = ["ActionFailed", "ConfigError", "DesktopUnavailable", "DesktopUnreachable", "EnvPool", "EnvStatus",
           "EnvTimeout", "EvaluationError", "InvalidAction", "InvalidTaskConfig", "Lease", "Observation", "Outcome", "PoolConfig", "PoolError",
           "ProviderUnavailable", "RayEnvError", "SetupFailed", "StepResult"]
