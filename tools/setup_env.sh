#!/usr/bin/env bash
# The one install step shared by run.sh, tests/run.sh and .ci/run; meant to be sourced from the repository root:
#   . tools/setup_env.sh            # create (or reuse) .venv, install what is missing, activate it
# It installs torch + torchvision (the versions this project is tested with; requirements.txt admits them),
# requirements.txt, and the checkout itself in editable mode (pyproject.toml lists the packages), so the scripts
# users run by name (`python test_protocol/lfw/crop_lfw_random.py ...`) import the toolbox from anywhere.
# A stamp keyed by requirements.txt, pyproject.toml and this file skips the install when nothing changed.
# Callers run under `set -euo pipefail`, so a failed step stops them.
# VENV_DIR overrides the location (default .venv); PYTHON the interpreter that creates it (default python3).
venv_dir="${VENV_DIR:-.venv}"
if [ ! -x "$venv_dir/bin/python" ]; then
    echo "setup_env: creating $venv_dir" >&2
    "${PYTHON:-python3}" -m venv "$venv_dir"
fi
. "$venv_dir/bin/activate"
stamp="$venv_dir/.installed.$(cat requirements.txt pyproject.toml tools/setup_env.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "setup_env: installing into $venv_dir (first run: a few minutes)" >&2
    python -m pip install -q --upgrade pip
    python -m pip install -q torch==2.14.1 torchvision==0.29.1
    python -m pip install -q -r requirements.txt "setuptools>=64"
    python -m pip install -q --no-deps --no-build-isolation -e .
    rm -f "$venv_dir"/.installed.* "$venv_dir"/.requirements.*
    touch "$stamp"
fi
