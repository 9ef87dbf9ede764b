#!/usr/bin/env bash
# The main job on a fresh machine: install into .venv, then train + evaluate on the embedded synthetic faces.
#   bash run.sh                 # ArcFace baseline demo (CPU, a few minutes), prints the result table
#   bash run.sh CONFIG [a.b=c]  # any other preset, e.g. configs/gfro/embedded_cpu.yaml
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
stamp=".venv/.requirements.$(sha256sum requirements.txt | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    python -m pip install -q --upgrade pip
    python -m pip install -q torch==2.14.1 torchvision==0.29.1   # local wheels; requirements.txt admits them
    python -m pip install -q -r requirements.txt
    touch "$stamp"
fi
exec bash training_mode/conventional_training/train.sh "$@"
