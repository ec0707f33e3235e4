#!/usr/bin/env bash
# The browser tests, each in headless Chromium against a three-node cluster started with
# cluster/local on free ports, screenshots under docs/screenshots/ (or $SCREENSHOT_DIR):
#   console.py    the web console
#   live_flow.py  Web-STOMP: examples/live-flow (served at /live-flow/) and the npm @stomp/stompjs
# Both run; the script fails if either fails. Installs what they need: Debian's chromium and
# chromium-driver (apt, when missing), a venv with selenium and pika
# (${WARREN_BROWSER_VENV:-$CARGO_TARGET_DIR/browser-venv}) and @stomp/stompjs from npm (pinned, under
# $CARGO_TARGET_DIR/npm-stomp; Debian's npm with apt when npm is missing).
# Needs the warren binary (cargo build -p warren; WARREN_BIN to use another).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${WARREN_BROWSER_VENV:-${CARGO_TARGET_DIR:-$root/target}/browser-venv}"
stompjs_dir="${CARGO_TARGET_DIR:-$root/target}/npm-stomp"
stompjs_version=7.5.0

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "run.sh: chromium and chromium-driver are missing (sudo apt-get install chromium chromium-driver)" >&2
        exit 1
    fi
    echo "run.sh: installing Debian's chromium and chromium-driver" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

stompjs="$stompjs_dir/node_modules/@stomp/stompjs"
if [ ! -f "$stompjs/bundles/stomp.umd.min.js" ] ||
    ! grep -q "\"version\": \"$stompjs_version\"" "$stompjs/package.json"; then
    if ! command -v npm >/dev/null 2>&1; then
        if [ "$(id -u)" != 0 ]; then
            echo "run.sh: npm is missing (sudo apt-get install npm)" >&2
            exit 1
        fi
        echo "run.sh: installing Debian's npm" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
    fi
    echo "run.sh: installing @stomp/stompjs@$stompjs_version under $stompjs_dir" >&2
    mkdir -p "$stompjs_dir"
    npm install --prefix "$stompjs_dir" --no-audit --no-fund --loglevel=error \
        "@stomp/stompjs@$stompjs_version" >&2
fi
export STOMPJS_DIR="$stompjs_dir"

# shellcheck source=tests/python/venv.sh
source "$root/tests/python/venv.sh"
make_venv "$venv" "$here/requirements.txt"
export PYTHONDONTWRITEBYTECODE=1
status=0
"$venv/bin/python" "$here/console.py" "$@" || status=$?
"$venv/bin/python" "$here/live_flow.py" || status=$?
exit "$status"
