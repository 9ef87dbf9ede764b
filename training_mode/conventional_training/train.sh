#!/usr/bin/env bash
# Train a face model. With no arguments: the embedded synthetic data set on CPU (or GPU when present).
#   bash training_mode/conventional_training/train.sh [CONFIG] [a.b=c ...] [--resume auto]
#   NPROC=4 bash training_mode/conventional_training/train.sh configs/gfro/casia_elasticface_iresnet.yaml
#   NNODES=2 NPROC=8 RDZV_ENDPOINT=node0:29500 bash training_mode/conventional_training/train.sh CONFIG  # every node
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/use_env.sh
CONFIG="${1:-configs/embedded_arcface.yaml}"
[ $# -gt 0 ] && shift
if [ "${NNODES:-1}" -gt 1 ]; then
    : "${RDZV_ENDPOINT:?multi-node: set RDZV_ENDPOINT=host:port of a node every node can reach}"
    exec torchrun --nnodes="$NNODES" --nproc_per_node="${NPROC:-1}" --rdzv-backend=c10d \
        --rdzv-endpoint="$RDZV_ENDPOINT" --rdzv-id="${RDZV_ID:-face-train}" \
        -m training_mode.conventional_training.train "$CONFIG" "$@"
fi
if [ "${NPROC:-1}" -gt 1 ]; then
    exec torchrun --standalone --nproc_per_node="$NPROC" -m training_mode.conventional_training.train "$CONFIG" "$@"
fi
exec python -m training_mode.conventional_training.train "$CONFIG" "$@"
