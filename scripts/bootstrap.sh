#!/usr/bin/env bash
# Installs everything rayenv needs on a Debian/Ubuntu machine (as root), idempotently:
#   - Debian packages: Docker engine, Xvfb and the desktop apps, debootstrap, sshd, iproute2, ...
#   - a Docker engine that answers (starts dockerd when none does),
#   - the env-host virtualenv (rayenv[osworld,dev]: desktop-env, Ray) and the light trainer-side
#     virtualenv (plain `pip install .`: no desktop-env, no torch).
# Virtualenvs live in $RAYENV_CACHE (default ~/.cache/rayenv), keyed by a hash of pyproject.toml, so a
# second run on the same machine takes seconds. `.venv` in the checkout links to the env-host one.
# Usage: scripts/bootstrap.sh [--no-docker] [--trainer]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${RAYENV_CACHE:-$HOME/.cache/rayenv}
WANT_DOCKER=1; WANT_TRAINER=0
for arg in "$@"; do
  case $arg in
    --no-docker) WANT_DOCKER=0 ;;
    --trainer) WANT_TRAINER=1 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done
log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

APT_PACKAGES=(xvfb xdotool openbox xterm mousepad galculator x11-utils x11-xserver-utils dbus-x11 at-spi2-core python3-pyatspi
  ffmpeg debootstrap openssh-server openssh-client iproute2 iptables socat curl procps psmisc
  chromium)  # chromium: tests/test_dashboard.py drives it with Playwright's client (never `playwright install`)
[ "$WANT_DOCKER" = 1 ] && APT_PACKAGES+=(docker.io)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$WANT_DOCKER" = 1 ] && ! docker info >/dev/null 2>&1; then
  log "no Docker engine answers: starting dockerd (log: $CACHE/dockerd.log)"
  mkdir -p "$CACHE"
  setsid nohup dockerd >"$CACHE/dockerd.log" 2>&1 < /dev/null &   # its own session: it outlives the shell that started it
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see $CACHE/dockerd.log"; exit 1; }
fi

hash=$( (cat pyproject.toml; python3 --version) | sha256sum | cut -c1-12)  # what the venvs contain

make_venv() {  # make_venv NAME PIP_ARGS... ; prints the venv path
  local name=$1; shift
  local venv=$CACHE/venvs/$name-$hash
  if [ ! -f "$venv/.complete" ]; then
    log "creating the $name virtualenv in $venv (first run only; desktop-env alone takes ~5 min)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    local pip_log=$CACHE/pip-$name.log
    if ! { "$venv/bin/pip" install -q -U pip && "$venv/bin/pip" install -q "$@"; } >"$pip_log" 2>&1; then
      grep -v "^WARNING: Location" "$pip_log" | tail -30 >&2
      log "pip install failed; full log: $pip_log"
      exit 1
    fi
    touch "$venv/.complete"
    find "$CACHE/venvs" -maxdepth 1 -name "$name-*" ! -path "$venv" -exec rm -rf {} + 2>/dev/null || true
  fi
  "$venv/bin/pip" install -q --no-deps -e "$ROOT" >&2 2>/dev/null || "$venv/bin/pip" install -q --no-deps -e "$ROOT" >&2
  echo "$venv"
}

ENVHOST=$(make_venv envhost "$ROOT[osworld,dev]")
ln -sfn "$ENVHOST" .venv
if [ "$WANT_TRAINER" = 1 ]; then
  TRAINER=$(make_venv trainer "$ROOT" pytest)
  ln -sfn "$TRAINER" .venv-trainer
fi
# Process desktops run as the unprivileged user rayenv-desktop (rayenv/desktop_lite/process.py), who must
# reach the env-host interpreter and the checkout: let others traverse (not list) the directories above.
id rayenv-desktop >/dev/null 2>&1 || useradd --system --user-group --no-create-home --home-dir /nonexistent \
  --shell /usr/sbin/nologin rayenv-desktop
for path in "$ENVHOST/bin/python" "$(readlink -f "$ENVHOST/bin/python")" "$ROOT/OSWorld/guest"; do
  dir=$(dirname "$path")
  while [ "$dir" != / ]; do chmod o+x "$dir"; dir=$(dirname "$dir"); done
done
# `rayenv` on PATH, as the docs write it: a link to this checkout's env-host venv (root: /usr/local/bin)
if [ -w /usr/local/bin ]; then
  ln -sfn "$ROOT/.venv/bin/rayenv" /usr/local/bin/rayenv
  log "rayenv on PATH: /usr/local/bin/rayenv -> $ROOT/.venv/bin/rayenv"
else
  log "to get rayenv on PATH: export PATH=\"$ROOT/.venv/bin:\$PATH\""
fi
log "ready: env-host venv .venv -> $ENVHOST"
