#!/usr/bin/env bash
# Python client tests (pika 1.3, pika 0.13, kombu) against a Warren node they start, a Warren
# cluster they start (WARREN_TEST_NODES=3), or a broker already running:
# WARREN_TEST_URL=amqp://guest:guest@host:port/ (comma-separated URLs for a cluster's nodes; the
# tests spread their connections over them). See conftest.py.
#
# Venvs: ${WARREN_PY_VENV:-${CARGO_TARGET_DIR:-<repo>/target}/py-venv} (pika 1.x, kombu, pytest)
# and the same path with suffix -pika013 (pika 0.13 for the blog's old-API programs). pip runs
# only when a venv is missing or its requirements (or the Python version) changed.
# Extra arguments go to pytest, e.g. `bash tests/python/run.sh -k rpc`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${WARREN_PY_VENV:-${CARGO_TARGET_DIR:-$root/target}/py-venv}"

# shellcheck source=tests/python/venv.sh
source "$here/venv.sh"

make_venv "$venv" "$here/requirements.txt"
# pika 0.13 calls collections.Callable, an alias Python 3.10 removed: the .pth restores it in that
# venv (a fix to the Python runtime, not to the programs or the broker).
make_venv "$venv-pika013" "$here/requirements-pika013.txt" "$here/pika013-compat.pth"
export WARREN_PY_LEGACY="$venv-pika013/bin/python"
export PYTHONDONTWRITEBYTECODE=1
cd "$here"
exec "$venv/bin/python" -m pytest -q "$@"
