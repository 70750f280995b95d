#!/usr/bin/env bash
# Creates (once) the trainer-side virtualenv for the verl integration and prints its path.
#
#   CPU torch 2.13.0 first (on this machine pip takes it from a local file; a plain `pip install verl`
#   would pull a CUDA torch and ~15 NVIDIA wheels), then verl[verl-core]==0.9.1, then what verl's
#   agent-loop code and main_ppo import but do not declare (cachetools, uvicorn, transferqueue for
#   `import transfer_queue`), then rayenv itself without dependencies (`pip install --no-deps -e .`, so
#   `import rayenv` and the `rayenv` command work from any directory) plus its light dependencies.
#   Never desktop-env: the trainer side runs numpy 2, the env host numpy 1.
#
# Ray: all nodes of one Ray cluster run the same Ray version. The pin is the `ray[default]==X` of
# pyproject.toml's `verl` extra (what `pip install '.[verl]'` installs on a cluster); RAYENV_RAY_VERSION
# overrides it for a cluster that runs another Ray. `rayenv worker start` refuses an env host whose Ray
# differs from the head's.
#
# The venv lives in $RAYENV_CACHE/venvs/verl-<hash> (default ~/.cache/rayenv), keyed by the package
# list below, the Ray pin and the Python version; `.venv-verl` in the checkout links to it. A second run
# with nothing changed only checks the editable rayenv install (a second or two).
# Usage: scripts/verl-venv.sh [--print]   (--print: only print the path the venv would have)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${RAYENV_CACHE:-$HOME/.cache/rayenv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${RAYENV_TORCH:-torch==2.13.0}
VERL_SPEC="verl[verl-core]==0.9.1"
EXTRAS=(cachetools uvicorn transferqueue)
LIGHT_DEPS=("pydantic>=2.6" "pyyaml>=6" "typer>=0.12" "rich>=13" "tenacity>=8" "requests>=2.31" "docker>=7"
            "fastapi>=0.110" "uvicorn>=0.29" pyarrow pandas pytest pytest-timeout psutil matplotlib)
log() { printf '\033[1m[verl-venv]\033[0m %s\n' "$*" >&2; }

ray_pin() {  # the Ray of pyproject.toml's verl extra: the cluster's Ray
  sed -n 's/.*"ray\[default\]==\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -1
}

RAY_VERSION=${RAYENV_RAY_VERSION:-$(ray_pin)}
[ -n "$RAY_VERSION" ] || { log "no ray[default]==X in pyproject.toml's verl extra and no RAYENV_RAY_VERSION"; exit 1; }
recipe="$TORCH_SPEC $VERL_SPEC ${EXTRAS[*]} ${LIGHT_DEPS[*]} ray==$RAY_VERSION"  # what the venv contains
hash=$( (echo "$recipe"; "$PYTHON" --version) | sha256sum | cut -c1-12)
VENV=$CACHE/venvs/verl-$hash
if [ "${1:-}" = "--print" ]; then echo "$VENV"; exit 0; fi

if [ ! -f "$VENV/.complete" ]; then
  started=$SECONDS
  log "creating $VENV (first run only; ~2 GB, several minutes)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  pip() { "$VENV/bin/pip" install -q --progress-bar on "$@" >&2; }
  pip -U pip
  log "1/4 CPU $TORCH_SPEC"
  pip "$TORCH_SPEC"
  ray=("ray[default]==$RAY_VERSION")
  log "2/4 $VERL_SPEC ${ray[*]}"
  pip "$TORCH_SPEC" "$VERL_SPEC" "${ray[@]}"
  log "3/4 what verl's agent loop imports but does not declare: ${EXTRAS[*]}"
  pip "$TORCH_SPEC" "${EXTRAS[@]}" "${ray[@]}"
  log "4/4 rayenv's light dependencies"
  pip "$TORCH_SPEC" "${LIGHT_DEPS[@]}" "${ray[@]}"
  "$VENV/bin/python" - <<'EOF' >&2
import importlib.util, sys
import numpy, torch, verl
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopWorker  # noqa: F401
assert importlib.util.find_spec("desktop_env") is None, "desktop-env must not be in the trainer venv"
print(f"verl {verl.__version__}, torch {torch.__version__}, numpy {numpy.__version__}", file=sys.stderr)
EOF
  touch "$VENV/.complete"
  log "done in $((SECONDS - started))s, $(du -sh "$VENV" | cut -f1)"
  find "$CACHE/venvs" -maxdepth 1 -name "verl-*" ! -path "$VENV" -exec rm -rf {} + 2>/dev/null || true
fi
installed() {  # rayenv importable (from this checkout) and on PATH, seen from outside the checkout
  [ -x "$VENV/bin/rayenv" ] && (cd / && env -u PYTHONPATH "$VENV/bin/python" -c \
    "import rayenv, sys; sys.exit(not rayenv.__file__.startswith('$ROOT/'))") 2>/dev/null
}
if ! installed; then
  "$VENV/bin/pip" install -q --no-deps -e "$ROOT" >&2
  installed || { log "rayenv is not importable from $VENV outside $ROOT"; exit 1; }
fi
ln -sfn "$VENV" "$ROOT/.venv-verl"
echo "$VENV"
