#!/usr/bin/env bash
# The web console's browser test (tests/browser/console.py): headless Chromium against a
# three-node cluster started with cluster/local on free ports, screenshots under docs/screenshots/
# (or $SCREENSHOT_DIR). Installs what it needs: Debian's chromium and chromium-driver (apt, when
# missing) and a venv with selenium and pika (${WARREN_BROWSER_VENV:-$CARGO_TARGET_DIR/browser-venv}).
# Needs the warren binary (cargo build -p warren; WARREN_BIN to use another).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${WARREN_BROWSER_VENV:-${CARGO_TARGET_DIR:-$root/target}/browser-venv}"

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "run.sh: chromium and chromium-driver are missing (sudo apt-get install chromium chromium-driver)" >&2
        exit 1
    fi
    echo "run.sh: installing Debian's chromium and chromium-driver" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# shellcheck source=tests/python/venv.sh
source "$root/tests/python/venv.sh"
make_venv "$venv" "$here/requirements.txt"
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" "$here/console.py" "$@"
