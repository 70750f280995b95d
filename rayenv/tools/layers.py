"""rayenv's layers, lowest first, and a check that every import points down.

A module may import its own package and any package of a lower layer; packages that share a
layer are siblings and never import each other. Run ``python -m rayenv.tools.layers``: it prints
each upward or sideways import and exits 1 if there is one. Imports inside functions count too:
a late import is still an arrow. It also names every use of Ray's private API outside
:mod:`rayenv.cluster_state`, the one module that holds them.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]

#: Lowest first. A name is a subpackage or a top-level module of ``rayenv``.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "types"),              # the words every layer speaks
    ("waiting", "cluster_state"),     # one way to wait; what rayenv asks Ray's GCS
    ("engine",),                      # the host's Docker engine and KVM
    ("desktop_lite",),                # the desktop-lite image from Debian packages; process desktops
    ("desktop_vm",),                  # that desktop as a QEMU VM guest, and the container that boots it
    ("providers",),                   # what runs one desktop: docker (QEMU VM), lite, process
    ("env",),                         # one desktop with the OSWorld contract, and its Ray actor
    ("pool",),                        # many desktops: slots, leases, health, reaping
    ("rollout", "suite"),             # one episode on a leased desktop; OSWorld's task suite checked and run
    ("tunnel",),                      # an env host joining the cluster over ssh
    ("ops", "verl"),                  # the sidecar and the bridge; verl's agent loop and ARPO worker
    ("cli", "tools"),                 # commands
]


def layer_of(unit: str) -> int:
    for index, names in enumerate(LAYERS):
        if unit in names:
            return index
    raise KeyError(f"rayenv.{unit} is in no layer: add it to rayenv.tools.layers.LAYERS")


def unit_of(module: str) -> str | None:
    """``rayenv.pool.handle`` -> ``pool``; the package itself (``rayenv``) has no unit."""
    parts = module.split(".")
    return parts[1] if parts[0] == "rayenv" and len(parts) > 1 else None


def module_name(path: Path, root: Path = PACKAGE_DIR) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = PACKAGE_DIR) -> list[tuple[int, str]]:
    """Every rayenv module ``path`` imports, absolute, with its line."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names] if not node.module else [target]
            found += [(node.lineno, name) for name in names]
    return [(line, name) for line, name in found if name.split(".")[0] == "rayenv"]


def violations(root: Path = PACKAGE_DIR) -> list[str]:
    """``path:line: rayenv.a (layer) imports rayenv.b (layer)`` for every import that does not point down."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        unit = unit_of(module_name(path, root))
        if unit is None:  # rayenv/__init__.py: the public facade, above every layer
            continue
        for line, target in imported_modules(path, root):
            other = unit_of(target)
            if other is None or other == unit:
                continue
            if layer_of(other) >= layer_of(unit):
                found.append(f"{path.relative_to(root.parent)}:{line}: rayenv.{unit} (layer {layer_of(unit)}) imports "
                             f"{target} (layer {layer_of(other)})")
    return found


#: What counts as Ray's private API: ``ray._private``, ``_``-prefixed handle attributes, ``_``-prefixed
#: keyword arguments of ``ray.init``.
PRIVATE_RAY = re.compile(r"ray\._private|handle\._actor_id|\._actor_id\b|\b_temp_dir=")
PRIVATE_RAY_HOME = PACKAGE_DIR / "cluster_state.py"


def private_ray_uses(root: Path = PACKAGE_DIR) -> list[str]:
    """``path:line: text`` for each use of Ray's private API outside :mod:`rayenv.cluster_state`."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if path in (PRIVATE_RAY_HOME, Path(__file__).resolve()):
            continue
        for number, text in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE_RAY.search(text):
                found.append(f"{path.relative_to(root.parent)}:{number}: {text.strip()}")
    return found


def main() -> int:
    found = violations() + private_ray_uses()
    for line in found:
        print(line)
    print(f"{len(found)} import(s) against the layers or private Ray use(s)" if found
          else "every import points down; private Ray only in rayenv.cluster_state")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
