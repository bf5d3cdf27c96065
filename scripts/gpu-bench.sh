#!/usr/bin/env bash
# The GPU figures in one go, on a machine whose .venv already holds sdgate and a CUDA build of torch:
#   bench/speed.py --gpu      SD1.5 512² and SDXL 1024², batch 1/4/8, it/s and images/s, eager then torch.compile
#   bench/serving.py --sd15   the queue's batching, fairness and HTTP cost on an SD1.5-sized model at 512²
# Each runs under its own timeout (SPEED_TIMEOUT, SERVING_TIMEOUT seconds) and prints as it goes, so a timeout still
# leaves every row printed before it. The output goes to the terminal and, when $OUT is set, to $OUT/speed.log and
# $OUT/serving.log. Extra arguments go to bench/speed.py (e.g. --no-compile, --batches 1,8).
set -uo pipefail
cd "$(dirname "$0")/.."
SPEED_TIMEOUT=${SPEED_TIMEOUT:-300}
SERVING_TIMEOUT=${SERVING_TIMEOUT:-240}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
if [ ! -x .venv/bin/python ]; then
    echo "gpu-bench: no .venv here (./test.sh or ./webui.sh makes it; torch must be a CUDA build)" >&2
    exit 2
fi
source .venv/bin/activate
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu-bench: torch $(python -c 'import torch; print(torch.__version__)') sees no CUDA device" >&2
    exit 2
fi
log() { if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && tee "$OUT/$1"; else cat; fi; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | log gpu.txt
status=0
timeout -k 10 "$SPEED_TIMEOUT" python bench/speed.py --gpu "$@" 2>&1 | log speed.log || status=$?
timeout -k 10 "$SERVING_TIMEOUT" python bench/serving.py --sd15 --repeat 2 2>&1 | log serving.log || status=$?
exit $status
