#!/usr/bin/env bash
# Debian's faketime (libfaketime) for the shifted-clock runs of `make test` (apt, only when missing).
set -euo pipefail
if command -v faketime >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing Debian's faketime (for the shifted-clock test runs)..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends faketime >/dev/null
command -v faketime
