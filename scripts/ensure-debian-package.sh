#!/usr/bin/env bash
# Install a Debian package with apt, only when the command it provides is missing.
# Usage: scripts/ensure-debian-package.sh COMMAND PACKAGE WHY
set -euo pipefail
command_name=$1 package=$2 why=$3
if command -v "$command_name" >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing Debian's $package ($why)..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$package" >/dev/null
command -v "$command_name"
