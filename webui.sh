#!/usr/bin/env bash
# Set up (once) and start sdgate. Flags go to launch.py, e.g.:  ./webui.sh --demo   ./webui.sh --listen --model x.safetensors
set -euo pipefail
cd "$(dirname "$0")"
source ./scripts/setup-env.sh
exec python launch.py "$@"
