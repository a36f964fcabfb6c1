#!/usr/bin/env bash
# Debian's Chromium for the UI tests (driven by Playwright's Python package through
# executable_path=/usr/bin/chromium; Playwright never downloads a browser here).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing Debian's chromium (for the browser tests)..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version
