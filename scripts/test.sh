#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what it needs, then runs pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --trainer
# The whole suite boots five images. On a cold machine they build in the background while the tests that need
# none run (a test that needs one waits on that image's build lock, then finds it); cached by content, so on a
# warm machine this takes seconds. A failed build shows in the test that needs the image, and in the log.
builder=
if [ $# -eq 0 ]; then
  images_log=${RAYENV_CACHE:-$HOME/.cache/rayenv}/images.log
  (
    for build in "desktop build" "vm build" "vm standin" "desktop build --profile osworld" "vm build --profile osworld"
    do .venv/bin/rayenv $build || echo "rayenv $build failed"; done
  ) >"$images_log" 2>&1 &
  builder=$!
fi
scripts/verl-venv.sh >/dev/null   # the verl trainer virtualenv (numpy 2, no desktop-env)
status=0
if [ $# -gt 0 ]; then
  .venv/bin/python -m pytest --durations=30 "$@" || status=$?   # the slowest 30 in the log: where CI time goes
else
  # Two streams at once, then what must run alone. The VM desktops (TCG) and the network-namespace tests spend
  # most of their time waiting on guests and links; the rest waits on containers and Ray. Each stream keeps its
  # own ports and pytest temp dir; the slowest 20 of each and a JUnit file per stream show where CI time goes
  # (results/ beside the image log). The netns tests stay in one stream: their testbeds share one user, whose
  # home each testbed sets to its own.
  results=${RAYENV_CACHE:-$HOME/.cache/rayenv}/test-results
  mkdir -p "$results"
  stream() {  # NAME MARKERS: one pytest run of the tests MARKERS selects (a crash after pytest's own end, in the
    # interpreter's teardown, still prints every thread's stack: PYTHONFAULTHANDLER outlives pytest's handler)
    PYTHONFAULTHANDLER=1 .venv/bin/python -m pytest -m "$2" -p no:cacheprovider --basetemp="/tmp/rayenv-tests-$1" --durations=20 \
      --junitxml="$results/$1.xml"
  }
  stream vm-netns "(vm or netns) and not exclusive" >"$results/vm-netns.log" 2>&1 &
  beside=$!
  stream rest "not vm and not netns and not exclusive" || status=$?
  wait "$beside" || status=$?
  echo "=== the VM and network-namespace stream, run beside the one above ==="
  cat "$results/vm-netns.log"
  stream alone "exclusive" || status=$?
fi
if [ -n "$builder" ]; then
  wait "$builder"   # long done: every image was needed before the suite could end
  grep "failed$" "$images_log" >&2 || true
fi
exit $status
