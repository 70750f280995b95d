#!/usr/bin/env bash
# The main job on a fresh Debian machine: install, then run a local pool of real desktops through a
# scripted episode of a sample task. Extra arguments go to `rayenv demo` (e.g. --size 4 --provider process).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/rayenv demo "$@"
