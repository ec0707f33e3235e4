#!/usr/bin/env bash
# Python client tests: installs pika and kombu into venvs (reused when their requirements did not
# change), then runs pytest. Against a running broker: WARREN_TEST_URL=amqp://... bash run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv_base="${WARREN_PY_VENV:-${CARGO_TARGET_DIR:-$root/target}/py-venv}"

make_venv() { # dir requirements-file
    local dir="$1" req="$2" stamp
    stamp="$(sha256sum "$req" | cut -c1-16)"
    if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" ]]; then
        return
    fi
    rm -rf "$dir"
    if ! python3 -m venv "$dir" 2>/dev/null; then
        apt-get install -y -q python3-venv >/dev/null
        python3 -m venv "$dir"
    fi
    "$dir/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$stamp" > "$dir/.stamp"
}

make_venv "$venv_base" "$here/requirements.txt"
make_venv "$venv_base-pika013" "$here/requirements-pika013.txt"
export WARREN_PY_LEGACY="$venv_base-pika013/bin/python"
cd "$here"
exec "$venv_base/bin/python" -m pytest -q -p no:cacheprovider "$@"
