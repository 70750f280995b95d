"""The contract every desktop provider implements.

A provider owns exactly one desktop: it boots it, tells where its guest API listens, reports
whether it is still alive, and removes every trace of it on :meth:`Provider.stop`. Everything
above (actions, observations, task setup, evaluation) speaks the OSWorld guest HTTP API and does
not care whether the desktop is a QEMU VM in a container, a desktop-lite container or a pair of
host processes. A new provider is one module that subclasses :class:`Provider`.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..engine.containers import LABEL_ACTOR, LABEL_ENV, LABEL_NODE, LABEL_OWNER, LABEL_PROVIDER
from ..errors import ProviderUnavailable
from ..strict import StrictModel, did_you_mean

if TYPE_CHECKING:
    from .screens import Display

#: The providers rayenv ships; any other must be named ``package.module:ProviderClass``.
BUILTIN_PROVIDERS = ("process", "lite", "docker")
from ..desktop_lite.profiles import DEFAULT_PROFILE, PROFILES

#: Default ``boot_timeout`` per provider (others: 120 s).
BOOT_TIMEOUTS = {"docker": 600.0}
#: What one desktop of a provider needs in RAM when no ``memory_limit`` says: desktop-lite (Xvfb, openbox,
#: an app, the guest server) stays near 200 MiB; a VM needs its guest RAM plus QEMU's own.
MEMORY_ESTIMATES = {"lite": 512 << 20, "process": 512 << 20}
QEMU_OVERHEAD = 1 << 30


@dataclass(frozen=True)
class Ownership:
    """Who started a desktop: recorded on every container and process so it can be found again.

    ``owner`` is the pool name (or ``"cli"`` for one-off desktops), ``env_name`` the desktop's name
    within it, ``actor_id`` the Ray actor id (empty outside Ray) and ``node_id`` the Ray node.
    """

    owner: str
    env_name: str
    actor_id: str = ""
    node_id: str = ""

    def labels(self, provider: str) -> dict[str, str]:
        return {LABEL_OWNER: self.owner, LABEL_ENV: self.env_name, LABEL_ACTOR: self.actor_id,
                LABEL_NODE: self.node_id, LABEL_PROVIDER: provider}


#: Guest ports OSWorld's getters reach besides the guest API: Chrome's remote debugging (OSWorld's image
#: forwards it there from Chrome's 1337 with socat) and VLC's HTTP interface. Keys of ``extra_ports``.
APP_PORTS = {"chromium": 9222, "vlc": 8080}


@dataclass(frozen=True)
class GuestEndpoint:
    """Where a desktop's guest API server answers (host side)."""

    host: str
    port: int
    extra_ports: dict[str, int] = field(default_factory=dict)  # e.g. {"chromium": 9222, "vnc": 8006}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class DesktopSpec(StrictModel):
    """What desktop to start. One model for all providers; each ignores what it does not use."""

    provider: str = Field("process", description="docker | lite | process")
    screen_width: int = Field(1920, ge=320, le=7680)
    screen_height: int = Field(1080, ge=240, le=4320)
    boot_timeout: float | None = Field(None, gt=0, description="seconds from start to a guest API answer "
                                       "[default: 600 for docker (a VM), 120 otherwise]")
    lite_image: str | None = Field(None, description="desktop-lite image tag (default: the current version of profile)")
    profile: str = Field(DEFAULT_PROFILE, description="image profile of a lite desktop: small (a terminal, an editor, a "
                         "calculator; fast tests) | osworld (OSWorld's user/session contract and apps)")
    client_password: str = Field("password", description="the password of the guest's user (`user` on the osworld profile and on "
                                 "OSWorld's image), which `sudo -S` takes: task setup and the VM's clock send it")
    docker_image: str = Field("happysixd/osworld-docker", description="OSWorld QEMU image")
    vm_path: str | None = Field(None, description="qcow2 on the env host for the docker provider (relative: to the "
                                "directory of the process that creates the pool); default: what `rayenv vm fetch` got")
    vm_url: str | None = Field(None, description="what `rayenv vm fetch` downloads when vm_path is absent")
    vm_sha256: str | None = Field(None, description="SHA-256 of what vm_url serves, checked by `rayenv vm fetch`")
    vm_boot: Literal["auto", "bios", "uefi", "kernel"] = Field(
        "auto", description="how rayenv/osworld-vm boots vm_path: auto (read from its partition table), bios, uefi "
        "(its own boot loader), kernel (a bare filesystem with the container's kernel)")
    docker_memory: str = Field("4G", description="RAM of the OSWorld VM (docker provider)")
    docker_cpus: int = Field(4, ge=1, description="vCPUs of the OSWorld VM (docker provider)")
    require_kvm: bool = Field(False, description="fail instead of falling back to software emulation")
    snapshot_reset: bool = Field(True, description="docker provider on rayenv/osworld-vm: start new desktops from a "
                                 "golden RAM + disk snapshot and reset by loading it (false: boot, restart)")
    vm_template: bool = Field(True, description="with snapshot_reset: start and reset VM desktops as copy-on-write "
                              "clones of the golden state's RAM file (false: load its snapshot, today's slower way)")
    warm_spare: bool | None = Field(None, description="keep a warm spare that a reset swaps in: a VM desktop started "
                                    "from a template (docker, vm_template) keeps a paused QEMU in its container "
                                    "(default on: it shares the template's RAM); a lite desktop, or a docker one "
                                    "without snapshot resets, a whole second desktop (default off: twice the memory "
                                    "per desktop); false: none")
    host_spare: bool = Field(False, description="docker provider with vm_template: keep one more VM desktop of the "
                             "pool per env host started, warmed up and paused, which the pool's next new desktop there "
                             "adopts (~0.1 s instead of ~1 s under TCG; a replacement, a scale-up) and then replaces "
                             "in the background; costs one desktop's memory per host")
    memory_limit: str | None = Field(None, description="the container's hard memory limit (docker's mem_limit, e.g. "
                                     "'6g'); the kernel kills a desktop above it [default: docker: docker_memory + 1g; "
                                     "lite: none]")
    cpu_limit: float | None = Field(None, gt=0, description="CPUs the container may use (docker's nano_cpus / 1e9) "
                                    "[default: docker: docker_cpus; lite: none]; capped at the host's CPUs")

    @model_validator(mode="after")
    def _provider_boot_timeout(self) -> "DesktopSpec":
        """Unset means sized for the provider: a VM (without KVM) boots in minutes, a container in seconds."""
        if self.boot_timeout is None:
            self.boot_timeout = BOOT_TIMEOUTS.get(self.provider, 120.0)
        return self

    @model_validator(mode="after")
    def _spare_in_a_container(self) -> "DesktopSpec":
        if self.warm_spare and self.provider == "process":
            raise ValueError("warm_spare needs a container provider (lite or docker): two process desktops of one "
                             "slot would share the host's app ports")
        return self

    @model_validator(mode="after")
    def _host_spare_of_a_template(self) -> "DesktopSpec":
        if self.host_spare and (self.provider != "docker" or not (self.snapshot_reset and self.vm_template)):
            raise ValueError("host_spare needs VM desktops started from a template (provider: docker, with "
                             "snapshot_reset and vm_template on)")
        return self

    def container_limits(self) -> dict[str, Any]:
        """docker-py ``containers.run`` options that bound one desktop's container (empty: unbounded)."""
        limits: dict[str, Any] = {}
        memory = self.memory_limit or (self._vm_memory() if self.provider == "docker" else None)
        if memory:
            limits["mem_limit"] = memory
            limits["memswap_limit"] = memory  # no swap beyond the limit: over it, the kernel's OOM killer acts
        cpus = self.cpu_limit or (self.docker_cpus if self.provider == "docker" else None)
        if cpus:  # Docker refuses more CPUs than the host has
            limits["nano_cpus"] = int(min(cpus, os.cpu_count() or 1) * 1e9)
        return limits

    def memory_need(self) -> int:
        """Bytes of host RAM one desktop of this spec may take: its limit, else the provider's estimate (twice
        that with a warm spare beside it)."""
        from docker.utils import parse_bytes  # how Docker itself reads mem_limit

        if self.memory_limit:
            one = parse_bytes(self.memory_limit)
        else:
            one = self._vm_memory() if self.provider == "docker" else MEMORY_ESTIMATES.get(self.provider, 512 << 20)
        return one * 2 if self.spares_whole_desktops() else one

    def spares_whole_desktops(self) -> bool:
        """Whether each desktop has a whole second one beside it (``warm_spare`` where a reset would restart)."""
        return self.warm_spare is True and (self.provider == "lite" or (self.provider == "docker" and not self.snapshot_reset))

    def _vm_memory(self) -> int:
        from docker.utils import parse_bytes

        return parse_bytes(self.docker_memory) + QEMU_OVERHEAD

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        """A misspelt provider fails here, before anything boots, instead of when the first desktop starts."""
        if ":" not in value and value not in BUILTIN_PROVIDERS:
            raise ValueError(f"unknown provider {value!r}{did_you_mean(value, BUILTIN_PROVIDERS)}; "
                             "or name your own as 'package.module:ProviderClass'")
        return value

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"unknown image profile {value!r}{did_you_mean(value, PROFILES)}: choose one of {', '.join(PROFILES)}")
        return value

    @field_validator("vm_path")
    @classmethod
    def _absolute_vm_path(cls, value: str | None) -> str | None:
        """Resolved where the pool is created: the env actor's working directory means nothing to a user."""
        return str(Path(value).expanduser().absolute()) if value else value


class Provider(abc.ABC):
    """One desktop's lifecycle. The env actor runs one lifecycle call at a time (``start``, ``revert``,
    ``stop`` from its one-slot group), except that its control group may call ``stop`` (a close),
    ``is_alive`` and ``describe`` while one runs: ``stop`` must remove what a concurrent ``start`` made
    (the desktop's ``closing`` flag makes that start stop it again), the other two only read."""

    name: ClassVar[str]
    #: :meth:`revert` puts back the whole machine as the desktop started (RAM, devices, disks: a VM's golden state),
    #: so what was true of the desktop then is again: its pointer where it was, its disks as roomy
    reverts_whole_machine: ClassVar[bool] = False

    def __init__(self, spec: DesktopSpec, ownership: Ownership) -> None:
        self.spec = spec
        self.ownership = ownership

    @abc.abstractmethod
    def start(self) -> GuestEndpoint:
        """Boot the desktop and return once its guest API answers (or raise, leaving nothing behind).

        Raises :class:`~rayenv.errors.EnvTimeout` after ``spec.boot_timeout`` and
        :class:`~rayenv.errors.ProviderUnavailable` when this machine cannot run the provider.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Remove the desktop and everything it created (container, volumes, processes). Idempotent."""

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """Whether the container / processes are still running (cheap; no guest API call)."""

    def revert(self) -> bool:
        """Put the running desktop back to its pristine state in place, if this provider can (a VM
        snapshot: under a second). ``False``: it cannot, and the caller restarts it from its image.
        Raises a :class:`~rayenv.errors.RayEnvError` when it tried and failed (the caller restarts too).
        """
        return False

    def settle(self) -> None:
        """Wait for what the last :meth:`revert` left to finish in the background (a VM swapped to its warm spare
        has its guest's clock set after the revert returned); raises its error. The desktop calls it before any
        request to the guest. Nothing to wait for by default."""

    def current_endpoint(self) -> GuestEndpoint | None:
        """Where the guest answers after a :meth:`revert` that moved the desktop (a swap to a warm spare,
        :mod:`rayenv.providers.spare`); None: where :meth:`start` said."""
        return None

    def pristine_pointer(self) -> tuple[int, int] | None:
        """Where the pointer is on the desktop as it starts and reverts (its golden state's), where the provider
        knows it without asking the guest; None: the desktop asks the guest once per start."""
        return None

    def display(self) -> "Display | None":
        """The desktop's screen as the host can read it (see :mod:`rayenv.providers.screens`), or None: screenshots
        come from the guest (``GET /screenshot``). Only while the desktop runs."""
        return None

    def save_fork(self) -> Path:
        """Save the running desktop's whole state (mid-episode) into a directory on this host; return it."""
        raise ProviderUnavailable(f"the {self.name} provider cannot fork a desktop", env=self.ownership.env_name,
                                  phase="fork", hint="fork VM desktops started from a template (provider: docker)")

    def load_fork(self, fork: Path) -> None:
        """Replace the running desktop's state by the one :meth:`save_fork` left in ``fork``."""
        raise ProviderUnavailable(f"the {self.name} provider cannot fork a desktop", env=self.ownership.env_name,
                                  phase="fork", hint="fork VM desktops started from a template (provider: docker)")

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Facts for logs, status tables and errors: container id and name, display, pids, ports."""

    def label(self) -> str:
        """A short human name for errors: ``env-3 (container 1a2b3c4d)``."""
        facts = self.describe()
        detail = facts.get("container_name") or facts.get("display") or ""
        return f"{self.ownership.env_name} ({detail})" if detail else self.ownership.env_name
