#!/usr/bin/env bash
# The tests that need no root, run as an unprivileged user (nobody), the way a participant
# without sudo or an ordinary CI runner would: codecs, sessions, explanations, claims, plots.
# Every other test must skip with its reason rather than fail or stop the run.
#   sudo bash scripts/test-nonroot.sh
# Needs root only to set up: a world-readable copy of the tree and a venv from Debian's python3
# (the usual .venv may point into /root, which other users cannot enter).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "error: this script sets up a copy for the user nobody, which needs root" >&2
  echo "fix: sudo bash $0   (or just run .venv/bin/python -m pytest as yourself)" >&2
  exit 2
fi
PY=/usr/bin/python3
[ -x "$PY" ] || { echo "error: $PY is missing (apt-get install python3-venv)" >&2; exit 2; }

work=$(mktemp -d /tmp/tunlab-nonroot.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "==> copying the tree to $work/src"
mkdir -p "$work/src" "$work/home"
git ls-files -z | xargs -0 cp -P --parents -t "$work/src"
echo "==> a venv for the unprivileged run"
"$PY" -m venv "$work/venv"
# the same hash-locked packages as `make setup`, then tunlab without dependencies
"$work/venv/bin/pip" install -q --require-hashes -r "$work/src/requirements.lock" >/dev/null
"$work/venv/bin/pip" install -q --no-deps --no-build-isolation "$work/src" >/dev/null
chmod -R a+rX "$work"
chown nobody "$work/home"
echo "==> the tests, as nobody"
cd "$work/src"
runuser -u nobody -- env HOME="$work/home" PYTHONDONTWRITEBYTECODE=1 MPLCONFIGDIR="$work/home" \
  "$work/venv/bin/python" -m pytest -q -p no:cacheprovider -rfE tests 2>&1 | tail -n 40
exit "${PIPESTATUS[0]}"
