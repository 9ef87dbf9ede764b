#!/usr/bin/env bash
# Sourced by the launch scripts (train.sh, test_lfw_adapt.sh): use the repository's .venv when one exists and no
# other virtual or conda environment is active; otherwise keep the active interpreter (e.g. a GPU box's own env).
if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CONDA_PREFIX:-}" ] && [ -x "${VENV_DIR:-.venv}/bin/python" ]; then
    . "${VENV_DIR:-.venv}/bin/activate"
fi
