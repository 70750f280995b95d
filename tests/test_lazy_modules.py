"""A package whose ``__init__`` imports everything, loaded one submodule at a time (rayenv.env.lazy_modules):
what an env actor does with desktop-env's metrics and getters instead of holding all of them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from rayenv.env.lazy_modules import install_lazy_package


@pytest.fixture
def eager(tmp_path, monkeypatch):
    """A package ``eager`` like desktop-env's metrics: its ``__init__`` imports both submodules and defines one name."""
    root = tmp_path / "eager"
    root.mkdir()
    (root / "__init__.py").write_text("from .light import small\nfrom .heavy import big, bigger as huge\n\n"
                                      "def own():\n    return 'own'\n")
    (root / "light.py").write_text("from .helpers import twice\n\ndef small():\n    return twice('small')\n")
    (root / "heavy.py").write_text("def big():\n    return 'big'\n\ndef bigger():\n    return 'bigger'\n")
    (root / "helpers.py").write_text("def twice(text):\n    return text * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "eager"
    for name in [n for n in sys.modules if n == "eager" or n.startswith("eager.")]:
        del sys.modules[name]


def test_reading_a_name_imports_only_the_submodule_it_comes_from(eager):
    package = install_lazy_package(eager)
    assert package.small() == "smallsmall"
    assert "eager.light" in sys.modules and "eager.heavy" not in sys.modules
    assert package.huge() == "bigger"  # renamed on import, as the __init__ says


def test_a_name_the_init_defines_itself_runs_the_init_once(eager):
    package = install_lazy_package(eager)
    assert package.own() == "own"
    assert "eager.heavy" in sys.modules and package.big() == "big"


def test_a_name_the_package_never_had_is_an_attribute_error_and_loads_nothing(eager):
    package = install_lazy_package(eager)
    assert not hasattr(package, "missing")
    assert [n for n in sys.modules if n.startswith("eager.")] == []


def test_a_package_imported_already_is_left_as_it_is(eager):
    import eager as real  # noqa: F401 - imported the ordinary way first

    assert install_lazy_package(eager) is sys.modules["eager"] and "eager.heavy" in sys.modules


def test_desktop_envs_controllers_load_without_its_metrics_and_a_task_loads_only_its_own():
    """In a fresh interpreter, as in an env actor: the setup controller no longer drags in every metric."""
    probe = textwrap.dedent("""
        import json, sys
        from rayenv.env.evaluation import _desktop_env
        python_controller, setup_controller, getters, metrics = _desktop_env()
        before = sorted(n for n in ("torch", "pandas", "librosa", "cv2", "easyocr") if n in sys.modules)
        assert callable(metrics.compare_table) and callable(getters.get_vm_file)
        print(json.dumps({"heavy_before_a_task": before, "table": "pandas" in sys.modules,
                          "metric_modules": sorted(n for n in sys.modules if n.startswith("desktop_env.evaluators.metrics."))}))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["heavy_before_a_task"] == []
    assert seen["table"]  # the table metric needs pandas: a task naming it still gets it
    assert set(seen["metric_modules"]) <= {"desktop_env.evaluators.metrics.utils", "desktop_env.evaluators.metrics.table"}
