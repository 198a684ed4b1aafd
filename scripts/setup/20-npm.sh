#!/usr/bin/env bash
# npm packages the tests use, under $EDGECD_TEST_CACHE/npm: the Sigstore project's own verifier
# (@sigstore/verify) for offline signature checks; playwright-core (drives the Debian chromium
# of scripts/setup/browser.sh, downloads no browser) and @axe-core/playwright (accessibility
# scans) for the console's browser tests.
set -euo pipefail
cache="${EDGECD_TEST_CACHE:?}"
mkdir -p "$cache/npm"
cd "$cache/npm"
[ -f package.json ] || echo '{"name":"edgecd-test-tools","private":true}' > package.json
[ -d node_modules/@sigstore/verify ] ||
  npm install --silent --no-audit --no-fund @sigstore/verify @sigstore/bundle @sigstore/protobuf-specs
[ -d node_modules/playwright-core ] && [ -d node_modules/@axe-core/playwright ] ||
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund playwright-core @axe-core/playwright
