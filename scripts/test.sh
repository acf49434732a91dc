#!/usr/bin/env bash
# Install everything and run the checks CI runs: ruff, then the whole test suite.
# Data: $METARAY_DATA_DIR, else ../shared/data beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install-browser.sh  # the playground's browser test
export METARAY_DATA_DIR=${METARAY_DATA_DIR:-$(cd .. && pwd)/shared/data}
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
