#!/usr/bin/env bash
# MegaFace (10k / 100k / 1M distractors) and MegaFace-Mask on the newest run under work_dirs/ (or --export DIR /
# --checkpoint PATH): the MEGAFACE-* sets of test_protocol/data_conf.yaml, "not available" where the data is missing.
#   bash test_protocol/test_megaface.sh --export work_dirs/run/export --json megaface.json --report work_dirs/mf
# Later --sets override the default list.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/use_env.sh
exec python -m test_protocol.test_lfw_adapt --sets MEGAFACE-10K,MEGAFACE-100K,MEGAFACE-1M,MEGAFACE-MASK-1M "$@"
