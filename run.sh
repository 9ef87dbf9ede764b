#!/usr/bin/env bash
# The main job on a fresh machine: install into .venv, then train + evaluate on the embedded synthetic faces.
#   bash run.sh                 # ArcFace baseline demo (CPU, a few minutes), prints the result table
#   bash run.sh CONFIG [a.b=c]  # any other preset, e.g. configs/gfro/embedded_cpu.yaml
set -euo pipefail
cd "$(dirname "$0")"
. tools/setup_env.sh
exec bash training_mode/conventional_training/train.sh "$@"
