# Sourced by tests/python/run.sh and tests/browser/run.sh: make_venv DIR REQUIREMENTS [PTH]
# creates (or reuses) a venv with the pinned requirements; pip runs only when the venv is missing
# or its requirements (or the Python version) changed.
make_venv() { # dir requirements-file [file.pth to add to site-packages]
    local dir="$1" req="$2" pth="${3:-}" stamp
    stamp="$({ cat "$req" ${pth:+"$pth"}; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)"
    if [[ -f "$dir/.requirements-hash" && "$(cat "$dir/.requirements-hash")" == "$stamp" ]] &&
        "$dir/bin/python" -c '' 2>/dev/null; then
        return
    fi
    echo "run.sh: creating $dir" >&2
    rm -rf "$dir"
    if ! python3 -m venv "$dir" >/dev/null 2>&1; then
        rm -rf "$dir"
        echo "run.sh: python3 -m venv failed; installing Debian's python3-venv" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$dir"
    fi
    "$dir/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$req"
    if [[ -n "$pth" ]]; then
        cp "$pth" "$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/"
    fi
    echo "$stamp" > "$dir/.requirements-hash"
}

