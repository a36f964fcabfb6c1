#!/usr/bin/env bash
# Debian's Chromium for the UI tests (driven by Playwright's Python package through
# executable_path=/usr/bin/chromium; Playwright never downloads a browser here).
set -euo pipefail
exec "$(dirname "$0")/ensure-debian-package.sh" chromium chromium "for the browser tests"
