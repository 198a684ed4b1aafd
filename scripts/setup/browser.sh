#!/usr/bin/env bash
# Headless Chromium for the console's browser tests (crates/edgecd-cli/tests/console_browser.rs);
# playwright-core drives this Debian build (no browser download), see scripts/setup/20-npm.sh.
set -euo pipefail
if ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
fi
