#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what it needs, then runs pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --trainer
scripts/verl-venv.sh >/dev/null   # the verl trainer virtualenv (numpy 2, no desktop-env)
exec .venv/bin/python -m pytest --durations=30 "$@"   # the slowest 30 in the log: where CI time goes
