#!/usr/bin/env bash
# Set up (once) and run the whole test suite, offline. Arguments go to pytest, e.g.:  ./test.sh -k prompt
set -euo pipefail
cd "$(dirname "$0")"
EXTRAS=test source ./scripts/setup-env.sh
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 GRADIO_ANALYTICS_ENABLED=False
set +e
python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "no tests were collected" >&2
    exit 1
fi
exit "$code"
