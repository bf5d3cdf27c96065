# Sourced by webui.sh and test.sh: make .venv and install sdgate into it (skipped when nothing changed).
# EXTRAS selects pip extras ("" for the app, "test" for the test suite).
set -euo pipefail
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
source .venv/bin/activate
stamp=".venv/.sdgate-installed-${EXTRAS:-app}"
want="$(cat pyproject.toml | sha256sum | cut -c1-16) torch-$TORCH_VERSION"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # torch first and pinned: an unpinned torch (or anything pulling torchvision) drags in GBs of CUDA wheels.
    python -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
    python -m pip install --quiet --disable-pip-version-check -e ".${EXTRAS:+[$EXTRAS]}" "torch==$TORCH_VERSION"
    echo "$want" > "$stamp"
fi
