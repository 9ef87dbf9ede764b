#!/usr/bin/env bash
# Evaluate the newest run under work_dirs/ (its export/ folder when present, else checkpoints/last.pt) on every set
# of test_protocol/data_conf.yaml, both protocol variants, and print one table. Extra arguments are passed on, e.g.
#   bash test_protocol/test_lfw_adapt.sh --sets SYNTH,SYNTH-MASK --report work_dirs/report
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/use_env.sh
exec python -m test_protocol.test_lfw_adapt --variant both "$@"
