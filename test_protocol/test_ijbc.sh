#!/usr/bin/env bash
# IJB-C (1:1 TAR@FAR 1e-6..1e-1, 1:N TPIR@FPIR + rank-1 on G1/G2, masked 1:1) and IJB-B (1:1, 1:N S1) on the newest
# run under work_dirs/ (or --export DIR / --checkpoint PATH): the IJB* sets of test_protocol/data_conf.yaml.
#   bash test_protocol/test_ijbc.sh --export work_dirs/run/export --json ijb.json
# Later --sets override the default list.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/use_env.sh
exec python -m test_protocol.test_lfw_adapt --sets IJBC-1:1,IJBC-1:N-G1,IJBC-1:N-G2,IJBC-MASK-1:1,IJBB-1:1,IJBB-1:N-S1 "$@"
