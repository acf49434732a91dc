#!/usr/bin/env bash
# Debian's Chromium for the playground's browser test (tests/e2e/test_playground.py, driven
# by Playwright with this system browser: Playwright downloads no browser of its own).
set -euo pipefail
command -v chromium >/dev/null && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
command -v chromium >/dev/null
