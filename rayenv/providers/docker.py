"""The ``docker`` provider: a QEMU VM desktop inside a container, OSWorld's way.

It runs any image with the interface of OSWorld's own (``happysixd/osworld-docker``): the qcow2
mounted read-only at ``/System.qcow2``, ``RAM_SIZE``/``CPU_CORES``/``DISK_SIZE``/``KVM=N``, the guest
API on container port 5000. ``rayenv/osworld-vm`` (``rayenv vm build``) is such an image, built here
from Debian packages. What this provider adds:

* host ports are chosen by Docker (published on 127.0.0.1 with ephemeral host ports, read back from
  the container), so concurrent actors never race for a port and nothing scans the host;
* ``/dev/kvm`` is passed only when a kernel really boots with it (:func:`rayenv.engine.kvm.kvm_status`),
  otherwise QEMU runs with ``KVM=N`` and the reason is logged, reported by :meth:`describe` (and so
  in ``EnvStatus``), or, with ``require_kvm``, raised;
* a per-desktop work directory on the host, bind-mounted at ``/run/vm``, where the image keeps the
  copy-on-write overlay and QEMU's QMP socket, named by the container's ``rayenv.workdir`` label and
  removed with the container (by :meth:`stop` or the reaper). Snapshots (QMP ``savevm``, a copy of the
  overlay started with ``LOADVM``) build on it;
* on images whose entrypoint takes ``LOADVM`` (``rayenv/osworld-vm``), snapshot resets: the first
  desktop of a VM shape on a host boots once more to make a *golden state* (booted, settled, saved with
  QMP ``savevm``; :mod:`rayenv.providers.golden`); every desktop starts from a copy of it with
  ``-loadvm`` (seconds, not a boot), and :meth:`revert` loads that snapshot back (under a second) and
  sets the guest's clock, which the snapshot took back in time. A snapshot that cannot be loaded
  raises :class:`~rayenv.errors.SnapshotError`, and the desktop restarts instead;
* where the golden state is also a *template* (its RAM in a tmpfs file, :mod:`rayenv.providers.golden`),
  a desktop is a clone of it instead: QEMU maps that file privately (copy-on-write) and loads only the
  device state, so a new desktop starts in about a second and a reset is another QEMU from the template
  in the same container (the episode's RAM and overlay go with the old one), with the RAM every desktop
  of the shape has not written shared among them. That next QEMU is the container's *warm spare*
  (``warm_spare``, on unless false), loaded and paused while the episode runs: a reset swaps it in over both
  monitors (:meth:`DockerProvider._take_spare`) and returns, the guest's clock set in the background
  (:meth:`DockerProvider.settle`); without a ready spare the entrypoint starts a fresh QEMU and the provider
  loads it and sets the clock before the reset returns. ``describe()`` (so
  ``EnvStatus``) names the path a desktop uses: ``reset_path`` = ``template`` or ``loadvm``. A clone forks
  (:meth:`DockerProvider.save_fork`) by saving its devices and only the RAM it wrote
  (:mod:`rayenv.providers.written`), and with ``host_spare`` a new desktop adopts a started, paused one made
  ahead of it (:mod:`rayenv.providers.host_spare`);
* the container carries its owner labels and is removed with its volumes; no pause/unpause;
* the readiness wait is bounded by ``boot_timeout`` (600 s by default) and names container and phase;
* on images whose guest draws its desktop on QEMU's display (label ``rayenv.vm.display=qemu``: rayenv's own
  small-profile disk), screenshots are QMP ``screendump``s into a host directory on tmpfs mounted at
  ``/run/rayenv/screen`` (:class:`~rayenv.providers.screens.QemuDisplay`), not the guest's ``/screenshot``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import requests

from ..engine import containers
from ..engine.containers import LABEL_SCREENDIR, LABEL_WORKDIR
from ..desktop_vm.build import DISPLAY_LABEL
from ..engine.kvm import KERNEL_LABEL, KvmStatus, kvm_status
from ..errors import ProviderUnavailable, RayEnvError, SnapshotError
from ..waiting import wait_until
from .base import GuestEndpoint
from .container_provider import ContainerProvider
from .golden import DEVICE_STATE, GOLDEN_SNAPSHOT, LABEL_GOLDEN, RAM_FILE, GoldenKey, GoldenStore, copy_sparse
from .host_spare import FREE, LABEL_SPARE, claim, making, spare_key
from .qmp import Monitor
from .screens import SCREEN_MOUNT, QemuDisplay, make_screen_dir
from .written import StreamError, receiving, written_pages
from .vm_image import OSWORLD_UBUNTU_URL, locate_vm_image

logger = logging.getLogger(__name__)

GUEST_PORT, CHROMIUM_PORT, VNC_PORT, VLC_PORT = 5000, 9222, 8006, 8080
#: Where the image keeps the overlay (``boot.qcow2``) and QMP socket (``qmp.sock``), both the episode's QEMU's:
#: links to a numbered QEMU's own (``qemu-N.sock``, ``disk-N.qcow2``) once a spare was swapped in.
WORK_MOUNT = "/run/vm"
OVERLAY, MONITOR, DISPLAY = "boot.qcow2", "qmp.sock", "vnc.sock"
#: QEMU's screendump of the display, in the screen directory.
SCREEN_DUMP = "screen.ppm"
#: Where a clone sees its golden state's directory (overlay, device state) and the template's RAM directory.
GOLDEN_MOUNT, GOLDEN_RAM_MOUNT = "/golden", "/golden-ram"
#: Created in the work dir before QEMU is quit: the entrypoint then starts a fresh QEMU from the template for the
#: provider to load (RESTART_REQUEST), or adopts the spare the provider swapped in (SWAPPED, holding its number).
RESTART_REQUEST, SWAPPED = "restart", "swapped"
#: In the work dir: the entrypoint's guest port forwards (``-netdev user`` hostfwd rules, one a line).
FORWARDS = "forwards"
#: In the work dir: the entrypoint's next QEMU runs on NEXT_OVERLAY if it is there (a fork's branch);
#: a saved fork (FORK_DIR: FORK_STATE + a copy of the overlay).
NEXT_OVERLAY, FORK_DIR, FORK_STATE = "next.qcow2", "fork", "state"
#: In a saved fork: the unix socket its state is migrated through, and the digest of its golden state.
FORK_STREAM, FORK_GOLDEN = "stream.sock", "golden"
#: In the work dir while the entrypoint's warm spare is loaded and paused (a reset now swaps it in): its number.
SPARE_READY = "spare.ready"
#: In a golden state's directory: where its pointer is (``x y``).
POINTER = "pointer"
#: A booted desktop runs this long before its golden state is saved (openbox, the AT-SPI bus settle).
SETTLE_SECONDS = 3.0
SAVE_TIMEOUT, LOAD_TIMEOUT = 300.0, 120.0
#: rayenv's guest sets its clock in the server itself (one system call, no process); OSWorld's has no such route.
CLOCK_ROUTE = "/setup/set_clock"
#: Set the guest's clock to ``seconds`` (since the epoch) as root, whoever the guest server runs as (POSIX sh: OSWorld's
#: server runs it with /bin/sh). ``sudo`` alone can take seconds under emulation, so the time set is ``seconds`` plus
#: how long the guest took from the command's start to ``date`` (its uptime counts), not ``seconds`` late.
SET_CLOCK = ("b=$(cut -d' ' -f1 /proc/uptime); "
             "s=\"date -u -s @\\$(awk -v t={seconds} -v b=$b '{{printf \\\"%.3f\\\", t + \\$1 - b}}' /proc/uptime)\"; "
             "if [ \"$(id -u)\" = 0 ]; then sh -c \"$s\"; else echo '{password}' | sudo -S -p '' sh -c \"$s\"; fi >/dev/null")


def work_root() -> Path:
    """Parent of the per-desktop work directories (overlays grow with the guest's writes and snapshots)."""
    return Path(os.environ.get("RAYENV_VM_WORK_DIR") or Path.home() / ".cache" / "rayenv" / "vm-work")


def unnamed_work_dirs(named: set[str], older_than: float, owner: str | None = None) -> list[Path]:
    """Work directories no container names (``named``: the ``rayenv.workdir`` labels on this host): ``owner``'s
    whatever their age (its whole pool is going), any other once made over ``older_than`` seconds ago (a younger
    one may be a start's under way, its container seconds behind). Left where a desktop's removal was cut short
    between its container and its directory (an actor killed while its revert and its close both removed it)."""
    root, now = work_root(), time.time()
    if not root.is_dir():
        return []
    return [path for path in root.iterdir() if path.is_dir() and str(path) not in named
            and ((owner is not None and path.name.startswith(f"{owner}-")) or now - path.stat().st_mtime > older_than)]


class DockerProvider(ContainerProvider):
    name = "docker"
    poll_interval = 1.0
    reverts_whole_machine = True  # a revert is the golden state again (a restart, where there is none, is a start)

    def __init__(self, *args: Any, work_dir: Path | None = None, template_ram: Path | None = None,
                 spare_for: str | None = None, **kwargs: Any) -> None:
        """``work_dir``: use (and keep) this directory instead of a private one (a golden state being made);
        ``template_ram``: keep the VM's RAM in a file there, shared (the golden VM of a template); ``spare_for``:
        this desktop is a host spare, labelled with this key (:mod:`rayenv.providers.host_spare`)."""
        super().__init__(*args, **kwargs)
        self._spare_for = spare_for
        self._spares = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="host-spare")
        self._making: concurrent.futures.Future | None = None  # the next host spare being made
        self.adopted = False  # this desktop started as a host spare it adopted (said in describe)
        self._kvm: KvmStatus | None = None
        self._given_work_dir = work_dir
        self.work_dir: Path | None = None
        self._snapshot_resets = False
        self._golden: str | None = None  # digest of the golden state this desktop started from
        self._template_ram = template_ram
        #: how this desktop starts and resets: ``template`` (a clone of its golden state's copy-on-write RAM),
        #: ``loadvm`` (its golden snapshot), or None (restarts); said in ``EnvStatus`` details
        self.reset_path: str | None = None
        self._endpoint: GuestEndpoint | None = None
        self._draws: bool | None = None  # whether the image's guest draws on QEMU's display (read once)
        self._clock_route = True  # until the guest says it has no CLOCK_ROUTE (or may not use it)
        self._settling: concurrent.futures.Future | None = None  # a swap's clock being set (see settle)
        self._background = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="clock")
        self.screen_dir: Path | None = None
        self.store = GoldenStore()

    def start(self) -> GuestEndpoint:
        """Boot the VM, or start it from this VM shape's golden state where the image supports snapshots:
        a clone of its template (copy-on-write RAM) where the template's RAM file is there, else a copy
        of its overlay loaded with ``-loadvm``."""
        self._snapshot_resets = self._snapshots()
        if not self._snapshot_resets:
            self._endpoint = super().start()
            return self._endpoint
        key = self._golden_key()
        if self._adopts() and (adopted := self._adopt(key.digest)) is not None:
            return adopted
        self._prepare_work_dir()
        failure: RayEnvError | None = None
        try:
            with self.store.held(key, self._make_golden):
                self._golden = key.digest
                self.reset_path = ("template" if self.spec.vm_template and self.store.has_template(key.digest)
                                   else "loadvm")
                if self.reset_path == "loadvm":
                    self.store.copy_overlay(key.digest, self._work())
                try:
                    self._endpoint = super().start()
                    self._set_guest_clock()
                except RayEnvError as exc:
                    failure = exc
        except BaseException:
            self.stop()
            raise
        if failure is not None:
            logger.warning("%s: starting from golden state %s failed (%s); discarding it and booting instead",
                           self.ownership.env_name, key.digest, failure.message)
            self.stop()
            self.store.discard(key.digest)
            self._endpoint = super().start()
            self._save(GOLDEN_SNAPSHOT)  # this desktop's own snapshot: its resets still load one
            self.reset_path = "loadvm"
        elif self.reset_path == "template":
            self._spare_later(key.digest)
        return self._endpoint

    def _adopts(self) -> bool:
        """This desktop adopts (and keeps making) host spares: ``host_spare`` on a template, and not a spare itself."""
        return self.spec.host_spare and self.spec.vm_template and self._spare_for is None

    def _spare_key(self, golden: str) -> str:
        return spare_key(golden, self.spec.model_dump_json())

    def _adopt(self, golden: str) -> GuestEndpoint | None:
        """Become the pool's free host spare of this shape, if there is one on this host: its QEMU runs on, the
        guest's clock is set in the background (as after a reset's swap), and the next spare is made in the
        background. None where there is none, or it could not be woken (it is removed)."""
        container = claim(self.ownership.owner, self._spare_key(golden), self.ownership.actor_id)
        if container is None:
            return None
        labels, own_name = container.labels, self.container_name
        self._container, self.container_name = container, container.name
        self.work_dir, self.screen_dir = Path(labels[LABEL_WORKDIR]), Path(labels[LABEL_SCREENDIR])
        self._golden, self.reset_path = golden, "template"
        self._started_at, self._oom_killed = int(time.time()), False
        try:
            self._kvm = kvm_status(self.spec.docker_image)
            self._endpoint = self.endpoint(containers.published_ports(container))
            self._monitor().execute("cont")
        except RayEnvError as exc:
            logger.warning("%s: host spare %s could not be woken (%s); starting a desktop instead",
                           self.ownership.env_name, container.name, exc.message)
            self.stop()
            self.container_name = own_name
            return None
        self._settling = self._background.submit(self._ready_now)
        self.adopted = True
        logger.info("%s: adopted host spare %s", self.ownership.env_name, container.name)
        self._spare_later(golden)
        return self._endpoint

    def _spare_later(self, golden: str) -> None:
        """Make the pool's next host spare of this shape on this host in the background, if it has none free."""
        if self._adopts() and (self._making is None or self._making.done()):
            self._making = self._spares.submit(self._make_spare, golden)

    def _make_spare(self, golden: str) -> None:
        """Start a desktop as a new one would start, let its guest answer and set its clock (warm), pause it and
        mark it free. Made under the host's lock for this pool and shape, so two desktops make one."""
        key = self._spare_key(golden)
        with making(work_root(), self.ownership.owner, key) as missing:
            if not missing:
                return
            spare = DockerProvider(self.spec, replace(self.ownership, env_name=f"{self.ownership.env_name}-spare"),
                                   name_suffix=f"-{secrets.token_hex(3)}", spare_for=key)
            try:
                spare.start()
                spare._monitor().execute("stop")
                (spare._work() / FREE).touch()
            except Exception as exc:  # a background task: said in the log, and nothing of it left
                logger.warning("%s: could not make a host spare: %s", self.ownership.env_name, exc)
                spare.stop()
                return
            logger.info("%s: host spare %s made", self.ownership.env_name, spare.container_name)

    def container_started(self) -> None:
        if self.reset_path == "template":
            self._resume_from(f"{GOLDEN_MOUNT}/{DEVICE_STATE}")

    def _wait_ready(self, endpoint: GuestEndpoint, interval: float | None = None) -> None:
        """A clone answers a fraction of a second after its state is loaded: poll it closely, not once a second."""
        super()._wait_ready(endpoint, interval or (0.01 if self.reset_path == "template" else None))

    def _resume_from(self, state: str) -> None:
        """Migrate ``state`` (a path in the container) into the new QEMU, waiting with ``-incoming defer`` over a
        private mapping of the template's RAM, and run it."""
        monitor = self._monitor()
        wait_until(monitor.listening, LOAD_TIMEOUT, interval=0.005, what=f"{self.ownership.env_name}'s QEMU monitor",
                   error=lambda message: SnapshotError(message, env=self.ownership.env_name, phase="snapshot",
                                                       hint="the desktop is restarted"))
        monitor.load_devices(state, timeout=LOAD_TIMEOUT)

    def revert(self) -> bool:
        """Put the VM back to its golden state: a fresh QEMU from the template in the same container (the
        episode's RAM and disk overlay are dropped with the old one), or the snapshot loaded into the running
        VM; False on an image without snapshot resets, or a clone whose template's RAM file is gone."""
        if not self._snapshot_resets or self._endpoint is None or self.qmp_socket is None:
            return False
        with contextlib.suppress(RayEnvError):  # the last swap's clock: this revert replaces its QEMU either way
            self.settle()
        if self.reset_path == "template":
            if self._golden is None or not self.store.has_template(self._golden):
                return False  # restarted: start() then takes the snapshot path
            if self._take_spare():  # its guest answered its warm-up seconds ago: the clock follows in the background
                self._settling = self._background.submit(self._ready_now)
                return True
            self._next_qemu(f"{GOLDEN_MOUNT}/{DEVICE_STATE}")
        else:
            self._monitor().load_snapshot(GOLDEN_SNAPSHOT, timeout=LOAD_TIMEOUT)
        self._ready_now()
        return True

    def settle(self) -> None:
        """Wait until the guest's clock is set after a swap to the warm spare. A reset returns once the spare
        runs with the guest's ports (its observation comes from QEMU's display), the clock's round trip to
        the guest (~0.1 s under TCG) overlapping what the trainer does next; any request to the guest, and
        any other change of this desktop's QEMU, waits for it first."""
        settling = self._settling
        if settling is not None:
            settling.result()
            self._settling = None

    def spare_ready(self) -> bool:
        """A warm spare is loaded and paused in this desktop's container: the next reset swaps it in (else it
        starts and loads a fresh QEMU, as it does right after another reset, while the next spare loads)."""
        return self.reset_path == "template" and self.work_dir is not None and (self.work_dir / SPARE_READY).exists()

    def save_fork(self) -> Path:
        """Save the running clone's state (devices, the RAM it wrote over its template's, a copy of its disk
        overlay) for :meth:`load_fork` of desktops of its shape on this host; the VM is paused meanwhile and
        then runs on. The saved state is a directory in this desktop's work dir, replaced by its next fork and
        removed with it."""
        self.settle()
        if self.reset_path != "template" or self.work_dir is None or self._golden is None:
            raise ProviderUnavailable("only a VM desktop started from a template (copy-on-write RAM) can fork",
                                      env=self.ownership.env_name, phase="fork",
                                      hint=f"this desktop resets by {self.reset_path or 'restarting'}")
        fork = self.work_dir / FORK_DIR
        shutil.rmtree(fork, ignore_errors=True)
        fork.mkdir()
        monitor = self._monitor()
        monitor.execute("stop")
        try:
            self._send_written(monitor, fork)
            copy_sparse(self.work_dir / OVERLAY, fork / OVERLAY, env=self.ownership.env_name)
            (fork / FORK_GOLDEN).write_text(self._golden)
        finally:
            monitor.execute("cont")  # also takes the disk back, which the finished migration let go
        return fork

    def _send_written(self, monitor: Monitor, fork: Path) -> None:
        """Migrate the stopped VM into ``fork``'s state without the template's pages it has not written (QEMU's
        stream carries every page of a private mapping: :mod:`rayenv.providers.written` filters it on the way)."""
        env = self.ownership.env_name
        try:
            written = written_pages(monitor.pid(), f"{GOLDEN_RAM_MOUNT}/{RAM_FILE}")
        except PermissionError as exc:  # QEMU runs as another user (root) than this host's Ray, which is not root
            written = None
            logger.warning("%s: the fork saves all of the desktop's RAM, not only what it wrote (%s): reading QEMU's "
                           "page map needs this host's Ray to run as QEMU's user (root)", env, exc)
        except (OSError, StreamError) as exc:
            raise SnapshotError(f"could not tell which RAM the desktop wrote: {exc}", env=env, phase="fork",
                                hint="the fork was not saved; the desktop runs on") from None
        with receiving(fork / FORK_STREAM, fork / FORK_STATE, written, SAVE_TIMEOUT) as received:
            try:
                monitor.send(f"unix:{WORK_MOUNT}/{FORK_DIR}/{FORK_STREAM}", timeout=SAVE_TIMEOUT)
                kept = received.result(timeout=SAVE_TIMEOUT)
            except (OSError, StreamError, SnapshotError) as exc:
                cause = (received.done() and received.exception()) or exc  # the filter's reason before QEMU's pipe
                reason = cause.message if isinstance(cause, RayEnvError) else str(cause)
                raise SnapshotError(f"could not save the fork's state: {reason}", env=env, phase="fork",
                                    hint="the fork was not saved; the desktop runs on") from None
        logger.info("%s: fork saved, %d MiB (%d pages kept, %d of the template's left out)", env,
                    kept.bytes >> 20, kept.pages, kept.dropped)

    def load_fork(self, fork: Path) -> None:
        """Become a branch of the fork saved in ``fork`` (by :meth:`save_fork` of a desktop of this shape on this
        host): a fresh QEMU in this container, mapping the template like any clone, on a copy of the fork's
        overlay, with its devices and written RAM migrated in. It returns once the branch runs; the guest's
        clock is set in the background, as after a reset's swap (:meth:`settle`)."""
        if self.reset_path != "template" or self.work_dir is None:
            raise ProviderUnavailable("only a VM desktop started from a template can take a fork's state",
                                      env=self.ownership.env_name, phase="fork",
                                      hint=f"this desktop resets by {self.reset_path or 'restarting'}")
        with contextlib.suppress(RayEnvError):  # the last swap's clock: the branch replaces its QEMU either way
            self.settle()
        if not (fork / FORK_STATE).exists():
            raise ProviderUnavailable(f"no saved fork in {fork} on this host", env=self.ownership.env_name,
                                      phase="fork", hint="fork into desktops on the forked desktop's env host")
        if (fork / FORK_GOLDEN).read_text() != self._golden:
            raise ProviderUnavailable("the fork was saved by a desktop of another VM shape", env=self.ownership.env_name,
                                      phase="fork", hint="fork into desktops of the forked desktop's pool")
        copy_sparse(fork / OVERLAY, self.work_dir / NEXT_OVERLAY, env=self.ownership.env_name)
        state = self.work_dir / FORK_STATE
        state.unlink(missing_ok=True)
        try:  # work dirs share work_root(): the state is only read, so one file serves every branch
            os.link(fork / FORK_STATE, state)
        except OSError:
            copy_sparse(fork / FORK_STATE, state, env=self.ownership.env_name)
        try:
            self._next_qemu(f"{WORK_MOUNT}/{FORK_STATE}")
        finally:
            state.unlink(missing_ok=True)
        self._settling = self._background.submit(self._ready_now)

    def _written(self, path: Path) -> None:
        """Wait until a saved state is whole at ``path`` on the host (see :meth:`Monitor.save_devices`)."""
        wait_until(path.exists, SAVE_TIMEOUT, interval=0.005, what=f"{path.name} written",
                   error=lambda message: SnapshotError(message, env=self.ownership.env_name, phase="snapshot",
                                                       hint="is the host's disk full?"))

    def _next_qemu(self, state: str) -> None:
        """Quit this QEMU; the entrypoint starts a fresh one (-incoming defer), which loads ``state`` and runs."""
        episode = Monitor(self._running(MONITOR), env=self.ownership.env_name)  # its own socket, never reused
        (self._work() / RESTART_REQUEST).touch()
        _quit(episode)
        wait_until(lambda: not episode.listening(), 30, interval=0.005, what="the episode's QEMU exiting",
                   error=lambda message: SnapshotError(message, env=self.ownership.env_name, phase="snapshot",
                                                       hint="the desktop is restarted"))
        self._resume_from(state)

    def _take_spare(self) -> bool:
        """Swap the container's warm spare in for the episode's QEMU, over both monitors (no process started in the
        container on the way): the episode's VM pauses and lets go of the guest's ports, the spare takes them and
        runs, the work dir's names move to it, and the old QEMU is quit (the entrypoint, told by ``SWAPPED``,
        adopts the spare and starts the next one). False where no spare is ready: nothing was touched."""
        work = self._work()
        try:
            number = (work / SPARE_READY).read_text().strip()
        except FileNotFoundError:
            return False
        (work / SPARE_READY).unlink()
        env = self.ownership.env_name
        forwards = (work / FORWARDS).read_text().split()
        episode, spare = Monitor(self._running(MONITOR), env=env), Monitor(work / f"qemu-{number}.sock", env=env)
        episode.let_go(forwards, timeout=10)
        try:
            spare.take_over(forwards, timeout=10)
        except SnapshotError:  # a spare that cannot run: the episode's QEMU is quit and a fresh one loaded instead
            _quit(spare)
            self._next_qemu(f"{GOLDEN_MOUNT}/{DEVICE_STATE}")
            return True
        (work / SWAPPED).write_text(number)
        for name, target in ((OVERLAY, f"disk-{number}.qcow2"), (DISPLAY, f"vnc-{number}.sock"),
                             (MONITOR, f"qemu-{number}.sock")):
            _point(work / name, target)
        _quit(episode)
        return True

    def _running(self, name: str) -> Path:
        """The numbered file a work dir name links to now (the episode's QEMU's own: it stays that QEMU's)."""
        return (self._work() / name).resolve()

    def _ready_now(self) -> None:
        """Wait for the guest after a load (it answers ~0.2-0.5 s later): its first answer is to setting its
        clock, one round trip instead of a readiness probe and then the clock."""
        wait_until(self._clock_set, LOAD_TIMEOUT, interval=0.01, what=f"{self.ownership.env_name}'s guest answering",
                   error=lambda message: SnapshotError(message, env=self.ownership.env_name, phase="snapshot",
                                                       hint="the desktop is restarted"))

    def _monitor(self) -> Monitor:
        assert self.qmp_socket is not None
        return Monitor(self.qmp_socket, env=self.ownership.env_name)

    def _work(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir

    def _snapshots(self) -> bool:
        """Snapshot resets are on and the image's entrypoint takes a work dir and ``LOADVM`` (ours does)."""
        if not self.spec.snapshot_reset or not containers.image_exists(self.spec.docker_image):
            return False  # a missing image is refused by start() with how to get it
        labels = containers.client().images.get(self.spec.docker_image).labels or {}
        return KERNEL_LABEL in labels

    def _golden_key(self) -> GoldenKey:
        kvm = self._kvm or kvm_status(self.spec.docker_image)
        image = containers.client().images.get(self.spec.docker_image).id
        return GoldenKey.for_vm(self._vm_path(), image, self.spec.docker_memory, self.spec.docker_cpus,
                                (self.spec.screen_width, self.spec.screen_height), "kvm" if kvm.available else "tcg",
                                self.spec.vm_boot)

    def _make_golden(self, directory: Path, ram_directory: Path) -> None:
        """Boot a desktop into ``directory`` with its RAM in ``ram_directory``, let it settle, stop it, save
        its snapshot and its template's device state (one instant), quit its VM (overlay and RAM file stay)."""
        started = time.monotonic()
        maker = DockerProvider(self.spec.model_copy(update={"snapshot_reset": False}),
                               replace(self.ownership, env_name=f"{self.ownership.env_name}-golden"), work_dir=directory,
                               template_ram=ram_directory)
        try:
            endpoint = maker.start()
            time.sleep(SETTLE_SECONDS)
            _record_pointer(endpoint, directory / POINTER)
            monitor = Monitor(directory / MONITOR, env=maker.ownership.env_name)
            monitor.execute("stop")
            monitor.save_snapshot(GOLDEN_SNAPSHOT, timeout=SAVE_TIMEOUT)
            monitor.save_devices(f"{WORK_MOUNT}/{DEVICE_STATE}", timeout=SAVE_TIMEOUT)
            maker._written(directory / DEVICE_STATE)
            monitor.quit()
            maker._container.wait(timeout=60)
        finally:
            maker.stop()
        logger.info("%s: golden state %s made in %.1fs", self.ownership.env_name, directory.name, time.monotonic() - started)

    def pristine_pointer(self) -> tuple[int, int] | None:
        """Where the golden state's pointer is (asked of the guest once, when the golden state was made)."""
        if self._golden is None:
            return None
        try:
            x, y = (self.store.directory(self._golden) / POINTER).read_text().split()
            return int(x), int(y)
        except (OSError, ValueError):  # a golden state made before rayenv recorded it
            return None

    def _save(self, name: str) -> None:
        assert self.qmp_socket is not None
        Monitor(self.qmp_socket, env=self.ownership.env_name).save_snapshot(name, timeout=SAVE_TIMEOUT)

    def _set_guest_clock(self) -> None:
        """Set the guest's clock to the host's; the guest must be up."""
        if not self._clock_set():
            raise SnapshotError("could not set the guest's clock after loading its snapshot: the guest does not answer",
                                env=self.ownership.env_name, phase="snapshot", hint="the desktop is restarted")

    def _clock_set(self) -> bool:
        """A loaded snapshot resumes the guest's clock where it was saved: set it to the host's. False while the
        guest does not answer yet; raises where it answered that it could not.

        Through :data:`CLOCK_ROUTE` where the guest has it; else (OSWorld's own server, which answers 404) through
        ``/setup/execute``, a route OSWorld's server has too: it runs as ``user``, so ``date`` goes through
        ``sudo -S`` with the client password (ours runs as root)."""
        assert self._endpoint is not None
        try:
            if self._clock_route:
                answer = requests.post(self._endpoint.url + CLOCK_ROUTE, json={"seconds": time.time()}, timeout=15)
                if answer.ok:
                    return True
                self._clock_route = answer.status_code not in (403, 404, 405)
                if self._clock_route:
                    return self._clock_refused(answer)
            command = {"command": SET_CLOCK.format(seconds=f"{time.time():.3f}", password=self.spec.client_password),
                       "shell": True, "timeout": 10}
            answer = requests.post(self._endpoint.url + "/setup/execute", json=command, timeout=15)
        except requests.RequestException:
            return False
        try:
            done = answer.json()
        except ValueError:
            done = {}
        return True if done.get("returncode") == 0 else self._clock_refused(answer)

    def _clock_refused(self, answer: requests.Response) -> NoReturn:
        try:
            said = answer.json()
        except ValueError:
            said = {}
        cause = said.get("error") or said.get("message") or f"HTTP {answer.status_code}: {answer.text[:200]}"
        raise SnapshotError(f"could not set the guest's clock: {cause}", env=self.ownership.env_name,
                            phase="snapshot", hint="the desktop is restarted")

    def _vm_path(self) -> Path:
        """The qcow2 to mount; never downloaded here (a boot window is no place for 10 GB)."""
        return locate_vm_image(self.spec.vm_path, self.spec.vm_url or OSWORLD_UBUNTU_URL, image=self.spec.docker_image,
                               env=self.ownership.env_name)

    def container_options(self) -> dict[str, Any]:
        env_name = self.ownership.env_name
        # what fails at once first: the KVM check may boot a probe VM (seconds), and of another image than a missing one
        qcow2 = self._vm_path()
        containers.require_image(self.spec.docker_image, env_name)
        kvm = self._kvm = kvm_status(self.spec.docker_image)
        if not kvm.available and self.spec.require_kvm:
            raise ProviderUnavailable(f"KVM does not work here: {kvm.message}", env=env_name, phase="boot",
                                      hint="enable nested virtualization for this VM, or set require_kvm: false")
        environment = {"DISK_SIZE": "32G", "RAM_SIZE": self.spec.docker_memory, "CPU_CORES": str(self.spec.docker_cpus),
                       "BOOT_MODE": self.spec.vm_boot,
                       "SCREEN_WIDTH": str(self.spec.screen_width), "SCREEN_HEIGHT": str(self.spec.screen_height)}
        if not kvm.available:
            environment["KVM"] = "N"
            logger.warning("%s: running QEMU without KVM (slow): %s", env_name, kvm.message)
        self._prepare_work_dir()
        self.screen_dir = make_screen_dir(self.ownership.owner, self.ownership.env_name)
        labels = {LABEL_WORKDIR: str(self.work_dir)} if self._given_work_dir is None else {}
        labels[LABEL_SCREENDIR] = str(self.screen_dir)
        if self._spare_for is not None:
            labels[LABEL_SPARE] = self._spare_for
        volumes = {str(qcow2): {"bind": "/System.qcow2", "mode": "ro"},
                   str(self.work_dir): {"bind": WORK_MOUNT, "mode": "rw"},
                   str(self.screen_dir): {"bind": SCREEN_MOUNT, "mode": "rw"}}
        if self._template_ram is not None:
            environment["TEMPLATE"] = "save"
            volumes[str(self._template_ram)] = {"bind": GOLDEN_RAM_MOUNT, "mode": "rw"}
        if self._golden is not None:
            labels[LABEL_GOLDEN] = self._golden
            if self.reset_path == "template":  # a private mapping of the RAM file: QEMU opens it read-write
                environment["TEMPLATE"] = "clone"
                environment["SPARE"] = "0" if self.spec.warm_spare is False else "1"
                volumes[str(self.store.directory(self._golden))] = {"bind": GOLDEN_MOUNT, "mode": "ro"}
                volumes[str(self.store.ram_directory(self._golden))] = {"bind": GOLDEN_RAM_MOUNT, "mode": "rw"}
            else:  # its overlay, copied from the golden state, holds the snapshot to load
                environment["LOADVM"] = GOLDEN_SNAPSHOT
        return {"image": self.spec.docker_image, "environment": environment, "cap_add": ["NET_ADMIN"], "init": True,
                "ports": [GUEST_PORT, CHROMIUM_PORT, VNC_PORT, VLC_PORT],
                "devices": [f"{kvm.device}:/dev/kvm:rwm"] if kvm.available else [],
                "labels": labels, "volumes": volumes}

    def endpoint(self, ports: dict[int, int]) -> GuestEndpoint:
        return GuestEndpoint("127.0.0.1", ports[GUEST_PORT], extra_ports={
            "chromium": ports[CHROMIUM_PORT], "vnc": ports[VNC_PORT], "vlc": ports[VLC_PORT]})

    def _prepare_work_dir(self) -> None:
        if self.work_dir is None:
            if self._given_work_dir is not None:
                self.work_dir = self._given_work_dir
            else:
                work_root().mkdir(parents=True, exist_ok=True)
                self.work_dir = Path(tempfile.mkdtemp(prefix=f"{self.ownership.owner}-{self.ownership.env_name}-",
                                                      dir=work_root()))

    def stop(self) -> None:
        if self._making is not None:  # a host spare half made would be nobody's
            concurrent.futures.wait([self._making], timeout=LOAD_TIMEOUT)
            self._making = None
        try:
            super().stop()
        finally:  # the directories go even where the container's removal failed (the reaper retries that)
            if self.work_dir is not None and self._given_work_dir is None:  # also when the container never started
                shutil.rmtree(self.work_dir, ignore_errors=True)
            if self.screen_dir is not None:
                shutil.rmtree(self.screen_dir, ignore_errors=True)
                self.screen_dir = None
        self.work_dir, self._endpoint, self._golden, self.reset_path, self.adopted = None, None, None, None, False
        self._settling = None  # a clock still being set gives up: its guest is gone

    def display(self) -> QemuDisplay | None:
        """QEMU's display, where the image says its guest draws the desktop (else the guest's screenshots)."""
        if self._endpoint is None or self.screen_dir is None or self.qmp_socket is None:
            return None
        if self._draws is None:
            labels = containers.client().images.get(self.spec.docker_image).labels or {}
            self._draws = labels.get(DISPLAY_LABEL) == "qemu"
        if not self._draws:
            return None
        return QemuDisplay(Monitor(self.qmp_socket, env=self.ownership.env_name), f"{SCREEN_MOUNT}/{SCREEN_DUMP}",
                           self.screen_dir / SCREEN_DUMP)

    @property
    def qmp_socket(self) -> Path | None:
        """QEMU's monitor for this desktop (host side), for snapshot control; None when not started."""
        return self.work_dir / MONITOR if self.work_dir is not None else None

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        if self._kvm is not None:
            facts.update(kvm_available=self._kvm.available, kvm=self._kvm.message)
        if self.work_dir is not None:
            facts["work_dir"] = str(self.work_dir)
        if self._golden is not None:
            facts["golden_state"] = self._golden
        if self._endpoint is not None:
            facts["screenshots"] = "QEMU's display (QMP screendump)" if self.display() else "guest GET /screenshot"
        if self.reset_path is not None:
            facts["reset_path"] = self.reset_path
        if self.reset_path == "template":
            facts["warm_spare"] = "ready" if self.spare_ready() else "booting"
        if self.adopted:
            facts["started_as"] = "host spare"
        return facts


def _record_pointer(endpoint: GuestEndpoint, path: Path) -> None:
    """Write where the guest's pointer is to ``path`` (``x y``): the golden state's, which every desktop started or
    reset from it would otherwise ask its guest for, cold. A guest that cannot say leaves no file."""
    try:
        x, y = requests.get(endpoint.url + "/cursor_position", timeout=30).json()
        path.write_text(f"{int(x)} {int(y)}")
    except (requests.RequestException, ValueError, TypeError) as exc:
        logger.info("the golden state's pointer is not known (%s): desktops ask their guest", exc)


def _quit(monitor: Monitor) -> None:
    """Ask a QEMU to exit, without waiting for it to (the caller waits, or the entrypoint does): one that closed its
    monitor before its socket was gone is not an error here."""
    with contextlib.suppress(SnapshotError):
        monitor.quit()


def _point(link: Path, target: str) -> None:
    """Make ``link`` a symbolic link to ``target`` (relative) in one rename: a reader finds the old file or the new."""
    fresh = link.with_name(link.name + ".new")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(target)
    os.replace(fresh, link)
