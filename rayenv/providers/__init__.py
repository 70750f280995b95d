"""Desktop providers, looked up by name and imported only when used."""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from .base import BUILTIN_PROVIDERS, DesktopSpec, GuestEndpoint, Ownership, Provider

_PROVIDERS = {
    "process": ("rayenv.providers.process", "ProcessProvider"),
    "lite": ("rayenv.providers.lite", "LiteProvider"),
    "docker": ("rayenv.providers.docker", "DockerProvider"),
}

PROVIDER_NAMES = BUILTIN_PROVIDERS


def provider_class(name: str) -> type[Provider]:
    """The :class:`Provider` subclass registered under ``name``, or named ``"package.module:Class"``.

    The dotted form lets a user (or a test) plug in a provider without touching rayenv.
    """
    if ":" in name:
        module, attr = name.split(":", 1)
    elif name in _PROVIDERS:
        module, attr = _PROVIDERS[name]
    else:
        raise ConfigError(f"unknown provider {name!r}",
                          hint=f"use one of {', '.join(PROVIDER_NAMES)} or 'package.module:ProviderClass'")
    cls = getattr(importlib.import_module(module), attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(f"{name!r} is not a Provider subclass", hint="subclass rayenv.providers.base.Provider")
    return cls


def make_provider(spec: DesktopSpec, ownership: Ownership) -> Provider:
    """The spec's provider; with whole spare desktops, wrapped so that each incarnation's container has its own name."""
    cls = provider_class(spec.provider)
    if not spec.spares_whole_desktops():
        return cls(spec, ownership)
    from .spare import WarmSpare

    return WarmSpare(lambda incarnation: cls(spec, ownership, name_suffix=f"-{incarnation}"))


__all__ = ["DesktopSpec", "GuestEndpoint", "Ownership", "Provider", "PROVIDER_NAMES", "make_provider",
           "provider_class"]
