"""The examples in the pool's and the env actor's docstrings run as written (on real process desktops)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

#: A fresh interpreter (its own local Ray, as the examples start it) runs the modules' doctests.
SCRIPT = """
import doctest, sys
import rayenv.env.actor, rayenv.pool.handle, rayenv.pool.slots
failed = 0
for module in (rayenv.pool.slots, rayenv.pool.handle, rayenv.env.actor):  # the pool first: it checks for free units
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    print(module.__name__, result)
    failed += result.failed + (result.attempted == 0)
sys.exit(1 if failed else 0)
"""


def test_the_pool_and_actor_docstring_examples_run_as_written():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "rayenv.pool.handle TestResults(failed=0" in done.stdout
