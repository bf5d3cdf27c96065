#!/usr/bin/env bash
# Set up (once) and run the whole test suite, offline. Arguments go to pytest, e.g.:  ./test.sh -k prompt
set -euo pipefail
cd "$(dirname "$0")"
EXTRAS=test source ./scripts/setup-env.sh
# The browser tests (tests/test_ui_browser.py) drive Debian's chromium; install it when missing and we may.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || echo "could not install chromium: the browser tests will be skipped" >&2
fi
if [ -n "${CI:-}" ] && [ ! -x /usr/bin/chromium ]; then
    echo "CI needs /usr/bin/chromium for the browser tests" >&2
    exit 1
fi
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 GRADIO_ANALYTICS_ENABLED=False
# The layers of docs/architecture.md (contracts in pyproject.toml); a broken layer fails the run before any test.
lint-imports --no-cache
set +e
python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "no tests were collected" >&2
    exit 1
fi
exit "$code"
