#!/usr/bin/env bash
# The browser tests, each in headless Chromium against a three-node cluster started with
# cluster/local on free ports, screenshots under docs/screenshots/ (or $SCREENSHOT_DIR):
#   console.py    the web console
#   live_flow.py  Web-STOMP: examples/live-flow (served at /live-flow/) and the npm @stomp/stompjs
#   web_mqtt.py   Web-MQTT: the npm mqtt (mqtt.js) with pika and paho-mqtt
# All run; the script fails if any fails. Installs what they need: Debian's chromium and
# chromium-driver (apt, when missing), a venv with selenium, pika and paho-mqtt
# (${WARREN_BROWSER_VENV:-$CARGO_TARGET_DIR/browser-venv}), and from npm (pinned; Debian's npm with
# apt when npm is missing) @stomp/stompjs under $CARGO_TARGET_DIR/npm-stomp and mqtt under
# $CARGO_TARGET_DIR/npm-mqtt.
# Needs the warren binary (cargo build -p warren; WARREN_BIN to use another).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${WARREN_BROWSER_VENV:-${CARGO_TARGET_DIR:-$root/target}/browser-venv}"
stompjs_dir="${CARGO_TARGET_DIR:-$root/target}/npm-stomp"
stompjs_version=7.5.0
mqttjs_dir="${CARGO_TARGET_DIR:-$root/target}/npm-mqtt"
mqttjs_version=5.16.0

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "run.sh: chromium and chromium-driver are missing (sudo apt-get install chromium chromium-driver)" >&2
        exit 1
    fi
    echo "run.sh: installing Debian's chromium and chromium-driver" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# npm_package DIR NAME VERSION FILE: installs NAME@VERSION under DIR unless FILE (in the package)
# is there with that version.
npm_package() {
    local dir=$1 name=$2 version=$3 file=$4 package="$1/node_modules/$2"
    if [ -f "$package/$file" ] && grep -q "\"version\": \"$version\"" "$package/package.json"; then
        return
    fi
    if ! command -v npm >/dev/null 2>&1; then
        if [ "$(id -u)" != 0 ]; then
            echo "run.sh: npm is missing (sudo apt-get install npm)" >&2
            exit 1
        fi
        echo "run.sh: installing Debian's npm" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
    fi
    echo "run.sh: installing $name@$version under $dir" >&2
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$name@$version" >&2
}
npm_package "$stompjs_dir" @stomp/stompjs "$stompjs_version" bundles/stomp.umd.min.js
npm_package "$mqttjs_dir" mqtt "$mqttjs_version" dist/mqtt.min.js
export STOMPJS_DIR="$stompjs_dir" MQTTJS_DIR="$mqttjs_dir"

# shellcheck source=tests/python/venv.sh
source "$root/tests/python/venv.sh"
make_venv "$venv" "$here/requirements.txt"
export PYTHONDONTWRITEBYTECODE=1
status=0
"$venv/bin/python" "$here/console.py" "$@" || status=$?
"$venv/bin/python" "$here/live_flow.py" || status=$?
"$venv/bin/python" "$here/web_mqtt.py" || status=$?
exit "$status"
