"""Desktop providers, looked up by name and imported only when used."""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from .base import DesktopSpec, GuestEndpoint, Ownership, Provider

_PROVIDERS = {
    "process": ("rayenv.providers.process", "ProcessProvider"),
    "lite": ("rayenv.providers.lite", "LiteProvider"),
    "docker": ("rayenv.providers.docker", "DockerProvider"),
}

PROVIDER_NAMES = tuple(_PROVIDERS)


def provider_class(name: str) -> type[Provider]:
    """The :class:`Provider` subclass registered under ``name``."""
    try:
        module, attr = _PROVIDERS[name]
    except KeyError:
        raise ConfigError(f"unknown provider {name!r}", hint=f"use one of {', '.join(PROVIDER_NAMES)}") from None
    return getattr(importlib.import_module(module), attr)


def make_provider(spec: DesktopSpec, ownership: Ownership) -> Provider:
    return provider_class(spec.provider)(spec, ownership)


__all__ = ["DesktopSpec", "GuestEndpoint", "Ownership", "Provider", "PROVIDER_NAMES", "make_provider",
           "provider_class"]
