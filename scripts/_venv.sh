# Sourced by scripts/dev and scripts/test: use the active virtualenv, or
# create and activate ./.venv, so nothing is installed into the system Python.
if [ -z "${VIRTUAL_ENV:-}" ]; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
