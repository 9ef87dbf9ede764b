#!/usr/bin/env bash
# The README's test command. Tests that need ../shared skip with a reason when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest "$@"
