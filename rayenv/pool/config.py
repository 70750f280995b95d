"""Pool configuration: one pydantic model, loadable from ``configs/*.yaml``, printable with ``--show-config``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from ..env.options import EnvOptions
from ..errors import ConfigError
from ..providers.base import DesktopSpec
from ..strict import StrictModel, explain, read_yaml_section

#: The Ray namespace pools live in unless told otherwise; verl workers look here.
DEFAULT_NAMESPACE = "rayenv"
#: The custom resource env hosts advertise; env actors ask for one unit each.
DEFAULT_RESOURCE = "osworld_env"
#: What a pool name may be: Ray actor names are built from it.
POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def manager_name(pool: str) -> str:
    """The Ray actor name of ``pool``'s manager (here, not in the manager's module: `rayenv status` finds
    managers by it without importing the manager and the env actor it starts)."""
    return f"rayenv-pool:{pool}"


class PoolConfig(StrictModel):
    """Everything a pool needs. Nested ``desktop`` and ``env`` sections map to the desktop and env models."""

    name: str = Field("default", description="pool name (Ray actor names derive from it)")
    size: int = Field(1, ge=1, le=4096, description="number of desktops kept alive")
    namespace: str = Field(DEFAULT_NAMESPACE, description="Ray namespace of the pool's named actors")
    resource: str = Field(DEFAULT_RESOURCE, description="custom Ray resource that marks env hosts")
    desktop: DesktopSpec = Field(default_factory=DesktopSpec)
    env: EnvOptions = Field(default_factory=EnvOptions)
    health_interval: float = Field(5.0, gt=0, description="seconds between health checks of every desktop")
    ping_timeout: float = Field(10.0, gt=0, description="a ping unanswered this long marks the desktop unreachable")
    unreachable_grace: float = Field(180.0, ge=0, description="seconds an unreachable desktop (its env host's link is "
                                     "down) is kept before it is replaced; match the tunnel's outage_tolerance")
    max_concurrent_boots: int = Field(2, ge=1, description="desktops booting at one time (first start and "
                                      "replacements alike); the others wait their turn in state 'queued'")
    boot_attempts: int = Field(3, ge=1, description="tries to boot one desktop before its slot is marked failed")
    revert_on_release: bool = Field(True, description="revert a released desktop right away so the next lease starts clean")
    close_timeout: float = Field(30.0, gt=0, description="seconds to wait for a desktop to close on shutdown")
    manager_on_head: bool = Field(True, description="run the pool's manager on the Ray head, so it outlives an env host's outage")

    @field_validator("name")
    @classmethod
    def _actor_safe_name(cls, value: str) -> str:
        if not POOL_NAME.fullmatch(value):
            raise ValueError(f"pool name {value!r} must be letters, digits, '_' and '-', starting with a letter or "
                             "digit (Ray actor names derive from it), e.g. 'my-pool'")
        return value

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> "PoolConfig":
        """Read a YAML file (its ``pool:`` section, or the whole file) and merge the non-None overrides into it.

        Sections merge key by key (``desktop={"boot_timeout": 600}`` keeps the file's provider and
        screen), and ``provider`` is shorthand for ``desktop={"provider": ...}``: replacing a whole
        section would silently fall back to its defaults, e.g. to host-process desktops.
        """
        data, prefix = read_yaml_section(path, "pool") if path is not None else ({}, ())
        given = {key: value for key, value in overrides.items() if value is not None}
        provider = given.pop("provider", None)
        if provider is not None:
            given["desktop"] = _with_provider(given.get("desktop") or {}, provider)
        try:
            return cls.model_validate(merged(data, given))
        except ValidationError as exc:
            source = str(path) if path is not None else "pool config"
            raise ConfigError(explain(exc, cls, source, prefix), hint="see configs/pool.yaml for every key") from None


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, recursing into sections that both give as mappings."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def _with_provider(desktop: dict[str, Any], provider: str) -> dict[str, Any]:
    named = desktop.get("provider")
    if named is not None and named != provider:
        raise ConfigError(f"provider={provider!r} contradicts desktop={{'provider': {named!r}}}",
                          hint="give the provider once, either as provider= or inside desktop=")
    return {**desktop, "provider": provider}
