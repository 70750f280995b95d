"""What every ``rayenv`` command shares: how a failure ends, ``--json``, hidden old flag spellings, Ray.

A command raises; it does not print its own error or pick an exit code. :class:`RayenvTyper` (the
app and every sub-app) turns what it raised into one or two sentences on stderr (what happened, then
``-> what to do``) and the exit code a script can branch on:

* ``2``: usage or config (:data:`USAGE_ERRORS`: a bad flag, a config typo, a malformed task);
* ``1``: the run failed (a desktop did not boot, no Ray cluster answers, anything unexpected).

The traceback stays behind ``rayenv --debug`` (or ``RAYENV_DEBUG=1``).

A new command complies when it:

* lives on a :class:`RayenvTyper` (sub-apps too) and raises typed :mod:`rayenv.errors` (a
  ``ConfigError`` for a bad value, naming it and the fix in ``hint``): no ``try``/``print``/``Exit``
  of its own for failures; typer's ``min=``/``max=`` refuse a bad number before the body runs;
* takes :func:`json_option` when it reports something: the result on stdout (:func:`print_json`),
  messages and progress (``console``, a spinner for long waits) on stderr;
* names things as the others do: ``--pool`` (a pool's name), ``--pool-config`` (pool YAML),
  ``--tunnel-config`` (tunnel YAML), ``--address`` (Ray head, ``$RAY_ADDRESS``), ``--namespace``;
  on/off options via :func:`flag`; a renamed option keeps its old spelling as :func:`hidden_alias`
  merged with :func:`either`;
* attaches to Ray with :func:`connect_ray` (an explicit address is probed first, so a dead one
  fails in seconds), and says "default: ..." in help with parentheses (rich markup eats brackets);
* adds its usual mistakes to ``tests/test_cli_mistakes.py`` and its documented invocations to a
  doc block that ``tests/test_docs.py`` runs (or marks ``<!-- doc-test: skip REASON -->``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
from typing import Any, Optional, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from ..errors import ConfigError, InvalidTaskConfig, RayEnvError
from ..strict import message
from ..tunnel.preflight import PreflightError

#: Exit code of a usage or config mistake (click's own, for a bad flag).
EXIT_USAGE = 2
#: Exit code of a run that failed.
EXIT_FAILED = 1
#: The errors that mean "you asked for something wrong", not "it did not work". A pre-flight refusal (a port
#: taken, Ray versions that differ) is one: nothing was started, and the fix is to the setup, as with a config.
USAGE_ERRORS = (ConfigError, InvalidTaskConfig, PreflightError)

console = Console(stderr=True)
_debug = {"on": os.environ.get("RAYENV_DEBUG", "") not in ("", "0")}

T = TypeVar("T")


def set_debug(on: bool) -> None:
    """``rayenv --debug``: print the traceback behind every error."""
    _debug["on"] = _debug["on"] or on


class RayenvTyper(typer.Typer):
    """A Typer app whose uncaught errors end in a sentence and an exit code, not a traceback."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("pretty_exceptions_enable", False)
        super().__init__(**kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except KeyboardInterrupt:
            console.print("interrupted")
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the one place every failure is turned into a sentence
            if _debug["on"]:
                traceback.print_exc()
            code, text = explain(exc)
            console.print(text, style="red", markup=False, soft_wrap=True, highlight=False)
            sys.exit(code)


def debug(line: str) -> None:
    """One line on stderr under ``rayenv --debug`` (which path a command took, say); nothing otherwise."""
    if _debug["on"]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def explain(exc: BaseException) -> tuple[int, str]:
    """The exit code and the sentences for ``exc``."""
    if isinstance(exc, RayEnvError):
        return (EXIT_USAGE if isinstance(exc, USAGE_ERRORS) else EXIT_FAILED), f"error: {exc}"
    if isinstance(exc, ValidationError):  # a model built from flags (a config file's errors are ConfigErrors)
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or exc.title}: {message(e)}" for e in exc.errors())
        return EXIT_USAGE, (f"error: {problems}\n  -> fix the flag that sets it (`--help` lists them)")
    if isinstance(exc, ConnectionError) and "ray" in str(exc).lower():
        return EXIT_FAILED, (f"error: no Ray cluster let this command attach ({exc})\n  -> start one (`rayenv head "
                             "start`, or `ray start --head`), or give its address with --address HOST:PORT; a head "
                             "with token auth also needs the RAY_AUTH_* variables `rayenv head start` prints")
    return EXIT_FAILED, (f"error: {type(exc).__name__}: {exc}\n  -> this is unexpected: rerun with "
                         "`rayenv --debug ...` for the traceback and report it")


def flag(name: str, help: str, **options: Any) -> Any:
    """An on/off option: shown in ``--help`` without a value placeholder (it takes none)."""
    return typer.Option(False, name, metavar="", help=help, **options)


def json_option(what: str = "the result") -> Any:
    """The ``--json`` flag every command that reports something takes: ``what`` goes on stdout as JSON."""
    return flag("--json", f"print {what} as JSON on stdout (messages stay on stderr)")


def print_json(value: Any, indent: Optional[int] = 2) -> None:
    """``value`` on stdout as JSON (``indent=None``: one line, for a single small record)."""
    print(json.dumps(value, indent=indent, default=str))


def hidden_alias(flag: str, *, exists: bool = False) -> Any:
    """An old spelling of an option, still accepted (scripts use it) but no longer shown in ``--help``."""
    return typer.Option(None, flag, hidden=True, exists=exists)


def either(new: Optional[T], old: Optional[T], new_flag: str, old_flag: str) -> Optional[T]:
    """The value given under the current flag name or its hidden old spelling; both at once is a mistake."""
    if new is not None and old is not None and new != old:
        raise ConfigError(f"{new_flag} and {old_flag} (its old name) disagree: {new!r} vs {old!r}",
                          hint=f"give only {new_flag}")
    return new if new is not None else old


def connect_ray(address: Optional[str], namespace: Optional[str] = None) -> None:
    """Attach this command to the Ray cluster at ``address`` (default: the one on this machine).

    An explicit address is probed first: Ray itself would retry a dead one for a minute or more.
    """
    import ray

    if address and address != "auto":
        probe(address, "a Ray head", "start it with `rayenv head start` there, or fix --address / $RAY_ADDRESS")
    ray.init(address=address or "auto", namespace=namespace, log_to_driver=False, logging_level="ERROR")


def probe(address: str, what: str, hint: str, timeout: float = 3.0) -> None:
    """Fail at once, with ``hint``, when nothing accepts a TCP connection at ``address`` (``host:port``)."""
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not host:
        raise ConfigError(f"{address!r} is not HOST:PORT", hint="e.g. --address 127.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayEnvError(f"nothing answers at {address} ({exc.strerror or exc}): is {what} running there?",
                          hint=hint) from None

