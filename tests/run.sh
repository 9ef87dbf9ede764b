#!/usr/bin/env bash
# The README's test command: sets up (or reuses) the same .venv as run.sh, then runs pytest inside it.
# Arguments go to pytest (e.g. `bash tests/run.sh tests/test_heads.py -q`). Tests that need ../shared skip with a
# reason when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/setup_env.sh
exec python -m pytest "$@"
