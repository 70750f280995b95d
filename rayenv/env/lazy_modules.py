"""Packages whose ``__init__`` imports every submodule, loaded one submodule at a time instead.

desktop-env's ``evaluators.metrics`` and ``evaluators.getters`` import all of their modules up front
(every metric of every app: pandas, torch, librosa, ...), and its ``SetupController`` imports
``metrics.utils``, which runs that ``__init__`` too: an env actor held ~850 MiB for it, though one
task needs a handful of functions from one or two modules. :func:`install_lazy_package` puts a stand-in
for such a package in ``sys.modules`` before anything imports it: its submodules import as usual (it
has the real package's path), and reading a name from it (``metrics.compare_table``) imports only
the submodule the real ``__init__`` takes that name from, found by reading that file, not running
it. Only a name the ``__init__`` defines itself (metrics' ``infeasible``) runs the whole real ``__init__``,
once; a name it never had is an ``AttributeError`` as before, so ``hasattr`` checks of a task's names
load nothing they do not name.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path


def _names_in(init: Path) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """Each name the ``__init__`` imports from a submodule (``from .table import compare_table as cmp``) with
    that submodule and the name there, and the names it defines itself (functions, classes, assignments)."""
    sources: dict[str, tuple[str, str]] = {}
    own: set[str] = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            sources.update((alias.asname or alias.name, (node.module, alias.name)) for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Assign):
            own.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return sources, own


class LazyPackage(types.ModuleType):
    """Stands in for a package in ``sys.modules``; reading a name imports only the submodule that defines it."""

    def __init__(self, spec: importlib.machinery.ModuleSpec) -> None:
        super().__init__(spec.name)
        self.__spec__, self.__package__ = spec, spec.name
        self.__path__ = list(spec.submodule_search_locations or [])
        self.__file__ = spec.origin
        self._sources, self._own = _names_in(Path(spec.origin or ""))

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        source = self._sources.get(name)
        if source is not None:
            module, original = source
            value = getattr(importlib.import_module(f"{self.__name__}.{module}"), original)
        elif name in self._own:  # defined in the __init__ itself: run it (once: then every name is set)
            code = compile(Path(self.__file__ or "").read_text(), self.__file__ or self.__name__, "exec")
            exec(code, self.__dict__)  # noqa: S102 - the package's own __init__, as its import would run it
            self._own = set()
            value = self.__dict__[name]
        else:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        setattr(self, name, value)
        return value


def install_lazy_package(name: str) -> types.ModuleType:
    """``name`` as a :class:`LazyPackage`, unless it is imported already (then the real one, as it is)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations or not spec.origin:
        raise ImportError(f"{name} is not an installed package")
    package = LazyPackage(spec)
    sys.modules[name] = package
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(importlib.import_module(parent), child, package)
    return package
