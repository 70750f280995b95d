"""The source tree's shape: layers a newcomer can read from the folder names, imports only downward,
private Ray in one module, and a README that names every package."""

from __future__ import annotations

import re
from pathlib import Path

from rayenv.tools import layers

REPO = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.parent.name for p in (REPO / "rayenv").glob("*/__init__.py"))
TOP_MODULES = sorted(p.stem for p in (REPO / "rayenv").glob("*.py") if p.name != "__init__.py")


def test_every_import_points_down():
    assert layers.violations() == []


def test_private_ray_names_appear_only_in_cluster_state():
    assert layers.private_ray_uses() == []


def test_every_package_and_top_level_module_has_a_layer_and_every_layer_name_exists():
    named = {name for layer in layers.LAYERS for name in layer}
    assert named == set(PACKAGES) | set(TOP_MODULES)


def test_the_readme_layout_table_names_every_package_and_top_level_directory():
    readme = (REPO / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w./-]+)`", layout))
    for package in PACKAGES:
        assert f"rayenv/{package}/" in named, f"README's layout table misses rayenv/{package}/"
    for directory in ("rayenv/", "OSWorld/", "configs/", "scripts/", "tests/", "bench/", "docs/"):
        assert directory in named, f"README's layout table misses {directory}"


def test_the_check_reports_an_upward_import(tmp_path):
    package = tmp_path / "rayenv"
    (package / "engine").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "engine" / "__init__.py").write_text("")
    (package / "engine" / "bad.py").write_text("from ..pool.handle import EnvPool\n")
    assert [line.split(": ", 1)[1] for line in layers.violations(package)] == [
        "rayenv.engine (layer 2) imports rayenv.pool.handle (layer 7)"]


def test_the_desktop_and_its_actor_keep_the_env_contract():
    import inspect

    from rayenv.env.actor import OSWorldEnv
    from rayenv.env.contract import EnvContract
    from rayenv.env.desktop import Desktop

    actor_class = OSWorldEnv.__ray_metadata__.modified_class
    for implementation in (Desktop, actor_class):
        for method in ("reset", "step", "evaluate", "observe", "close", "status"):
            contract = inspect.signature(getattr(EnvContract, method))
            mine = [name for name in inspect.signature(getattr(implementation, method)).parameters
                    if not name.startswith("_ray")]  # Ray's tracing hook on actor methods
            assert mine == list(contract.parameters), f"{implementation.__name__}.{method}"
